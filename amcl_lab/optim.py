r"""Sharpness-aware training: SAM / ASAM, SAF and MESA.

Small pure pieces carry the maths and are tested alone; thin classes wire them into a
training loop:

* :func:`sam_perturbation` - the ascent step :math:`\hat\epsilon` of SAM / ASAM;
  :class:`SAM` is a ``torch.optim.Optimizer`` that applies it around a base optimizer, and
  :func:`frozen_bn_stats` keeps BatchNorm running statistics from being updated by SAM's
  second pass.
* :func:`trajectory_loss` - the temperature-scaled KL term shared by SAF and MESA;
  :class:`TrajectoryBuffer` stores past logits per sample with epoch stamps;
  :class:`SAF` (past logits from the buffer) and :class:`MESA` (an EMA teacher, updated by
  :func:`ema_update_`) add the term to the training loss at no or little extra cost.

The training-loop protocol of each piece is in ``docs/optim-api.md``.  The module
stays one file past 900 lines: the three optimizers share the perturbation, the trajectory
term and their input checks, and that protocol document reads them side by side.  Each
docstring names the paper behind it (Foret et al., ICLR 2021, arXiv:2010.01412; Kwon et
al., ICML 2021, arXiv:2102.11600; Du et al., NeurIPS 2022, arXiv:2205.14083) and the
released code whose defaults or pitfalls a documented choice follows or avoids
(``davda54/sam``, ``SamsungLabs/ASAM``, ``AngusDujw/SAF``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm, _NormBase

from . import _validation as v
from . import distributed

__all__ = [
    "MESA",
    "SAF",
    "SAM",
    "TrajectoryBuffer",
    "ema_update_",
    "frozen_bn_stats",
    "sam_perturbation",
    "trajectory_loss",
]

#: Floor added to the gradient norm in the SAM step (davda54/sam and the SAM paper's code).
SAM_EPS = 1e-12

#: Epoch stamp of a buffer entry never written (below any ``epoch - lag``).
NEVER = torch.iinfo(torch.int32).min


# --- SAM / ASAM ---------------------------------------------------------------------------------


def sam_perturbation(
    grads: Sequence[Tensor],
    rho: float | Sequence[float],
    *,
    scales: Sequence[Tensor | None] | None = None,
    eps: float = SAM_EPS,
) -> list[Tensor]:
    r"""The ascent step :math:`\hat\epsilon` of SAM (``scales=None``) or ASAM.

    With gradient :math:`g` (all tensors concatenated) and an element-wise scale
    :math:`T` (identity for SAM, :math:`T_w = |w| + \eta` for ASAM):

    .. math::

        \hat\epsilon = \rho\, \frac{T^2 g}{\lVert T g\rVert_2 + \epsilon}

    so that :math:`\lVert T^{-1}\hat\epsilon\rVert_2 = \rho` up to the floor
    :math:`\epsilon` (``eps``).  The norm is **global**: one L2 norm over every tensor.  For
    ``scales=None`` this is Eq. (2) of [Foret2021]_ with p = q = 2,
    :math:`\hat\epsilon = \rho g / \lVert g\rVert_2`; with scales it is the p = 2 closed form
    of the adaptive sharpness maximisation of [Kwon2021]_ (as in its official ``asam.py``).

    Args:
        grads: the gradients :math:`g`, any shapes, one floating dtype per tensor; tensors
            may live on different devices (the norm is gathered on the first one's device).
        rho: radius :math:`\rho \ge 0`: one float, or one per tensor (SAM param groups with
            their own ``rho`` share the global norm).
        scales: ``None`` (SAM) or one :math:`T` per tensor, same shape as the gradient, or
            ``None`` entries for tensors that are not rescaled.
        eps: floor added to the norm; a zero gradient gives a zero step, never NaN.

    Returns:
        One tensor per gradient, :math:`\hat\epsilon` (new tensors; inputs are not modified).

    Raises:
        ValueError: ``rho < 0`` or non-finite, ``eps <= 0``, or a length mismatch.

    Example:
        >>> import torch
        >>> g = [torch.tensor([3.0, 0.0], dtype=torch.float64),
        ...      torch.tensor([4.0], dtype=torch.float64)]
        >>> [[round(x, 10) for x in e.tolist()] for e in sam_perturbation(g, rho=0.5)]
        [[0.3, 0.0], [0.4]]
        >>> w = [torch.tensor([1.0, -2.0], dtype=torch.float64),
        ...      torch.tensor([0.5], dtype=torch.float64)]
        >>> t = [wi.abs() for wi in w]  # ASAM scale with eta = 0: 0.5 T^2 g / |T g|
        >>> [[round(x, 8) for x in e.tolist()] for e in sam_perturbation(g, 0.5, scales=t)]
        [[0.41602515, 0.0], [0.13867505]]

    References:
        .. [Foret2021] P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur, "Sharpness-Aware
           Minimization for Efficiently Improving Generalization", ICLR 2021,
           arXiv:2010.01412.
        .. [Kwon2021] J. Kwon, J. Kim, H. Park, I. K. Choi, "ASAM: Adaptive Sharpness-Aware
           Minimization for Scale-Invariant Learning of Deep Neural Networks", ICML 2021,
           arXiv:2102.11600.

    .. note:: Documented choice.
        ``eps`` is added to the norm (davda54/sam, 1e-12) rather than taken as a floor
        ``max(norm, eps)``; the two agree except for gradients of norm below about 1e-12.
    """
    fn = "sam_perturbation"
    v.check_positive_float(fn, "eps", eps)
    n = len(grads)
    if not v.is_real(rho) and not isinstance(rho, Sequence):
        raise ValueError(f"{fn}: rho must be a float or a sequence of floats, got {rho!r}")
    rhos = [rho] * n if v.is_real(rho) else list(rho)
    if len(rhos) != n:
        raise ValueError(
            f"{fn}: rho must be a float or one value per gradient ({n}), got {len(rhos)}"
        )
    for r in rhos:
        v.check_positive_float(fn, "rho", r, allow_zero=True)
    ts = [None] * n if scales is None else list(scales)
    if len(ts) != n:
        raise ValueError(f"{fn}: scales must have one entry per gradient ({n}), got {len(ts)}")
    for i, g in enumerate(grads):
        v.check_floating(fn, f"grads[{i}]", g)
    for i, t in enumerate(ts):
        if t is not None:
            v.check_floating(fn, f"scales[{i}]", t)
    return _perturbation(fn, "grads[{}]", grads, rhos, ts, eps)


def _perturbation(
    fn: str,
    what: str,
    grads: Sequence[Tensor],
    rhos: Sequence[float],
    scales: Sequence[Tensor | None],
    eps: float,
) -> list[Tensor]:
    """The body of :func:`sam_perturbation` (arguments checked); ``what.format(i)`` names
    gradient ``i`` in errors.

    Raises ``ValueError`` for a NaN/inf gradient or scale (naming ``what[i]``) before any
    step is computed.  Finite gradients whose global norm overflows (float32 entries above
    about 1e19) are divided by their largest ``|entry|`` before the norm is taken, so the
    step keeps length ``rho`` instead of collapsing to zero; other inputs are computed by
    the plain formula only.
    """
    if not grads:
        return []
    scaled = [g if t is None else t * g for g, t in zip(grads, scales, strict=True)]
    device = grads[0].device
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(s).to(device) for s in scaled])
    )
    if not bool(torch.isfinite(norm)):  # one check for NaN, inf and overflow
        for what_i, tensors in ((what, grads), (f"the scale of {what}", scales)):
            i = v.first_nonfinite([t for t in tensors if t is not None])
            if i is not None:
                i = [j for j, t in enumerate(tensors) if t is not None][i]
                raise ValueError(
                    f"{fn}: {what_i.format(i)} (shape {tuple(tensors[i].shape)}) contains NaN "
                    "or inf values; no step was taken"
                )
        top = torch.stack([s.detach().abs().amax().to(device) for s in scaled if s.numel()])
        big = top.amax()
        if not bool(torch.isfinite(big)):
            raise ValueError(
                f"{fn}: the scaled gradient T g overflows {big.dtype} (ASAM scale times "
                "gradient); no step was taken"
            )
        # rho g / (|g| + eps) = rho (g / big) / (|g / big| + eps / big): nothing overflows
        scaled = [s / big.to(s.device) for s in scaled]
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(s).to(device) for s in scaled])
        )
        eps = eps / big
    out = []
    for s, t, r in zip(scaled, scales, rhos, strict=True):
        step = s if t is None else t * s  # T^2 g = T (T g)
        out.append(step * (r / (norm.to(s.device) + eps)))
    return out


def _check_finite_grads(fn: str, groups: Sequence[dict[str, Any]]) -> None:
    """Raise ``ValueError`` naming the first parameter whose gradient has a NaN or inf."""
    grads = [p.grad for group in groups for p in group["params"] if p.grad is not None]
    index = v.first_nonfinite(grads)
    if index is not None:
        raise ValueError(
            f"{fn}: the gradient of parameter {index} (shape {tuple(grads[index].shape)}) "
            "contains NaN or inf values; the weights were restored, the base step not taken"
        )


def _asam_scale(param: Tensor, adaptive: bool, eta: float) -> Tensor | None:
    """ASAM's element-wise operator T_w = |w| + eta, or None (identity) for plain SAM."""
    return param.detach().abs() + eta if adaptive else None


class SAM(torch.optim.Optimizer):
    r"""Sharpness-Aware Minimization around any base optimizer (ASAM with ``adaptive=True``).

    Each step evaluates the gradient twice on the same batch: at :math:`w` (the caller's
    first backward), then at the perturbed point :math:`w + \hat\epsilon(w)` with
    :math:`\hat\epsilon` from :func:`sam_perturbation`; the base optimizer then steps from
    the *original* :math:`w` with the second gradient:

    .. math::

        w_{t+1} = \mathrm{BaseStep}\big(w_t,\;
                  \nabla L_B(w)\rvert_{w = w_t + \hat\epsilon(w_t)}\big)

    Implements Algorithm 1 / Eq. (3) of [Foret2021]_ (p = 2, the Jacobian of
    :math:`\hat\epsilon` dropped) and, with ``adaptive=True``, the adaptive step of
    [Kwon2021]_ with :math:`T_w = |w| + \eta`.  The constructor follows the widely used
    PyTorch implementation (davda54/sam):
    ``SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9)``.

    Args:
        params: parameters or param-group dicts; a group may override ``rho``,
            ``adaptive`` and ``eta`` (the gradient norm stays global across groups).
        base_optimizer_cls: a ``torch.optim.Optimizer`` subclass, constructed here on the
            same param groups (``sam.base_optimizer``; attach LR schedulers to it).
        rho: neighbourhood radius :math:`\rho \ge 0` (``rho=0`` is the base optimizer).
        adaptive: ASAM scaling.
        eta: ASAM offset :math:`\eta \ge 0` in :math:`T_w = |w| + \eta`.
        eps: floor added to the gradient norm.
        **base_kwargs: passed to ``base_optimizer_cls`` (``lr``, ``momentum``, ...).

    Raises:
        ValueError: ``rho < 0``, ``eta < 0``, ``eps <= 0``, or a base class that is not an
            optimizer; at step time, the protocol errors listed in :meth:`first_step`,
            :meth:`second_step` and :meth:`step`.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> opt = SAM([w], torch.optim.SGD, rho=0.1, lr=0.5)
        >>> loss_fn = lambda: 0.5 * (w * w).sum()  # L = |w|^2 / 2, gradient w
        >>> loss_fn().backward()
        >>> opt.first_step(zero_grad=True)  # w + 0.1 w / |w|
        >>> [round(x, 8) for x in w.tolist()]
        [1.04472136, 2.08944272]
        >>> loss_fn().backward()
        >>> opt.second_step(zero_grad=True)  # original w - 0.5 * gradient at w + e
        >>> [round(x, 8) for x in w.tolist()]
        [0.47763932, 0.95527864]

    References:
        [Foret2021]_, [Kwon2021]_ (full entries in :func:`sam_perturbation`).

    Data parallelism (DDP): run the first forward and backward inside ``model.no_sync()``
    (:func:`amcl_lab.distributed.no_sync`), the second one outside it.  Each rank then
    perturbs with the gradient of its own shard, and the synced second backward averages the
    W ranks' gradients taken at their own perturbed points: SAM's m-sharpness with m the
    per-rank batch, a sum of independent inner maximisations over disjoint shards, which is
    how the SAM paper runs on several accelerators and generalised better than a global
    perturbation (Sections 3 and 4.1 of [Foret2021]_; the ``model.no_sync()`` recipe of the
    ``davda54/sam`` README).
    :meth:`second_step` restores the same saved weights on every rank, so the ranks stay in
    sync.  Without ``no_sync`` DDP's all-reduce in the first backward silently makes the
    perturbation the global-batch one (m = global batch).  :func:`amcl_lab.engine.train`
    uses ``no_sync``.  With a gathered contrastive loss
    (``gather_distributed=True``) a rank's first-pass gradient is W times its shard's part of
    the global-batch loss gradient (the W cancels in the normalised step), not the gradient
    of a loss on the local shard alone: the negatives stay global in both passes.

    .. note:: Documented choice.
        ASAM scales **every** parameter of a group with ``adaptive=True`` by
        :math:`|w| + \eta`, default :math:`\eta = 0.01` (the official ASAM class default).
        davda54/sam scales all parameters with no :math:`\eta` (``eta=0.0`` here); official
        ASAM scales only parameters named "weight" (put the others in a param group with
        ``"adaptive": False``).  The original weights are restored from a copy (exact),
        not by subtracting :math:`\hat\epsilon`; the copy is not part of ``state_dict()``.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base_optimizer_cls: type[torch.optim.Optimizer],
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        eps: float = SAM_EPS,
        **base_kwargs: Any,
    ) -> None:
        fn = "SAM"
        if not (
            isinstance(base_optimizer_cls, type)
            and issubclass(base_optimizer_cls, torch.optim.Optimizer)
        ):
            raise ValueError(
                f"{fn}: base_optimizer_cls must be a torch.optim.Optimizer subclass such as "
                f"torch.optim.SGD (the class, not an instance), got {base_optimizer_cls!r}"
            )
        v.check_positive_float(fn, "rho", rho, allow_zero=True)
        v.check_bool(fn, "adaptive", adaptive)
        v.check_positive_float(fn, "eta", eta, allow_zero=True)
        v.check_positive_float(fn, "eps", eps)
        super().__init__(params, {"rho": rho, "adaptive": adaptive, "eta": eta, **base_kwargs})
        for group in self.param_groups:
            v.check_positive_float(fn, "param group rho", group["rho"], allow_zero=True)
            v.check_bool(fn, "param group adaptive", group["adaptive"])
            v.check_positive_float(fn, "param group eta", group["eta"], allow_zero=True)
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.eps = eps
        self._saved: list[tuple[Tensor, Tensor]] | None = None

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter that has a gradient to :math:`w + \\hat\\epsilon(w)`.

        Saves a copy of those parameters for :meth:`second_step`.  Parameters without a
        gradient are neither perturbed nor counted in the norm.

        Raises:
            ValueError: no parameter has a gradient (call ``loss.backward()`` first),
                ``first_step`` was already called without a matching ``second_step``, or a
                gradient contains NaN or inf (no weight is changed).
        """
        if self._saved is not None:
            raise ValueError(
                "SAM.first_step: called twice without second_step; the saved weights would be "
                "overwritten by perturbed ones (call second_step() after the second backward)"
            )
        params, grads, rhos, scales = [], [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                params.append(p)
                grads.append(p.grad)
                rhos.append(group["rho"])
                scales.append(_asam_scale(p, group["adaptive"], group["eta"]))
        if not params:
            raise ValueError(
                "SAM.first_step: no parameter has a gradient; call loss.backward() on the loss "
                "at the current weights before first_step() / step(closure)"
            )
        # raises for a NaN/inf gradient before any weight moves
        fn = "SAM.first_step"
        steps = _perturbation(fn, "the gradient of parameter {}", grads, rhos, scales, self.eps)
        self._saved = [(p, p.detach().clone()) for p in params]
        for p, e in zip(params, steps, strict=True):
            p.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the saved weights exactly, then step the base optimizer.

        The gradients present now (computed at the perturbed point) drive the base step.

        Raises:
            ValueError: no matching :meth:`first_step`, or a NaN/inf gradient (the saved
                weights are restored, the base step is not taken).
        """
        if self._saved is None:
            raise ValueError(
                "SAM.second_step: no saved weights; call first_step() (after the first "
                "backward) before second_step()"
            )
        for p, w in self._saved:
            p.copy_(w)  # in place: storage captured elsewhere (graphs, fused kernels) stays valid
        self._saved = None
        _check_finite_grads("SAM.second_step", self.param_groups)
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Closure protocol: ``first_step(zero_grad=True)``, ``closure()``, ``second_step()``.

        As in davda54/sam, the caller has already run the first forward and backward; the
        closure runs the second, full forward and backward (at the perturbed weights,
        without zeroing gradients) and returns its loss, which ``step`` returns.

        Raises:
            ValueError: ``closure`` is ``None``.
        """
        if closure is None:
            raise ValueError(
                "SAM.step: a closure doing a full forward and backward is required; without "
                "one use first_step() and second_step()"
            )
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict (its state and the shared param groups)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load into the base optimizer and re-share its param groups."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Context manager: forwards inside it leave normalisation running statistics untouched.

    Every BatchNorm-type layer (BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants) with
    ``track_running_stats=True`` gets ``track_running_stats=False`` for the duration: in
    train mode it normalises with the batch statistics, as usual, but updates neither
    ``running_mean``/``running_var`` nor ``num_batches_tracked``; in eval mode it still
    uses the running statistics.  InstanceNorm layers that track statistics get
    ``momentum=0``.  Only attributes are changed and restored on exit (even after an
    exception), no tensor is written, so graphs built inside stay valid for a backward
    after the block.  Use it around SAM's second forward so that one SAM step updates the
    statistics exactly as one ordinary forward does (davda54/sam issue #17: both passes
    updated the running statistics).

    Args:
        model: any module; modules without running statistics are ignored.

    Example:
        >>> import torch
        >>> bn = torch.nn.BatchNorm1d(2)
        >>> with frozen_bn_stats(bn):
        ...     _ = bn(torch.randn(4, 2))
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked), bn.track_running_stats
        ([0.0, 0.0], 0, True)

    .. note:: Documented choice.
        ``num_batches_tracked`` is not incremented either, so ``momentum=None``
        (cumulative average) stays correct and a SAM step leaves every buffer equal to a
        plain step's.  davda54's ``disable_running_stats`` sets ``momentum=0`` instead,
        which still increments the counter (``example/utility/bypass_bn.py`` there).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"frozen_bn_stats: model must be a torch.nn.Module, got {type(model).__name__}"
        )
    changed: list[tuple[nn.Module, str, Any]] = []
    for module in model.modules():
        if not isinstance(module, _NormBase) or not module.track_running_stats:
            continue
        if isinstance(module, _BatchNorm):
            changed.append((module, "track_running_stats", True))
            module.track_running_stats = False
        else:  # InstanceNorm: always normalises per sample; momentum 0 keeps the statistics
            changed.append((module, "momentum", module.momentum))
            module.momentum = 0.0
    try:
        yield
    finally:
        for module, attr, value in changed:
            setattr(module, attr, value)


# --- SAF / MESA -------------------------------------------------------------------------------


def trajectory_loss(
    logits: Tensor,
    past_logits: Tensor,
    temperature: float = 5.0,
    weight: float = 1.0,
    *,
    valid: Tensor | None = None,
) -> Tensor:
    r"""Temperature-scaled KL from past outputs to current ones (SAF / MESA).

    With :math:`p_i = \mathrm{softmax}(\hat y_i/\tau)` (past logits, treated as constants)
    and :math:`q_i = \mathrm{softmax}(z_i/\tau)` (current logits):

    .. math::

        L_{tra} = \lambda\, \tau^2\, \frac{1}{|V|} \sum_{i \in V}
                  \mathrm{KL}(p_i \,\Vert\, q_i)
                = \lambda\, \tau^2\, \frac{1}{|V|} \sum_{i \in V} \sum_c p_{ic}
                  (\log p_{ic} - \log q_{ic})

    over the valid samples :math:`V` (all rows by default).  :math:`\tau` is
    ``temperature``, :math:`\lambda` is ``weight``.  Implements Eq. (8) of [Du2022]_ (SAF,
    past logits from :math:`\tilde E` epochs ago) and Eq. (12) (MESA, logits of an EMA
    model), with the :math:`\tau^2` factor and single :math:`\lambda` of the authors' code.
    Its gradient is :math:`\partial L/\partial z_i = \lambda\tau(q_i - p_i)/|V|`.

    Args:
        logits: ``(B, C)`` current logits :math:`z` (differentiable), C >= 1.
        past_logits: ``(B, C)`` target logits :math:`\hat y` (detached here).
        temperature: :math:`\tau > 0`.
        weight: :math:`\lambda \ge 0`.
        valid: optional ``(B,)`` bool mask of rows with a usable target; the others are
            excluded from the sum and the mean.  No valid row gives an exact 0.

    Returns:
        A 0-d tensor (float32 for half-precision inputs).

    Raises:
        ValueError: shape mismatch, NaN/inf logits, a bad temperature, weight or mask.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)
        >>> float(trajectory_loss(z, z))  # unchanged outputs: zero
        0.0
        >>> past = torch.tensor([[0.0, 5.0, -5.0]], dtype=torch.float64)
        >>> round(float(trajectory_loss(z, past, temperature=5.0, weight=0.3)), 10)
        1.233478307

    References:
        .. [Du2022] J. Du, D. Zhou, J. Feng, V. Y. F. Tan, J. T. Zhou, "Sharpness-Aware
           Training for Free", NeurIPS 2022, arXiv:2205.14083.

    .. note:: Documented choice.
        Direction :math:`\mathrm{KL}(p_{past}\Vert q_{now})`, sum over classes, mean over
        (valid) samples, times :math:`\tau^2` (Hinton-style, in the code, not in Eq. 8),
        :math:`\lambda` applied once (the code; the paper writes it in Eq. 8 *and*
        Algorithm 1).  Invalid targets are excluded, never replaced by zeros (the released
        buffer is zero-initialised, which turns missing targets into a uniform target).
    """
    fn = "trajectory_loss"
    v.check_tensor(fn, "logits", logits, ndim=2, min_rows=1)
    v.check_tensor(fn, "past_logits", past_logits, ndim=2, min_rows=1)
    v.check_same_shape(fn, "logits", logits, "past_logits", past_logits)
    temperature = v.check_temperature(fn, temperature)  # one-element tensors become 0-d
    v.check_positive_float(fn, "weight", weight, allow_zero=True)
    if valid is not None and (
        not isinstance(valid, Tensor)
        or valid.dtype != torch.bool
        or valid.shape != logits.shape[:1]
    ):
        got = f"{valid.dtype} {tuple(valid.shape)}" if isinstance(valid, Tensor) else type(valid)
        raise ValueError(
            f"{fn}: valid must be a bool tensor of shape ({logits.shape[0]},), got {got}"
        )
    return _kl_term(logits, past_logits, temperature, weight, valid)


def _kl_term(
    logits: Tensor, past_logits: Tensor, temperature: float, weight: float, valid: Tensor | None
) -> Tensor:
    """Unchecked body of :func:`trajectory_loss` (the training-loop hot path)."""
    dtype = v.compute_dtype(logits, past_logits)
    log_q = F.log_softmax(logits.to(dtype) / temperature, dim=1)
    log_p = F.log_softmax(past_logits.detach().to(dtype) / temperature, dim=1)
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1)
    if valid is None:
        mean = kl.mean()
    else:
        mean = torch.where(valid, kl, 0.0).sum() / valid.sum().clamp_min(1)
    return mean * (weight * temperature * temperature)


def _check_indices(fn: str, indices: object, batch: int, num_samples: int) -> Tensor:
    """A 1-D integer tensor of ``batch`` sample ids, each in ``[0, num_samples)``."""
    idx = v.check_labels(fn, indices, batch, name="indices")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_samples):
        raise ValueError(
            f"{fn}: indices must lie in [0, {num_samples}) (the buffer's num_samples), got "
            f"values in [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx


class TrajectoryBuffer(nn.Module):
    r"""Ring buffer of per-sample logits with epoch stamps (the memory of SAF).

    ``lag`` slots of shape ``(num_samples, num_classes)``; epoch :math:`e` uses slot
    :math:`e \bmod \tilde E` (``lag`` = :math:`\tilde E`), which is also the slot written at
    epoch :math:`e - \tilde E`.  So :meth:`read` at epoch :math:`e` returns what
    :meth:`write` stored :math:`\tilde E` epochs earlier, provided it is called *before* this
    epoch's write for the same samples (:class:`SAF` does).  Every entry carries the epoch it
    was written at; a read whose stamp is not exactly :math:`e - \tilde E` (never written,
    skipped epoch, ``drop_last``, or already overwritten) is flagged invalid.  All indexing
    lives in :meth:`slot`, ``_read`` and ``_write`` (:meth:`read` and :meth:`write` validate
    and call them).  Stores the trajectory outputs
    :math:`\hat y_i^{(e-\tilde E)}` of Eq. (8) of [Du2022]_.

    Args:
        num_samples: N, the dataset size (sample ids are ``0..N-1``).
        num_classes: C.
        lag: :math:`\tilde E \ge 1` epochs.
        dtype: storage dtype of the logits (float16 halves the memory).
        device: where the buffer lives.

    Raises:
        ValueError: N < 1, C < 1, ``lag < 1``; out-of-range ``indices`` or a negative
            ``epoch`` in :meth:`read` / :meth:`write`.

    Memory: ``lag * N * C * dtype.itemsize`` bytes for the logits plus ``lag * N * 4`` for
    the int32 stamps (``nbytes``).

    .. note:: Documented choice.
        :math:`\tilde E` slots with read-before-write ordering (the paper's memory figure,
        :math:`\tilde E N C` floats) rather than the released code's :math:`\tilde E + 1`
        slots; writing first is detected (the stamp becomes :math:`e`), never silently read.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        lag: int = 3,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        fn = "TrajectoryBuffer"
        v.check_int(fn, "num_samples", num_samples, low=1)
        v.check_int(fn, "num_classes", num_classes, low=1)
        v.check_int(fn, "lag", lag, low=1)
        if not dtype.is_floating_point:
            raise ValueError(f"{fn}: dtype must be a floating dtype, got {dtype}")
        super().__init__()
        self.num_samples, self.num_classes, self.lag = num_samples, num_classes, lag
        self.register_buffer(
            "logits", torch.zeros(lag, num_samples, num_classes, dtype=dtype, device=device)
        )
        self.register_buffer(
            "stamps", torch.full((lag, num_samples), NEVER, dtype=torch.int32, device=device)
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the logits and the stamps."""
        return sum(t.numel() * t.element_size() for t in (self.logits, self.stamps))

    def slot(self, epoch: int) -> int:
        """Ring slot used at ``epoch`` (read for epoch - lag, then written for epoch)."""
        return epoch % self.lag

    def read(self, indices: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        """Logits stored for ``indices`` at ``epoch - lag`` and a validity mask.

        Returns:
            ``(past, valid)``: ``(B, C)`` logits (rows with ``valid=False`` are meaningless)
            and the ``(B,)`` bool mask.
        """
        idx = self._check("TrajectoryBuffer.read", indices, _length(indices), epoch)
        return self._read(idx, epoch)

    def write(self, indices: Tensor, logits: Tensor, epoch: int) -> None:
        """Store the detached ``(B, C)`` ``logits`` of ``indices`` for ``epoch``."""
        fn = "TrajectoryBuffer.write"
        self._check_logits(fn, logits)
        self._write(self._check(fn, indices, logits.shape[0], epoch), logits, epoch)

    def _check(self, fn: str, indices: object, batch: int, epoch: int) -> Tensor:
        v.check_int(fn, "epoch", epoch, low=0)
        return _check_indices(fn, indices, batch, self.num_samples).to(self.stamps.device)

    def _check_logits(self, fn: str, logits: object) -> None:
        # NaN/inf logits are refused: stored, they would be the targets of epochs to come
        shape = tuple(v.check_tensor(fn, "logits", logits, ndim=2, min_rows=1).shape)
        if shape[1] != self.num_classes:
            raise ValueError(
                f"{fn}: logits must have {self.num_classes} columns (num_classes), got shape "
                f"{shape}"
            )

    def _read(self, idx: Tensor, epoch: int) -> tuple[Tensor, Tensor]:
        slot = self.slot(epoch)
        return self.logits[slot, idx], self.stamps[slot, idx] == epoch - self.lag

    def _write(self, idx: Tensor, logits: Tensor, epoch: int) -> None:
        slot = self.slot(epoch)
        self.logits[slot, idx] = logits.detach().to(self.logits)
        self.stamps[slot, idx] = epoch


def _length(x: object) -> int:
    return x.shape[0] if isinstance(x, Tensor) and x.ndim >= 1 else -1


class _TrajectoryRegularizer(nn.Module):
    """Shared hyperparameters and checks of SAF and MESA (temperature, weight, start)."""

    def __init__(self, fn: str, start_epoch: int, temperature: float, weight: float) -> None:
        v.check_int(fn, "start_epoch", start_epoch, low=0)
        temperature = v.check_temperature(fn, temperature)
        v.check_positive_float(fn, "weight", weight, allow_zero=True)
        super().__init__()
        self.start_epoch, self.temperature, self.weight = start_epoch, temperature, weight

    def active(self, epoch: int) -> bool:
        """Whether the KL term is on at this 0-based ``epoch`` (``epoch >= start_epoch``)."""
        return epoch >= self.start_epoch


class SAF(_TrajectoryRegularizer):
    r"""Sharpness-Aware training for Free: the trajectory loss as a drop-in loss term.

    ``saf(logits, indices, epoch)`` returns :math:`\lambda L_{tra}` (:func:`trajectory_loss`
    against the logits the same samples had ``lag`` epochs ago) and stores the current
    detached logits.  Add it to the task loss; the step keeps one forward and one backward
    (the term reuses the training forward's logits).  Implements Eq. (8) and Algorithm 1 of
    [Du2022]_: :math:`L = L_B + \lambda L_{tra}` once the epoch passes :math:`E_{start}`.

    Args:
        num_samples: dataset size N; ``indices`` are dataset sample ids in ``[0, N)``.
        num_classes: C.
        lag: :math:`\tilde E \ge 1` (paper: 3).
        start_epoch: :math:`E_{start}` (paper: 5); see the note for the epoch convention.
        temperature: :math:`\tau` (paper: 5).
        weight: :math:`\lambda` (paper: 0.3 for SAF).
        buffer_dtype: storage dtype of the :class:`TrajectoryBuffer`.
        device: where the buffer lives.
        gather_distributed: under an initialised process group, write the detached
            ``(indices, logits)`` of every rank into this rank's buffer (see the note on
            data parallelism); reads stay local.  No effect without a process group.

    Call:
        ``forward(logits, indices, epoch)``: ``logits`` ``(B, C)`` from the training
        forward, ``indices`` ``(B,)`` integer sample ids, ``epoch`` the 0-based epoch.
        Returns a 0-d tensor: exactly 0 before ``start_epoch``; samples without a valid
        target (see :class:`TrajectoryBuffer`) are left out of the mean.

    Raises:
        ValueError: bad hyperparameters (``lag < 1``, ``temperature <= 0``, ...), logits
            of the wrong width, out-of-range ``indices``, a negative epoch.

    Example:
        >>> import torch
        >>> saf = SAF(num_samples=4, num_classes=3, lag=1, start_epoch=1)
        >>> idx = torch.tensor([0, 2])
        >>> z0 = torch.tensor([[0.0, 5.0, -5.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
        >>> float(saf(z0, idx, epoch=0))  # warm-up: stores z0, adds nothing
        0.0
        >>> z1 = torch.tensor([[1.0, 2.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
        >>> round(float(saf(z1, idx, epoch=1)), 10)  # mean of 1.2334... and 0
        0.6167391535

    References:
        [Du2022]_ (full entry in :func:`trajectory_loss`).

    .. note:: Documented choice.
        Epochs are 0-based and the term is on for ``epoch >= start_epoch``, which is the
        paper's :math:`e > E_{start}` with 1-based epochs (6th epoch for
        :math:`E_{start} = 5`); the released code's strict 0-based test switches on one
        epoch later.  If ``start_epoch < lag`` the first epochs have no targets and the term
        is 0 there (never a uniform target).

    .. note:: Data parallelism.
        A sample's target must be its own output ``lag`` epochs ago whichever rank computed it.
        The released code (``AngusDujw/SAF``, ``SAF_train.py``) keeps one buffer per process
        while timm's ``DistributedSampler`` reshuffles samples across ranks every epoch, so with
        W ranks a read finds the right logits with probability about 1/W and otherwise older
        logits or zeros (a uniform target).  With ``gather_distributed=True`` every rank
        all-gathers ``(indices, logits)`` each step and writes all of them, so every rank holds
        the whole buffer (``lag * N * C`` values per rank, as in the released code) and reads
        its own samples' targets exactly.  Sharding the buffer by index would divide the memory
        by W at the price of an all-to-all exchange per step; not provided.
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        *,
        lag: int = 3,
        start_epoch: int = 5,
        temperature: float = 5.0,
        weight: float = 0.3,
        buffer_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__("SAF", start_epoch, temperature, weight)
        v.check_bool("SAF", "gather_distributed", gather_distributed)
        self.buffer = TrajectoryBuffer(
            num_samples, num_classes, lag, dtype=buffer_dtype, device=device
        )
        self.gather_distributed = gather_distributed

    def forward(self, logits: Tensor, indices: Tensor, epoch: int) -> Tensor:
        self.buffer._check_logits("SAF", logits)
        idx = self.buffer._check("SAF", indices, logits.shape[0], epoch)
        if not self.active(epoch):
            self._store(idx, logits, epoch)
            return logits.new_zeros((), dtype=v.compute_dtype(logits))
        past, valid = self.buffer._read(idx, epoch)  # read before this epoch's write
        self._store(idx, logits, epoch)
        return _kl_term(logits, past.to(logits.device), self.temperature, self.weight, valid)

    def _store(self, idx: Tensor, logits: Tensor, epoch: int) -> None:
        """Write this step's logits: this rank's, or with gathering those of every rank."""
        if self.gather_distributed:
            idx = distributed.gather(idx, fn="SAF", name="indices")
            logits = distributed.gather(logits.detach(), fn="SAF", name="logits")
        self.buffer._write(idx, logits, epoch)


def ema_update_(ema: Sequence[Tensor], new: Sequence[Tensor], decay: float) -> None:
    r"""In place :math:`v \leftarrow \beta v + (1 - \beta)\theta` for floating tensors.

    Non-floating tensors (e.g. ``num_batches_tracked``) are copied.  MESA's teacher update
    (:math:`v_t = \beta v_{t-1} + (1-\beta)\theta_t`, Section 3.3 of [Du2022]_), applied to
    parameters and buffers.

    Args:
        ema: the averaged tensors :math:`v` (modified in place).
        new: the current tensors :math:`\theta`, same shapes, in the same order.
        decay: :math:`\beta \in [0, 1]`.

    Raises:
        ValueError: a length, shape or dtype-kind mismatch (a floating average with integer
            values, or the reverse), ``decay`` outside ``[0, 1]``, or a NaN/inf entry in a
            floating tensor of ``ema`` or ``new`` (all checked before any update).
        TypeError: an entry that is not a tensor.

    Example:
        >>> import torch
        >>> e = torch.tensor([1.0], dtype=torch.float64)
        >>> t = torch.tensor([3.0], dtype=torch.float64)
        >>> ema_update_([e], [t], decay=0.75)
        >>> e.tolist()  # 0.75 * 1 + 0.25 * 3
        [1.5]
    """
    fn = "ema_update_"
    _check_decay(fn, decay)
    if len(ema) != len(new):
        raise ValueError(
            f"{fn}: ema and new must have the same length, got {len(ema)} and {len(new)}"
        )
    for i, (e, t) in enumerate(zip(ema, new, strict=True)):  # all checked before any update
        for name, x in ((f"ema[{i}]", e), (f"new[{i}]", t)):
            if not isinstance(x, Tensor):
                raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
            v.check_not_meta(fn, name, x)
        if e.shape != t.shape:
            raise ValueError(
                f"{fn}: ema[{i}] and new[{i}] must have the same shape, got {tuple(e.shape)} and "
                f"{tuple(t.shape)}"
            )
        if (
            e.dtype.is_complex
            or t.dtype.is_complex
            or (
                e.dtype.is_floating_point != t.dtype.is_floating_point
                or (not e.dtype.is_floating_point and e.dtype != t.dtype)
            )
        ):
            raise ValueError(
                f"{fn}: ema[{i}] ({e.dtype}) and new[{i}] ({t.dtype}) must both be real floating "
                "(averaged) or of one integer/bool dtype (copied); a cast would round or wrap"
            )
    floating = [i for i, e in enumerate(ema) if e.dtype.is_floating_point]
    for name, tensors in (("new", new), ("ema", ema)):
        bad = v.first_nonfinite([tensors[i] for i in floating])
        if bad is not None:
            raise ValueError(
                f"{fn}: {name}[{floating[bad]}] (shape {tuple(tensors[floating[bad]].shape)}) "
                "contains NaN or inf values; nothing was updated (the average would stay NaN)"
            )
    with torch.no_grad():
        for e, t in zip(ema, new, strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(t.to(e), 1.0 - decay)
            else:
                e.copy_(t)


class MESA(_TrajectoryRegularizer):
    r"""Memory-Efficient Sharpness-Aware training: KL to an EMA teacher.

    Keeps a deep copy of the model whose parameters **and** buffers track an exponential
    moving average (:meth:`update`, :func:`ema_update_`).  ``mesa(logits, inputs, epoch)``
    runs the teacher on the same inputs (eval mode, no grad: one extra forward, no extra
    backward) and returns :func:`trajectory_loss` against its logits.  Implements Eq. (12)
    and Section 3.3 of [Du2022]_.

    Args:
        model: the student; copied once here (``copy.deepcopy``).
        decay: EMA decay :math:`\beta \in [0, 1]` (released code: 0.9998).
        start_epoch: :math:`E_{start}` (0-based; on for ``epoch >= start_epoch``).
        temperature: :math:`\tau` (paper: 5).
        weight: :math:`\lambda` (paper: 0.8 for MESA).

    Call:
        ``forward(logits, inputs, epoch)``: the student's ``(B, C)`` logits on ``inputs``.
        Before ``start_epoch`` returns exactly 0 without running the teacher.

    Raises:
        ValueError: bad hyperparameters, or teacher logits whose shape differs from
            ``logits``.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 3).double()
        >>> mesa = MESA(net, decay=0.5, start_epoch=0)
        >>> x = torch.randn(4, 2, dtype=torch.float64)
        >>> float(mesa(net(x), x, epoch=0).detach())  # teacher = student at construction
        0.0
        >>> with torch.no_grad():
        ...     _ = net.bias.add_(1.0)
        >>> mesa.update(net)
        >>> (mesa.teacher.bias - net.bias).abs().max().item()  # moved half-way: 0.5 behind
        0.5

    References:
        [Du2022]_ (full entry in :func:`trajectory_loss`).

    .. note:: Documented choice.
        Floating buffers (BatchNorm running statistics) are averaged like parameters and
        integer buffers copied (timm's ``ModelEmaV2`` averages everything, truncating
        ``num_batches_tracked``).  The teacher stays in eval mode even under
        ``mesa.train()``; call :meth:`update` after every optimizer step from step 0, also
        before ``start_epoch`` (as the released code does).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        decay: float = 0.9998,
        start_epoch: int = 5,
        temperature: float = 5.0,
        weight: float = 0.8,
    ) -> None:
        fn = "MESA"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
        _check_decay(fn, decay)
        super().__init__(fn, start_epoch, temperature, weight)
        self.decay = decay
        self.teacher = copy.deepcopy(model).requires_grad_(False).eval()

    def train(self, mode: bool = True) -> MESA:
        super().train(mode)
        self.teacher.eval()
        return self

    def update(self, model: nn.Module) -> None:
        """EMA step of the teacher's parameters and buffers towards ``model``'s.

        Raises:
            TypeError: ``model`` is not a module.
            ValueError: ``model`` has a NaN/inf parameter or buffer (the teacher is left
                unchanged), or does not match the teacher's structure.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"MESA.update: model must be a torch.nn.Module, got {type(model).__name__}"
            )
        ema_update_(_state_tensors(self.teacher), _state_tensors(model), self.decay)

    def forward(self, logits: Tensor, inputs: Any, epoch: int) -> Tensor:
        fn = "MESA"
        v.check_tensor(fn, "logits", logits, ndim=2, min_rows=1)
        v.check_int(fn, "epoch", epoch, low=0)
        if not self.active(epoch):
            return logits.new_zeros((), dtype=v.compute_dtype(logits))
        with torch.no_grad():
            target = self.teacher(inputs)
        if not isinstance(target, Tensor) or target.shape != logits.shape:
            got = tuple(target.shape) if isinstance(target, Tensor) else type(target).__name__
            raise ValueError(
                f"{fn}: teacher logits have shape {got} but logits have "
                f"{tuple(logits.shape)}; pass the inputs the logits were computed from"
            )
        if not bool(torch.isfinite(target).all()):
            raise ValueError(
                f"{fn}: the teacher's logits on inputs contain NaN or inf values (NaN/inf "
                "inputs, or a teacher averaged from diverged weights)"
            )
        return _kl_term(logits, target, self.temperature, self.weight, None)


def _check_decay(fn: str, decay: float) -> None:
    v.check_positive_float(fn, "decay", decay, allow_zero=True)
    if decay > 1.0:
        raise ValueError(f"{fn}: decay must be in [0, 1], got {decay!r}")


def _state_tensors(model: nn.Module) -> list[Tensor]:
    return [*model.parameters(), *(b for b in model.buffers() if b is not None)]
