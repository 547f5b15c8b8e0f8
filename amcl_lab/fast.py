r"""Memory-efficient NT-Xent and SupCon: blockwise log-sum-exp with a custom backward.

The references in :mod:`amcl_lab.losses` build the full :math:`M \times M` similarity matrix
(M = 2N items for NT-Xent), which at N = 16384 is 4.3 GB in float32 per copy.  The functions
here take the same arguments and return the same values, but stream over blocks of anchor
rows: the forward pass keeps one number per anchor (the log-sum-exp of its denominator),
and the backward pass recomputes each block of logits to form its gradient.  Peak memory is
O(block x M + M x D) instead of O(M^2).  Without gathering the logits are symmetric and the
backward pass needs one matrix product per block besides the recomputation (three products
in all, against the three of a dense autograd cross-entropy); when one block holds the whole
matrix it is kept from the forward pass and nothing is recomputed (two products).

Structure.  The only quadratic quantity of both losses is a row-wise log-sum-exp of logits
:math:`l_{ik} = \hat a_i^\top \hat c_k / \tau` between **anchors** (rows ``a``, ``(A, D)``)
and **candidates** (rows ``c``, ``(M, D)``), over a set :math:`K(i)` of candidates:

.. math::

    \operatorname{lse}_i = \log \sum_{k \in K(i)} e^{l_{ik}},
    \qquad
    \frac{\partial \operatorname{lse}_i}{\partial \hat a_i}
        = \frac{1}{\tau}\sum_{k \in K(i)} \pi_{ik}\, \hat c_k,
    \quad \pi_{ik} = e^{l_{ik} - \operatorname{lse}_i}.

:class:`_BlockwiseLogSumExp` computes it for ``block`` anchors at a time: the forward pass
keeps one number per anchor, the backward pass recomputes each block of logits and turns it
into the gradient with one matrix product (symmetric logits) or two.  :math:`K(i)` is every
candidate except the columns listed in ``excluded[i]`` (the anchor itself; for decoupled
NT-Xent also its positive), optionally restricted to the candidates with the anchor's
label.  The positive terms are linear in the logits and need no matrix at all:
:math:`\sum_{p \in P(i)} l_{ip} = \hat a_i^\top (S_{y_i} - \hat c_i) / \tau` with
:math:`S_y` the sum of the candidates of class :math:`y`, so they are ordinary autograd
expressions of O(M x D) cost.  Without distribution anchors and candidates are the same
normalised rows; with ``gather_distributed=True`` the candidates are the rows of every
process (:mod:`amcl_lab.distributed`): the anchors stay local, the excluded columns become
global indices, and ``grad_c`` flows back to each shard through the gather's all-reduce.

The oracle (:func:`amcl_lab.oracle.check`) validates both functions against the references
in the test suite; ``benchmarks/bench_losses.py`` measures time and peak memory.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from . import _validation as v
from . import distributed
from .losses._common import (
    NORM_EPS,
    check_supcon_inputs,
    check_two_views,
    reduce_anchors,
    supcon_items,
    two_view_candidates,
)

__all__ = ["BLOCK_ELEMENTS", "nt_xent", "supcon"]

#: Default cap on one block of logits, rows x candidates (2**24 entries: 64 MiB in float32).
BLOCK_ELEMENTS = 2**24


def _block_rows(block_size: int | None, anchors: int, candidates: int) -> int:
    if block_size is None:
        return max(1, min(anchors, BLOCK_ELEMENTS // max(candidates, 1)))
    return block_size


class _BlockwiseLogSumExp(torch.autograd.Function):
    r"""``lse_i`` over the candidates of anchor ``i`` (module docstring), streamed in blocks.

    Two buffers of one block each are allocated per pass and reused by every block.  When
    one block holds every logit (the default for up to 2^24 logits, N <= 2048 for NT-Xent
    at d = 128) the forward pass keeps it and the backward pass starts from it: the dense
    kernel, two matrix products in all.  Otherwise the backward pass recomputes each block.

    ``symmetric``: the anchors are the candidates (the same rows in the same order) and the
    candidate sets are symmetric (k in K(i) iff i in K(k)), as for NT-Xent and SupCon
    without gathering.  The logits are then symmetric, :math:`l_{ik} = l_{ki}`, so the
    softmax weight of row k at column i is :math:`\pi_{ki} = e^{l_{ik} - lse_k}`, computed
    from the same block as :math:`\pi_{ik}`, and the gradient of every row is one product
    :math:`W z / \tau` with :math:`W_{ik} = g_i \pi_{ik} + g_k \pi_{ki}` instead of the
    two products of the general case.
    """

    @staticmethod
    def forward(
        ctx: Any,
        anchors: Tensor,
        candidates: Tensor,
        inv_tau: Tensor,
        excluded: Tensor,
        labels: tuple[Tensor, Tensor] | None,
        rows: int,
        fn: str,
        symmetric: bool,
    ) -> Tensor:
        count = anchors.shape[0]
        scaled = anchors * inv_tau  # 1/tau scales the anchors before the product
        block = anchors.new_empty(min(rows, count), candidates.shape[0])
        scratch = torch.empty_like(block)
        lse = anchors.new_empty(count)
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            logits = _block_logits(scaled, candidates, excluded, labels, start, stop, block)
            lse[start:stop] = _row_logsumexp(logits, scratch[: stop - start])
        ctx.save_for_backward(anchors, candidates, inv_tau, excluded, lse)
        ctx.labels, ctx.rows, ctx.fn, ctx.symmetric = labels, rows, fn, symmetric
        ctx.block = block if rows >= count else None  # the dense case: every logit
        return lse

    @staticmethod
    def backward(ctx: Any, grad_lse: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # backward(create_graph=True), or autograd.grad(...)
            raise RuntimeError(
                f"{ctx.fn}: double backward (create_graph=True) is not supported: the "
                "blockwise log-sum-exp has a hand-written backward pass that is not itself "
                f"differentiable, so second derivatives would be wrong; use the reference "
                f"amcl_lab.losses.{ctx.fn.split('.')[-1]} for Hessian-vector products"
            )
        anchors, candidates, inv_tau, excluded, lse = ctx.saved_tensors
        # an empty candidate set has lse = -inf and a constant loss: no gradient
        dead = torch.isinf(lse)
        g = grad_lse.masked_fill(dead, 0.0)
        lse = lse.masked_fill(dead, 0.0)
        count, rows = anchors.shape[0], ctx.rows
        scaled = anchors * inv_tau
        block = ctx.block
        if block is None:
            block = anchors.new_empty(min(rows, count), candidates.shape[0])
        scratch = torch.empty_like(block)
        grad_a = torch.empty_like(anchors)  # sum_k W_ik c_k, scaled by 1/tau at the end
        grad_c = None if ctx.symmetric else torch.zeros_like(candidates)
        grad_inv_tau = anchors.new_zeros(())
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            logits = block[: stop - start]
            if ctx.block is None:
                logits = _block_logits(scaled, candidates, excluded, ctx.labels, start, stop, block)
            g_rows = g[start:stop, None]
            if ctx.symmetric:  # W_ik = g_i pi_ik + g_k pi_ki, one product
                other = torch.sub(logits, lse[None, :], out=scratch[: stop - start])
                other.exp_().mul_(g[None, :])
                weights = logits.sub_(lse[start:stop, None]).exp_().mul_(g_rows).add_(other)
                torch.mm(weights, candidates, out=grad_a[start:stop])
            else:  # pi_ik for the anchors' and the candidates' gradients
                weights = logits.sub_(lse[start:stop, None]).exp_()
                mixed = torch.mm(weights, candidates, out=grad_a[start:stop])
                grad_inv_tau += (anchors[start:stop] * mixed).sum(dim=1).dot(g[start:stop])
                mixed.mul_(g_rows)
                grad_c.addmm_(weights.T, scaled[start:stop] * g_rows)
        if ctx.symmetric:  # sum_ik g_i pi_ik s_ik = (1/2) sum_i z_i . (W z)_i
            grad_inv_tau = 0.5 * (anchors * grad_a).sum()
        grad_a.mul_(inv_tau)
        if not ctx.needs_input_grad[2]:
            grad_inv_tau = None
        return grad_a, grad_c, grad_inv_tau, None, None, None, None, None


def _block_logits(
    scaled: Tensor,
    candidates: Tensor,
    excluded: Tensor,
    labels: tuple[Tensor, Tensor] | None,
    start: int,
    stop: int,
    out: Tensor,
) -> Tensor:
    """Logits of anchors ``start:stop`` into ``out``; candidates outside K(i) are -inf."""
    logits = torch.mm(scaled[start:stop], candidates.T, out=out[: stop - start])
    logits.scatter_(1, excluded[start:stop], -math.inf)
    if labels is not None:
        a_labels, c_labels = labels
        logits.masked_fill_(a_labels[start:stop, None] != c_labels[None, :], -math.inf)
    return logits


def _row_logsumexp(logits: Tensor, scratch: Tensor) -> Tensor:
    """Row-wise log-sum-exp (minus the row maximum first), ``scratch`` as the work space."""
    top = logits.amax(dim=1, keepdim=True).nan_to_num_(neginf=0.0)  # all -inf: lse -inf
    torch.sub(logits, top, out=scratch).exp_()
    return scratch.sum(dim=1).log_().add_(top[:, 0])


def _lse(
    anchors: Tensor,
    candidates: Tensor,
    inv_tau: Tensor,
    excluded: Tensor,
    rows: int,
    fn: str,
    *,
    symmetric: bool,
    labels: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    return _BlockwiseLogSumExp.apply(
        anchors, candidates, inv_tau, excluded, labels, rows, fn, symmetric
    )


def _inverse_temperature(temperature: float | Tensor, like: Tensor) -> Tensor:
    if isinstance(temperature, Tensor):
        return 1.0 / temperature.to(device=like.device, dtype=like.dtype).reshape(())
    return torch.tensor(1.0 / float(temperature), device=like.device, dtype=like.dtype)


def _check_block_size(fn: str, block_size: int | None) -> None:
    if block_size is not None:
        v.check_int(fn, "block_size", block_size, low=1)


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    *,
    decoupled: bool = False,
    reduction: str = "mean",
    eps: float = NORM_EPS,
    block_size: int | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    r"""NT-Xent of SimCLR in O(N x block) memory; same arguments and values as the reference.

    Computes :func:`amcl_lab.losses.nt_xent`,

    .. math::

        \ell_i = -\frac{s_{i,p(i)}}{\tau} + \log \sum_{k \ne i} \exp\!\Big(\frac{s_{ik}}{\tau}\Big),

    over the 2N stacked rows of ``[z1; z2]`` (positive :math:`p(i) = i \pm N`, cosine
    similarities :math:`s`, temperature :math:`\tau` = ``temperature``) without forming the
    2N x 2N matrix: logits are produced ``block_size`` anchor rows at a time, in the forward
    pass for a streaming log-sum-exp and again in the backward pass.  Implements Eq. (1) of
    [Chen2020]_.

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 2.
        z2: ``(N, D)`` embeddings of the second view; row ``i`` is the positive of ``z1[i]``.
        temperature: finite ``tau > 0`` (float or 0-d tensor, may require grad).
        decoupled: drop the positive from the denominator (DCL form).
        reduction: ``"mean"`` over the 2N anchors, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation (zero rows become zero vectors).
        block_size: anchor rows per block; ``None`` picks ``BLOCK_ELEMENTS // 2N`` rows
            (the whole batch when it is small).
        gather_distributed: score the local anchors against the rows of every process, as
            :func:`amcl_lab.losses.nt_xent` does (conventions in :mod:`amcl_lab.distributed`).

    Returns:
        A scalar, or the ``(2N,)`` per-anchor losses ordered ``[z1 anchors; z2 anchors]``;
        float16/bfloat16 inputs are computed and returned in float32.

    Raises:
        ValueError: as :func:`amcl_lab.losses.nt_xent`, or ``block_size < 1``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> round(float(nt_xent(z1, z2, temperature=0.2, block_size=3)), 6)  # as the reference
        0.182105

    References:
        .. [Chen2020] T. Chen, S. Kornblith, M. Norouzi, G. Hinton, "A Simple Framework for
           Contrastive Learning of Visual Representations", ICML 2020, arXiv:2002.05709.

    .. note:: Documented choice.
        The backward pass is written by hand and is not itself differentiable: a double
        backward (``create_graph=True``, e.g. for Hessian-vector products) raises a
        ``RuntimeError``; use the reference there.  The normalisation is ordinary autograd,
        so gradients match the reference's, including zero gradient for zero rows.
    """
    fn = "fast.nt_xent"
    check_two_views(fn, z1, z2, eps)
    v.check_temperature(fn, temperature)
    v.check_reduction(fn, reduction)
    _check_block_size(fn, block_size)
    v.check_bool(fn, "decoupled", decoupled)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    gathered = gather_distributed and distributed.is_active()
    rows = two_view_candidates(z1, z2, eps, gathered=gathered, fn=fn)
    z, n = rows.anchors, z1.shape[0]
    inv_tau = _inverse_temperature(temperature, z)
    # each anchor's own column (and its positive's, if decoupled) is left out of its
    # log-sum-exp; anchors and candidates are the same rows unless gathered
    excluded = torch.stack([rows.own, rows.positive], dim=1) if decoupled else rows.own[:, None]
    block = _block_rows(block_size, 2 * n, rows.candidates.shape[0])
    lse = _lse(z, rows.candidates, inv_tau, excluded, block, fn, symmetric=not gathered)
    positive = z.roll(n, dims=0)  # the other view of the same sample: a local row
    losses = lse - (z * positive).sum(dim=1) * inv_tau
    return reduce_anchors(losses, reduction, gathered=gathered)


def _check_supcon(
    fn: str, features: Tensor, labels: Tensor | None, temperature: float | Tensor, options: dict
) -> None:
    """The reference's input checks (same messages) and the block size."""
    check_supcon_inputs(
        fn,
        features,
        labels,
        temperature,
        variant=options["variant"],
        contrast_mode=options["contrast_mode"],
        reduction=options["reduction"],
        eps=options["eps"],
    )
    _check_block_size(fn, options["block_size"])


def supcon(
    features: Tensor,
    labels: Tensor | None = None,
    temperature: float | Tensor = 0.1,
    *,
    variant: str = "out",
    contrast_mode: str = "all",
    reduction: str = "mean",
    eps: float = NORM_EPS,
    block_size: int | None = None,
    gather_distributed: bool = False,
) -> Tensor:
    r"""Supervised contrastive loss in O(N x block) memory; same API as the reference.

    Computes :func:`amcl_lab.losses.supcon` (Eq. (2), ``variant="out"``, or Eq. (3),
    ``variant="in"``, of [Khosla2020]_):

    .. math::

        L_{out,i} = -\frac{1}{|P(i)|}\sum_{p \in P(i)} \log p_{ip},
        \qquad
        L_{in,i} = -\log\Big(\frac{1}{|P(i)|}\sum_{p \in P(i)} p_{ip}\Big),

    with :math:`\log p_{ia} = s_{ia}/\tau - \log\sum_{a' \ne i} e^{s_{ia'}/\tau}` over the V x N
    items (view-major), :math:`P(i)` the other items with anchor :math:`i`'s label and
    :math:`\tau` = ``temperature``, streaming over blocks of anchors as :func:`nt_xent` does.

    Args:
        features: ``(N, V, D)`` features, N * V >= 2; normalised inside.
        labels: ``(N,)`` integer labels, or ``None`` (each sample its own class).
        temperature: finite ``tau > 0`` (float or 0-d tensor, may require grad).
        variant: ``"out"`` or ``"in"``.
        contrast_mode: ``"all"`` (every item is an anchor) or ``"one"`` (view-0 items only).
        reduction: ``"mean"`` over anchors that have a positive, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation.
        block_size: anchor rows per block (``None``: ``BLOCK_ELEMENTS // (V * N)``).
        gather_distributed: score the local anchors against the items (and labels) of every
            process, as :func:`amcl_lab.losses.supcon` does (:mod:`amcl_lab.distributed`).

    Returns:
        A scalar, or per-anchor losses of shape ``(N, V)`` (``"all"``) or ``(N,)``
        (``"one"``), 0 for anchors without a positive.

    Raises:
        ValueError: as :func:`amcl_lab.losses.supcon`, or ``block_size < 1``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> f = torch.randn(6, 2, 5, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> round(float(supcon(f, y, temperature=0.5, block_size=5)), 6)  # as the reference
        2.808399
        >>> round(float(supcon(f, y, temperature=0.5, variant="in", block_size=5)), 6)
        2.522354

    References:
        .. [Khosla2020] P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
           arXiv:2004.11362.

    .. note:: Documented choice.
        As the reference: anchors without a positive are left out of the mean, and a batch
        where no anchor has a positive raises.  No double backward (a ``RuntimeError``, see
        :func:`nt_xent`).
    """
    fn = "fast.supcon"
    options = {
        "variant": variant,
        "contrast_mode": contrast_mode,
        "reduction": reduction,
        "eps": eps,
        "block_size": block_size,
    }
    _check_supcon(fn, features, labels, temperature, options)
    n, views, _ = features.shape
    v.check_bool(fn, "gather_distributed", gather_distributed)
    gathered = gather_distributed and distributed.is_active()
    items = supcon_items(
        features, labels, eps, one_view=contrast_mode == "one", gathered=gathered, fn=fn
    )
    z, own = items.z, items.anchors  # an anchor's own column is its item index
    _, classes, counts = torch.unique(items.labels, return_inverse=True, return_counts=True)
    n_pos = counts[classes[own]] - 1  # the other items sharing the anchor's label
    has_pos = n_pos > 0
    with_pos = distributed.all_reduce_sum(has_pos.sum()) if gathered else has_pos.sum()
    if not bool(with_pos > 0):
        raise ValueError(
            f"{fn}: no anchor has a positive (every label is unique and V = 1); "
            "the loss is undefined - pass V >= 2 views or labels with repeated classes"
        )
    inv_tau = _inverse_temperature(temperature, z)
    # every item is an anchor, in order, unless gathered or contrast_mode="one"
    symmetric = contrast_mode == "all" and not gathered
    a = z if symmetric else z[own]
    rows = _block_rows(block_size, own.shape[0], z.shape[0])
    lse_all = _lse(a, z, inv_tau, own[:, None], rows, fn, symmetric=symmetric)
    count = n_pos.clamp_min(1).to(z.dtype)
    if variant == "out":
        # sum of an anchor's positive logits: a_i . (class sum - a_i) / tau, no matrix needed
        class_sums = z.new_zeros(counts.shape[0], z.shape[1]).index_add(0, classes, z)
        positive = (a * (class_sums[classes[own]] - a)).sum(dim=1) * inv_tau / count
    else:
        same = (items.labels[own], items.labels)
        positive = _lse(a, z, inv_tau, own[:, None], rows, fn, symmetric=symmetric, labels=same)
        positive = positive - torch.log(count)
    losses = torch.where(has_pos, lse_all - positive, 0.0)
    if reduction == "none":
        return losses.reshape(views, n).T if contrast_mode == "all" else losses
    return reduce_anchors(losses, reduction, gathered=gathered, count=with_pos)
