r"""SAM's one-step ascent sharpness :math:`L(w + \hat\epsilon) - L(w)`: :func:`ascent_sharpness`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import _validation as v
from ..optim import _asam_scale, sam_perturbation
from .operator import LossFn, LossOfParams, check_finite_loss


@dataclass(frozen=True)
class AscentSharpness:
    """Result of :func:`ascent_sharpness`.

    Attributes:
        sharpness: :math:`L(w + \\hat\\epsilon) - L(w)` (mean over chunks for m-sharpness).
        loss: :math:`L(w)` (chunk mean).
        perturbed_loss: :math:`L(w + \\hat\\epsilon)` (chunk mean).
        rho, adaptive, eta, m, mode: the settings used.
    """

    sharpness: float
    loss: float
    perturbed_loss: float
    rho: float
    adaptive: bool
    eta: float
    m: int | None
    mode: str


def ascent_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    rho: float = 0.05,
    *,
    adaptive: bool = False,
    eta: float = 0.01,
    m: int | None = None,
    mode: str = "eval",
) -> AscentSharpness:
    r"""SAM's one-step sharpness :math:`R_\rho(w) = L(w + \hat\epsilon) - L(w)`.

    :math:`\hat\epsilon = \rho g/\lVert g\rVert_2` with :math:`g = \nabla L(w)` (global
    norm), or the ASAM step :math:`\rho T_w^2 g/\lVert T_w g\rVert_2`,
    :math:`T_w = |w| + \eta`, with ``adaptive=True`` (both from :func:`sam_perturbation`,
    the step SAM's optimizer takes).  The bracketed sharpness of Eq. (1) of [Foret2021]_
    with the inner maximum replaced by its first-order solution, as plotted in Fig. 4b of
    [Du2022]_ (:math:`\rho = 0.05`).  With ``m``, the batch is cut into consecutive chunks
    of ``m`` samples, each perturbed by its own gradient ("m-sharpness", Section 3 of
    [Foret2021]_), and the chunk values are averaged with weights proportional to their
    sizes.

    Args:
        model, loss_fn, batch, mode: as in :class:`HessianOperator` (the loss is
            evaluated in ``mode``; the model is not modified).
        rho: :math:`\rho \ge 0`.
        adaptive: ASAM step.
        eta: ASAM offset :math:`\eta \ge 0`.
        m: chunk size for m-sharpness (``None``: the whole batch).

    Returns:
        :class:`AscentSharpness`.

    Raises:
        ValueError: ``rho < 0``, ``eta < 0``, ``m`` outside ``[1, batch size]``, a
            non-finite loss; the errors of :class:`HessianOperator`.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.fill_(1.0)
        >>> x = torch.tensor([[1.0]], dtype=torch.float64)
        >>> sq = lambda out, y: ((out - y) ** 2).mean()  # L(w) = w^2 at y = 0
        >>> r = ascent_sharpness(lin, sq, (x, torch.zeros(1, 1, dtype=torch.float64)), rho=0.5)
        >>> round(r.sharpness, 10)  # (1 + 0.5)^2 - 1
        1.25

    References:
        [Foret2021]_, [Kwon2021]_ (in :func:`~amcl_lab.optim.sam_perturbation`), [Du2022]_
        (in :func:`~amcl_lab.optim.trajectory_loss`).

    .. note:: Documented choice.
        Evaluated in eval mode by default (BatchNorm running statistics, no dropout), so
        the value is a deterministic function of the weights; SAM's training-time
        perturbation uses train mode (``mode="train"``).  Parameters without a gradient
        are not perturbed (as in :class:`~amcl_lab.optim.SAM`).
    """
    fn = "ascent_sharpness"
    v.check_positive_float(fn, "rho", rho, allow_zero=True)
    v.check_positive_float(fn, "eta", eta, allow_zero=True)
    v.check_bool(fn, "adaptive", adaptive)
    f = LossOfParams(fn, model, loss_fn, batch, mode)
    n = len(f.inputs)
    if m is not None:
        v.check_int(fn, "m", m, low=1, high=n)  # high: the batch size
    chunks = [(0, n)] if m is None else [(i, min(i + m, n)) for i in range(0, n, m)]
    loss_sum = perturbed_sum = 0.0
    for lo, hi in chunks:
        inputs, targets = (
            (f.inputs, f.targets) if m is None else (f.inputs[lo:hi], f.targets[lo:hi])
        )
        leaves = f.leaves()
        loss = f(leaves, inputs, targets)
        check_finite_loss(fn, float(loss.detach()))
        grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        used = [(name, g) for name, g in zip(leaves, grads, strict=True) if g is not None]
        steps = sam_perturbation(
            [g for _, g in used],
            rho,
            scales=[_asam_scale(f.params[name], adaptive, eta) for name, _ in used],
        )
        moved = dict(f.params)
        for (name, _), e in zip(used, steps, strict=True):
            moved[name] = f.params[name] + e
        with torch.no_grad():
            perturbed = f(moved, inputs, targets)
        share = (hi - lo) / n
        loss_sum += share * float(loss.detach())
        perturbed_sum += share * float(perturbed)
    return AscentSharpness(
        sharpness=perturbed_sum - loss_sum,
        loss=loss_sum,
        perturbed_loss=perturbed_sum,
        rho=rho,
        adaptive=adaptive,
        eta=eta,
        m=m,
        mode=mode,
    )
