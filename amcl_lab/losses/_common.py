"""Small numerical helpers shared by the loss modules."""

from __future__ import annotations

import math
from types import EllipsisType
from typing import NamedTuple

import torch
from torch import Tensor

from .. import _validation as v
from .. import distributed

#: Default floor on the L2 norm used when embeddings are normalised (see :func:`l2_normalize`).
NORM_EPS = 1e-8


def l2_normalize(z: Tensor, eps: float = NORM_EPS) -> Tensor:
    r"""Row-wise :math:`z / \lVert z\rVert_2`, with rows of norm below ``eps`` mapped to zero.

    A row whose norm is below ``eps`` (in particular an all-zero row) becomes the zero vector
    and receives zero gradient: its cosine similarity with everything is 0.  Normalisation is
    discontinuous at the origin, so any gradient there is a convention; the alternative
    ``z / max(|z|, eps)`` (``torch.nn.functional.normalize``) returns gradients of order
    ``1/eps``, which overflow float16.  Rows with norm >= ``eps`` are normalised exactly,
    which is what makes every loss invariant to positive rescaling of a row.

    A finite row whose squared entries overflow (float32 entries above about 1e19) is
    divided by its largest ``|entry|`` first, so it is normalised like any other row instead
    of becoming the zero vector; every other row is computed exactly as without that case
    (``tests/losses/test_overflow.py`` compares the two bit for bit).
    """
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    unit = (z / norm.clamp_min(eps)).masked_fill(norm < eps, 0.0)
    big = torch.isinf(norm)  # NaN/inf entries are rejected by the callers' checks
    if not bool(big.any()):
        return unit
    scale = torch.where(big, z.detach().abs().amax(dim=-1, keepdim=True), torch.ones_like(norm))
    scaled = z / scale
    length = torch.where(big, torch.linalg.vector_norm(scaled, dim=-1, keepdim=True), 1.0)
    return torch.where(big, scaled / length, unit)


def masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """Row-wise log-sum-exp over the entries where ``keep`` is true.

    Masked entries are set to ``-inf`` *before* the reduction (never subtracted after), so the
    result is exact for any finite logits; ``torch.logsumexp`` subtracts the row maximum
    internally, which keeps temperatures down to 1e-3 finite in float32.
    """
    return torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=-1)


def exclude_(logits: Tensor, columns: Tensor) -> Tensor:
    """Set ``logits[i, columns[i, j]]`` to -inf in place, outside autograd; returns ``logits``.

    For logits that are read only through a softmax, log-softmax or log-sum-exp over each
    row (and never at an excluded entry, e.g. as a cross-entropy target) this is exact, in
    value and in derivatives of every order: an entry at -inf has softmax weight
    ``exp(-inf) = 0``, so no derivative flows through it, which is the derivative of a loss
    that does not depend on it.  Recording the write instead (``masked_fill``, an indexed
    assignment) would make autograd keep a masked copy of the whole gradient matrix, and a
    boolean mask costs a matrix of its own.
    """
    with torch.no_grad():
        return logits.scatter_(-1, columns, -math.inf)


#: Logits (anchors x candidates) from which the dense references split the anchors in halves.
HALVES_FROM = 2**20


def anchor_halves(count: int, candidates: int) -> tuple[slice | EllipsisType, ...]:
    """The anchors ``0 .. count - 1`` in two halves (for the two views: each view's anchors).

    The dense references build their logits one half of the anchors at a time: autograd
    then keeps both halves' log-softmax (one full matrix), but the backward pass forms one
    half's gradient at a time, so the peak is two matrices' worth instead of the three of
    a single cross-entropy over the whole matrix (its log-softmax, the gradient the
    cross-entropy sends back and the gradient of the logits).  Below :data:`HALVES_FROM`
    logits (4 MiB in float32) the anchors stay in one piece: the memory saved is small and
    the second set of operations costs more time than it saves.
    """
    if count * candidates < HALVES_FROM or count < 2:
        return (...,)  # x[...] is x itself (x[0:count] would copy its gradient back)
    return slice(0, count // 2), slice(count // 2, count)


def joined(parts: list[Tensor]) -> Tensor:
    """The per-anchor losses of the pieces of :func:`anchor_halves`, in anchor order."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class TwoViewSimilarities(NamedTuple):
    """Cosine similarities of the anchors ``[z1; z2]`` with the candidate rows, and their roles.

    Without gathering the candidates are the anchors themselves: ``sim`` is ``(..., 2N, 2N)``,
    ``positive[i]`` is the index of anchor ``i``'s other view (``i + N`` modulo ``2N``) and
    ``negatives[i, j]`` is true for the 2N - 2 rows that are neither ``i`` nor its positive.
    Gathered over W ranks (:mod:`amcl_lab.distributed`), the 2n local anchors face the 2N
    candidate rows ``[Z1; Z2]`` of the global batch (N = W n): ``sim`` is ``(..., 2n, 2N)``
    and ``positive`` / ``negatives`` index candidate columns.
    """

    sim: Tensor
    positive: Tensor
    negatives: Tensor


def check_two_views(fn: str, z1: Tensor, z2: Tensor, eps: float) -> None:
    """Validate a pair of ``(N, D)`` view embeddings, N >= 2, and the norm floor ``eps``."""
    v.check_tensor(fn, "z1", z1, ndim=2, min_rows=2)
    v.check_tensor(fn, "z2", z2, ndim=2, min_rows=2)
    v.check_same_shape(fn, "z1", z1, "z2", z2)
    v.check_same_device(fn, [("z1", z1), ("z2", z2)])
    v.check_positive_float(fn, "eps", eps)


def check_hard_negative_args(fn: str, sim: Tensor, negatives: Tensor, k: int | None) -> None:
    """Validate :func:`~amcl_lab.losses.hard_negative_mask`'s ``(A, M)`` inputs and ``k``.

    ``sim`` finite floating, ``negatives`` a bool mask of the same shape, ``k`` ``None`` or
    an int from 1 to the smallest number of negatives of a row.
    """
    v.check_tensor(fn, "sim", sim, ndim=2)
    if not isinstance(negatives, Tensor):
        raise TypeError(f"{fn}: negatives must be a torch.Tensor, got {type(negatives).__name__}")
    if negatives.dtype != torch.bool or negatives.shape != sim.shape:
        raise ValueError(
            f"{fn}: negatives must be a bool mask of the shape of sim {tuple(sim.shape)}, got "
            f"{negatives.dtype} of shape {tuple(negatives.shape)}"
        )
    if k is not None:
        fewest = int(negatives.sum(dim=1).min()) if sim.shape[0] else 0
        v.check_int(fn, "k", k, low=1, high=fewest)


class TwoViewCandidates(NamedTuple):
    """Normalised anchors ``[z1; z2]`` and the candidate rows they are scored against.

    ``anchors``: ``(..., 2n, D)``; ``candidates``: ``(..., 2N, D)``, the anchors themselves
    (N = n) or, gathered over W ranks, the rows ``[Z1; Z2]`` of the global batch (N = W n,
    ranks in order within each view).  ``own[i]`` and ``positive[i]`` are the candidate
    columns of anchor ``i`` itself and of its other view.
    """

    anchors: Tensor
    candidates: Tensor
    own: Tensor
    positive: Tensor


def two_view_candidates(
    z1: Tensor, z2: Tensor, eps: float, *, gathered: bool = False, fn: str = "two_view"
) -> TwoViewCandidates:
    """Normalise ``[z1; z2]`` (in the compute dtype), gather the candidates if asked.

    ``z1``, ``z2``: ``(..., n, D)`` with any leading (head) dimensions; ``fn`` names the
    caller in error messages (:func:`amcl_lab.distributed.gather`).
    """
    n = z1.shape[-2]
    anchors = l2_normalize(torch.cat([z1, z2], dim=-2).to(v.compute_dtype(z1, z2)), eps)
    candidates, offset, total = anchors, 0, n
    if gathered:
        views = distributed.gather(anchors.unflatten(-2, (2, n)), dim=-2, fn=fn, name="z1/z2")
        candidates, offset, total = views.flatten(-3, -2), distributed.rank() * n, views.shape[-2]
    rows = torch.arange(2 * n, device=anchors.device)
    sample, view = rows % n + offset, rows // n
    return TwoViewCandidates(
        anchors, candidates, view * total + sample, (1 - view) * total + sample
    )


def two_view_similarities(
    z1: Tensor, z2: Tensor, eps: float, *, gathered: bool = False, fn: str = "two_view"
) -> TwoViewSimilarities:
    """:class:`TwoViewSimilarities` of :func:`two_view_candidates`'s anchors and candidates."""
    rows = two_view_candidates(z1, z2, eps, gathered=gathered, fn=fn)
    columns = torch.arange(rows.candidates.shape[-2], device=rows.own.device)
    negatives = (columns[None, :] != rows.own[:, None]) & (
        columns[None, :] != rows.positive[:, None]
    )
    return TwoViewSimilarities(
        rows.anchors @ rows.candidates.transpose(-1, -2), rows.positive, negatives
    )


def check_supcon_inputs(
    fn: str,
    features: Tensor,
    labels: Tensor | None,
    temperature: float | Tensor,
    *,
    variant: str,
    contrast_mode: str,
    reduction: str,
    eps: float,
) -> None:
    """The input checks of SupCon (the reference and the fast path raise the same errors)."""
    v.check_tensor(fn, "features", features, ndim=3)
    n, views, _ = features.shape
    if views < 1 or n < 1:
        raise ValueError(
            f"{fn}: features must have shape (N, V, D) with N >= 1 and V >= 1, "
            f"got {tuple(features.shape)}"
        )
    if n * views < 2:
        raise ValueError(
            f"{fn}: features must hold at least 2 items (N * V >= 2), got shape "
            f"{tuple(features.shape)}"
        )
    if labels is not None:
        v.check_labels(fn, labels, n)
        v.check_same_device(fn, [("features", features), ("labels", labels)])
    v.check_temperature(fn, temperature)
    v.check_choice(fn, "variant", variant, ("out", "in"))
    v.check_choice(fn, "contrast_mode", contrast_mode, ("all", "one"))
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)


class SupConItems(NamedTuple):
    """The items of a multi-viewed batch and which of them are this call's anchors.

    ``z``: ``(V M, D)`` normalised items, view-major (item ``r`` is view ``r // M`` of sample
    ``r % M``), M the samples of the batch (N, or W n gathered over ranks); ``labels``:
    ``(V M,)`` item labels; ``anchors``: ``(A,)`` item index of each anchor: every view of the
    local samples (``contrast_mode="all"``, view-major) or view 0 only (``"one"``).
    """

    z: Tensor
    labels: Tensor
    anchors: Tensor


def supcon_items(
    features: Tensor,
    labels: Tensor | None,
    eps: float,
    *,
    one_view: bool,
    gathered: bool = False,
    fn: str = "supcon",
) -> SupConItems:
    """Normalised items of ``features`` ``(n, V, D)`` (gathered if asked) and the anchors.

    ``labels=None`` gives every sample its own class; gathered, the ids are unique over the
    global batch (not a per-rank ``arange``, which would collide across ranks).
    """
    n, views, _ = features.shape
    local = l2_normalize(features.to(v.compute_dtype(features)), eps)
    samples, offset = local, 0
    if gathered:  # the global batch; this rank holds samples offset, ..., offset + n - 1
        samples, offset = distributed.gather(local, fn=fn, name="features"), distributed.rank() * n
        if labels is not None:
            labels = distributed.gather(labels, fn=fn, name="labels")
    total = samples.shape[0]
    if labels is None:
        labels = torch.arange(total, device=features.device)
    sample = torch.arange(n, device=features.device) + offset
    anchor_views = torch.arange(1 if one_view else views, device=features.device)
    return SupConItems(
        samples.transpose(0, 1).reshape(views * total, -1),
        labels.repeat(views),
        (anchor_views[:, None] * total + sample[None, :]).reshape(-1),
    )


def reduce_anchors(
    losses: Tensor, reduction: str, *, gathered: bool, count: Tensor | None = None
) -> Tensor:
    """Apply ``reduction`` to per-anchor ``losses``, over the anchors of every rank if gathered.

    ``"mean"`` divides the sum by ``count``, the number of anchors in the mean (over all ranks
    when gathered); by default every anchor counts.  Gathered, ``"sum"`` and ``"mean"`` are
    the single-process values on the global batch, identical on every rank: the local sums
    are added over ranks differentiably (:mod:`amcl_lab.distributed`).  ``"none"`` keeps the
    local losses.  Ungathered without ``count`` this is :func:`amcl_lab._validation.reduce`.
    """
    if not gathered and count is None:
        return v.reduce(losses, reduction)
    if reduction == "none":
        return losses
    total = distributed.all_reduce_sum(losses.sum()) if gathered else losses.sum()
    if reduction == "sum":
        return total
    if count is None:
        return total / (losses.numel() * distributed.world_size())
    return total / count.to(total.dtype)
