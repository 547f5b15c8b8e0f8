r"""The distributed oracle: does my gathered loss give the single-process gradients?

``oracle.check(candidate, "nt_xent", world_size=2)`` (:func:`check_distributed`) starts W
gloo processes on this machine (:class:`~amcl_lab.oracle.ranks.RankPool`), draws global
batches with the reference's Hypothesis strategy, splits each into W equal shards in rank
order, calls the candidate on every rank with that rank's shard, as DDP would (the
candidate does its own gather, ``gather_distributed=True`` or the like), differentiates the
value each rank returns, and compares with the single-process reference on the
concatenated batch.  Bugs of this kind pass every single-process test: a gather whose
backward forgets the all-reduce (lightly #1528), a cross-correlation summed by a raw,
non-autograd ``all_reduce`` (the official Barlow Twins code, solo-learn), labels that
restart at 0 on every rank (pytorch-metric-learning's ``DistributedLossWrapper`` with
``arange`` labels), a hand-written gather of non-contiguous buffers (pytorch #120386).

The criterion (the conventions of :mod:`amcl_lab.distributed`), with :math:`L` the
reference on the global batch, :math:`L_r` the value rank r returns and W ranks:

* **Value.** :math:`\frac{1}{W}\sum_r L_r = L`.  A candidate returning the global loss on
  every rank (amcl_lab) satisfies it, and so does one returning its local anchors' mean
  (lightly): with equal shards the mean of the local means is the global mean.
* **Gradient of a sharded input.** Rank r's gradient of its shard :math:`z_r` equals
  :math:`W\,\partial L/\partial z_r`: the gradient of :math:`\sum_r L_r = W L`, which a
  gather whose backward sums over ranks produces.  DDP then averages parameter gradients
  over the W ranks and obtains :math:`\partial L/\partial\theta` of the single-process run.
* **Gradient of a replicated input** (a MoCo queue, a temperature tensor, a DINO centre):
  the mean over ranks equals :math:`\partial L/\partial\tau` (each rank holds W times its
  own anchors' share; DDP's average is exact).

Each rank's value must be a finite floating scalar carrying a gradient.  Tolerances are the
entry's (:meth:`~amcl_lab.registry.LossSpec.tolerance`) with the absolute part of a sharded
gradient scaled by W.  Where the reference itself, evaluated single-process at the
candidate's dtype, misses the tolerance, the candidate is held to
:data:`~amcl_lab.oracle.tolerance.ILL_CONDITIONED_SLACK` times the reference's own error,
as in the loss oracle.

How inputs split (:data:`SHARDINGS`, per registry entry and positional input): ``"rows"``
along dim 0, ``"heads"`` along dim 1 (AMCL head stacks ``(C, N, D)``), ``"samples"``
along dim 2 (AMCL SimSiam temperatures ``(C, 2, N)``), ``"pairs"`` for AMCL per-pair
temperatures ``(C, 2N, 2N)`` (this rank's anchor rows of ``[z1; z2]``, every candidate
column: the layout ``(C, 2n, 2N)`` of :func:`~amcl_lab.losses.amcl_nt_xent`),
``"replicated"`` (the whole tensor on every rank) and ``"none"`` (the input is passed as
``None``: InfoNCE is checked with in-batch negatives, since a queue needs no gather).  A
tensor whose batch dimension has size 1 (a broadcast temperature) is replicated.  A drawn
global batch of N rows is cut to the largest multiple of W; inputs with fewer than
``min_shard`` samples per rank (2 by default: amcl_lab's losses need two rows on every
rank), or outside the reference's domain once cut, are skipped.  ``reduction`` is left at
its default ``"mean"``: the per-rank criterion is about reduced losses.

Example:
    >>> import functools, torch
    >>> from amcl_lab import losses, oracle
    >>> candidate = functools.partial(losses.nt_xent, gather_distributed=True)
    >>> oracle.check(candidate, "nt_xent", world_size=2, dtype=torch.float64,
    ...              max_examples=5).passed
    True
    >>> local = oracle.check(losses.nt_xent, "nt_xent", world_size=2, dtype=torch.float64,
    ...                      max_examples=20)  # local negatives only: no gather at all
    >>> local.passed, local.failure.split(":")[0]
    (False, 'the mean over ranks of the values differs')
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
from hypothesis import errors as hypothesis_errors
from hypothesis import given, reject
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import Tensor

from .. import registry
from ..registry import LossSpec
from ..samples import SampleInput, Tolerance
from .adapters import Adapter, resolve_adapter
from .candidate import Candidate, qualname
from .ranks import RankFailure, RankPool
from .report import Comparison, Errors, OracleReport
from .search import Mismatch, Tally, search_settings
from .tolerance import ILL_CONDITIONED_SLACK, Quantity, gradient_quantity, relative, value_quantity

__all__ = ["SHARDINGS", "SPLITS", "check_distributed", "shard_sample"]

#: How an input splits over ranks (module docstring).
SPLITS = ("rows", "heads", "samples", "pairs", "replicated", "none")

#: Registry entry -> the split of each positional input.  The entries whose reference
#: takes ``gather_distributed`` come first, then the per-sample losses, which need no
#: gather (the mean of equal shards' means is the global mean).
SHARDINGS: dict[str, tuple[str, ...]] = {
    "nt_xent": ("rows", "rows"),
    "nt_xent_decoupled": ("rows", "rows"),
    "info_nce": ("rows", "rows", "none"),  # in-batch negatives: a queue needs no gather
    "supcon": ("rows", "rows"),
    "supcon_in": ("rows", "rows"),
    "barlow_twins": ("rows", "rows"),
    "amcl_nt_xent": ("heads", "heads", "pairs"),
    "amcl_info_nce": ("heads", "heads", "pairs"),
    "amcl_barlow_twins": ("heads", "heads", "replicated"),
    "vicreg": ("rows", "rows"),
    "multiview_vicreg": ("rows",),
    "dcl": ("rows", "rows"),
    "dclw": ("rows", "rows"),
    "moco_v3": ("rows", "rows", "rows", "rows"),
    # per-sample losses
    "negative_cosine": ("rows", "rows", "rows", "rows"),
    "dino": ("rows", "rows", "replicated"),
    "amcl_simsiam": ("heads", "heads", "heads", "heads", "samples"),
    "amcl_moco": ("heads", "heads", "replicated", "heads"),
}

_DIM = {"rows": 0, "heads": 1, "samples": 2}


def _batch_size(splits: Sequence[str], args: Sequence[Any]) -> int:
    for split, a in zip(splits, args, strict=False):
        if split in _DIM and isinstance(a, Tensor):
            return int(a.shape[_DIM[split]])
    raise ValueError("no input of this reference is split along a batch dimension")


def _effective(split: str, a: Any, n: int) -> str:
    """The split actually applied: a broadcast (size-1) batch dimension is replicated."""
    if not isinstance(a, Tensor) or split in ("replicated", "none"):
        return "replicated"
    if split == "pairs":
        return "pairs" if a.ndim >= 2 and a.shape[-2] == 2 * n else "replicated"
    dim = _DIM[split]
    return split if a.ndim > dim and a.shape[dim] == n else "replicated"


def _pair_rows(a: Tensor, n: int, start: int, stop: int) -> Tensor:
    """Rows ``[start, stop)`` of each view block of a ``(..., 2n, M)`` tensor."""
    return torch.cat([a[..., start:stop, :], a[..., n + start : n + stop, :]], dim=-2)


def _cut(split: str, a: Any, n: int, keep: int) -> Any:
    """The first ``keep`` of ``n`` samples of a global input."""
    kind = _effective(split, a, n)
    if kind == "replicated":
        return a
    if kind == "pairs":
        rows = _pair_rows(a, n, 0, keep)
        if rows.shape[-1] == 2 * n:
            rows = torch.cat([rows[..., :keep], rows[..., n : n + keep]], dim=-1)
        return rows
    return a.narrow(_DIM[kind], 0, keep)


def _divisible(
    sample: SampleInput, splits: Sequence[str], world_size: int, min_shard: int
) -> SampleInput | None:
    """``sample`` with its batch cut to a multiple of W and the default reduction."""
    n = _batch_size(splits, sample.args)
    keep = n - n % world_size
    if keep < world_size * min_shard:
        return None
    cut = [
        None if s == "none" else _cut(s, a, n, keep)
        for s, a in zip(splits, sample.args, strict=False)
    ]
    args = (*cut, *sample.args[len(splits) :])
    kwargs = {k: v for k, v in sample.kwargs.items() if k != "reduction"}
    return SampleInput(args, kwargs, sample.name)


def shard_sample(
    sample: SampleInput, splits: Sequence[str], rank: int, world_size: int
) -> SampleInput:
    """Rank ``rank``'s shard of a global ``sample`` (n = N / W samples, rank order).

    Example:
        >>> import torch
        >>> s = SampleInput((torch.arange(4.0)[:, None], torch.ones(1)), {"t": 1})
        >>> shard_sample(s, ("rows", "replicated"), 1, 2).args[0].flatten().tolist()
        [2.0, 3.0]
    """
    n = _batch_size(splits, sample.args)
    if n % world_size:
        raise ValueError(f"shard_sample: a batch of {n} does not split into {world_size} shards")
    b = n // world_size
    start, stop = rank * b, (rank + 1) * b
    args = []
    for split, a in zip(splits, sample.args, strict=False):
        kind = _effective(split, a, n)
        if kind == "replicated":
            args.append(a)
        elif kind == "pairs":
            args.append(_pair_rows(a, n, start, stop))
        else:
            args.append(a.narrow(_DIM[kind], start, b))
    args += list(sample.args[len(splits) :])
    return SampleInput(tuple(args), dict(sample.kwargs), sample.name)


def _shard_rows(split: str, a: Any, n: int, rank: int, world_size: int) -> str:
    """A phrase naming what rank ``rank`` holds of input ``a``."""
    kind = _effective(split, a, n)
    if kind == "replicated":
        return "the whole tensor (replicated)"
    b = n // world_size
    what = "anchor rows of both views" if kind == "pairs" else f"samples (dim {_DIM[kind]})"
    return f"{what} {rank * b}..{(rank + 1) * b - 1} of the global batch of {n}"


# --- what runs on each rank -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Task:
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    grad: bool


def _rank_task(fn: Candidate, rank: int, world_size: int, task: _Task) -> Any:
    """Evaluate the candidate on this rank's shard; return (value, grads) or a failure."""
    leaves = [
        a.detach().clone().requires_grad_(task.grad and a.is_floating_point())
        if isinstance(a, Tensor)
        else a
        for a in task.args
    ]
    before = [a.detach().clone() if isinstance(a, Tensor) else None for a in leaves]
    out = fn(*leaves, **task.kwargs)
    modified = [
        i
        for i, (a, b) in enumerate(zip(leaves, before, strict=True))
        if isinstance(a, Tensor) and not torch.equal(a.detach(), b)
    ]
    if modified:
        return ("failure", f"modified its input(s) {modified} in place")
    if not isinstance(out, Tensor):
        return ("failure", f"returned a {type(out).__name__}, not a tensor")
    if out.ndim != 0:
        return ("failure", f"returned shape {tuple(out.shape)}, expected a scalar")
    if not out.is_floating_point():
        return ("failure", f"returned a {out.dtype} tensor, not a floating one")
    if not bool(torch.isfinite(out)):
        return ("failure", f"returned a non-finite value {float(out)}")
    value = out.detach().cpu().double()
    if not task.grad:
        return ("ok", value, [])
    floating = [a for a in leaves if isinstance(a, Tensor) and a.is_floating_point()]
    if not out.requires_grad:
        return ("failure", "returned a value that carries no gradient (detached from every input)")
    grads = torch.autograd.grad(out, floating, allow_unused=True)
    return ("ok", value, [None if g is None else g.detach().cpu().double() for g in grads])


class _RankFunction:
    """The picklable callable a :class:`RankPool` runs (the candidate bound in)."""

    def __init__(self, fn: Candidate) -> None:
        self.fn = fn

    def __call__(self, rank: int, world_size: int, task: _Task) -> Any:
        return _rank_task(self.fn, rank, world_size, task)


# --- comparing the ranks with the reference -------------------------------------------------


def _failure_text(failures: Sequence[RankFailure]) -> str:
    return "; ".join(f"rank {f.rank} {f.what}" for f in failures)


def _reference(
    spec: LossSpec, adapter: Adapter, sample: SampleInput, dtype: torch.dtype, grad: bool
) -> tuple[Tensor, list[Tensor]]:
    """The single-process reference value and input gradients (computed at ``dtype``)."""
    leaves = sample.to(dtype, requires_grad=grad)
    value = adapter.expected(spec, leaves, dtype)
    if not grad:
        return value.detach().cpu().double(), []
    index = leaves.floating_indices()
    grads = torch.autograd.grad(value, [leaves.args[i] for i in index], allow_unused=True)
    out = [
        torch.zeros_like(leaves.args[i]) if g is None else g
        for i, g in zip(index, grads, strict=True)
    ]
    return value.detach().cpu().double(), [g.detach().cpu().double() for g in out]


@dataclasses.dataclass(frozen=True)
class _Expected:
    """What each rank should hold: per floating input, the target gradient on each rank."""

    value: Tensor
    targets: list[list[Tensor]]  # [input][rank] for sharded inputs; [input][0] replicated
    kinds: list[str]
    names: list[str]


def _expected(
    spec: LossSpec,
    adapter: Adapter,
    sample: SampleInput,
    splits: Sequence[str],
    world_size: int,
    dtype: torch.dtype,
    grad: bool,
) -> _Expected:
    value, grads = _reference(spec, adapter, sample, dtype, grad)
    n = _batch_size(splits, sample.args)
    index = sample.floating_indices()
    names_all = [
        spec.inputs[i] if i < len(spec.inputs) else f"arg{i}" for i in range(len(sample.args))
    ]
    targets, kinds, names = [], [], []
    for i, g in zip(index, grads, strict=True):
        split = splits[i] if i < len(splits) else "replicated"
        kind = _effective(split, sample.args[i], n)
        full = SampleInput(tuple(g if j == i else a for j, a in enumerate(sample.args)))
        if kind == "replicated":
            targets.append([g])
        else:
            targets.append(
                [
                    world_size * shard_sample(full, splits, r, world_size).args[i]
                    for r in range(world_size)
                ]
            )
        kinds.append(kind)
        names.append(names_all[i])
    return _Expected(value, targets, kinds, names)


def _quantities(
    values: Tensor,
    grads: list[list[Tensor | None]],
    exp: _Expected,
    atol: float,
    rtol: float,
    world_size: int,
) -> tuple[list[Quantity], list[str]]:
    """The value quantity, one gradient quantity per (input, rank), and hard failures."""
    mean = values.mean()
    q = value_quantity(mean, exp.value, atol, rtol)
    quantities = [
        dataclasses.replace(
            q, detail=q.detail.replace("value differs", "the mean over ranks of the values differs")
        )
    ]
    hard: list[str] = []
    for k, (name, kind, targets) in enumerate(zip(exp.names, exp.kinds, exp.targets, strict=True)):
        per_rank = [grads[r][k] for r in range(world_size)]
        if kind == "replicated":
            present = [torch.zeros_like(targets[0]) if g is None else g for g in per_rank]
            g = torch.stack(present).mean(0)
            gq = gradient_quantity(name, g, targets[0], atol, rtol)
            quantities.append(
                dataclasses.replace(
                    gq,
                    name=f"grad {name}",
                    detail=gq.detail.replace(
                        f"gradient of {name} differs",
                        f"the mean over ranks of the gradient of {name} (replicated) differs",
                    ),
                )
            )
            continue
        for r, (g, target) in enumerate(zip(per_rank, targets, strict=True)):
            if g is None:
                if bool((target != 0).any()):
                    hard.append(
                        f"rank {r}: no gradient reaches {name} (expected W x the reference "
                        f"gradient of its shard, norm {float(target.norm()):.3e})"
                    )
                    continue
                g = torch.zeros_like(target)
            if g.shape != target.shape:
                hard.append(f"rank {r}: the gradient of {name} has shape {tuple(g.shape)}")
                continue
            if not bool(torch.isfinite(g).all()):
                hard.append(f"rank {r}: the gradient of {name} is not finite")
                continue
            gq = gradient_quantity(name, g, target, atol * world_size, rtol)
            quantities.append(
                dataclasses.replace(
                    gq,
                    name=f"grad {name}@{r}",
                    detail=f"rank {r}: "
                    + gq.detail.replace("candidate - reference", "candidate - W x reference"),
                )
            )
    return quantities, hard


def _base_name(q: Quantity) -> str:
    return q.name.removeprefix("grad ").split("@")[0]


class _Run:
    """One distributed check: the pool, the reference, and the comparison of one input."""

    def __init__(
        self,
        fn: Candidate,
        spec: LossSpec,
        adapter: Adapter,
        splits: Sequence[str],
        pool: RankPool,
        tol: Tolerance,
        grad: bool,
    ) -> None:
        self.fn, self.spec, self.adapter, self.splits = fn, spec, adapter, splits
        self.pool, self.tol, self.grad = pool, tol, grad
        self.world_size = pool.world_size

    def _as_ranks(self, e: _Expected) -> tuple[Tensor, list[list[Tensor]]]:
        """A single-process result laid out as if each rank returned it exactly."""
        grads = [
            [e.targets[k][0 if kind == "replicated" else r] for k, kind in enumerate(e.kinds)]
            for r in range(self.world_size)
        ]
        return e.value.expand(self.world_size), grads

    def _own_error(
        self,
        low: SampleInput,
        exact: SampleInput,
        exp: _Expected,
        dtype: torch.dtype,
        atol: float,
        rtol: float,
    ) -> dict[str, float]:
        """How far the reference itself lands from ``exp`` when its arithmetic changes the
        way the ranks' does: evaluated at ``dtype`` (reduced precision), and on inputs
        perturbed by a few ulps (a partial matrix product rounds differently from the whole
        one, which flips exact ties such as a hardest-negative selection on duplicate rows).
        The largest error/bound ratio per quantity."""
        W = self.world_size
        runs = []
        if dtype != torch.float64:
            runs.append(_expected(self.spec, self.adapter, low, self.splits, W, dtype, self.grad))
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            args = tuple(
                a * (1 + 1e3 * torch.finfo(dtype).eps * torch.randn(a.shape, generator=gen,
                                                                   dtype=a.dtype))
                if isinstance(a, Tensor) and a.is_floating_point()
                else a
                for a in exact.args
            )  # fmt: skip
            moved = SampleInput(args, dict(exact.kwargs), exact.name)
            try:
                runs.append(_expected(self.spec, self.adapter, moved, self.splits, W,
                                      torch.float64, self.grad))  # fmt: skip
            except ValueError:  # the perturbed input left the reference's domain
                continue
        own: dict[str, float] = {}
        for e in runs:
            values, grads = self._as_ranks(e)
            for q in _quantities(values, grads, exp, atol, rtol, W)[0]:
                own[q.name] = max(own.get(q.name, 0.0), q.ratio)
        return own

    def compare(self, sample: SampleInput, dtype: torch.dtype) -> Comparison:
        low = sample.to(dtype)
        exact = low.to(torch.float64)
        try:
            exp = _expected(self.spec, self.adapter, exact, self.splits, self.world_size,
                            torch.float64, self.grad)  # fmt: skip
        except ValueError:  # the cut batch is outside the reference's domain (k > candidates)
            reject()
        W = self.world_size
        tasks = [
            _Task(shard_sample(low, self.splits, r, W).args, dict(low.kwargs), self.grad)
            for r in range(W)
        ]
        answers, failures = self.pool.run(tasks)
        bad = [RankFailure(r, a[1]) for r, a in enumerate(answers) if a and a[0] == "failure"]
        problems = failures + bad
        if problems:
            text = "; ".join(
                f"rank {f.rank} " + (f.what if f in bad else f"failed: {f.what}")
                for f in sorted(problems, key=lambda f: f.rank)
            )
            return Comparison(low, f"the candidate {text}", Errors(), {}, math.inf, None,
                              exp.value, False)  # fmt: skip
        values = torch.stack([a[1] for a in answers])
        grads = [a[2] for a in answers]
        atol = self.tol.atol_for(_min_temperature(self.spec, exact))
        rtol = self.tol.rtol
        quantities, hard = _quantities(values, grads, exp, atol, rtol, W)
        failing = [q for q in quantities if q.ratio > 1.0]
        ill = False
        if failing and not hard:
            own = self._own_error(low, exact, exp, dtype, atol, rtol)
            ill = any(r > 1.0 for r in own.values())
            failing = [
                q
                for q in failing
                if not (
                    own.get(q.name, 0.0) > 1.0 and q.ratio <= ILL_CONDITIONED_SLACK * own[q.name]
                )
            ]
        detail = hard + [q.detail for q in failing]
        gradients: dict[str, Errors] = {}
        for q in quantities[1:]:
            name = _base_name(q)
            e = Errors(q.err, relative(q.err, q.scale, atol))
            gradients[name] = gradients.get(name, Errors()).max(e)
        value = quantities[0]
        n = _batch_size(self.splits, exact.args)
        if detail:
            shards = _shard_summary(self.spec, self.splits, exact, n, W, failing, hard)
            detail.append(shards)
        return Comparison(
            low,
            "; ".join(detail) if detail else None,
            Errors(value.err, relative(value.err, value.scale, atol)),
            gradients,
            math.inf if hard else max(q.ratio for q in quantities),
            values,
            exp.value,
            ill,
        )


def _shard_summary(
    spec: LossSpec,
    splits: Sequence[str],
    sample: SampleInput,
    n: int,
    world_size: int,
    failing: Sequence[Quantity],
    hard: Sequence[str],
) -> str:
    ranks = sorted({int(q.name.split("@")[1]) for q in failing if "@" in q.name})
    ranks += [int(h.split(":")[0].split()[1]) for h in hard if h.startswith("rank ")]
    ranks = sorted(set(ranks)) or list(range(world_size))
    names = [spec.inputs[i] if i < len(spec.inputs) else f"arg{i}" for i in range(len(splits))]
    parts = []
    for r in ranks:
        held = ", ".join(
            f"{name}: {_shard_rows(s, a, n, r, world_size)}"
            for name, s, a in zip(names, splits, sample.args, strict=False)
            if isinstance(a, Tensor)
        )
        parts.append(f"rank {r} held {held}")
    return "shards: " + "; ".join(parts)


def _min_temperature(spec: LossSpec, sample: SampleInput) -> float | None:
    tau = sample.kwargs.get("temperature")
    if tau is None and "temperature" in spec.inputs:
        i = spec.inputs.index("temperature")
        tau = sample.args[i] if i < len(sample.args) else None
    if isinstance(tau, Tensor):
        return float(tau.detach().min())
    return None if tau is None else float(tau)


def check_distributed(
    candidate: Candidate,
    reference: str | LossSpec,
    *,
    world_size: int = 2,
    splits: Sequence[str] | None = None,
    dtype: torch.dtype = torch.float32,
    grad: bool = True,
    max_examples: int = 50,
    adapter: str | Adapter | Sequence[str | Adapter] | None = None,
    strategy: st.SearchStrategy[SampleInput] | None = None,
    tolerance: Tolerance | None = None,
    seed: int | None = 0,
    shrink: bool = True,
    min_shard: int = 2,
    start_method: str | None = None,
    timeout: float = 60.0,
) -> OracleReport:
    """Check a candidate that gathers across ranks against the single-process reference.

    ``oracle.check(candidate, reference, world_size=W, ...)`` calls this.  The criterion,
    the sharding and the tolerances are in the module docstring.

    Args:
        candidate: called on every rank as ``candidate(*shard_tensors, **hyperparameters)``
            inside an initialised gloo process group of ``world_size`` ranks; it does its own
            gathering.  Adapters apply as in :func:`~amcl_lab.oracle.check`.
        reference: a registry name with an entry in :data:`SHARDINGS`, or a
            :class:`~amcl_lab.registry.LossSpec` together with ``splits``.
        world_size: W >= 2 processes, all on this machine (CPU, gloo).
        splits: the split of each positional input (:data:`SPLITS`), overriding the table.
        dtype, grad, max_examples, adapter, strategy, tolerance, seed, shrink: as in
            :func:`~amcl_lab.oracle.check`.
        min_shard: the fewest samples a rank may hold (smaller drawn batches are skipped).
        start_method: ``"fork"`` (default where available: the candidate is inherited, so
            closures and ``__main__`` functions work) or ``"spawn"`` (picklable candidates).
        timeout: seconds one input may take on the ranks before they are restarted.

    Returns:
        An :class:`~amcl_lab.oracle.report.OracleReport` with ``world_size`` set; its
        failure names the rank and the shard that disagree, on the shrunk input.

    Raises:
        ValueError: an unknown reference, no sharding for it, bad splits, ``world_size < 2``,
            a non-floating dtype or ``max_examples < 1``.
    """
    spec = reference if isinstance(reference, LossSpec) else registry.get(reference)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
        raise ValueError(f"check: world_size must be an int >= 2, got {world_size!r}")
    if splits is None:
        if spec.name not in SHARDINGS:
            raise ValueError(
                f"check: no sharding is known for reference {spec.name!r}; pass splits=(...) "
                f"with one of {SPLITS} per input (known: {', '.join(SHARDINGS)})"
            )
        splits = SHARDINGS[spec.name]
    splits = tuple(splits)
    if isinstance(min_shard, bool) or not isinstance(min_shard, int) or min_shard < 1:
        raise ValueError(f"check: min_shard must be an int >= 1, got {min_shard!r}")
    if set(splits) - set(SPLITS) or not set(splits) & set(_DIM):
        raise ValueError(f"check: splits must be among {SPLITS} with a batch split, got {splits}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"check: dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"check: max_examples must be an int >= 1, got {max_examples!r}")
    adapt = resolve_adapter(adapter, spec)
    fn = adapt.adapt(candidate, spec)
    tol = tolerance if tolerance is not None else spec.tolerance(dtype)
    drawn = strategy if strategy is not None else spec.strategy(dtype=torch.float64, device="cpu")
    drawn = drawn.map(lambda s: _divisible(s, splits, world_size, min_shard)).filter(
        lambda s: s is not None
    )
    tally = Tally()
    pool = RankPool(world_size, _RankFunction(fn), start_method=start_method, timeout=timeout)
    run_one = _Run(fn, spec, adapt, splits, pool, tol, grad)

    @search_settings(max_examples, shrink)
    @given(drawn)
    def run(sample: SampleInput) -> None:
        comparison = run_one.compare(sample, dtype)
        tally.add(comparison)
        if comparison.failure is not None:
            raise Mismatch(comparison.failure)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    note = None
    with pool:
        try:
            run()
        except Mismatch:
            pass
        except (hypothesis_errors.Flaky, hypothesis_errors.FlakyFailure):
            note = (
                "the failure did not reproduce on a second call: the candidate is not deterministic"
            )
        failing = tally.failing
        blame = None
        if failing is not None and dtype != torch.float64:
            again = run_one.compare(failing.sample.to(torch.float64), torch.float64)
            blame = (
                "given the same inputs in float64 the candidate agrees (the difference is "
                "numerical)"
                if again.failure is None
                else "given the same inputs in float64 the candidate still disagrees: the "
                "difference does not come from the input precision"
            )
    failure = None if failing is None else failing.failure
    if failure is not None and note is not None:
        failure = f"{failure} ({note})"
    return OracleReport(
        candidate=qualname(candidate),
        reference=spec.name,
        adapter=adapt.name,
        dtype=dtype,
        device="cpu",
        grad=grad,
        examples=tally.examples,
        shrink_examples=tally.shrink_examples,
        ill_conditioned=tally.ill_conditioned,
        value=tally.value,
        gradients=dict(tally.gradients),
        ratio=0.0 if tally.closest is None else tally.closest.ratio,
        worst=failing if failing is not None else tally.closest,
        failure=failure,
        blame=blame,
        tolerance=tol,
        seed=seed,
        world_size=world_size,
    )
