"""NT-Xent (SimCLR) and InfoNCE (MoCo) reference losses.

Both losses work on cosine similarities of L2-normalised embeddings divided by a temperature
and are evaluated with a row-wise log-sum-exp, so they stay finite for temperatures down to
1e-3 in float32.  Conventions (which anchors, which candidates, how the mean is taken) are
explicit arguments; ``docs/conventions.md``, "How peer libraries differ", lists how lightly,
pytorch-metric-learning and other implementations differ.

They are written to be as fast as the plain code allows: 1/tau multiplies the normalised
rows before the matrix product, the excluded entries are set to -inf in place
(:func:`._common.exclude_`), no boolean mask of the matrix is built, and the logits are
formed one half of the anchors at a time (:func:`._common.anchor_halves`);
``benchmarks/bench_losses.py`` compares them with a plain masked cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validation as v
from .. import distributed
from ._common import (
    NORM_EPS,
    anchor_halves,
    check_two_views,
    exclude_,
    joined,
    l2_normalize,
    reduce_anchors,
    two_view_candidates,
)

__all__ = ["info_nce", "nt_xent"]


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    *,
    decoupled: bool = False,
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""Normalised-temperature cross-entropy of SimCLR over all 2N anchors.

    The two views are stacked into :math:`z = [z_1; z_2]` with 2N rows; row :math:`i` has its
    positive :math:`p(i) = i \pm N` (the other view of the same sample) and the 2N - 2 other
    rows as negatives.  With cosine similarity
    :math:`s_{ij} = \hat z_i^\top \hat z_j`, :math:`\hat z = z / \max(\lVert z\rVert, \epsilon)`:

    .. math::

        \ell_i = -\frac{s_{i,p(i)}}{\tau}
                 + \log \sum_{k \ne i} \exp\!\Big(\frac{s_{ik}}{\tau}\Big)

    (``decoupled=False``: the positive is in the denominator, InfoNCE form), or with the sum
    over :math:`k \notin \{i, p(i)\}` (``decoupled=True``: the positive is left out of the
    denominator, the form the AMCL paper writes in its Table 1 and DCL uses).  :math:`\tau` is
    ``temperature``.  Implements Eq. (1) of [Chen2020]_ (SimCLR's NT-Xent, mean over all 2N
    anchors) and Eq. (1) of [Wang2021]_ with a shared batch as the negative set.

    Args:
        z1: ``(N, D)`` embeddings of the first view, any floating dtype; N >= 2, D >= 1.
        z2: ``(N, D)`` embeddings of the second view; row ``i`` is the positive of
            ``z1[i]``.
        temperature: finite ``tau > 0`` (float or 0-d tensor, may require grad).
        decoupled: drop the positive from the denominator (DCL form).
        reduction: ``"mean"`` over the 2N anchors, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation; a zero row becomes the zero
            vector (similarity 0 to everything) with finite value and gradient.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard of a global batch of N = W n samples: the local 2n anchors are
            scored against the 2N rows of every rank, and ``"mean"``/``"sum"`` return the
            loss of the global batch on every rank, with gradient W times the global one on
            the local shard (conventions in :mod:`amcl_lab.distributed`).  Without a process
            group (or W = 1) the flag changes nothing.

    Returns:
        A scalar, or for ``reduction="none"`` the ``(2N,)`` per-anchor losses ordered
        ``[anchors of z1; anchors of z2]`` (the ``(2n,)`` local anchors when gathered).
        float16/bfloat16 inputs are computed, and returned, in float32.

    Raises:
        ValueError: shape mismatch, N < 2, NaN/inf inputs, a non-positive or non-finite
            temperature, an unknown reduction, or (gathered, on every rank) shards of
            different sizes.

    Example:
        >>> import torch
        >>> z = torch.ones(4, 3, dtype=torch.float64)  # every cosine is 1
        >>> round(float(nt_xent(z, z)), 10)  # log(2N - 1)
        1.9459101491
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> round(float(nt_xent(z1, z2, temperature=0.2)), 6)
        0.182105

    References:
        .. [Chen2020] T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple Framework for
           Contrastive Learning of Visual Representations", ICML 2020, arXiv:2002.05709.
        .. [Wang2021] F. Wang, H. Liu, "Understanding the Behaviour of Contrastive Loss",
           CVPR 2021, arXiv:2012.09740.

    .. note:: Documented choice.
        The mean runs over all 2N anchors (SimCLR, lightly, PML); Google's TF SimCLR returns
        twice this value.  The positive is in the denominator by default (every peer does
        this); ``decoupled=True`` is lightly's ``DCLLoss`` with unit weights.
    """
    fn = "nt_xent"
    check_two_views(fn, z1, z2, eps)
    v.check_bool(fn, "decoupled", decoupled)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    v.check_temperature(fn, temperature)
    v.check_reduction(fn, reduction)

    gathered = gather_distributed and distributed.is_active()
    rows = two_view_candidates(z1, z2, eps, gathered=gathered, fn=fn)
    # 1/tau is folded into the 2n x D anchors, before the product, instead of dividing the
    # 2n x 2N similarities after it
    scaled = rows.anchors / temperature
    # The anchor itself is never a candidate; its positive is one unless decoupled.
    excluded = torch.stack([rows.own, rows.positive], 1) if decoupled else rows.own[:, None]
    losses = []
    for half in anchor_halves(scaled.shape[0], rows.candidates.shape[0]):
        logits = exclude_(scaled[half] @ rows.candidates.T, excluded[half])
        if decoupled:  # the positive logit as a dot product of two rows
            positive = (scaled[half] * rows.candidates[rows.positive[half]]).sum(dim=1)
            losses.append(torch.logsumexp(logits, dim=1) - positive)
        else:  # log-sum-exp over the candidates minus the positive logit
            losses.append(F.cross_entropy(logits, rows.positive[half], reduction="none"))
    return reduce_anchors(joined(losses), reduction, gathered=gathered)


def info_nce(
    query: Tensor,
    key: Tensor,
    queue: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    *,
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""One-directional InfoNCE of MoCo: each query against its key and a queue of negatives.

    With cosine similarities of normalised rows, query :math:`q_i`, its key :math:`k_i` and the
    queue rows :math:`n_1..n_K`:

    .. math::

        \ell_i = -\frac{\hat q_i^\top \hat k_i}{\tau}
                 + \log\Big( e^{\hat q_i^\top \hat k_i/\tau}
                 + \sum_{j=1}^{K} e^{\hat q_i^\top \hat n_j/\tau} \Big)

    Implements Eq. (1) of [He2020]_ (the (K+1)-way softmax of MoCo, target 0) with cosine
    similarities.  Without a queue (``queue=None``) the other keys of the batch are the
    negatives: :math:`\ell_i = -s_{ii}/\tau + \log\sum_j e^{s_{ij}/\tau}` with
    :math:`s_{ij} = \hat q_i^\top \hat k_j` (the one-directional half of CLIP / PML's
    ``SelfSupervisedLoss(symmetric=False)``).

    Args:
        query: ``(N, D)`` anchors, N >= 1 (N >= 2 without a queue).
        key: ``(N, D)``; row ``i`` is the positive of ``query[i]``.
        queue: ``(K, D)`` shared negatives, K >= 1, or ``None`` for in-batch negatives.  It is
            read, never modified; its rows are normalised like the others (a no-op for the
            unit-norm keys MoCo stores).
        temperature: finite ``tau > 0``.
        reduction: ``"mean"`` over the N queries, ``"sum"`` or ``"none"``.
        eps: floor on the row norm used for normalisation.
        gather_distributed: in-batch negatives only (``queue=None``): the local queries are
            scored against the keys of every rank (CLIP / MoCo v3 style), with the
            conventions of :mod:`amcl_lab.distributed`.  With a queue the queue is the
            negative set; fill it with the keys of every rank in the training loop (MoCo
            enqueues all-gathered keys) instead.

    Returns:
        A scalar, or the ``(N,)`` per-query losses for ``reduction="none"`` (local queries
        when gathered).

    Raises:
        ValueError: shape or device mismatch, too small a batch, NaN/inf inputs, a bad
            temperature or reduction, ``gather_distributed`` with a queue, or (gathered)
            shards of different sizes.

    Example:
        >>> import torch
        >>> q = torch.ones(2, 3, dtype=torch.float64)
        >>> round(float(info_nce(q, q, queue=torch.ones(5, 3, dtype=torch.float64))), 10)
        1.7917594692
        >>> g = torch.Generator().manual_seed(0)
        >>> q = torch.randn(4, 8, generator=g, dtype=torch.float64)
        >>> k = q + 0.5 * torch.randn(4, 8, generator=g, dtype=torch.float64)
        >>> bank = torch.randn(16, 8, generator=g, dtype=torch.float64)
        >>> round(float(info_nce(q, k, bank, temperature=0.2)), 6)
        0.836736

    References:
        .. [He2020] K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, "Momentum Contrast for
           Unsupervised Visual Representation Learning", CVPR 2020, arXiv:1911.05722.

    .. note:: Documented choice.
        Keys do not act as negatives for other queries when a queue is given (MoCo); the
        first example shows the closed form log(K + 1) for collinear inputs.
    """
    fn = "info_nce"
    v.check_tensor(fn, "query", query, ndim=2, min_rows=1 if queue is not None else 2)
    v.check_tensor(fn, "key", key, ndim=2)
    v.check_same_shape(fn, "query", query, "key", key)
    tensors = [("query", query), ("key", key)]
    if queue is not None:
        v.check_tensor(fn, "queue", queue, ndim=2, min_rows=1)
        if queue.shape[1] != query.shape[1]:
            raise ValueError(
                f"{fn}: queue must have the feature dimension of query ({query.shape[1]}), "
                f"got shape {tuple(queue.shape)}"
            )
        tensors.append(("queue", queue))
    v.check_same_device(fn, tensors)
    temperature = v.check_temperature(fn, temperature)  # a 0-d tensor or a float
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    if gather_distributed and queue is not None:
        raise ValueError(
            f"{fn}: gather_distributed applies to in-batch negatives (queue=None); with a queue "
            "the queue is the negative set - enqueue the keys of every rank instead"
        )
    gathered = gather_distributed and distributed.is_active()

    dtype = v.compute_dtype(*(t for _, t in tensors))
    q = l2_normalize(query.to(dtype), eps) / temperature  # 1/tau folded into the queries
    k = l2_normalize(key.to(dtype), eps)
    if queue is None:
        keys = distributed.gather(k, fn=fn, name="key") if gathered else k
        # query i's key is column i of its own shard (ranks are concatenated in order)
        offset = distributed.rank() * q.shape[0] if gathered else 0
        target = torch.arange(offset, offset + q.shape[0], device=q.device)
        losses = joined(
            [
                F.cross_entropy(q[half] @ keys.T, target[half], reduction="none")
                for half in anchor_halves(q.shape[0], keys.shape[0])
            ]
        )
    else:  # the (K + 1)-way softmax of MoCo, the positive in column 0
        negatives = l2_normalize(queue.to(dtype), eps)
        logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1)
        losses = F.cross_entropy(
            logits, logits.new_zeros(q.shape[0], dtype=torch.long), reduction="none"
        )
    return reduce_anchors(losses, reduction, gathered=gathered)
