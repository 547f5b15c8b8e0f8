r"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce, LeCun, ICLR 2022).

:func:`vicreg` is the two-view loss, :func:`vicreg_terms` its three terms separately, and
:func:`multiview_vicreg` the form with :math:`m \ge 2` views per image that the
small-projector paper trains (each view against the mean of the other views).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .. import _validation as v
from .. import distributed
from .kernel import _check_views

__all__ = [
    "VARIANCE_EPS",
    "MultiViewVICRegLoss",
    "VICRegLoss",
    "VICRegTerms",
    "multiview_vicreg",
    "vicreg",
    "vicreg_terms",
]

#: The epsilon inside the square root of the variance hinge (the paper's and the official
#: code's 1e-4).
VARIANCE_EPS = 1e-4


class VICRegTerms(NamedTuple):
    r"""The three terms of VICReg, before the coefficients (scalars in the compute dtype).

    ``invariance``: mean squared difference of the views,
    :math:`\frac{1}{ND}\sum_i \lVert z_{1,i} - z_{2,i}\rVert^2`; ``variance``: the mean of
    the two views' hinges :math:`\tfrac12 (v(Z_1) + v(Z_2))`; ``covariance``: the sum
    :math:`c(Z_1) + c(Z_2)` (:func:`vicreg`).
    """

    invariance: Tensor
    variance: Tensor
    covariance: Tensor


def _variance_hinge(z: Tensor, gamma: float, eps: float) -> Tensor:
    """v(Z) = mean_j max(0, gamma - sqrt(Var(z_j) + eps)), unbiased variance over the rows."""
    std = torch.sqrt(z.var(dim=0, unbiased=True) + eps)
    return torch.relu(gamma - std).mean()


def _covariance_penalty(z: Tensor) -> Tensor:
    """c(Z) = sum_{i != j} C_ij^2 / D with the unbiased covariance C of the rows."""
    n, d = z.shape
    centred = z - z.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / (n - 1)
    eye = torch.eye(d, dtype=torch.bool, device=z.device)
    return cov.pow(2).masked_fill(eye, 0.0).sum() / d  # masked, not subtracted: exact zeros


def _check_pair(
    fn: str, z1: Tensor, z2: Tensor, gamma: float, eps: float, gather_distributed: bool
) -> None:
    v.check_bool(fn, "gather_distributed", gather_distributed)
    v.check_tensor(fn, "z1", z1, ndim=2, min_rows=2)
    v.check_tensor(fn, "z2", z2, ndim=2, min_rows=2)
    v.check_same_shape(fn, "z1", z1, "z2", z2)
    v.check_same_device(fn, [("z1", z1), ("z2", z2)])
    v.check_positive_float(fn, "gamma", gamma, allow_zero=True)
    v.check_positive_float(fn, "eps", eps, allow_zero=True)


def vicreg_terms(
    z1: Tensor,
    z2: Tensor,
    *,
    gamma: float = 1.0,
    eps: float = VARIANCE_EPS,
    gather_distributed: bool = False,
) -> VICRegTerms:
    r"""The invariance, variance and covariance terms of :func:`vicreg`, separately.

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 2.
        z2: ``(N, D)`` embeddings of the second view; row ``i`` is the positive of ``z1[i]``.
        gamma: target standard deviation :math:`\gamma` of every dimension (>= 0).
        eps: :math:`\epsilon` inside the square root of the variance (>= 0; at ``0`` the
            derivative is infinite for a dimension of zero variance).
        gather_distributed: see :func:`vicreg`.

    Returns:
        :class:`VICRegTerms` in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: shape or device mismatch, N < 2, NaN/inf inputs, a negative or non-finite
            ``gamma`` or ``eps``, or (gathered, on every rank) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(64, 4, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(64, 4, generator=g, dtype=torch.float64)
        >>> [round(float(t), 6) for t in vicreg_terms(z1, z2)]
        [0.010015, 0.032817, 0.12904]
    """
    fn = "vicreg_terms"
    _check_pair(fn, z1, z2, gamma, eps, gather_distributed)
    terms = _terms(fn, z1, z2, gamma, eps, gather_distributed)
    return VICRegTerms(*(v.check_finite_result(fn, t, "z1 and z2") for t in terms))


def _terms(
    fn: str, z1: Tensor, z2: Tensor, gamma: float, eps: float, gather_distributed: bool
) -> VICRegTerms:
    """The three terms of checked inputs (they may overflow: the callers check)."""
    dtype = v.compute_dtype(z1, z2)
    a, b = z1.to(dtype), z2.to(dtype)
    squared = (a - b).pow(2).sum()
    count = a.numel()
    if gather_distributed and distributed.is_active():
        # the mean over the global batch; the regularisers see the global batch statistics
        squared = distributed.all_reduce_sum(squared)
        count *= distributed.world_size()
        a = distributed.gather(a, fn=fn, name="z1")
        b = distributed.gather(b, fn=fn, name="z2")
    invariance = squared / count
    variance = 0.5 * (_variance_hinge(a, gamma, eps) + _variance_hinge(b, gamma, eps))
    covariance = _covariance_penalty(a) + _covariance_penalty(b)
    return VICRegTerms(invariance, variance, covariance)


def _weighted(terms: VICRegTerms, coefficients: tuple[float, float, float]) -> Tensor:
    lam, mu, nu = coefficients
    return lam * terms.invariance + mu * terms.variance + nu * terms.covariance


def _check_coefficients(fn: str, coefficients: tuple[float, float, float]) -> None:
    names = ("lambda_invariance", "mu_variance", "nu_covariance")
    for name, value in zip(names, coefficients, strict=True):
        v.check_positive_float(fn, name, value, allow_zero=True)


def vicreg(
    z1: Tensor,
    z2: Tensor,
    lambda_invariance: float = 25.0,
    mu_variance: float = 25.0,
    nu_covariance: float = 1.0,
    *,
    gamma: float = 1.0,
    eps: float = VARIANCE_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""VICReg loss: invariance of the two views plus variance and covariance regularisers.

    With :math:`Z, Z' \in \mathbb R^{N \times D}` the two views, :math:`z^j` the column of
    dimension :math:`j` and :math:`C(Z) = \frac{1}{N-1}\sum_i (z_i - \bar z)(z_i - \bar
    z)^\top` the unbiased covariance:

    .. math::

        v(Z) = \frac1D \sum_{j=1}^D \max\!\big(0,\ \gamma - \sqrt{\mathrm{Var}(z^j) +
        \epsilon}\big), \qquad
        c(Z) = \frac1D \sum_{i \ne j} C(Z)_{ij}^2, \qquad
        s(Z, Z') = \frac{1}{ND} \sum_{i=1}^N \lVert z_i - z'_i\rVert_2^2,

    .. math::

        L = \lambda\, s(Z, Z') + \mu\, \tfrac12 \big(v(Z) + v(Z')\big)
            + \nu\, \big(c(Z) + c(Z')\big)

    (``lambda_invariance`` :math:`\lambda`, ``mu_variance`` :math:`\mu`, ``nu_covariance``
    :math:`\nu`, ``gamma`` :math:`\gamma`, ``eps`` :math:`\epsilon`; the variance is the
    unbiased one).  Implements Eqs. (1)-(6) of [Bardes2022]_ (the variance hinge with its
    :math:`\sqrt{\mathrm{Var} + \epsilon}`, the off-diagonal covariance over :math:`D`, the
    invariance and their weighted sum) as the authors' code computes them; see the note for
    the two constants that differ from the paper's text.  :math:`v(Z) = 0` exactly when every
    dimension has :math:`\sqrt{\mathrm{Var}(z^j) + \epsilon} \ge \gamma`.

    Args:
        z1: ``(N, D)`` embeddings (the expander's output) of the first view, N >= 2, D >= 1.
        z2: ``(N, D)`` embeddings of the second view; row ``i`` is the positive of ``z1[i]``.
        lambda_invariance: :math:`\lambda \ge 0`, the weight of the invariance term.
        mu_variance: :math:`\mu \ge 0`, the weight of the variance term.
        nu_covariance: :math:`\nu \ge 0`, the weight of the covariance term.
        gamma: target standard deviation :math:`\gamma \ge 0` (1 in the paper).
        eps: :math:`\epsilon \ge 0` inside the square root (1e-4 in the paper and code).
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard of a global batch of N = W n rows: the variance and covariance are
            computed on both views all-gathered (the statistics of the global batch, as the
            official code's ``FullGatherLayer``), the invariance term is the mean over the
            global batch (its local sums all-reduced), so every rank returns the
            single-process loss of the global batch and the gradient reaching the local
            shard is W times the global one (:mod:`amcl_lab.distributed`, like
            :func:`~amcl_lab.losses.barlow_twins`).  No effect without a process group.

    Returns:
        A scalar in the compute dtype (float32 for half inputs); the loss is a batch
        statistic, with no per-sample reduction.

    Raises:
        ValueError: shape or device mismatch, N < 2, NaN/inf inputs, a negative or non-finite
            coefficient, ``gamma`` or ``eps``, or (gathered) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(64, 4, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(64, 4, generator=g, dtype=torch.float64)
        >>> round(float(vicreg(z1, z2)), 6)
        1.199842
        >>> wide = 3.0 * z1  # every std well above gamma = 1: no variance penalty
        >>> float(vicreg_terms(wide, wide).variance)
        0.0

    References:
        .. [Bardes2022] A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance
           Regularization for Self-Supervised Learning", ICLR 2022, arXiv:2105.04906.

    .. note:: Documented choice.
        The defaults follow the authors' code (``facebookresearch/vicreg``) and lightly's
        ``VICRegLoss``, whose coefficients :math:`\lambda = \mu = 25`, :math:`\nu = 1` were
        tuned with them: the invariance term is the mean over all :math:`ND` entries
        (``F.mse_loss``) where the paper writes the sum over dimensions averaged over
        :math:`N`, and the variance term is the *mean* of the two views' hinges where the
        paper writes :math:`\mu [v(Z) + v(Z')]`.  The paper's literal Eq. (6) is
        ``vicreg(z1, z2, D * lambda_invariance, 2 * mu_variance, nu_covariance)``, an
        identity checked in ``tests/properties/test_vicreg.py``.  Gathered, the official code
        and lightly take the invariance of the local shard only (the parameter gradients
        agree once DDP averages them; the returned values differ by rank).
    """
    fn = "vicreg"
    coefficients = (lambda_invariance, mu_variance, nu_covariance)
    _check_coefficients(fn, coefficients)
    _check_pair(fn, z1, z2, gamma, eps, gather_distributed)
    terms = _terms(fn, z1, z2, gamma, eps, gather_distributed)
    return v.check_finite_result(fn, _weighted(terms, coefficients), "z1 and z2")


def multiview_vicreg(
    views: Tensor,
    lambda_invariance: float = 25.0,
    mu_variance: float = 25.0,
    nu_covariance: float = 1.0,
    *,
    gamma: float = 1.0,
    eps: float = VARIANCE_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""VICReg with :math:`m \ge 2` views per image: each view against the mean of the others.

    With :math:`Z^{(a)} \in \mathbb R^{N \times D}` the :math:`a`-th view and
    :math:`\bar Z^{(-a)} = \frac{1}{m-1}\sum_{b \ne a} Z^{(b)}` the leave-one-out mean:

    .. math::

        L = \frac1m \sum_{a=1}^m \mathrm{VICReg}\big(Z^{(a)}, \bar Z^{(-a)}\big)

    with :func:`vicreg` and its coefficients.  For :math:`m = 2` the leave-one-out mean is the
    other view and both terms equal :func:`vicreg` of the two views (VICReg is symmetric in
    its views), so ``multiview_vicreg(torch.stack([z1, z2], 1))`` is ``vicreg(z1, z2)``.
    Implements the multi-view VICReg of [Agrawal2024]_ as their code trains it
    (``kumarkrishna/fastssl``, ``fastssl/models/vicreg.py``), on Eqs. (1)-(6) of
    [Bardes2022]_.

    Args:
        views: ``(N, m, D)`` embeddings of ``m >= 2`` views of ``N >= 2`` images.
        lambda_invariance, mu_variance, nu_covariance, gamma, eps: as in :func:`vicreg`.
        gather_distributed: as in :func:`vicreg`, for every view (the leave-one-out means
            are per image, so they are formed on the local shard first).

    Returns:
        A scalar in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: ``views`` not 3-D, fewer than 2 views or 2 images, NaN/inf values, or a
            negative or non-finite coefficient, ``gamma`` or ``eps``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> images = torch.randn(32, 1, 4, generator=g, dtype=torch.float64)
        >>> views = images + 0.1 * torch.randn(32, 4, 4, generator=g, dtype=torch.float64)
        >>> round(float(multiview_vicreg(views)), 6)
        0.672504

    References:
        .. [Agrawal2024] A. Ghosh, K. K. Agrawal, S. Sodhani, A. Oberman, B. A. Richards,
           "Harnessing small projectors and multiple views for efficient vision pretraining",
           NeurIPS 2024, arXiv:2312.10725.
        .. [Bardes2022] A. Bardes, J. Ponce, Y. LeCun, "VICReg: Variance-Invariance-Covariance
           Regularization for Self-Supervised Learning", ICLR 2022, arXiv:2105.04906.

    .. note:: Documented choice.
        Each view is compared with the mean of the *other* views, as the authors' code does
        (its multi-view Barlow Twins, :func:`~amcl_lab.losses.multiview_barlow_twins`,
        compares each view with the mean of all views instead); the regularisers are applied
        to both sides of every comparison, the leave-one-out mean included, and the
        :math:`m` comparisons are averaged, so that :math:`m = 2` is exactly
        :func:`vicreg` with the same arguments.
    """
    fn = "multiview_vicreg"
    _check_views(fn, views)
    if views.shape[0] < 2:
        raise ValueError(
            f"{fn}: views must have at least 2 rows (images) for the batch variance, got shape "
            f"{tuple(views.shape)}"
        )
    coefficients = (lambda_invariance, mu_variance, nu_covariance)
    _check_coefficients(fn, coefficients)
    v.check_positive_float(fn, "gamma", gamma, allow_zero=True)
    v.check_positive_float(fn, "eps", eps, allow_zero=True)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    m = views.shape[1]
    z = views.to(v.compute_dtype(views))
    total = z.sum(dim=1)
    losses = [
        _weighted(
            _terms(fn, z[:, a], (total - z[:, a]) / (m - 1), gamma, eps, gather_distributed),
            coefficients,
        )
        for a in range(m)
    ]
    return v.check_finite_result(fn, torch.stack(losses).mean(), "views")


# --- module wrappers ------------------------------------------------------------------------


class VICRegLoss(nn.Module):
    """Module form of :func:`vicreg`; ``forward(z1, z2)``."""

    def __init__(
        self,
        lambda_invariance: float = 25.0,
        mu_variance: float = 25.0,
        nu_covariance: float = 1.0,
        *,
        gamma: float = 1.0,
        eps: float = VARIANCE_EPS,
    ) -> None:
        super().__init__()
        self.lambda_invariance, self.mu_variance = lambda_invariance, mu_variance
        self.nu_covariance, self.gamma, self.eps = nu_covariance, gamma, eps

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return vicreg(
            z1,
            z2,
            self.lambda_invariance,
            self.mu_variance,
            self.nu_covariance,
            gamma=self.gamma,
            eps=self.eps,
        )


class MultiViewVICRegLoss(VICRegLoss):
    """Module form of :func:`multiview_vicreg`; ``forward(views)`` with ``(N, m, D)``."""

    def forward(self, views: Tensor) -> Tensor:  # type: ignore[override]
        return multiview_vicreg(
            views,
            self.lambda_invariance,
            self.mu_variance,
            self.nu_covariance,
            gamma=self.gamma,
            eps=self.eps,
        )
