"""Supervised contrastive loss (Khosla et al. 2020), both the L_out and L_in forms."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import _validation as v
from .. import distributed
from ._common import (
    NORM_EPS,
    anchor_halves,
    check_supcon_inputs,
    exclude_,
    joined,
    reduce_anchors,
    supcon_items,
)

__all__ = ["supcon"]


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    *,
    variant: str = "out",
    contrast_mode: str = "all",
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""Supervised contrastive loss over a multi-viewed batch.

    ``features`` holds V views of N samples.  Every view is an item; for an anchor item
    :math:`i`, :math:`A(i)` is every other item and :math:`P(i) \subset A(i)` the items with the
    same label (its other views and every view of same-label samples).  With cosine
    similarities :math:`s_{ia}` of normalised features and
    :math:`\log p_{ia} = s_{ia}/\tau - \log\sum_{a' \in A(i)} e^{s_{ia'}/\tau}`:

    .. math::

        L_{out,i} = -\frac{1}{|P(i)|}\sum_{p \in P(i)} \log p_{ip},
        \qquad
        L_{in,i} = -\log\Big(\frac{1}{|P(i)|}\sum_{p \in P(i)} p_{ip}\Big).

    ``variant="out"`` implements Eq. (2) and ``variant="in"`` Eq. (3) of [Khosla2020]_;
    :math:`L_{in,i} \le L_{out,i}` by Jensen's inequality.  ``labels=None`` gives every sample
    its own class, which with V = 2 is exactly :func:`~amcl_lab.losses.nt_xent`.

    Args:
        features: ``(N, V, D)`` features, N >= 1, V >= 1, N * V >= 2; normalised inside.
        labels: ``(N,)`` integer class labels, or ``None`` (each sample its own class).
        temperature: finite ``tau > 0``.  There is no hidden ``base_temperature`` factor.
        variant: ``"out"`` (default, the form the paper adopts) or ``"in"``.
        contrast_mode: ``"all"`` (every item is an anchor) or ``"one"`` (only view 0 items
            are anchors; every item is still a candidate).
        reduction: ``"mean"`` over anchors that have a positive, ``"sum"`` over them, or
            ``"none"``.
        eps: floor on the row norm used for normalisation.
        gather_distributed: under an initialised process group, ``features`` (and
            ``labels``) are this rank's shard of a global batch of W n samples: the local
            anchors are scored against the items of every rank, labels are gathered too
            (``labels=None`` gives globally unique ids), and ``"mean"``/``"sum"`` return
            the loss of the global batch on every rank (the mean over the anchors of every
            rank that have a positive), with the gradient conventions of
            :mod:`amcl_lab.distributed`.  No effect without a process group.

    Returns:
        A scalar, or for ``reduction="none"`` the per-anchor losses of shape ``(N, V)``
        (``"all"``) or ``(N,)`` (``"one"``), indexed like ``features`` (local anchors when
        gathered); anchors without a positive hold 0 there.

    Raises:
        ValueError: wrong shapes, fewer than two items, labels of the wrong length or dtype,
            NaN/inf features, a bad temperature, no anchor (of any rank) having any
            positive, or (gathered) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> f = torch.randn(6, 2, 5, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> round(float(supcon(f, y, temperature=0.5)), 6)
        2.808399
        >>> round(float(supcon(f, y, temperature=0.5, variant="in")), 6)
        2.522354

    References:
        .. [Khosla2020] P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
           arXiv:2004.11362.

    .. note:: Documented choice.
        Anchors without any positive (possible only with V = 1 and a singleton class) are
        excluded from the mean, like pytorch-metric-learning and Graf et al.'s anchor set;
        the HobbitLong reference instead counts them as 0 in the mean.  If no anchor has a
        positive the loss is undefined and a ``ValueError`` is raised.  The paper sums over
        anchors; the default here is the mean, like every public implementation.
    """
    fn = "supcon"
    v.check_bool(fn, "gather_distributed", gather_distributed)
    check_supcon_inputs(
        fn,
        features,
        labels,
        temperature,
        variant=variant,
        contrast_mode=contrast_mode,
        reduction=reduction,
        eps=eps,
    )
    n, views, _ = features.shape

    gathered = gather_distributed and distributed.is_active()
    items = supcon_items(
        features, labels, eps, one_view=contrast_mode == "one", gathered=gathered, fn=fn
    )
    z, own = items.z, items.anchors  # an anchor's own column is its item index
    # |P(i)|: the other items with the anchor's label
    _, classes, counts = torch.unique(items.labels, return_inverse=True, return_counts=True)
    n_pos = counts[classes[own]] - 1
    has_pos = n_pos > 0
    with_pos = distributed.all_reduce_sum(has_pos.sum()) if gathered else has_pos.sum()
    if not bool(with_pos > 0):
        raise ValueError(
            f"{fn}: no anchor has a positive (every label is unique and V = 1); "
            "the loss is undefined - pass V >= 2 views or labels with repeated classes"
        )
    safe_count = n_pos.clamp_min(1).to(z.dtype)
    anchors = z[own] / temperature  # 1/tau folded into the anchors, before the product
    if variant == "out":
        # sum of the positive logits: sum_p a_i . z_p / tau = a_i . (S_y - z_i) / tau, with
        # S_y the sum of the items of class y, so no mask of the positives is needed
        class_sums = z.new_zeros(counts.shape[0], z.shape[1]).index_add(0, classes, z)
        positive = (anchors * (class_sums[classes[own]] - z[own])).sum(dim=1) / safe_count
    parts = []
    for half in anchor_halves(own.shape[0], z.shape[0]):
        # log-sum-exp over A(i), every item but the anchor itself
        logits = exclude_(anchors[half] @ z.T, own[half, None])
        lse = torch.logsumexp(logits, dim=1)
        if variant == "out":
            parts.append(lse - positive[half])
        else:
            # log-sum-exp over P(i); an anchor without positives keeps every candidate (it
            # is left out below) so that its row stays finite
            same = items.labels[own[half], None] == items.labels[None, :]
            same |= ~has_pos[half, None]
            lse_pos = torch.logsumexp(logits.masked_fill(~same, -math.inf), dim=1)
            parts.append(lse - lse_pos + torch.log(safe_count[half]))
    losses = torch.where(has_pos, joined(parts), 0.0)
    if reduction == "none":
        return losses.reshape(views, n).T if contrast_mode == "all" else losses
    return reduce_anchors(losses, reduction, gathered=gathered, count=with_pos)
