r"""Decoupled contrastive learning (Yeh et al., ECCV 2022): DCL and its weighted form DCLW.

DCL removes the positive pair from the InfoNCE denominator, which removes the
negative-positive coupling factor from the gradient; DCLW also weights each positive term by
a negative von Mises-Fisher function of the positive similarities.  ``dcl(weight=None)`` is
exactly :func:`~amcl_lab.losses.nt_xent` with ``decoupled=True``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _validation as v
from .. import distributed
from ._common import (
    NORM_EPS,
    check_two_views,
    masked_logsumexp,
    reduce_anchors,
    two_view_similarities,
)

__all__ = ["WEIGHTS", "DCLLoss", "dcl", "vmf_weights"]

#: Positive-pair weightings of :func:`dcl`: none (DCL) or the negative von Mises-Fisher (DCLW).
WEIGHTS = (None, "vmf")


def vmf_weights(positive: Tensor, sigma: float) -> Tensor:
    r"""Negative von Mises-Fisher weights :math:`w_i = 2 - N\,\mathrm{softmax}_i(s_i/\sigma)`.

    ``positive`` holds the ``(N,)`` positive-pair cosines :math:`s_i` of a batch; the weights
    average to 1 (:math:`\sum_i w_i = 2N - N`), are all 1 when every :math:`s_i` is equal and
    tend to 1 as :math:`\sigma \to \infty`; a pair more similar than the batch's typical one
    gets less weight.  ``sigma`` must be finite and > 0 (not checked here).
    """
    return 2.0 - positive.shape[0] * torch.softmax(positive / sigma, dim=0)


def dcl(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.1,
    *,
    weight: str | None = None,
    sigma: float = 0.5,
    stop_gradient: bool = True,
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""Decoupled contrastive loss over all 2N anchors, optionally von Mises-Fisher weighted.

    The views are stacked into :math:`[z_1; z_2]` as in :func:`~amcl_lab.losses.nt_xent`;
    anchor :math:`i` of sample :math:`n(i)` has its positive :math:`p(i)` (the other view) and
    the 2N - 2 other rows as negatives :math:`\mathcal N(i)`.  With cosine similarities
    :math:`s`:

    .. math::

        \ell_i = -\,w_{n(i)}\,\frac{s_{i,p(i)}}{\tau}
                 + \log \sum_{k \in \mathcal N(i)} \exp\!\Big(\frac{s_{ik}}{\tau}\Big),
        \qquad
        w_n = \begin{cases} 1 & \text{DCL} \\
              2 - N\,\dfrac{e^{s_n/\sigma}}{\sum_{m} e^{s_m/\sigma}} & \text{DCLW}
              \end{cases}

    with :math:`s_n = \hat z_{1,n}^\top \hat z_{2,n}` the positive cosine of sample :math:`n`
    (``temperature`` :math:`\tau`, ``sigma`` :math:`\sigma`, :func:`vmf_weights`).  Implements
    Eq. (6) of [Yeh2022]_ with the weighting function :math:`w` (``weight=None``: DCL,
    ``weight="vmf"``: DCLW), averaged over the 2N anchors.  Without a weight, the gradient of
    :math:`\ell_i` with respect to the positive similarity is exactly :math:`-1/\tau`, free of
    the negative-positive coupling factor of NT-Xent.

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 2, D >= 1.
        z2: ``(N, D)`` embeddings of the second view; row ``i`` is the positive of ``z1[i]``.
        temperature: finite ``tau > 0`` (float or 0-d tensor).
        weight: ``None`` (DCL) or ``"vmf"`` (DCLW).
        sigma: the von Mises-Fisher scale :math:`\sigma` (finite, > 0); only with ``"vmf"``.
        stop_gradient: compute the weights from detached similarities (a weight is a
            coefficient of the positive term, as lightly's ``DCLWLoss`` uses it).  ``False``
            differentiates through them too (for gradient checks).
        reduction: ``"mean"`` over the 2N anchors, ``"sum"`` or ``"none"``.
        eps: floor on the row norm used for normalisation (a zero row is the zero vector).
        gather_distributed: under an initialised process group, the local anchors are scored
            against the rows of every rank and the weights' softmax runs over the global
            batch, with the conventions of :mod:`amcl_lab.distributed` (as
            :func:`~amcl_lab.losses.nt_xent`).  No effect without a process group.

    Returns:
        A scalar, or the ``(2N,)`` per-anchor losses ordered ``[anchors of z1; anchors of
        z2]`` for ``reduction="none"`` (the local ``(2n,)`` when gathered); half inputs are
        computed, and returned, in float32.

    Raises:
        ValueError: shape mismatch, N < 2, NaN/inf inputs, a bad temperature, an unknown
            ``weight`` or ``reduction``, a non-positive or non-finite ``sigma``, or
            (gathered) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.5 * torch.randn(8, 16, generator=g, dtype=torch.float64)
        >>> round(float(dcl(z1, z2, 0.2)), 6)
        -1.105421
        >>> round(float(dcl(z1, z2, 0.2, weight="vmf", sigma=0.5)), 6)
        -1.070284

    References:
        .. [Yeh2022] C.-H. Yeh, C.-Y. Hong, Y.-C. Hsu, T.-L. Liu, Y. Chen, Y. LeCun,
           "Decoupled Contrastive Learning", ECCV 2022, arXiv:2110.06848.

    .. note:: Documented choice.
        Unweighted, this is ``nt_xent(z1, z2, tau, decoupled=True)`` (a property test checks
        it anchor by anchor) and lightly's ``DCLLoss``; with ``weight="vmf"`` it is lightly's
        ``DCLWLoss(temperature=tau, sigma=sigma)``, weights detached.  The weight of a
        sample multiplies the positive term of both of its anchors.  The defaults
        ``tau = 0.1``, ``sigma = 0.5`` are lightly's.
    """
    fn = "dcl"
    check_two_views(fn, z1, z2, eps)
    temperature = v.check_temperature(fn, temperature)
    v.check_reduction(fn, reduction)
    if weight not in WEIGHTS:
        raise ValueError(f"{fn}: weight must be one of {WEIGHTS}, got {weight!r}")
    v.check_positive_float(fn, "sigma", sigma)
    v.check_bool(fn, "stop_gradient", stop_gradient)
    v.check_bool(fn, "gather_distributed", gather_distributed)

    gathered = gather_distributed and distributed.is_active()
    pairs = two_view_similarities(z1, z2, eps, gathered=gathered, fn=fn)
    logits = pairs.sim / temperature
    rows = torch.arange(logits.shape[0], device=logits.device)
    positive = logits[rows, pairs.positive]
    if weight == "vmf":
        n = z1.shape[0]
        # the positive cosines of the local samples (rows 0..n-1 face their view-2 column)
        local = pairs.sim[rows[:n], pairs.positive[:n]]
        if stop_gradient:
            local = local.detach()
        batch = distributed.gather(local, fn=fn, name="z1/z2") if gathered else local
        w = vmf_weights(batch, sigma)
        if gathered:
            w = w.narrow(0, distributed.rank() * n, n)
        positive = positive * w.repeat(2)
    losses = masked_logsumexp(logits, pairs.negatives) - positive
    return reduce_anchors(losses, reduction, gathered=gathered)


class DCLLoss(nn.Module):
    """Module form of :func:`dcl`; ``forward(z1, z2)`` (``weight="vmf"`` for DCLW)."""

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        weight: str | None = None,
        sigma: float = 0.5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.temperature, self.weight, self.sigma = temperature, weight, sigma
        self.reduction = reduction

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return dcl(
            z1,
            z2,
            self.temperature,
            weight=self.weight,
            sigma=self.sigma,
            reduction=self.reduction,
        )
