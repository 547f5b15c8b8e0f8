"""Forward+backward time and peak memory of the contrastive losses against the batch size.

Measures, side by side in one run, for each two-view loss (NT-Xent, InfoNCE, SupCon, the
hard-negative loss): its **plain** version, the simplest correct masked cross-entropy (written
below, the yardstick), the reference (``amcl_lab.losses``), the memory-efficient fast path
(``amcl_lab.fast``, NT-Xent and SupCon) and the **matmul bound**, two ``torch.mm`` calls of the
shapes the loss needs (the logits ``(2N, D) @ (D, 2N)`` and one gradient product
``(2N, 2N) @ (2N, D)``: the least a forward + backward pass must multiply); where they are
importable also the peers (lightly ``NTXentLoss``, pytorch-metric-learning ``NTXentLoss`` and
``SupConLoss``, called with the settings under which they agree with the references).  Run by
``nox -s bench`` as::

    python benchmarks/bench_losses.py --out bench_results [--sizes 256 1024 ...] [--device cuda]

Each family runs in its own subprocess over increasing batch sizes N (embeddings of dimension
``--dim``, float32, two views; SupCon with 100 classes; the hard-negative loss keeps the
k = (2N - 2) // 10 hardest negatives).  Per size, each implementation makes a warm-up call
alone (three, if quick: the median), whose peak memory is recorded (CPU: the process's peak
resident set above the baseline, reset before each call through ``/proc/self/clear_refs``;
CUDA: ``torch.cuda.max_memory_allocated``); then the timed calls are interleaved round-robin across
the implementations, in alternating order, so that load from other processes disturbs them
alike: the ratios reported are **medians of the per-round ratios**; when a call takes over a
quarter of ``--max-seconds`` the warm-up call is the only measurement.  The references stop
at ``--sizes``' largest (16384), the NT-Xent fast path at ``--fast-sizes``' (65536) and the
matmul bound at ``--bound-max`` (8192); a size is skipped when the time or memory predicted
from the previous two sizes exceeds ``--max-seconds`` or ``--max-memory-gb``, or would pass
the family's share of ``--budget-seconds`` (660 s in all), so the run stays bounded on a
small or busy machine.

Outputs in ``OUT``: ``bench_losses.json`` (every measurement, the environment, the fitted
exponents and the goal verdicts, written atomically) and ``bench_losses.png`` (log-log time
and memory against N), drawn only from the JSON (``--plot-only`` redraws it).  The tables are
printed.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

DEFAULT_SIZES = (256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_FAST_SIZES = (32768, 65536)  # the NT-Xent fast path only, beyond --sizes
CLASSES = 100  # SupCon labels: sample i has class i % CLASSES
TEMPERATURE = 0.1
HARD_FRACTION = 10  # the hard-negative loss keeps (2N - 2) // HARD_FRACTION negatives
GOAL_SIZES = (256, 1024, 4096)  # references <= 1.0x the plain version, time and memory
BOUND_GOAL = (4096, 0.45)  # the fast path at >= 45 % of the matmul bound at N = 4096
BOUND = "matmul bound"

# family -> implementation names; the first is the plain yardstick, the second the reference
FAMILIES = {
    "nt_xent": (
        "plain nt_xent",
        "reference nt_xent",
        "fast nt_xent",
        BOUND,
        "lightly NTXentLoss",
        "PML NTXentLoss",
    ),
    "info_nce": ("plain info_nce", "reference info_nce"),
    "supcon": ("plain supcon", "reference supcon", "fast supcon", BOUND, "PML SupConLoss"),
    "hard_contrastive": ("plain hard_contrastive", "reference hard_contrastive"),
}
PEERS = {"lightly NTXentLoss", "PML NTXentLoss", "PML SupConLoss"}
# each family's share of --budget-seconds (NT-Xent carries the fast path to N = 65536)
BUDGET_SHARES = {"nt_xent": 0.45, "info_nce": 0.1, "supcon": 0.25, "hard_contrastive": 0.2}


# --- the plain versions: the simplest correct code for each loss (the yardsticks) -------------


def plain_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / tau
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, target)


def plain_info_nce(query: torch.Tensor, key: torch.Tensor, tau: float) -> torch.Tensor:
    q, k = F.normalize(query, dim=1), F.normalize(key, dim=1)
    return F.cross_entropy(q @ k.T / tau, torch.arange(q.shape[0], device=q.device))


def plain_supcon(features: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    n, views, _ = features.shape
    z = F.normalize(features.transpose(0, 1).reshape(n * views, -1), dim=1)
    y = labels.repeat(views)
    logits = z @ z.T / tau
    logits.fill_diagonal_(float("-inf"))
    positives = y[:, None] == y[None, :]
    positives.fill_diagonal_(False)
    log_prob = logits.log_softmax(dim=1).masked_fill(~positives, 0.0)
    return -(log_prob.sum(dim=1) / positives.sum(dim=1)).mean()


def plain_hard_contrastive(z1: torch.Tensor, z2: torch.Tensor, tau: float, k: int):
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T
    rows = torch.arange(2 * n, device=z.device)
    positive = torch.cat([rows[n:], rows[:n]])
    negatives = torch.ones_like(sim, dtype=torch.bool)
    negatives.fill_diagonal_(False)
    negatives[rows, positive] = False
    scores = sim.detach().masked_fill(~negatives, float("-inf"))
    threshold = scores.topk(k, dim=1).values[:, -1:] - 64 * torch.finfo(sim.dtype).eps
    keep = negatives & (scores >= threshold)
    keep[rows, positive] = True
    return F.cross_entropy((sim / tau).masked_fill(~keep, float("-inf")), positive)


def matmul_bound(x: torch.Tensor) -> torch.Tensor:
    """The two products a forward + backward pass cannot avoid: logits and one gradient."""
    with torch.no_grad():
        z = x.detach().reshape(-1, x.shape[-1])
        logits = z @ z.T
        return logits @ z


# --- the implementations (imported inside the worker) ------------------------------------------


def _loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None]:
    """``loss(x, labels)`` for ``name``: x is (N, 2, D); labels (N,)."""
    from amcl_lab import fast, losses

    def hard_k(x: torch.Tensor) -> int:
        return max(1, (2 * x.shape[0] - 2) // HARD_FRACTION)

    simple = {
        "plain nt_xent": lambda x, y: plain_nt_xent(x[:, 0], x[:, 1], TEMPERATURE),
        "reference nt_xent": lambda x, y: losses.nt_xent(x[:, 0], x[:, 1], TEMPERATURE),
        "fast nt_xent": lambda x, y: fast.nt_xent(x[:, 0], x[:, 1], TEMPERATURE),
        "plain info_nce": lambda x, y: plain_info_nce(x[:, 0], x[:, 1], TEMPERATURE),
        "reference info_nce": lambda x, y: losses.info_nce(
            x[:, 0], x[:, 1], temperature=TEMPERATURE
        ),
        "plain supcon": lambda x, y: plain_supcon(x, y, TEMPERATURE),
        "reference supcon": lambda x, y: losses.supcon(x, y, TEMPERATURE),
        "fast supcon": lambda x, y: fast.supcon(x, y, TEMPERATURE),
        "plain hard_contrastive": lambda x, y: plain_hard_contrastive(
            x[:, 0], x[:, 1], TEMPERATURE, hard_k(x)
        ),
        "reference hard_contrastive": lambda x, y: losses.hard_contrastive(
            x[:, 0], x[:, 1], TEMPERATURE, k=hard_k(x)
        ),
        BOUND: lambda x, y: matmul_bound(x),
    }
    if name in simple:
        return simple[name]
    if name == "lightly NTXentLoss":
        from lightly.loss import NTXentLoss

        lightly_loss = NTXentLoss(temperature=TEMPERATURE)
        return lambda x, y: lightly_loss(x[:, 0], x[:, 1])
    if name == "PML NTXentLoss":
        from pytorch_metric_learning.losses import NTXentLoss

        pml_ntxent = NTXentLoss(temperature=TEMPERATURE)

        def pml_two_views(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            ids = torch.arange(x.shape[0], device=x.device).repeat(2)
            return pml_ntxent(torch.cat([x[:, 0], x[:, 1]]), ids)

        return pml_two_views
    if name == "PML SupConLoss":
        from pytorch_metric_learning.losses import SupConLoss

        pml_supcon = SupConLoss(temperature=TEMPERATURE)
        return lambda x, y: pml_supcon(torch.cat([x[:, 0], x[:, 1]]), y.repeat(2))
    raise ValueError(f"unknown implementation {name!r}")


def available(name: str) -> bool:
    """Whether the library behind ``name`` can be imported here."""
    module = {"lightly": "lightly", "PML": "pytorch_metric_learning"}.get(name.split()[0])
    if module is None:
        return True
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- measuring inside the worker ---------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class _PeakMemory:
    """Peak memory of one call above what was in use before it, in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc = ctypes.CDLL(None) if platform.system() == "Linux" else None

    def __enter__(self) -> _PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        else:
            if self.libc is not None:
                self.libc.malloc_trim(0)  # hand freed blocks back so RSS starts low
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.before = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _status_kib("VmHWM") * 1024
        self.mib = (peak - self.before) / 2**20


def _call(loss: Callable, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    x.grad = None
    start = time.perf_counter()
    value = loss(x, y)
    if value.requires_grad:  # the matmul bound has nothing to differentiate
        value.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _predict(history: list[tuple[int, float]], n: int) -> float:
    """Extrapolate a measured quantity to ``n`` with the exponent of the last two sizes."""
    (n0, v0), (n1, v1) = history[-2:] if len(history) > 1 else (history[-1], history[-1])
    exponent = 2.0
    if n1 > n0 and v0 > 0 and v1 > 0:
        exponent = min(max(math.log(v1 / v0) / math.log(n1 / n0), 1.0), 3.0)
    return v1 * (n / n1) ** exponent


def _skip_reason(
    times: list, memory: list, n: int, args: argparse.Namespace, left: float
) -> str | None:
    """Why ``n`` is skipped: a predicted call over the limits, or past the family's budget
    (``left`` seconds; the call and its repeats, about 3x the call)."""
    if not times:
        return None
    seconds, mib = _predict(times, n), _predict(memory, n)
    if seconds > args.max_seconds or mib > args.max_memory_gb * 1024:
        return (
            f"skipped: predicted {seconds:.0f} s, {mib / 1024:.1f} GiB (limits "
            f"{args.max_seconds:g} s, {args.max_memory_gb:g} GiB)"
        )
    if seconds > left:
        return f"skipped: predicted {seconds:.0f} s, past the family's time budget"
    return None


def _sizes(name: str, args: argparse.Namespace) -> list[int]:
    """The batch sizes at which ``name`` is measured."""
    sizes = list(args.sizes)
    if name == "fast nt_xent":
        sizes += args.fast_sizes
    if name == BOUND:
        sizes = [n for n in sizes if n <= args.bound_max]
    if name in PEERS:
        sizes = [n for n in sizes if n <= args.peer_max]
    return sorted(set(sizes))


def worker(args: argparse.Namespace) -> None:
    """Measure one family's implementations at every size; one JSON line per (impl, size).

    Per size, each implementation first makes one call alone (its peak memory); the timed
    calls are then interleaved round-robin across implementations, in alternating order, so
    that a change in the machine's load affects all of them alike.  Besides the median time,
    each row carries the median over rounds of its time divided by the plain version's and
    by the reference's in the same round.
    """
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in FAMILIES[args.worker] if available(n)]
    plain, reference = names[0], names[1]
    losses = {name: _loss(name) for name in names}
    times: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    memory: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    broken: set[str] = set()
    all_sizes = sorted({n for name in names for n in _sizes(name, args)})
    started = time.perf_counter()
    for n in all_sizes:
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(n, 2, args.dim, generator=gen).to(device).requires_grad_(True)
        y = (torch.arange(n) % CLASSES).to(device)
        rows: dict[str, dict[str, Any]] = {}
        # the family's time budget: a size is measured for all its implementations or none
        # (the calls and their repeats, about 3x the predicted calls)
        here = [k for k in names if n in _sizes(k, args) and times[k]]
        predicted = sum(_predict(times[k], n) for k in here)
        left = args.budget - (time.perf_counter() - started)
        left = -1.0 if min(3 * predicted, predicted + args.min_time * len(here)) > left else left
        for name in names:
            if n not in _sizes(name, args):
                continue
            row: dict[str, Any] = {"impl": name, "n": n}
            reason = "skipped: failed at a smaller size" if name in broken else None
            reason = reason or _skip_reason(times[name], memory[name], n, args, left)
            if reason is not None:
                print(json.dumps({**row, "status": reason}), flush=True)
                continue
            try:
                peaks = []
                for _ in range(3):  # the resident set is coarse: median of 3 for quick calls
                    with _PeakMemory(device) as peak:
                        first = _call(losses[name], x, y, device)
                    peaks.append(peak.mib)
                    if first > 0.5:
                        break
            except (RuntimeError, MemoryError) as error:  # e.g. out of memory on the device
                broken.add(name)
                row["status"] = f"error: {type(error).__name__}: {str(error)[:200]}"
                print(json.dumps(row), flush=True)
                continue
            rows[name] = {
                **row,
                "first_seconds": first,
                "peak_mib": statistics.median(peaks),
                "samples": [],
            }
        if not rows:
            continue
        slowest = max(r["first_seconds"] for r in rows.values())
        if slowest > args.max_seconds / 4:  # long calls: the warm-up call is the measurement
            for row in rows.values():
                row["samples"].append(row["first_seconds"])
        else:
            # at least --repeats rounds; more for quick calls, up to --min-time seconds each
            total = sum(r["first_seconds"] for r in rows.values())
            repeats = max(args.repeats, min(60, int(args.min_time * len(rows) / total)))
            order = list(rows)
            for i in range(repeats):
                for name in order if i % 2 else order[::-1]:
                    rows[name]["samples"].append(_call(losses[name], x, y, device))
        for name, row in rows.items():
            samples = row["samples"]
            for key, base in (("vs_plain", plain), ("vs_reference", reference)):
                if base in rows and name != base:
                    pairs = zip(samples, rows[base]["samples"], strict=True)
                    row[key] = statistics.median(a / b for a, b in pairs)
        for name, row in rows.items():
            samples = row.pop("samples")
            row.update(status="ok", seconds=statistics.median(samples), repeats=len(samples))
            times[name].append((n, row["seconds"]))
            memory[name].append((n, max(row["peak_mib"], 1.0)))
            print(json.dumps(row), flush=True)
        del x, y


# --- the parent: run workers, tabulate, plot ---------------------------------------------------


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for family, names in FAMILIES.items():
        for name in names:
            if not available(name):
                rows.append(
                    {"family": family, "impl": name, "n": None, "status": "skipped: not installed"}
                )
                print(f"{name:<22} not installed", file=sys.stderr)
        budget = args.budget_seconds * BUDGET_SHARES[family]
        command = [sys.executable, __file__, "--worker", family, *_shared_flags(args)]
        command += ["--budget", f"{budget:.0f}"]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.worker_timeout
            )
            output, failed = done.stdout, done.returncode != 0
            message = done.stderr.strip().splitlines()[-1:] if failed else []
        except subprocess.TimeoutExpired as expired:
            out = expired.stdout or ""
            output = out.decode() if isinstance(out, bytes) else out
            failed, message = True, [f"timed out after {args.worker_timeout} s"]
        for line in output.splitlines():
            row = {"family": family, **json.loads(line)}
            rows.append(row)
            shown = (
                f"{row['seconds']:.4f} s, {row['peak_mib']:.0f} MiB"
                if "seconds" in row
                else row["status"]
            )
            print(f"{row['impl']:<22} N={row['n']:<6} {shown}", file=sys.stderr)
        if failed:
            rows.append(
                {"family": family, "impl": family, "n": None, "status": f"worker failed: {message}"}
            )
    return rows


def _shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--sizes", *map(str, args.sizes), "--fast-sizes", *map(str, args.fast_sizes)]
    flags += ["--bound-max", str(args.bound_max), "--peer-max", str(args.peer_max)]
    flags += ["--dim", str(args.dim), "--device", args.device]
    flags += ["--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    flags += ["--max-seconds", str(args.max_seconds)]
    flags += ["--max-memory-gb", str(args.max_memory_gb), "--threads", str(args.threads)]
    return flags


Measured = dict[tuple[str, str, int], dict[str, Any]]


def _measured(rows: list[dict[str, Any]]) -> Measured:
    return {(r["family"], r["impl"], r["n"]): r for r in rows if r.get("status") == "ok"}


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log value against log N."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(v) for _, v in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )


def exponents(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Scaling exponents per implementation: least-squares slopes of log time and log peak
    memory against log N over the sizes where the quantity is above its fixed overheads
    (time: calls over 0.05 s; memory: peaks over 64 MiB), N >= 1024."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for family, names in FAMILIES.items():
        for name in names:
            ok = [
                r
                for r in rows
                if r.get("family") == family and r["impl"] == name and r.get("status") == "ok"
            ]
            for key, floor in (("seconds", 0.05), ("peak_mib", 64.0)):
                pts = sorted((r["n"], r[key]) for r in ok if r[key] > floor and r["n"] >= 1024)
                slope = fit_exponent(pts)
                if slope is not None:
                    entry = out.setdefault(family, {}).setdefault(name, {})
                    entry[key] = {"exponent": slope, "from": pts[0][0], "to": pts[-1][0]}
    return out


def goals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals, evaluated where they could be measured."""
    m = _measured(rows)
    references: dict[str, Any] = {}
    for family, names in FAMILIES.items():
        plain, reference = names[:2]
        for n in GOAL_SIZES:
            if (family, reference, n) not in m or (family, plain, n) not in m:
                continue
            ref, base = m[family, reference, n], m[family, plain, n]
            memory = ref["peak_mib"] / max(base["peak_mib"], 1e-9)
            references.setdefault(family, {})[str(n)] = {
                "time_vs_plain": ref["vs_plain"],
                "memory_vs_plain": memory,
                "met": ref["vs_plain"] <= 1.0 and memory <= 1.0,
            }
    fast: dict[str, Any] = {}
    for family in ("nt_xent", "supcon"):
        name = f"fast {family}"
        entry: dict[str, Any] = {"vs_plain": {}, "bound_fraction": {}}
        for (fam, impl, n), row in sorted(m.items(), key=lambda kv: kv[0][2]):
            if fam != family or impl != name:
                continue
            if "vs_plain" in row:
                entry["vs_plain"][str(n)] = row["vs_plain"]
            if (family, BOUND, n) in m:
                entry["bound_fraction"][str(n)] = bound_fraction(m, family, n)
        n, target = BOUND_GOAL
        fraction = entry["bound_fraction"].get(str(n))
        entry["bound_goal"] = {"n": n, "target": target, "fraction": fraction}
        entry["met"] = (
            fraction is not None
            and fraction >= target
            and all(v <= 1.0 for k, v in entry["vs_plain"].items() if int(k) >= 256)
        )
        fast[family] = entry
    return {"references_vs_plain": references, "fast_path": fast}


def bound_fraction(m: Measured, family: str, n: int) -> float | None:
    """Matmul bound over the fast path's time: the median of the per-round ratios."""
    row = m.get((family, f"fast {family}", n))
    bound = m.get((family, BOUND, n))
    if row is None or bound is None or "vs_plain" not in bound or "vs_plain" not in row:
        return None
    return bound["vs_plain"] / row["vs_plain"]  # both per-round medians against plain


def _seconds(value: float) -> str:
    return f"{value * 1e3:.3g} ms" if value < 1.0 else f"{value:.3g} s"


def _mib(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def tables(rows: list[dict[str, Any]]) -> str:
    m = _measured(rows)
    out = []
    for family, names in FAMILIES.items():
        plain, reference = names[:2]
        present = [n for n in names if any(f == family and i == n for (f, i, _) in m)]
        shown = [n for n in present if n != BOUND]
        sizes = sorted({k for (f, _, k) in m if f == family})
        out.append(
            f"{family}: forward+backward time (median of the per-round ratios to {plain}; "
            f"'ref' = to the reference) and peak MiB above the baseline (ratio to {plain})"
        )
        header = ["N", *shown]
        if BOUND in present:
            header.append("fast / matmul bound")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for n in sizes:
            cells = [str(n)]
            for name in shown:
                row = m.get((family, name, n))
                if row is None:
                    cells.append("-")
                    continue
                text = _seconds(row["seconds"])
                ratios = []
                if "vs_plain" in row:
                    ratios.append(f"{row['vs_plain']:.2f}x")
                if "vs_reference" in row and name != reference:
                    ratios.append(f"ref {row['vs_reference']:.2f}x")
                if ratios:
                    text += " (" + ", ".join(ratios) + ")"
                base = m.get((family, plain, n))
                memory = _mib(row["peak_mib"])
                if base is not None and name != plain and base["peak_mib"] > 0:
                    memory += f" ({row['peak_mib'] / base['peak_mib']:.2f}x)"
                cells.append(f"{text}; {memory} MiB")
            if BOUND in present:
                fraction = bound_fraction(m, family, n)
                cells.append("-" if fraction is None else f"{100 * fraction:.0f} %")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def exponent_table(result: dict[str, Any]) -> str:
    lines = [
        "Fitted exponents (least-squares slope of log y against log N, N >= 1024; time over "
        "calls above 0.05 s, memory over peaks above 64 MiB)",
        "| family | implementation | time exponent (N range) | memory exponent (N range) |",
        "|---|---|---|---|",
    ]
    for family, per_impl in result["exponents"].items():
        for name, fits in per_impl.items():
            cells = []
            for key in ("seconds", "peak_mib"):
                fit = fits.get(key)
                cells.append(
                    "-" if fit is None else f"{fit['exponent']:.2f} ({fit['from']}-{fit['to']})"
                )
            lines.append(f"| {family} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amcl_lab.io import atomic_path

    rows = [r for r in result["rows"] if r.get("status") == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for family, names in FAMILIES.items():
        for name in names:
            pts = sorted(
                (r["n"], r["seconds"], r["peak_mib"])
                for r in rows
                if r.get("family") == family and r["impl"] == name
            )
            if not pts or (name == BOUND and family != "nt_xent"):
                continue
            ns, ts, ms = zip(*pts, strict=True)
            style = "-" if name.startswith(("reference", "fast")) else "--"
            label = name if family in name else f"{family}: {name}"
            axes[0].plot(ns, ts, style, marker="o", markersize=3, label=label)
            if name != BOUND:
                axes[1].plot(ns, [max(v, 1e-3) for v in ms], style, marker="o", markersize=3)
    for ax, label in zip(axes, ("forward+backward time (s)", "peak memory (MiB)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"batch size N (2N embeddings, d = {result['config']['dim']})")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    env = result["environment"]
    fig.suptitle(f"contrastive losses on {env['device_name']} ({env['threads']} threads)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, metadata={"Software": None})
    plt.close(fig)


def environment(args: argparse.Namespace) -> dict[str, Any]:
    from amcl_lab.io import package_versions

    device = torch.device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"
    return {
        **package_versions(),
        "device": args.device,
        "device_name": name,
        "threads": args.threads or torch.get_num_threads(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "note": args.note,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--fast-sizes",
        type=int,
        nargs="*",
        default=list(DEFAULT_FAST_SIZES),
        help="further sizes for the NT-Xent fast path",
    )
    parser.add_argument("--bound-max", type=int, default=8192, help="largest N of the bound")
    parser.add_argument("--peer-max", type=int, default=16384, help="largest N of the peers")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds, at least")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of timed calls per size and impl"
    )
    parser.add_argument("--max-seconds", type=float, default=240.0, help="per call, predicted")
    parser.add_argument("--max-memory-gb", type=float, default=15.0, help="per call, predicted")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=660.0,
        help="time for all families together; larger sizes are skipped past each one's share",
    )
    parser.add_argument("--budget", type=float, default=math.inf, help=argparse.SUPPRESS)
    parser.add_argument("--worker-timeout", type=int, default=1500)
    parser.add_argument("--note", default="", help="free text stored with the results")
    parser.add_argument("--plot-only", action="store_true", help="redraw from OUT's JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0

    from amcl_lab.io import write_json

    json_path, png_path = args.out / "bench_losses.json", args.out / "bench_losses.png"
    if args.plot_only:
        plot(json.loads(json_path.read_text()), png_path)
        return 0
    start = time.perf_counter()
    rows = run_all(args)
    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
        "environment": environment(args),
        "rows": rows,
        "exponents": exponents(rows),
        "goals": goals(rows),
        "wall_seconds": time.perf_counter() - start,
        "max_rss_mib_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    result["config"]["out"] = str(args.out)
    write_json(json_path, result)
    plot(result, png_path)
    print(tables(rows))
    print(exponent_table(result))
    print()
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {json_path} and {png_path} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
