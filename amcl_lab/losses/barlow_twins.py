"""Barlow Twins redundancy-reduction loss (Zbontar et al. 2021)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validation as v
from .. import distributed

__all__ = ["barlow_twins", "cross_correlation"]

#: Variance floor of the per-feature standardisation (the BatchNorm default of the official code).
BN_EPS = 1e-5


def _standardize(z: Tensor, eps: float, unbiased: bool) -> Tensor:
    """``(z - mean) / sqrt(var + eps)`` per column (dim 0).

    Columns whose mean or variance overflows although ``z`` is finite (float32 entries above
    about 1e19) are computed from ``z / s``, ``s`` the column's largest ``|z|``, as
    ``(z/s - mean/s) / sqrt(var/s^2 + eps/s^2)``: the same quantity, in range.  Other inputs
    take the plain formula only, bit for bit.
    """
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=unbiased, keepdim=True)
    out = (z - mean) / torch.sqrt(var + eps)
    big = ~(torch.isfinite(mean) & torch.isfinite(var))  # NaN/inf inputs are rejected before
    if not bool(big.any()):
        return out
    scale = torch.where(big, z.detach().abs().amax(dim=0, keepdim=True), torch.ones_like(mean))
    scaled = z / scale
    s_mean = scaled.mean(dim=0, keepdim=True)
    s_var = scaled.var(dim=0, unbiased=unbiased, keepdim=True)
    rescaled = (scaled - s_mean) / torch.sqrt(s_var + eps / scale**2)
    return torch.where(big, rescaled, out)


def cross_correlation(
    z1: Tensor,
    z2: Tensor,
    *,
    eps: float = BN_EPS,
    variance: str = "biased",
    gather_distributed: bool = False,
) -> Tensor:
    r"""Cross-correlation matrix :math:`\mathcal C = \tilde z_1^\top \tilde z_2 / N` of two views.

    Each view is standardised per feature over the batch,
    :math:`\tilde z = (z - \mu) / \sqrt{\sigma^2 + \epsilon}`, with the biased (``/N``, the
    official code's BatchNorm) or unbiased (``/(N-1)``, the paper's pseudocode) variance.

    Args:
        z1: ``(N, D)`` first view, N >= 2.
        z2: ``(N, D)`` second view.
        eps: variance floor added before the square root (>= 0).
        variance: ``"biased"`` or ``"unbiased"``.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard (n >= 2 rows) of a global batch of N = W n: both views are
            all-gathered (:func:`amcl_lab.distributed.gather`) and the matrix of the global
            batch, standardised with the global batch statistics, is returned on every
            rank.  No effect without a process group.

    Returns:
        The ``(D, D)`` matrix in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: shape mismatch, N < 2, NaN/inf inputs, negative ``eps``, an unknown
            ``variance`` or (gathered, on every rank) shards of different sizes.
    """
    fn = "cross_correlation"
    v.check_tensor(fn, "z1", z1, ndim=2, min_rows=2)
    v.check_tensor(fn, "z2", z2, ndim=2, min_rows=2)
    v.check_same_shape(fn, "z1", z1, "z2", z2)
    v.check_same_device(fn, [("z1", z1), ("z2", z2)])
    v.check_positive_float(fn, "eps", eps, allow_zero=True)
    v.check_choice(fn, "variance", variance, ("biased", "unbiased"))
    v.check_bool(fn, "gather_distributed", gather_distributed)
    if gather_distributed and distributed.is_active():
        z1 = distributed.gather(z1, fn=fn, name="z1")
        z2 = distributed.gather(z2, fn=fn, name="z2")
    dtype = v.compute_dtype(z1, z2)
    unbiased = variance == "unbiased"
    a = _standardize(z1.to(dtype), eps, unbiased)
    b = _standardize(z2.to(dtype), eps, unbiased)
    return a.T @ b / z1.shape[0]


def barlow_twins(
    z1: Tensor,
    z2: Tensor,
    lambda_offdiag: float = 5e-3,
    *,
    eps: float = BN_EPS,
    variance: str = "biased",
    gather_distributed: bool = False,
) -> Tensor:
    r"""Barlow Twins loss: drive the cross-correlation of two views to the identity.

    .. math::

        L = \sum_i (1 - \mathcal C_{ii})^2 + \lambda \sum_i \sum_{j \ne i} \mathcal C_{ij}^2

    where :math:`\mathcal C` is :func:`cross_correlation` of the two views and :math:`\lambda`
    is ``lambda_offdiag``.  Implements Eq. (1) of [Zbontar2021]_.  :math:`L \ge 0`, with
    equality exactly when :math:`\mathcal C = I`.

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 2.
        z2: ``(N, D)`` embeddings of the second view.
        lambda_offdiag: weight of the off-diagonal (redundancy) term, >= 0.
        eps: variance floor of the standardisation (``0`` gives the exact pseudocode form
            for features with non-zero variance).
        variance: ``"biased"`` (default) or ``"unbiased"`` standardisation.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard of the global batch and every rank returns the loss of the global
            batch (global standardisation, the cross-correlation over all W n rows, as the
            official code's ``SyncBatchNorm`` and ``all_reduce`` of the matrix do); the
            gradient reaching the local shard is W times the global one, the convention of
            :mod:`amcl_lab.distributed`.  Each rank computes the whole ``D x D`` matrix.
            No effect without a process group.

    Returns:
        A scalar (the loss is a batch statistic; there is no per-sample reduction).

    Raises:
        ValueError: as for :func:`cross_correlation`, or a negative ``lambda_offdiag``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(32, 4, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.1 * torch.randn(32, 4, generator=g, dtype=torch.float64)
        >>> round(float(barlow_twins(z1, z2)), 6)
        0.001589

    References:
        .. [Zbontar2021] J. Zbontar, L. Jing, I. Misra, Y. LeCun, S. Deny, "Barlow Twins:
           Self-Supervised Learning via Redundancy Reduction", ICML 2021, arXiv:2103.03230.

    .. note:: Documented choice.
        Each view is standardised on its own with the biased variance and ``eps = 1e-5``,
        as the official code's BatchNorm and lightly do; the paper's pseudocode uses the
        unbiased standard deviation (``variance="unbiased", eps=0``), which differs by
        O(1/N).  The default ``lambda_offdiag = 5e-3`` follows the paper's text and lightly;
        the official training script uses 0.0051.
    """
    v.check_positive_float("barlow_twins", "lambda_offdiag", lambda_offdiag, allow_zero=True)
    c = cross_correlation(z1, z2, eps=eps, variance=variance, gather_distributed=gather_distributed)
    diagonal = torch.diagonal(c)
    on_diag = (1.0 - diagonal).pow(2).sum()
    eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
    off_diag = c.pow(2).masked_fill(eye, 0.0).sum()
    return on_diag + lambda_offdiag * off_diag
