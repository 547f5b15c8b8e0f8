"""Forward+backward time and peak memory of the contrastive losses against the batch size.

Measures, side by side in one run, the reference NT-Xent and SupCon (``amcl_lab.losses``),
the memory-efficient fast path (``amcl_lab.fast``) and, where they are importable, the peer
implementations (lightly ``NTXentLoss``, pytorch-metric-learning ``NTXentLoss`` and
``SupConLoss``, called with the settings under which they agree with the references).  Run
by ``nox -s bench`` as::

    python benchmarks/bench_losses.py --out bench_results [--sizes 256 512 ...] [--device cuda]

Each family (NT-Xent, SupCon) runs in its own subprocess over increasing batch sizes N
(embeddings of dimension ``--dim``, float32; SupCon takes two views and 100 classes).  Per
size, each implementation makes one warm-up call alone, whose peak memory is recorded (CPU:
the process's peak resident set, reset before each call through ``/proc/self/clear_refs``;
CUDA: ``torch.cuda.max_memory_allocated``); then up to ``--repeats`` timed calls are
interleaved round-robin across the implementations (median), so that load from other
processes disturbs them alike; when a call takes over a quarter of ``--max-seconds`` the
warm-up call is the only measurement.  SupCon stops at ``--supcon-sizes`` (no goal beyond
N = 4096).  A size is skipped when the time or memory predicted
from the previous two sizes exceeds ``--max-seconds`` or ``--max-memory-gb``, so the run stays
bounded on a small machine.

Outputs in ``OUT``: ``bench_losses.json`` (every measurement, the environment and the goal
verdicts, written atomically) and ``bench_losses.png`` (log-log time and memory against N),
drawn only from the JSON (``--plot-only`` redraws it).  The ratio tables are printed.
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

DEFAULT_SIZES = (64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
DEFAULT_SUPCON_SIZES = (64, 128, 256, 512, 1024, 2048, 4096)  # no goal at larger N
CLASSES = 100  # SupCon labels: sample i has class i % CLASSES
TEMPERATURE = 0.1

# family -> implementation names; the first entry of each family is the reference.
FAMILIES = {
    "nt_xent": ("reference nt_xent", "fast nt_xent", "lightly NTXentLoss", "PML NTXentLoss"),
    "supcon": ("reference supcon", "fast supcon", "PML SupConLoss"),
}
PEERS = {"lightly NTXentLoss", "PML NTXentLoss", "PML SupConLoss"}


# --- the implementations (imported inside the worker) ------------------------------------------


def _loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(x, labels)`` for ``name``: x is (N, 2, D); labels (N,)."""
    from amcl_lab import fast, losses

    if name == "reference nt_xent":
        return lambda x, y: losses.nt_xent(x[:, 0], x[:, 1], TEMPERATURE)
    if name == "fast nt_xent":
        return lambda x, y: fast.nt_xent(x[:, 0], x[:, 1], TEMPERATURE)
    if name == "reference supcon":
        return lambda x, y: losses.supcon(x, y, TEMPERATURE)
    if name == "fast supcon":
        return lambda x, y: fast.supcon(x, y, TEMPERATURE)
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
    loss(x, y).backward()
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


def _skip_reason(times: list, memory: list, n: int, args: argparse.Namespace) -> str | None:
    if not times:
        return None
    seconds, mib = _predict(times, n), _predict(memory, n)
    if seconds > args.max_seconds or mib > args.max_memory_gb * 1024:
        return (
            f"skipped: predicted {seconds:.0f} s, {mib / 1024:.1f} GiB (limits "
            f"{args.max_seconds:g} s, {args.max_memory_gb:g} GiB)"
        )
    return None


def worker(args: argparse.Namespace) -> None:
    """Measure one family's implementations at every size; one JSON line per (impl, size).

    Per size, each implementation first makes one call alone (its peak memory); the timed
    calls are then interleaved round-robin across implementations, so that a change in the
    machine's load affects all of them alike and the ratios stay meaningful.
    """
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in FAMILIES[args.worker] if available(n)]
    losses = {name: _loss(name) for name in names}
    times: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    memory: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    broken: set[str] = set()
    sizes = args.sizes if args.worker == "nt_xent" else args.supcon_sizes
    for n in sorted(sizes):
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(n, 2, args.dim, generator=gen).to(device).requires_grad_(True)
        y = (torch.arange(n) % CLASSES).to(device)
        rows: dict[str, dict[str, Any]] = {}
        for name in names:
            row: dict[str, Any] = {"impl": name, "n": n}
            reason = "skipped: failed at a smaller size" if name in broken else None
            reason = reason or _skip_reason(times[name], memory[name], n, args)
            if reason is not None:
                print(json.dumps({**row, "status": reason}), flush=True)
                continue
            try:
                with _PeakMemory(device) as peak:
                    first = _call(losses[name], x, y, device)
            except (RuntimeError, MemoryError) as error:  # e.g. out of memory on the device
                broken.add(name)
                row["status"] = f"error: {type(error).__name__}: {str(error)[:200]}"
                print(json.dumps(row), flush=True)
                continue
            rows[name] = {**row, "first_seconds": first, "peak_mib": peak.mib, "samples": []}
        if not rows:
            continue
        slowest = max(r["first_seconds"] for r in rows.values())
        if slowest > args.max_seconds / 4:  # long calls: the warm-up call is the measurement
            for row in rows.values():
                row["samples"].append(row["first_seconds"])
        else:
            # at least --repeats calls; more for quick calls, up to --min-time seconds each
            repeats = max(args.repeats, min(50, int(args.min_time / max(slowest, 1e-9))))
            for _ in range(repeats):
                for name, row in rows.items():
                    row["samples"].append(_call(losses[name], x, y, device))
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
                rows.append({"impl": name, "n": None, "status": "skipped: not installed"})
                print(f"{name:<22} not installed", file=sys.stderr)
        command = [sys.executable, __file__, "--worker", family, *_shared_flags(args)]
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
            row = json.loads(line)
            rows.append(row)
            shown = (
                f"{row['seconds']:.4f} s, {row['peak_mib']:.0f} MiB"
                if "seconds" in row
                else row["status"]
            )
            print(f"{row['impl']:<22} N={row['n']:<6} {shown}", file=sys.stderr)
        if failed:
            rows.append({"impl": family, "n": None, "status": f"worker failed: {message}"})
    return rows


def _shared_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--sizes", *map(str, args.sizes), "--supcon-sizes", *map(str, args.supcon_sizes)]
    flags += ["--dim", str(args.dim), "--device", args.device]
    flags += ["--repeats", str(args.repeats), "--min-time", str(args.min_time)]
    flags += ["--max-seconds", str(args.max_seconds)]
    flags += ["--max-memory-gb", str(args.max_memory_gb), "--threads", str(args.threads)]
    return flags


def _measured(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["impl"], r["n"]): r for r in rows if r.get("status") == "ok"}


def exponents(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Scaling exponents per implementation: slopes of log time and log peak memory against
    log N between the two largest sizes measured (time only over calls above 0.05 s, memory
    over peaks above 50 MiB: smaller ones are dominated by fixed overheads)."""
    out: dict[str, dict[str, float]] = {}
    for names in FAMILIES.values():
        for name in names:
            ok = [r for r in rows if r["impl"] == name and r.get("status") == "ok"]
            for key, floor in (("seconds", 0.05), ("peak_mib", 50.0)):
                pts = sorted((r["n"], r[key]) for r in ok if r[key] > floor)
                if len(pts) >= 2:
                    (n0, v0), (n1, v1) = pts[-2], pts[-1]
                    out.setdefault(name, {})[key] = math.log(v1 / v0) / math.log(n1 / n0)
    return out


def goals(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    """The issue's goals, evaluated where they could be measured."""
    m = _measured(rows)
    ref, fast_ = "reference nt_xent", "fast nt_xent"
    peers = [p for p in FAMILIES["nt_xent"] if p in PEERS]
    fastest_peer = {}
    for n in sizes:
        peer_times = [m[(p, n)]["seconds"] for p in peers if (p, n) in m]
        if (ref, n) in m and peer_times:
            fastest_peer[n] = {
                "reference_seconds": m[(ref, n)]["seconds"],
                "fastest_peer_seconds": min(peer_times),
                "met": m[(ref, n)]["seconds"] <= min(peer_times),
            }
    both = [n for n in sizes if (ref, n) in m and (fast_, n) in m]
    fast_goal: dict[str, Any] = {"target_n": 16384, "measured_at": None}
    if both:
        n = max(both)
        time_ratio = m[(fast_, n)]["seconds"] / m[(ref, n)]["seconds"]
        memory_ratio = m[(fast_, n)]["peak_mib"] / max(m[(ref, n)]["peak_mib"], 1e-9)
        fast_goal.update(
            measured_at=n,
            time_ratio=time_ratio,
            memory_ratio=memory_ratio,
            met_at_measured_n=time_ratio <= 1.5 and memory_ratio < 0.10,
            # the goal itself is stated at N = 16384; elsewhere it is only indicative
            met=(time_ratio <= 1.5 and memory_ratio < 0.10) if n == 16384 else None,
        )
    return {"reference_vs_fastest_peer": fastest_peer, "fast_path": fast_goal}


def _cell(m: dict, name: str, n: int, base: str | None = None, key: str = "seconds") -> str:
    if (name, n) not in m:
        return "-"
    value = m[(name, n)][key]
    text = f"{value:.3g}"
    if base is not None and (base, n) in m and m[(base, n)][key] > 0:
        text += f" ({value / m[(base, n)][key]:.2f}x)"
    return text


def tables(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    m = _measured(rows)
    out = []
    for family, names in FAMILIES.items():
        ref = names[0]
        present = [
            n for n in names if any(r["impl"] == n and r.get("status") == "ok" for r in rows)
        ]
        header = ["N"] + [f"{n} s" for n in present] + [f"{n} MiB" for n in present[:2]]
        out.append(f"{family}: forward+backward seconds (ratio to {ref}) and peak MiB")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for n in sizes:
            cells = [str(n)] + [_cell(m, p, n, None if p == ref else ref) for p in present]
            cells += [_cell(m, p, n, None if p == ref else ref, "peak_mib") for p in present[:2]]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from amcl_lab.io import atomic_path

    rows = [r for r in result["rows"] if r.get("status") == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for names in FAMILIES.values():
        for name in names:
            pts = sorted((r["n"], r["seconds"], r["peak_mib"]) for r in rows if r["impl"] == name)
            if not pts:
                continue
            ns, ts, ms = zip(*pts, strict=True)
            style = "-" if name.startswith(("reference", "fast")) else "--"
            axes[0].plot(ns, ts, style, marker="o", label=name)
            axes[1].plot(ns, [max(v, 1e-3) for v in ms], style, marker="o", label=name)
    for ax, label in zip(axes, ("forward+backward time (s)", "peak memory (MiB)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"batch size N (2N embeddings, d = {result['config']['dim']})")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
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
    parser.add_argument("--supcon-sizes", type=int, nargs="+", default=list(DEFAULT_SUPCON_SIZES))
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls, at least")
    parser.add_argument(
        "--min-time", type=float, default=1.0, help="seconds of timed calls per size (<= 50)"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0, help="per call, predicted")
    parser.add_argument("--max-memory-gb", type=float, default=6.0, help="per call, predicted")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--worker-timeout", type=int, default=600)
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
    sizes = sorted(set(args.sizes) | set(args.supcon_sizes))
    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "worker")},
        "environment": environment(args),
        "rows": rows,
        "exponents": exponents(rows),
        "goals": goals(rows, sizes),
        "wall_seconds": time.perf_counter() - start,
        "max_rss_mib_children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    result["config"]["out"] = str(args.out)
    write_json(json_path, result)
    plot(result, png_path)
    print(tables(rows, sizes))
    print("scaling exponents (d log y / d log N between the two largest sizes): time, memory")
    for name, k in result["exponents"].items():
        print(f"  {name:<22} {k.get('seconds', math.nan):.2f}  {k.get('peak_mib', math.nan):.2f}")
    print(json.dumps(result["goals"], indent=2))
    print(f"wrote {json_path} and {png_path} in {result['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
