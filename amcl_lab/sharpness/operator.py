r"""Exact Hessian-vector products of a loss on a fixed batch.

:class:`LossOfParams` turns ``loss_fn(model(inputs), targets)`` into a pure function of the
trainable parameters (copied once; flattened in ``named_parameters()`` order; buffers and
train/eval flags handled as described in :mod:`amcl_lab.sharpness`).  :class:`HessianOperator`
multiplies by its Hessian, and :func:`hvp` computes one product.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import _validation as v

HVP_METHODS = ("double-backward", "forward-over-reverse")
MODES = ("eval", "train")
_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")

LossFn = Callable[[Any, Any], Tensor]


# --- the loss as a function of the parameters ---------------------------------------------------


@contextlib.contextmanager
def _training_flags(model: nn.Module, training: bool) -> Iterator[None]:
    """Set every module's ``training`` flag, restoring each module's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _check_batch(fn: str, batch: object) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(
            f"{fn}: batch must be a pair (inputs, targets) and the loss loss_fn(model(inputs), "
            f"targets), got {type(batch).__name__}"
            + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        )
    return batch[0], batch[1]


def check_finite_loss(fn: str, loss: float) -> None:
    """Raise unless the loss at the current weights is finite (its derivatives mean nothing)."""
    if not math.isfinite(loss):
        raise ValueError(
            f"{fn}: loss_fn(model(inputs), targets) is {loss} at the current weights (NaN or "
            "inf inputs or weights, or an empty batch); its Hessian is undefined"
        )


class LossOfParams:
    """``loss_fn(model(inputs), targets)`` as a pure function of the trainable parameters.

    Parameters and buffers are copied once, so later changes to the model do not move the
    point; in ``"train"`` mode normalisation layers get ``None`` running statistics (batch
    statistics, nothing updated).
    """

    def __init__(self, fn: str, model: nn.Module, loss_fn: LossFn, batch: object, mode: str):
        if not isinstance(model, nn.Module):
            raise ValueError(f"{fn}: model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError(f"{fn}: loss_fn must be callable, got {type(loss_fn).__name__}")
        v.check_choice(fn, "mode", mode, MODES)
        self.fn, self.model, self.loss_fn, self.mode = fn, model, loss_fn, mode
        self.inputs, self.targets = _check_batch(fn, batch)
        if isinstance(self.inputs, Tensor) and self.inputs.ndim >= 1 and not len(self.inputs):
            raise ValueError(
                f"{fn}: batch inputs must hold at least one sample, got shape "
                f"{tuple(self.inputs.shape)} (the loss of an empty batch is NaN)"
            )
        floating = isinstance(self.inputs, Tensor) and self.inputs.is_floating_point()
        if floating and not bool(torch.isfinite(self.inputs).all()):
            raise ValueError(f"{fn}: batch inputs contain NaN or inf values")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError(
                f"{fn}: the model has no trainable parameters (none with requires_grad=True); "
                "the Hessian is taken with respect to those"
            )
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) > 1 or len(devices) > 1 or not next(iter(dtypes)).is_floating_point:
            raise ValueError(
                f"{fn}: all trainable parameters must share one floating dtype and one device, "
                f"got dtypes {sorted(map(str, dtypes))} on {sorted(map(str, devices))}"
            )
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.dtype, self.device = next(iter(dtypes)), next(iter(devices))
        self.params = {n: p.detach().clone() for n, p in named}
        self.buffers: dict[str, Tensor | None] = {}
        for module_name, module in model.named_modules():
            for name, buf in module.named_buffers(recurse=False):
                key = f"{module_name}.{name}" if module_name else name
                stats = mode == "train" and name in _RUNNING_STATS
                self.buffers[key] = None if stats else buf.detach().clone()

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def flatten(self, tensors: Sequence[Tensor | None]) -> Tensor:
        return torch.cat(
            [
                torch.zeros(n, dtype=self.dtype, device=self.device) if t is None else t.reshape(-1)
                for t, n in zip(tensors, self.sizes, strict=True)
            ]
        )

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        return {
            n: t.view(s)
            for n, t, s in zip(self.names, vec.split(self.sizes), self.shapes, strict=True)
        }

    def __call__(self, params: dict[str, Tensor], inputs: Any = None, targets: Any = None):
        """The loss at ``params`` (on the stored batch unless another one is given)."""
        inputs = self.inputs if inputs is None else inputs
        targets = self.targets if targets is None else targets
        with _training_flags(self.model, self.mode == "train"), self._fixed_rng():
            out = torch.func.functional_call(self.model, (params, self.buffers), (inputs,))
        loss = self.loss_fn(out, targets)
        if not isinstance(loss, Tensor) or loss.ndim != 0 or not loss.is_floating_point():
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"{self.fn}: loss_fn(model(inputs), targets) must return a scalar (0-d) floating "
                f"tensor, got {got}; reduce it (e.g. reduction='mean')"
            )
        return loss

    @contextlib.contextmanager
    def _fixed_rng(self) -> Iterator[None]:
        """Train mode: every evaluation draws the same dropout masks (seed 0, RNG forked)."""
        if self.mode != "train":
            yield
            return
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(0)
            yield

    def leaves(self) -> dict[str, Tensor]:
        """Fresh differentiable copies of the parameters."""
        return {n: p.clone().requires_grad_(True) for n, p in self.params.items()}


# --- Hessian-vector products --------------------------------------------------------------------


class HessianOperator:
    r"""The Hessian :math:`H = \nabla^2_w L(w)` on a fixed batch, as a linear operator.

    :math:`L(w) = \texttt{loss\_fn}(f_w(\text{inputs}), \text{targets})`, :math:`w` the
    trainable parameters flattened in ``named_parameters()`` order (``dim`` entries).
    ``matvec(v)`` returns :math:`Hv` exactly (no finite differences), by Pearlmutter's
    :math:`Hv = \nabla_w \langle \nabla_w L, v\rangle` [Pearlmutter1994]_:

    * ``"double-backward"``: one forward and one ``create_graph`` backward at construction;
      each product is one more backward through that stored graph (memory: the graph).
    * ``"forward-over-reverse"``: ``torch.func.jvp`` of ``torch.func.grad`` over
      ``functional_call`` with buffers passed functionally; no stored graph, a forward and
      a backward per product, several vectors at once with ``vmap`` (``matmat``).

    Args:
        model: any module; not modified (parameters and buffers are copied).
        loss_fn: ``loss_fn(model(inputs), targets)`` -> 0-d floating tensor.
        batch: ``(inputs, targets)``.
        method: ``"double-backward"`` or ``"forward-over-reverse"``.
        mode: ``"eval"`` (running statistics, no dropout) or ``"train"`` (batch statistics,
            a dropout mask fixed per operator).

    Attributes:
        dim: number of trainable scalars; ``loss``: :math:`L(w)` (float); ``n_hvp``: products
        computed so far (each vector of ``matmat`` counts one); ``method``, ``mode``,
        ``dtype``, ``device``, ``names``.

    Raises:
        ValueError: no trainable parameters, mixed dtypes or devices, a batch that is not a
            pair or holds no sample, a loss that is not a scalar or not finite at the current
            weights, an unknown method or mode.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()  # H = 2 X^T X / N = [[2, 2], [2, 4]]
        >>> op = HessianOperator(lin, mse, (x, torch.zeros(2, 1, dtype=torch.float64)))
        >>> op.matvec(torch.tensor([1.0, 1.0], dtype=torch.float64)).tolist()
        [4.0, 6.0]

    References:
        .. [Pearlmutter1994] B. A. Pearlmutter, "Fast Exact Multiplication by the Hessian",
           Neural Computation 6(1), 1994.

    .. note:: Documented choice.
        The default is ``"double-backward"`` with the first-order graph kept (as PyHessian
        does), not the forward-over-reverse the issue put first.  On CPU (one thread; the
        digits networks of ``benchmarks/bench_sharpness.py`` and two wider ones, batch
        512) one product cost 1.1-2.4 gradient evaluations by double backward, which pays
        the forward and the first backward once, at construction, against 2.2-4.3 on the
        CNNs and the 300k-parameter MLP and 4.5-7 on the 2.4k-parameter MLP by
        forward-over-reverse, which recomputes both, carrying tangents, for every product
        (and pays ``torch.func``'s per-operator overhead, large next to tiny layers).  That
        recomputation is the method, not avoidable work: this path is within 5% of a bare
        ``torch.func.jvp(torch.func.grad(f), ...)`` with ``f`` prepared once.  Storing the
        linearisation (``torch.func.linearize``) brings a product to 1-2 gradients, but it
        traces for 0.5-3.5 s and keeps the intermediates as the stored graph does.  In
        ``vmap``-batched blocks of 8 (``matmat``) forward-over-reverse cost 0.9-1.7x double
        backward per vector.  Choose ``"forward-over-reverse"`` when the stored graph does
        not fit, or for batched products.  BatchNorm is in eval mode by default (PyHessian
        forces it); the train-mode Hessian is of a different function (the SAM paper,
        Foret et al. 2021, arXiv:2010.01412, Section 4.2, takes its Hessian spectra on a
        network without BatchNorm).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batch: tuple[Any, Any],
        *,
        method: str = "double-backward",
        mode: str = "eval",
    ) -> None:
        self._setup("HessianOperator", model, loss_fn, batch, method, mode)

    @classmethod
    def _for(cls, fn: str, model: nn.Module, loss_fn: LossFn, batch: Any, method: str, mode: str):
        """An operator whose validation errors name the calling function ``fn``."""
        op = cls.__new__(cls)
        op._setup(fn, model, loss_fn, batch, method, mode)
        return op

    def _setup(
        self, fn: str, model: nn.Module, loss_fn: LossFn, batch: Any, method: str, mode: str
    ) -> None:
        v.check_choice(fn, "method", method, HVP_METHODS)
        self._f = LossOfParams(fn, model, loss_fn, batch, mode)
        self.method, self.mode = method, mode
        self.dim, self.dtype, self.device = self._f.dim, self._f.dtype, self._f.device
        self.names = list(self._f.names)
        self.n_hvp = 0
        if method == "double-backward":
            # leaves sharing the copied parameters' storage (nothing writes to them)
            self._leaves = [p.detach().requires_grad_(True) for p in self._f.params.values()]
            loss = self._f(dict(zip(self._f.names, self._leaves, strict=True)))
            grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True)
            # The gradient is flattened once, inside the graph: each product is then one
            # backward from a (dim,) vector, with no per-product split into parameter pieces.
            grad = self._f.flatten(grads)
            self._grad = grad if grad.requires_grad else None
        else:
            loss = self._f(self._f.params)
            self._grad_fn = torch.func.grad(self._f)
        self.loss = float(loss.detach())
        check_finite_loss(fn, self.loss)

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat ``(dim,)`` vector into per-parameter views, keyed by name."""
        return self._f.unflatten(vec)

    def _check(self, fn: str, x: Any, ndim: int) -> Tensor:
        x = v.check_tensor(fn, "v", x, ndim=ndim)  # H times NaN is NaN: refused
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{fn}: v must have {self.dim} entries in its last dimension (the number of "
                f"trainable parameters), got shape {tuple(x.shape)}"
            )
        return x.to(device=self.device, dtype=self.dtype)

    def matvec(self, vec: Tensor) -> Tensor:
        """:math:`Hv` for a flat ``(dim,)`` vector; returns ``(dim,)``."""
        vec = self._check("HessianOperator.matvec", vec, 1)
        return self._products(vec[None])[0]

    def matmat(self, vecs: Tensor) -> Tensor:
        """:math:`Hv_i` for the rows of a ``(b, dim)`` matrix; returns ``(b, dim)``."""
        return self._products(self._check("HessianOperator.matmat", vecs, 2))

    def _products(self, vecs: Tensor) -> Tensor:
        self.n_hvp += vecs.shape[0]
        if self.method == "double-backward":
            if vecs.shape[0] == 1:
                out = self._double_backward(vecs[0])[None]
            else:
                out = torch.stack([self._double_backward(row) for row in vecs])
        elif vecs.shape[0] == 1:
            out = self._forward_over_reverse(vecs[0])[None]
        else:
            out = torch.func.vmap(self._forward_over_reverse, randomness="same")(vecs)
        if not v.all_finite(out):
            raise ValueError(
                f"{self._f.fn}: a Hessian-vector product is NaN or inf: the second derivatives "
                f"overflow {self.dtype} at these weights and inputs (or v is too large); use "
                "float64 or smaller inputs"
            )
        return out

    def _double_backward(self, vec: Tensor) -> Tensor:
        if self._grad is None:  # the gradient does not depend on w: H = 0
            return torch.zeros_like(vec)
        hv = torch.autograd.grad(
            self._grad, self._leaves, grad_outputs=vec, retain_graph=True, allow_unused=True
        )
        return self._f.flatten(hv)

    def _forward_over_reverse(self, vec: Tensor) -> Tensor:
        _, tangent = torch.func.jvp(self._grad_fn, (self._f.params,), (self._f.unflatten(vec),))
        return self._f.flatten(list(tangent.values()))


def hvp(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    vec: Tensor,
    *,
    method: str = "double-backward",
    mode: str = "eval",
) -> Tensor:
    r"""One Hessian-vector product :math:`Hv` (see :class:`HessianOperator`).

    Args:
        model, loss_fn, batch, method, mode: as in :class:`HessianOperator`.
        vec: flat ``(dim,)`` vector in ``named_parameters()`` order (trainable only).

    Returns:
        ``(dim,)`` :math:`Hv` in the parameters' dtype.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()
        >>> batch = (x, torch.zeros(2, 1, dtype=torch.float64))
        >>> e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
        >>> hvp(lin, mse, batch, e1, method="forward-over-reverse").tolist()
        [2.0, 2.0]
    """
    return HessianOperator._for("hvp", model, loss_fn, batch, method, mode).matvec(vec)
