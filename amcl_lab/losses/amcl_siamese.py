r"""AMCL forms of the siamese losses without negatives: SimSiam (Eq. (2.2)) and Barlow Twins
(Eq. (2.3)) of Table 2 of Wang et al., ECCV 2024 (arXiv:2310.05615).

The conventions are those of :mod:`amcl_lab.losses.amcl` (heads summed, samples averaged,
the regulariser :func:`~amcl_lab.losses.amcl.omega`); here the temperatures divide a
positive-pair term only (SimSiam) or the entries of a cross-correlation matrix (Barlow
Twins), so there is no negative selection.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validation as v
from .. import distributed
from ._amcl_common import (
    check_stacks,
    compute_dtype,
    omega_terms,
    temperatures,
)
from ._common import NORM_EPS, l2_normalize
from .barlow_twins import BN_EPS, cross_correlation

__all__ = ["BARLOW_OMEGA_DIMS", "amcl_barlow_twins", "amcl_simsiam"]

#: Which d' enters Omega in the Barlow Twins variant.
BARLOW_OMEGA_DIMS = ("features", "batch")


# --- Eq. (2.2) ---------------------------------------------------------------------------------


def amcl_simsiam(
    p1: Tensor,
    p2: Tensor,
    h1: Tensor,
    h2: Tensor,
    temperature: float | Tensor,
    *,
    beta: float = 1e-4,
    stop_gradient: bool = True,
    reduction: str = "mean",
    eps: float = NORM_EPS,
) -> Tensor:
    r"""AMCL form of SimSiam's symmetric negative cosine, each half over its pair temperature.

    With predictor outputs :math:`p`, projector outputs (targets) :math:`h` and
    :math:`[\cdot]_{sg}` the stop-gradient,

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{\mathrm{sim}(p^c_{1i}, [h^c_{2i}]_{sg})}
                 {2\tau^c_{0i}}
                 - \frac{\mathrm{sim}(p^c_{2i}, [h^c_{1i}]_{sg})}{2\tau^c_{1i}}
                 + \beta\,\Omega(\tau^c_{0i}) + \beta\,\Omega(\tau^c_{1i})\Big).

    Both temperatures are positive-pair temperatures, so both regularisers enter with
    :math:`+\beta`; with one head and :math:`\tau \equiv 1` the loss is SimSiam's plus
    :math:`2\beta` (P13).  Implements Eq. (2.2) of Table 2 of [Wang2024]_.

    Args:
        p1: ``(C, N, D)`` predictor outputs of the first view, N >= 1.
        p2: ``(C, N, D)`` predictor outputs of the second view.
        h1: ``(C, N, D)`` projector outputs of the first view (target of ``p2``).
        h2: ``(C, N, D)`` projector outputs of the second view (target of ``p1``).
        temperature: a positive float or a tensor broadcastable to ``(C, 2, N)``:
            ``[c, 0, i]`` belongs to the pair ``(p1, h2)``, ``[c, 1, i]`` to ``(p2, h1)``.
            Compute it on the detached targets, as the second release does.
        beta: regulariser weight, >= 0.
        stop_gradient: detach ``h1`` and ``h2`` (SimSiam).  ``False`` gives the full
            derivative, for gradient checks or callers who detach the targets themselves;
            the value is the same.
        reduction: ``"mean"`` over the N samples, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation.

    Returns:
        A scalar or the ``(N,)`` head-summed per-sample losses.

    Raises:
        ValueError: shape, head or device mismatch, NaN/inf inputs, a bad temperature,
            ``beta < 0`` or an unknown reduction.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> p1, p2, h1, h2 = torch.randn(4, 2, 5, 8, generator=g, dtype=torch.float64)
        >>> tau = 0.1 + torch.rand(2, 2, 5, generator=g, dtype=torch.float64)
        >>> round(float(amcl_simsiam(p1, p2, h1, h2, tau, beta=0.01)), 6)
        0.104882

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.
        .. [Chen2021] X. Chen, K. He, "Exploring Simple Siamese Representation Learning",
           CVPR 2021, arXiv:2011.10566.

    .. note:: Documented choice.
        The table's targets carry no head index; each head here uses its own projector
        output as target (the second release does the same).
    """
    fn = "amcl_simsiam"
    names = ("p1", "p2", "h1", "h2")
    check_stacks(fn, names, (p1, p2, h1, h2), rows=1)
    v.check_bool(fn, "stop_gradient", stop_gradient)
    v.check_positive_float(fn, "beta", beta, allow_zero=True)
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)
    heads, n, dim = p1.shape
    if stop_gradient:
        h1, h2 = h1.detach(), h2.detach()
    dtype = compute_dtype((p1, p2, h1, h2), temperature)
    a1, a2, t1, t2 = (l2_normalize(t.to(dtype), eps) for t in (p1, p2, h1, h2))
    layout = "(C, 2, N): head, pair (p1, h2) or (p2, h1), sample"
    tau = temperatures(fn, temperature, (heads, 2, n), layout, a1)
    sims = torch.stack([(a1 * t2).sum(dim=-1), (a2 * t1).sum(dim=-1)], dim=1)  # (C, 2, N)
    terms = -sims / (2 * tau) + beta * omega_terms(tau, dim)
    return v.reduce(terms.sum(dim=(0, 1)), reduction)


# --- Eq. (2.3) ---------------------------------------------------------------------------------


def amcl_barlow_twins(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor,
    *,
    lambda_offdiag: float = 5e-3,
    beta: float = 1e-6,
    omega_dim: str = "features",
    eps: float = BN_EPS,
    variance: str = "biased",
    gather_distributed: bool = False,
) -> Tensor:
    r"""AMCL form of Barlow Twins: every cross-correlation entry over its own temperature.

    With :math:`\mathcal C^c` the cross-correlation of head :math:`c`
    (:func:`~amcl_lab.losses.cross_correlation`), diagonal temperatures
    :math:`\tau^c_{l} = \tau^c_{ll}` in the positive role and off-diagonal ones in the
    negative role,

    .. math::

        \ell = \sum_{c=1}^{C}\Big(\sum_{l}\big(1 - \mathcal C^c_{ll}/\tau^c_{ll}\big)^2
               + \lambda\sum_{l}\sum_{m\ne l}\frac{(\mathcal C^c_{lm})^2}{\tau^c_{lm}}
               + \beta\sum_{l}\Omega(\tau^c_{ll})
               - \beta\sum_{l}\sum_{m\ne l}\Omega(\tau^c_{lm})\Big).

    :math:`\lambda` is ``lambda_offdiag``.  With one head and :math:`\tau \equiv 1` this is
    Barlow Twins plus the constant :math:`\beta D(2 - D)` (P12).  Implements Eq. (2.3) of
    Table 2 of [Wang2024]_.

    Args:
        z1: ``(C, N, D)`` head stack of the first view, N >= 2.
        z2: ``(C, N, D)`` head stack of the second view, the same batch size N.
        temperature: a positive float or a tensor broadcastable to ``(C, D, D)``;
            ``[c, l, m]`` belongs to feature ``l`` of view 1 and feature ``m`` of view 2.  The
            temperature network sees the channel vectors ``z1[c, :, l]`` and ``z2[c, :, m]``
            (:meth:`amcl_lab.amcl.PairTemperature.pairwise` on ``z.transpose(1, 2)``), which
            ties it to one batch size.
        lambda_offdiag: off-diagonal weight, >= 0.
        beta: regulariser weight, >= 0 (``1e-6`` in the second release).
        omega_dim: which :math:`d'` enters :math:`\Omega`: ``"features"`` (D, the default)
            or ``"batch"`` (N, the dimension of the channel vectors the temperatures
            compare).
        eps: variance floor of the standardisation.
        variance: ``"biased"`` or ``"unbiased"`` standardisation.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard (n >= 2 samples) of a global batch of N = W n: the head stacks are
            all-gathered and every rank returns the loss of the global batch (as
            :func:`~amcl_lab.losses.barlow_twins`; ``temperature`` stays ``(C, D, D)`` and
            ``omega_dim="batch"`` uses the global N).  No effect without a process group.

    Returns:
        A scalar (a batch statistic; no per-sample reduction).

    Raises:
        ValueError: shape, head or batch-size mismatch, N < 2, NaN/inf inputs, a bad
            temperature, negative ``lambda_offdiag`` or ``beta``, an unknown ``omega_dim``,
            or (gathered, on every rank) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(2, 16, 4, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(2, 16, 4, generator=g, dtype=torch.float64)
        >>> tau = 0.5 + torch.rand(2, 4, 4, generator=g, dtype=torch.float64)
        >>> round(float(amcl_barlow_twins(z1, z2, tau, beta=0.01)), 6)
        0.649396

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.
        .. [Zbontar2021] J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny, "Barlow Twins:
           Self-Supervised Learning via Redundancy Reduction", ICML 2021, arXiv:2103.03230.

    .. note:: Documented choice.
        :math:`d' = D` (the projection width, 2048 in the second release, which applies it to
        all :math:`D(D-1)` off-diagonal temperatures) is the default; the channel vectors
        the temperature network compares have N entries, so the Gaussian reading suggests
        :math:`d' = N` (``omega_dim="batch"``).  The paper does not say which.
    """
    fn = "amcl_barlow_twins"
    check_stacks(fn, ("z1", "z2"), (z1, z2), rows=2)
    v.check_positive_float(fn, "lambda_offdiag", lambda_offdiag, allow_zero=True)
    v.check_positive_float(fn, "beta", beta, allow_zero=True)
    v.check_choice(fn, "omega_dim", omega_dim, BARLOW_OMEGA_DIMS)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    if gather_distributed and distributed.is_active():  # the global batch, on every rank
        z1 = distributed.gather(z1, dim=1, fn=fn, name="z1")
        z2 = distributed.gather(z2, dim=1, fn=fn, name="z2")
    heads, n, dim = z1.shape
    dtype = compute_dtype((z1, z2), temperature)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    layout = "(C, D, D): head, feature of z1, feature of z2"
    tau = temperatures(fn, temperature, (heads, dim, dim), layout, z1)

    corr = torch.stack(
        [cross_correlation(a, b, eps=eps, variance=variance) for a, b in zip(z1, z2, strict=True)]
    )
    eye = torch.eye(dim, dtype=torch.bool, device=corr.device)
    scaled = corr / tau
    on_diag = (1.0 - torch.diagonal(scaled, dim1=-2, dim2=-1)).pow(2).sum()
    off_diag = (corr * scaled).masked_fill(eye, 0.0).sum()
    reg = omega_terms(tau, dim if omega_dim == "features" else n)
    reg_terms = torch.diagonal(reg, dim1=-2, dim2=-1).sum() - reg.masked_fill(eye, 0.0).sum()
    return on_diag + lambda_offdiag * off_diag + beta * reg_terms
