r"""What every AMCL loss shares: the temperature regulariser :func:`omega` and input checks.

The contrastive forms (:mod:`amcl_lab.losses.amcl`) and the siamese forms
(:mod:`.amcl_siamese`) of the AMCL losses validate head stacks and per-pair temperatures the
same way and add the same regulariser; this private module holds those pieces once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validation as v

__all__ = [
    "check_positive_tensor",
    "check_stacks",
    "compute_dtype",
    "omega",
    "omega_terms",
    "temperatures",
]


# --- the regulariser -------------------------------------------------------------------------


def omega_terms(tau: Tensor, dim: int) -> Tensor:
    """:func:`omega` on a validated tensor (no checks; the losses' inner loop)."""
    return 0.5 * dim * torch.log(tau) + torch.reciprocal(tau)


def omega(tau: float | Tensor, dim: int) -> Tensor:
    r"""The AMCL temperature regulariser :math:`\Omega(\tau) = \tfrac{d'}{2}\log\tau + 1/\tau`.

    It is, up to a constant, the negative log-normaliser of an isotropic Gaussian of variance
    :math:`\tau` in :math:`d'` dimensions, so that for unit vectors
    :math:`\lVert a-b\rVert^2/(2\tau) + \tfrac{d'}{2}\log\tau = -\mathrm{sim}(a,b)/\tau +
    \Omega(\tau)` (P14).  Its unique minimum is at :math:`\tau_0 = 2/d'`; it tends to
    :math:`+\infty` at both ends and can be negative (for :math:`d' = 128` on about
    :math:`[3\cdot10^{-3}, 0.98]`), so it is not a penalty :math:`\ge 0`.  :math:`d'` is
    ``dim``.  Implements the regulariser of Eqs. (2.1)-(2.3) of [Wang2024]_.

    Args:
        tau: temperatures, a float or a floating tensor of any shape, every entry finite and
            > 0.
        dim: :math:`d'`, the dimension of the vectors whose similarity ``tau`` divides, >= 1.

    Returns:
        A tensor of the shape of ``tau`` (0-d for a float, computed in float64).

    Raises:
        ValueError: a non-positive or non-finite temperature, or ``dim < 1``.

    Example:
        >>> import torch
        >>> round(float(omega(1.0, 128)), 12)  # log 1 = 0
        1.0
        >>> round(float(omega(2 / 128, 128)), 6)  # the minimum, 64 (1 - ln 64)
        -202.168517
        >>> tau = torch.tensor([1e-5, 2.0], dtype=torch.float64)  # the ends of the range
        >>> [round(x, 4) for x in omega(tau, 128).tolist()]
        [99263.1728, 44.8614]

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        The coefficient :math:`d'/2` and the :math:`1/\tau` term follow both official code
        releases and the Gaussian likelihood they derive from; the paper's own printed
        definition of :math:`\Omega` (Wang et al. 2024, arXiv:2310.05615) was not checked
        against these.
    """
    fn = "omega"
    v.check_int(fn, "dim", dim, low=1)
    if not isinstance(tau, Tensor):
        v.check_temperature(fn, tau, name="tau")
        tau = torch.tensor(float(tau), dtype=torch.float64)
    check_positive_tensor(fn, "tau", tau)
    return omega_terms(tau.to(v.compute_dtype(tau)), dim)


# --- validation ------------------------------------------------------------------------------


def check_positive_tensor(fn: str, name: str, t: Tensor) -> None:
    """Raise unless ``t`` is a finite floating tensor with every entry > 0."""
    v.check_tensor(fn, name, t)
    if t.numel() and not bool((t > 0).all()):
        raise ValueError(
            f"{fn}: {name} must be > 0 everywhere, got a minimum of {float(t.min())!r}"
        )


def check_stacks(fn: str, names: tuple[str, ...], stacks: tuple[Tensor, ...], rows: int) -> None:
    """Head stacks ``(C, N, D)`` of one shape, N >= ``rows``, on one device."""
    for name, z in zip(names, stacks, strict=True):
        v.check_tensor(fn, name, z, ndim=3)
        if z.shape[0] < 1 or z.shape[1] < rows:
            raise ValueError(
                f"{fn}: {name} must be a (C, N, D) head stack with C >= 1 and N >= {rows} "
                f"rows per head, got shape {tuple(z.shape)}"
            )
    first = stacks[0]
    for name, z in zip(names[1:], stacks[1:], strict=True):
        if z.shape[0] != first.shape[0]:
            raise ValueError(
                f"{fn}: {names[0]} has {first.shape[0]} heads but {name} has {z.shape[0]}; "
                "every view must come from the same multi-head projector"
            )
        if z.shape[1] != first.shape[1]:
            raise ValueError(
                f"{fn}: {names[0]} and {name} must have the same batch size N (row n of each "
                f"is the same sample), got {first.shape[1]} and {z.shape[1]}"
            )
        v.check_same_shape(fn, names[0], first, name, z)
    v.check_same_device(fn, list(zip(names, stacks, strict=True)))


def temperatures(
    fn: str, temperature: float | Tensor, shape: tuple[int, ...], layout: str, like: Tensor
) -> Tensor:
    """``temperature`` validated, cast to the dtype of ``like`` and broadcast to ``shape``."""
    if not isinstance(temperature, Tensor):
        v.check_temperature(fn, temperature)
        return torch.tensor(float(temperature), dtype=like.dtype, device=like.device).expand(shape)
    check_positive_tensor(fn, "temperature", temperature)
    v.check_same_device(fn, [("features", like), ("temperature", temperature)])
    temperature = temperature.to(like.dtype)
    if temperature.ndim == len(shape) and temperature.shape[0] not in (1, shape[0]):
        raise ValueError(
            f"{fn}: temperature has {temperature.shape[0]} heads but the features have "
            f"{shape[0]}; expected a tensor broadcastable to {shape} {layout}"
        )
    try:
        ok = torch.broadcast_shapes(temperature.shape, shape) == torch.Size(shape)
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: temperature must be a positive scalar or a tensor broadcastable to "
            f"{shape} {layout}, got shape {tuple(temperature.shape)}"
        )
    return temperature.expand(shape)


def compute_dtype(features: tuple[Tensor, ...], temperature: float | Tensor) -> torch.dtype:
    """The dtype every input is computed in (half precision is promoted to float32)."""
    extra = (temperature,) if isinstance(temperature, Tensor) else ()
    return v.compute_dtype(*features, *extra)
