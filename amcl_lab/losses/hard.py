"""The explicit hard-negative loss and the "simple" loss of Wang & Liu (CVPR 2021)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validation as v
from ._common import (
    NORM_EPS,
    anchor_halves,
    check_hard_negative_args,
    check_two_views,
    exclude_,
    joined,
    two_view_candidates,
    two_view_similarities,
)

__all__ = ["TIE_ULPS", "hard_contrastive", "hard_negative_mask", "simple_contrastive"]

#: Similarities closer than this many machine epsilons to the selection threshold are ties.
TIE_ULPS = 64


def hard_negative_mask(sim: Tensor, negatives: Tensor, k: int | None) -> Tensor:
    r"""Per-row mask of the hard negatives: those with similarity >= the row's k-th largest.

    This is the informative interval :math:`[s_\alpha^{(i)}, 1]` of Eq. (8) in [Wang2021]_
    with the upper-alpha quantile written as a count, ``k = alpha * #negatives``.  Ties at the
    threshold are all kept (Eq. (9) uses ">="), so a row may keep more than ``k`` negatives;
    similarities within :data:`TIE_ULPS` machine epsilons of the threshold count as tied, so
    that mathematically equal similarities are selected alike whatever their rounding.  The
    selection uses the raw similarities and carries no gradient.

    Args:
        sim: ``(A, M)`` similarities.
        negatives: ``(A, M)`` boolean mask of each row's negatives (the same count per row).
        k: number of hardest negatives to keep, or ``None`` for all of them.

    Returns:
        A boolean ``(A, M)`` mask, a subset of ``negatives``.

    Raises:
        ValueError: ``sim`` not a finite 2-D floating tensor, ``negatives`` not a bool mask
            of its shape, ``k`` outside ``[1, fewest negatives of a row]``.
    """
    check_hard_negative_args("hard_negative_mask", sim, negatives, k)
    if k is None:
        return negatives
    scores = sim.detach().masked_fill(~negatives, float("-inf"))
    tie = TIE_ULPS * torch.finfo(scores.dtype).eps  # similarities lie in [-1, 1]
    threshold = scores.topk(k, dim=1).values[:, -1:] - tie
    return negatives & (scores >= threshold)


def _check_k(fn: str, k: int | None, n_negatives: int) -> None:
    if k is not None:
        v.check_int(fn, "k", k, low=1, high=n_negatives)


def hard_contrastive(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    *,
    k: int | None = None,
    reduction: str = "mean",
    eps: float = NORM_EPS,
) -> Tensor:
    r"""Hard contrastive loss: NT-Xent whose denominator keeps only the k hardest negatives.

    For anchor :math:`i` of the stacked views (as in :func:`~amcl_lab.losses.nt_xent`), let
    :math:`H(i)` be its negatives with similarity at least the k-th largest
    (:func:`hard_negative_mask`).  Then

    .. math::

        \ell_i = -\frac{s_{i,p(i)}}{\tau} + \log\Big(e^{s_{i,p(i)}/\tau}
                 + \sum_{k \in H(i)} e^{s_{ik}/\tau}\Big).

    Implements Eq. (9) of [Wang2021]_; the paper's upper alpha-quantile corresponds to
    ``k = alpha * (2N - 2)`` here.  ``k=None`` (all negatives) equals ``nt_xent``, and
    :math:`\ell_i` never exceeds the NT-Xent term.  Excluded negatives get zero gradient.

    Args:
        z1: ``(N, D)`` first view, N >= 2.
        z2: ``(N, D)`` second view.
        temperature: finite ``tau > 0``.
        k: number of hardest negatives per anchor, in ``[1, 2N - 2]``, or ``None``.
        reduction: ``"mean"`` over 2N anchors, ``"sum"`` or ``"none"``.
        eps: floor on the row norm used for normalisation.

    Returns:
        A scalar or the ``(2N,)`` per-anchor losses.

    Raises:
        ValueError: as for ``nt_xent``, or ``k`` outside ``[1, 2N - 2]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.5 * torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> round(float(hard_contrastive(z1, z2, 0.5, k=3)), 6)
        0.695358

    References:
        .. [Wang2021] F. Wang, H. Liu, "Understanding the Behaviour of Contrastive Loss",
           CVPR 2021, arXiv:2012.09740.

    .. note:: Documented choice.
        Ties at the selection threshold are all kept.  The negatives are the 2N - 2 other
        rows of the batch; the paper draws them from a memory bank of the training set.
    """
    fn = "hard_contrastive"
    check_two_views(fn, z1, z2, eps)
    v.check_temperature(fn, temperature)
    v.check_reduction(fn, reduction)
    _check_k(fn, k, 2 * z1.shape[0] - 2)

    rows = two_view_candidates(z1, z2, eps)
    scaled = rows.anchors / temperature  # 1/tau folded into the anchors, before the product
    # the similarities are ranked on the logits, sim / tau: ties are TIE_ULPS eps / tau wide
    tau = float(temperature.detach()) if isinstance(temperature, Tensor) else float(temperature)
    tie = TIE_ULPS * torch.finfo(scaled.dtype).eps / tau
    losses = []
    for half in anchor_halves(scaled.shape[0], scaled.shape[0]):
        logits = exclude_(scaled[half] @ rows.anchors.T, rows.own[half, None])
        if k is not None:  # keep the positive and the negatives >= the k-th largest
            with torch.no_grad():  # set the others to -inf: exact, see exclude_
                scores = exclude_(logits.clone(), rows.positive[half, None])
                threshold = scores.topk(k, dim=1).values[:, -1:] - tie
                scores.scatter_(1, rows.positive[half, None], math.inf)
                logits.masked_fill_(scores < threshold, -math.inf)
        losses.append(F.cross_entropy(logits, rows.positive[half], reduction="none"))
    return v.reduce(joined(losses), reduction)


def simple_contrastive(
    z1: Tensor,
    z2: Tensor,
    *,
    lam: float | None = None,
    k: int | None = None,
    reduction: str = "mean",
    eps: float = NORM_EPS,
) -> Tensor:
    r"""The simple (large-temperature) contrastive loss, optionally on the k hardest negatives.

    .. math::

        \ell_i = -s_{i,p(i)} + \lambda_i \sum_{j \in H(i)} s_{ij}

    with :math:`H(i)` all 2N - 2 negatives (``k=None``) or the k hardest
    (:func:`hard_negative_mask`, "HardSimple").  Implements Eq. (3) of [Wang2021]_.  Its
    gradient with respect to each negative similarity is the constant :math:`\lambda_i`: the
    loss is not hardness-aware.

    Args:
        z1: ``(N, D)`` first view, N >= 2.
        z2: ``(N, D)`` second view.
        lam: weight of the negative term, >= 0.  ``None`` (default) uses
            :math:`\lambda_i = 1/|H(i)|`, the mean over the selected negatives, which is the
            value the tau -> infinity limit of NT-Xent gives (``1/(2N - 2)`` for ``k=None``).
        k: number of hardest negatives per anchor, in ``[1, 2N - 2]``, or ``None``.
        reduction: ``"mean"`` over 2N anchors, ``"sum"`` or ``"none"``.
        eps: floor on the row norm used for normalisation.

    Returns:
        A scalar or the ``(2N,)`` per-anchor losses.

    Raises:
        ValueError: as for ``nt_xent``, a negative ``lam``, or ``k`` out of range.

    Example:
        >>> import torch
        >>> z = torch.ones(4, 3, dtype=torch.float64)
        >>> float(simple_contrastive(z, z))  # -1 + mean of six similarities of 1
        0.0

    .. note:: Documented choice.
        The paper does not state lambda; ``None`` takes the mean over the selected negatives,
        which makes ``(M tau / (M - 1)) (nt_xent - log M)`` converge to this loss as
        tau -> infinity (M = 2N - 1 denominator terms).
    """
    fn = "simple_contrastive"
    check_two_views(fn, z1, z2, eps)
    v.check_reduction(fn, reduction)
    if lam is not None:
        v.check_positive_float(fn, "lam", lam, allow_zero=True)
    _check_k(fn, k, 2 * z1.shape[0] - 2)

    pairs = two_view_similarities(z1, z2, eps)
    rows = torch.arange(pairs.sim.shape[0], device=pairs.sim.device)
    selected = hard_negative_mask(pairs.sim, pairs.negatives, k)
    negative_sum = pairs.sim.masked_fill(~selected, 0.0).sum(dim=1)
    weight = 1.0 / selected.sum(dim=1).to(pairs.sim.dtype) if lam is None else lam
    losses = -pairs.sim[rows, pairs.positive] + weight * negative_sum
    return v.reduce(losses, reduction)
