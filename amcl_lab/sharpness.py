r"""Hessian spectrum toolkit and ascent sharpness on a fixed batch.

Every function takes the model, a loss and a batch with PyHessian's calling convention:
``batch = (inputs, targets)`` and the loss is ``loss_fn(model(inputs), targets)``, a scalar.
The Hessian is taken with respect to every parameter with ``requires_grad=True``, flattened
in ``model.named_parameters()`` order, at the parameter values of the call.

* :class:`HessianOperator` / :func:`hvp` - exact Hessian-vector products: the graph of the
  first backward kept and differentiated again (``"double-backward"``, default) or
  forward-mode over reverse-mode through ``torch.func`` (``"forward-over-reverse"``).
* :func:`top_eigenvalues` - block Lanczos with full reorthogonalisation, stopped on the
  certified Ritz residuals or on the gap-based eigenvalue-error estimates.
* :func:`hessian_trace` - Hutchinson and Hutch++, stopped on the standard error.
* :func:`spectral_density` - stochastic Lanczos quadrature.
* :func:`ascent_sharpness` - SAM's :math:`L(w + \hat\epsilon) - L(w)` (adaptive and
  m-sharpness variants).
* :func:`pyhessian_reference` - the ``pyhessian`` 0.1 package on the same model and batch,
  with its released defects worked around (see its docstring).

The model is never modified: parameters and buffers are copied, the running statistics of
normalisation layers are never updated, and every module's train/eval flag is restored.
``mode="eval"`` (default) evaluates BatchNorm with its running statistics and dropout off;
``mode="train"`` uses batch statistics (and one fixed dropout mask per operator).  Every
result records the mode and the HVP method.  Facts and pitfalls: ``../shared/spec/
sharpness.md`` sections 4-7.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from . import _validation as v
from .optim import _asam_scale, sam_perturbation

__all__ = [
    "AscentSharpness",
    "EigenResult",
    "HessianOperator",
    "PyHessianResult",
    "SpectralDensity",
    "TraceResult",
    "ascent_sharpness",
    "hessian_trace",
    "hvp",
    "pyhessian_reference",
    "spectral_density",
    "top_eigenvalues",
]

HVP_METHODS = ("double-backward", "forward-over-reverse")
MODES = ("eval", "train")
WHICH = ("LA", "LM", "SA")
STOPPING = ("residual", "gap")
TRACE_METHODS = ("hutchinson", "hutch++")
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


class _LossOfParams:
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
            pair, a loss that is not a scalar, an unknown method or mode.

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
        forces it); the train-mode Hessian is of a different function (spec section 5.2).
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
        self._f = _LossOfParams(fn, model, loss_fn, batch, mode)
        self.method, self.mode = method, mode
        self.dim, self.dtype, self.device = self._f.dim, self._f.dtype, self._f.device
        self.names = list(self._f.names)
        self.n_hvp = 0
        if method == "double-backward":
            self._leaves = self._f.leaves()
            loss = self._f(self._leaves)
            grads = torch.autograd.grad(
                loss, list(self._leaves.values()), create_graph=True, allow_unused=True
            )
            self._grads = [g for g in grads if g is not None and g.requires_grad]
            self._grad_index = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        else:
            loss = self._f(self._f.params)
            self._grad_fn = torch.func.grad(self._f)
        self.loss = float(loss.detach())

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split a flat ``(dim,)`` vector into per-parameter views, keyed by name."""
        return self._f.unflatten(vec)

    def _check(self, fn: str, x: Any, ndim: int) -> Tensor:
        x = v.check_tensor(fn, "v", x, ndim=ndim, finite=False)
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
            return torch.stack([self._double_backward(row) for row in vecs])
        if vecs.shape[0] == 1:
            return self._forward_over_reverse(vecs[0])[None]
        return torch.func.vmap(self._forward_over_reverse, randomness="same")(vecs)

    def _double_backward(self, vec: Tensor) -> Tensor:
        if not self._grads:  # the gradient does not depend on w: H = 0
            return torch.zeros_like(vec)
        pieces = vec.split(self._f.sizes)
        hv = torch.autograd.grad(
            self._grads,
            list(self._leaves.values()),
            grad_outputs=[pieces[i].view(self._f.shapes[i]) for i in self._grad_index],
            retain_graph=True,
            allow_unused=True,
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


# --- Lanczos ------------------------------------------------------------------------------------


def _random_rows(
    shape: tuple[int, int], op: HessianOperator, gen: torch.Generator, kind: str
) -> Tensor:
    if kind == "rademacher":
        bits = torch.randint(0, 2, shape, generator=gen, device=gen.device)
        return (2.0 * bits - 1.0).to(device=op.device, dtype=op.dtype)
    return torch.randn(shape, generator=gen, device=gen.device).to(device=op.device, dtype=op.dtype)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen_device = device if device.type == "cuda" else torch.device("cpu")
    return torch.Generator(device=gen_device).manual_seed(seed)


def _orthonormal_rows(
    w: Tensor,
    basis: Tensor,
    op: HessianOperator,
    gen: torch.Generator,
    scales: Sequence[float] | None = None,
) -> Tensor:
    """Orthonormalise the rows of ``w`` against ``basis`` and each other (Gram-Schmidt, twice).

    A row whose remainder is below ``sqrt(eps)`` times its scale (its norm before any
    projection, ``scales``; default: its own norm) lies in the span already (Krylov
    breakdown: an invariant subspace was found).  It is replaced by a random direction
    orthogonal to everything, so the block keeps its size and the iteration continues into
    the rest of the space; rows are dropped only when the space is exhausted.
    """
    tiny = math.sqrt(torch.finfo(op.dtype).eps)
    rows: list[Tensor] = []
    for i, row in enumerate(w):
        for attempt in range(2):
            q = row
            scale = float(torch.linalg.vector_norm(q))
            if attempt == 0 and scales is not None:
                scale = scales[i]
            for _ in range(2):
                for b in (basis, *([torch.stack(rows)] if rows else [])):
                    if b.shape[0]:
                        q = q - (b @ q) @ b
            norm = float(torch.linalg.vector_norm(q))
            if scale > 0 and norm > tiny * scale:
                rows.append(q / norm)
                break
            if attempt == 0:
                row = _random_rows((1, op.dim), op, gen, "gaussian")[0]
        if basis.shape[0] + len(rows) >= op.dim:
            break
    return torch.stack(rows) if rows else w.new_zeros(0, op.dim)


@dataclass
class _Krylov:
    """State of a block Lanczos run: basis rows ``q[:m]`` and ``t = Q H Q^T`` (float64)."""

    q: Tensor
    t: Tensor
    m: int
    residual_gram: Tensor  # W W^T of the last block's unprojected remainder (float64)
    last: tuple[int, int]
    breakdown: bool  # some row of the last block had a negligible remainder (invariant space)


def _lanczos(
    op: HessianOperator, start: Tensor, max_vectors: int, gen: torch.Generator
) -> Iterator[_Krylov]:
    """Block Lanczos with full reorthogonalisation; yields the state after every block.

    The projected matrix is computed column block by column block as ``Q (H Q_j)^T`` over
    the whole basis (Rayleigh-Ritz), so it stays the exact projection whatever rounding or
    restarts happen.  Residual of a Ritz pair ``(theta, s)``: ``||W^T s_last||`` with ``W``
    the last block's remainder, i.e. ``sqrt(s_last^T (W W^T) s_last)``.
    """
    cap = min(max_vectors, op.dim)
    q = start.new_empty(cap, op.dim)
    t = torch.zeros(cap, cap, dtype=torch.float64)
    first = _orthonormal_rows(start, q[:0], op, gen)[:cap]
    lo, hi = 0, first.shape[0]
    q[lo:hi] = first
    while True:
        w = op.matmat(q[lo:hi])
        scales = torch.linalg.vector_norm(w, dim=1).tolist()  # |H q| before projection
        coef = q[:hi] @ w.T
        w = w - coef.T @ q[:hi]
        again = q[:hi] @ w.T
        w = w - again.T @ q[:hi]
        coef = (coef + again).double().cpu()
        t[:hi, lo:hi] = coef
        t[lo:hi, :hi] = coef.T
        t[lo:hi, lo:hi] = 0.5 * (coef[lo:hi] + coef[lo:hi].T)
        gram = (w @ w.T).double().cpu()
        tiny = math.sqrt(torch.finfo(op.dtype).eps)
        breakdown = any(
            float(g) ** 0.5 <= tiny * sc for g, sc in zip(gram.diagonal(), scales, strict=True)
        )
        yield _Krylov(q, t, hi, gram, (lo, hi), breakdown)
        if hi >= cap:
            return
        new = _orthonormal_rows(w, q[:hi], op, gen, scales)[: cap - hi]
        if new.shape[0] == 0:
            return
        q[hi : hi + new.shape[0]] = new
        lo, hi = hi, hi + new.shape[0]


def _ritz(state: _Krylov) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values, vectors (columns, in the Krylov basis) and residual norms."""
    theta, s = torch.linalg.eigh(state.t[: state.m, : state.m])
    lo, hi = state.last
    s_last = s[lo:hi]
    res2 = (s_last * (state.residual_gram @ s_last)).sum(0).clamp_min(0.0)
    return theta, s, res2.sqrt()


def _error_estimates(theta: Tensor, res: Tensor) -> tuple[Tensor, Tensor]:
    """Gap-based eigenvalue-error estimates ``min(r_i, r_i^2 / gap_i)`` of all Ritz values.

    ``gap_i = min_{j != i} (|theta_i - theta_j| - r_j)``, clamped at 0: the distance from
    ``theta_i`` to the nearest interval ``[theta_j - r_j, theta_j + r_j]``, each of which
    holds an eigenvalue of H.  No other Ritz value (one-dimensional space): gap 0, nothing
    is known about the rest of the spectrum.  Where ``gap_i <= r_i`` the estimate is the
    residual itself.  See :func:`top_eigenvalues` for when this is not a bound.
    """
    dist = (theta[:, None] - theta[None, :]).abs() - res[None, :]
    dist.fill_diagonal_(math.inf)
    gaps = dist.min(1).values.clamp_min(0.0) if theta.numel() > 1 else torch.zeros_like(res)
    return torch.where(gaps > res, res * res / gaps, res), gaps


def _select(theta: Tensor, which: str) -> Tensor:
    if which == "LA":
        return torch.argsort(theta, descending=True)
    if which == "SA":
        return torch.argsort(theta)
    return torch.argsort(theta.abs(), descending=True)


@dataclass(frozen=True)
class EigenResult:
    """Result of :func:`top_eigenvalues`.

    Attributes:
        eigenvalues: ``(k,)`` float64, ordered by ``which`` (``"LA"``: descending).
        eigenvectors: ``(k, dim)`` unit Ritz vectors in the parameters' dtype.
        residuals: ``(k,)`` float64 :math:`r_i = \\lVert H u_i - \\theta_i u_i\\rVert_2`;
            certified: some eigenvalue of H lies within :math:`r_i` of each returned value.
        error_estimates: ``(k,)`` float64 :math:`\\min(r_i, r_i^2/\\mathrm{gap}_i)`, the
            gap-based estimate of :math:`|\\theta_i - \\lambda_i|`; an estimate, not a bound
            (see :func:`top_eigenvalues`).
        gaps: ``(k,)`` float64 :math:`\\mathrm{gap}_i`, the distance from each value to the
            nearest residual interval of another Ritz value (0 when there is none).
        converged: every selected pair passes the ``stopping`` test (residual, or error
            estimate, at most ``tol * |theta|``), or the Krylov space is the whole parameter
            space.
        n_hvp: Hessian-vector products used.
        n_iter: Lanczos (block) iterations.
        which, tol, stopping, block_size, method, mode: the settings used.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    residuals: Tensor
    error_estimates: Tensor
    gaps: Tensor
    converged: bool
    n_hvp: int
    n_iter: int
    which: str
    tol: float
    stopping: str
    block_size: int
    method: str
    mode: str


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    k: int = 1,
    tol: float = 1e-3,
    *,
    which: str = "LA",
    stopping: str = "residual",
    max_iter: int = 100,
    block_size: int = 1,
    seed: int = 0,
    hvp_method: str = "double-backward",
    mode: str = "eval",
) -> EigenResult:
    r"""The k extreme Hessian eigenvalues by block Lanczos with full reorthogonalisation.

    Builds the Krylov space :math:`\mathcal K_m = \mathrm{span}\{V_0, HV_0, \dots\}` from a
    seeded Gaussian block :math:`V_0` (``block_size`` columns), keeps an orthonormal basis
    :math:`Q` (every new block orthogonalised twice against all previous vectors) and takes
    Ritz pairs :math:`(\theta_i, u_i = Q^\top s_i)` of :math:`T = Q H Q^\top`, with
    residuals :math:`r_i = \lVert H u_i - \theta_i u_i\rVert_2` from the last block (no
    extra products).  Lanczos method [Lanczos1950]_ with full reorthogonalisation
    [GolubVanLoan2013]_ (Sections 10.1-10.3).  It stops when the k selected pairs pass the
    test chosen by ``stopping``:

    * ``"residual"`` (default; certified): :math:`r_i \le \mathrm{tol}\,|\theta_i|`.  H is
      symmetric, so :math:`[\theta_i - r_i, \theta_i + r_i]` holds an eigenvalue of H at
      every iteration: ``tol`` bounds the relative distance from each returned value to the
      spectrum.  It over-solves the eigenvalue itself, whose error is about
      :math:`r_i^2/\mathrm{gap}_i` once converging (``tol=1e-3`` gives errors near 1e-6 on
      the networks of ``benchmarks/bench_sharpness.py``).
    * ``"gap"`` (eigenvalue accuracy; an estimate):

      .. math::

          e_i = \min\big(r_i,\ r_i^2/\mathrm{gap}_i\big) \le \mathrm{tol}\,|\theta_i|,
          \qquad \mathrm{gap}_i = \min_{j \ne i}\big(|\theta_i - \theta_j| - r_j\big)_+ .

      By the Kato-Temple inequality [Parlett1998]_, if :math:`\lambda` is the eigenvalue
      nearest :math:`\theta_i` and all others lie at least :math:`\delta_i` from
      :math:`\theta_i`, then :math:`|\theta_i - \lambda| \le r_i^2/\delta_i`;
      :math:`\mathrm{gap}_i` stands in for :math:`\delta_i`, measured to the other Ritz
      values padded by their residuals (intervals that each hold an eigenvalue).  So
      ``tol`` is the wanted relative eigenvalue error, and the run stops about when it is
      reached; never later than ``"residual"`` from the same start, since
      :math:`e_i \le r_i`.  The quadratic scale is the one of the Kaniel-Paige-Saad bound
      [Kaniel1966]_ [Paige1971]_ [Saad1980]_ (spec section 5.4): the Ritz-value error
      decays like the *square* of the angle between the Krylov space and the eigenvector,
      :math:`\lambda_1 - \theta_1 \le (\lambda_1 - \lambda_n)(\tan\phi_0 /
      T_{m-1}(1 + 2\gamma))^2`, the residual only like the angle.

      It is not a rigorous bound, because :math:`\delta_i` is unknown and
      :math:`\mathrm{gap}_i` only sees eigenvalues the Krylov space has already resolved.
      An eigenvalue near :math:`\theta_i` that is not resolved yet (a cluster wider than
      the tolerance that has not split, or an eigenvector almost orthogonal to the start
      block) lies inside the supposed gap, so :math:`\mathrm{gap}_i > \delta_i` and
      :math:`e_i` underestimates the error by up to :math:`\mathrm{gap}_i/\delta_i`: with
      eigenvalues 1 and 0.99 above a bulk in [0, 0.5], ``tol=1e-3`` stops after 4-5
      products for most starts, :math:`\theta_1` still between the two, estimates below
      1e-3 and errors up to 1e-2 (the residual rule needs 9-11 products and reaches 1e-6).
      Against an eigenvector the start block barely reaches, the gap rule at ``tol`` is as
      exposed as the residual rule at :math:`\sqrt{\mathrm{tol}\cdot
      \mathrm{gap}_i/|\theta_i|}` (1.6e-2 for ``tol=1e-3`` and a relative gap of 0.25),
      since :math:`r_i^2/\mathrm{gap}_i \le \mathrm{tol}\,|\theta_i|` is that residual
      test.  Where :math:`\mathrm{gap}_i \le r_i` (a near-degenerate pair already
      resolved), :math:`e_i = r_i` and the test is the certified one; ``residuals`` are
      returned either way.  Both rules miss an eigenvector the start block does not reach
      at all.

    Args:
        model, loss_fn, batch: the Hessian, as in :class:`HessianOperator`.
        k: number of eigenvalues, ``1 <= k <= dim``.
        tol: relative tolerance, > 0, on the residuals (``"residual"``) or on the
            eigenvalue-error estimates (``"gap"``).
        which: ``"LA"`` largest algebraic (default), ``"LM"`` largest magnitude (what power
            iteration and PyHessian return), ``"SA"`` smallest algebraic.
        stopping: ``"residual"`` (default, certified) or ``"gap"`` (see above).
        max_iter: most Lanczos vectors (= HVPs, = memory in parameter copies), capped at
            ``dim``; when it is ``dim`` the result is exact.
        block_size: vectors per iteration; use at least the multiplicity of an eigenvalue
            you need repeated (a single-vector Krylov space holds one copy of each; after a
            breakdown, i.e. an invariant subspace, a random restart looks for more copies).
        seed: seed of the start block.
        hvp_method, mode: see :class:`HessianOperator`.

    Returns:
        :class:`EigenResult`.

    Raises:
        ValueError: ``k`` outside ``[1, dim]`` or above ``max_iter``, ``tol <= 0``, an
            unknown ``which`` or ``stopping``; and the errors of :class:`HessianOperator`.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()  # H = [[2, 2], [2, 4]]
        >>> r = top_eigenvalues(lin, mse, (x, torch.zeros(2, 1, dtype=torch.float64)), k=2)
        >>> [round(x, 10) for x in r.eigenvalues.tolist()]  # 3 +- sqrt(5)
        [5.2360679775, 0.7639320225]

    References:
        .. [Lanczos1950] C. Lanczos, "An iteration method for the solution of the eigenvalue
           problem of linear differential and integral operators", J. Res. Nat. Bur.
           Standards 45, 1950.
        .. [GolubVanLoan2013] G. H. Golub, C. F. Van Loan, "Matrix Computations", 4th ed.,
           Johns Hopkins University Press, 2013.
        .. [Parlett1998] B. N. Parlett, "The Symmetric Eigenvalue Problem", SIAM Classics in
           Applied Mathematics 20, 1998 (residual and Kato-Temple bounds, Lanczos error
           estimates).
        .. [Kaniel1966] S. Kaniel, "Estimates for some computational techniques in linear
           algebra", Mathematics of Computation 20, 1966.
        .. [Paige1971] C. C. Paige, "The computation of eigenvalues and eigenvectors of very
           large sparse matrices", PhD thesis, University of London, 1971.
        .. [Saad1980] Y. Saad, "On the rates of convergence of the Lanczos and the
           block-Lanczos methods", SIAM J. Numerical Analysis 17(5), 1980.

    .. note:: Documented choice.
        ``which="LA"`` by default: the sharpness literature's :math:`\lambda_{max}` is the
        largest algebraic eigenvalue, whereas PyHessian's power iteration returns the largest
        magnitude (negative early in training); pass ``which="LM"`` to compare with it.
        ``stopping="residual"`` by default: its ``tol`` is a guarantee that needs no
        assumption about the part of the spectrum the Krylov space has not seen, and it
        leaves the default behaviour of earlier versions unchanged; the price is a few
        products spent over-solving.  Use ``"gap"`` when ``tol`` is meant as eigenvalue
        accuracy and the wanted eigenvalues are separated from the rest by much more than
        ``tol``.  Both are residual-based, unlike PyHessian's relative change between
        iterations, which can stop early with an error above its tolerance (spec section
        5.2).
    """
    fn = "top_eigenvalues"
    v.check_positive_float(fn, "tol", tol)
    v.check_choice(fn, "which", which, WHICH)
    v.check_choice(fn, "stopping", stopping, STOPPING)
    v.check_int(fn, "max_iter", max_iter, low=1)
    v.check_int(fn, "block_size", block_size, low=1)
    op = HessianOperator._for(fn, model, loss_fn, batch, hvp_method, mode)
    v.check_int(fn, "k", k, low=1, high=op.dim)
    if k > max_iter:
        raise ValueError(f"{fn}: k ({k}) must not exceed max_iter ({max_iter})")
    block = min(block_size, op.dim)
    gen = _generator(seed, op.device)
    start = _random_rows((block, op.dim), op, gen, "gaussian")
    floor = 100.0 * torch.finfo(op.dtype).eps
    n_iter = 0
    previous_breakdown = False
    for state in _lanczos(op, start, max_iter, gen):
        n_iter += 1
        # At a breakdown every Ritz pair has a zero residual but further copies of an
        # eigenvalue may lie outside the invariant subspace: judge only after the restart.
        judged = not state.breakdown or previous_breakdown
        previous_breakdown = state.breakdown
        if state.m < k:
            continue
        theta, s, res = _ritz(state)
        errors, gaps = _error_estimates(theta, res)
        sel = _select(theta, which)[:k]
        tested = res if stopping == "residual" else errors
        scale = float(theta.abs().max())
        exhausted = state.m >= op.dim
        converged = exhausted or (
            judged and bool((tested[sel] <= tol * theta[sel].abs() + floor * scale).all())
        )
        if converged:
            break
    vectors = s[:, sel].T.to(op.dtype).to(op.device) @ state.q[: state.m]
    return EigenResult(
        eigenvalues=theta[sel],
        eigenvectors=vectors,
        residuals=res[sel],
        error_estimates=errors[sel],
        gaps=gaps[sel],
        converged=converged,
        n_hvp=op.n_hvp,
        n_iter=n_iter,
        which=which,
        tol=tol,
        stopping=stopping,
        block_size=block,
        method=hvp_method,
        mode=mode,
    )


# --- trace --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceResult:
    """Result of :func:`hessian_trace`.

    Attributes:
        estimate: the trace estimate.
        stderr: its standard error (sample standard deviation of the probe values over
            the square root of their number; 0 for an exact sketch).
        n_hvp: Hessian-vector products used (Hutch++: 2 * sketch_size + probes).
        n_probes: random probes in the stochastic part.
        converged: ``stderr <= rtol * |estimate|`` was reached within ``max_hvp``.
        samples: ``(n_probes,)`` float64 probe values :math:`z^\\top H z` (Hutch++: of the
            deflated Hessian).
        sketch_trace: Hutch++'s exact trace on the sketch, ``None`` for Hutchinson.
        method, rtol, method_hvp, mode: the settings used.
    """

    estimate: float
    stderr: float
    n_hvp: int
    n_probes: int
    converged: bool
    samples: Tensor
    sketch_trace: float | None
    method: str
    rtol: float
    hvp_method: str
    mode: str


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    method: str = "hutch++",
    rtol: float = 1e-2,
    *,
    sketch_size: int = 20,
    min_probes: int = 10,
    max_hvp: int = 5000,
    block_size: int = 1,
    seed: int = 0,
    hvp_method: str = "double-backward",
    mode: str = "eval",
) -> TraceResult:
    r"""Hessian trace by Hutchinson or Hutch++ with a standard-error stopping rule.

    Hutchinson [Hutchinson1989]_: :math:`\mathrm{tr}H \approx \frac1m\sum_{i=1}^m
    z_i^\top H z_i` with Rademacher :math:`z_i`, unbiased, variance
    :math:`2(\lVert H\rVert_F^2 - \sum_j H_{jj}^2)/m`.  Hutch++ [Meyer2021]_: with
    :math:`Q` an orthonormal basis of :math:`HS` for a Rademacher sketch :math:`S`
    (``sketch_size`` columns),

    .. math::

        \mathrm{tr}H = \mathrm{tr}(Q^\top H Q)
            + \mathbb E_z\big[z^\top (I - QQ^\top) H (I - QQ^\top) z\big]

    the first term exact (``sketch_size`` more products), the second estimated like
    Hutchinson on the deflated Hessian, whose variance no longer contains the largest
    eigenvalues.  Probes are drawn until the standard error of the mean is at most
    ``rtol * |estimate|`` (after at least ``min_probes``) or ``max_hvp`` is spent.

    Args:
        model, loss_fn, batch: the Hessian, as in :class:`HessianOperator`.
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        rtol: target relative standard error, > 0.
        sketch_size: Hutch++ sketch columns (capped at ``dim``; at ``dim`` the trace is
            exact).
        min_probes: probes before the rule may stop (>= 2, so a variance exists).
        max_hvp: budget of products.
        block_size: probes per call of the operator (``vmap``-batched with
            ``"forward-over-reverse"``); the rule is checked after each block.
        seed, hvp_method, mode: see :func:`top_eigenvalues`.

    Returns:
        :class:`TraceResult`.

    Raises:
        ValueError: unknown method, ``rtol <= 0``, ``min_probes < 2``, a budget too small
            for the sketch plus ``min_probes``.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()  # tr H = 2 + 4
        >>> batch = (x, torch.zeros(2, 1, dtype=torch.float64))
        >>> round(hessian_trace(lin, mse, batch).estimate, 10)  # the sketch spans R^2: exact
        6.0
        >>> eye = torch.eye(2, dtype=torch.float64)  # H = I: every probe gives z^T z = 2
        >>> r = hessian_trace(lin, mse, (eye, torch.zeros(2, 1, dtype=torch.float64)),
        ...                   method="hutchinson", min_probes=4)
        >>> r.estimate, r.stderr, r.n_hvp
        (2.0, 0.0, 4)

    References:
        .. [Hutchinson1989] M. F. Hutchinson, "A stochastic estimator of the trace of the
           influence matrix for Laplacian smoothing splines", Communications in Statistics -
           Simulation and Computation 18(3), 1989.
        .. [Meyer2021] R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
           Stochastic Trace Estimation", SOSA 2021, arXiv:2010.09649.

    .. note:: Documented choice.
        Stopping on the standard error, not on PyHessian's relative change of the running
        mean (which stops after a few probes whatever the variance, and in the released 0.1
        after two probes when the trace is negative; spec section 5.2).  The sketch size is
        fixed (default 20, about twice the number of outlier eigenvalues of a 10-class
        network) rather than adapted; the standard error covers the stochastic part only,
        the sketch part being exact.
    """
    fn = "hessian_trace"
    v.check_choice(fn, "method", method, TRACE_METHODS)
    v.check_positive_float(fn, "rtol", rtol)
    v.check_int(fn, "sketch_size", sketch_size, low=1)
    v.check_int(fn, "min_probes", min_probes, low=2)
    v.check_int(fn, "block_size", block_size, low=1)
    op = HessianOperator._for(fn, model, loss_fn, batch, hvp_method, mode)
    sketch = min(sketch_size, op.dim) if method == "hutch++" else 0
    v.check_int(fn, "max_hvp", max_hvp, low=2 * sketch + min_probes)
    gen = _generator(seed, op.device)
    basis = None
    sketch_trace = None
    if sketch:
        y = op.matmat(_random_rows((sketch, op.dim), op, gen, "rademacher"))
        basis = torch.linalg.qr(y.T).Q.T  # (sketch, dim), orthonormal rows spanning H S
        sketch_trace = float((basis * op.matmat(basis)).sum(dtype=torch.float64))
    values: list[Tensor] = []
    stop = sketch == op.dim  # the sketch is the whole space: exact
    while not stop and op.n_hvp < max_hvp:
        z = _random_rows((min(block_size, max_hvp - op.n_hvp), op.dim), op, gen, "rademacher")
        if basis is not None:
            z = z - (z @ basis.T) @ basis
        values.append((z * op.matmat(z)).sum(1, dtype=torch.float64).cpu())
        samples = torch.cat(values)
        if samples.numel() >= min_probes:
            stop = _standard_error(samples) <= rtol * abs(_mean(samples, sketch_trace))
    samples = torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)
    estimate = _mean(samples, sketch_trace)
    stderr = _standard_error(samples) if samples.numel() >= 2 else 0.0
    return TraceResult(
        estimate=estimate,
        stderr=stderr,
        n_hvp=op.n_hvp,
        n_probes=samples.numel(),
        converged=stderr <= rtol * abs(estimate),
        samples=samples,
        sketch_trace=sketch_trace,
        method=method,
        rtol=rtol,
        hvp_method=hvp_method,
        mode=mode,
    )


def _mean(samples: Tensor, offset: float | None) -> float:
    stochastic = float(samples.mean()) if samples.numel() else 0.0
    return stochastic + (offset or 0.0)


def _standard_error(samples: Tensor) -> float:
    return float(samples.std(correction=1)) / math.sqrt(samples.numel())


# --- spectral density ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectralDensity:
    r"""Stochastic Lanczos quadrature of the Hessian spectrum (:func:`spectral_density`).

    Run :math:`r` gives nodes :math:`\theta_{rj}` (Ritz values) and weights
    :math:`\tau_{rj}^2` (squared first components of the Ritz vectors, summing to 1); the
    spectral measure :math:`\frac1n\sum_i\delta(\lambda-\lambda_i)` is approximated by
    their average over runs.

    Attributes:
        nodes: one ``(m_r,)`` float64 tensor per run (``m_r`` = Lanczos steps done).
        weights: one ``(m_r,)`` float64 tensor per run.
        dim: Hessian size n.
        n_hvp: products used.
        method, mode: HVP settings.
    """

    nodes: tuple[Tensor, ...]
    weights: tuple[Tensor, ...]
    dim: int
    n_hvp: int
    method: str
    mode: str

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        r"""Gaussian-broadened density on ``grid``: mean over runs of
        :math:`\sum_j \tau_j^2 \mathcal N(\lambda; \theta_j, \sigma^2)`; integrates to 1.

        Args:
            grid: ``(G,)`` points :math:`\lambda`.
            sigma: broadening :math:`\sigma > 0`.

        Returns:
            ``(G,)`` float64 density values.
        """
        v.check_tensor("SpectralDensity.density", "grid", grid, ndim=1)
        v.check_positive_float("SpectralDensity.density", "sigma", sigma)
        x = grid.detach().to(torch.float64).cpu()[:, None]
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for theta, w in zip(self.nodes, self.weights, strict=True):
            gauss = torch.exp(-0.5 * ((x - theta[None, :]) / sigma) ** 2)
            total += (gauss * w[None, :]).sum(1) / (sigma * math.sqrt(2.0 * math.pi))
        return total / len(self.nodes)

    @property
    def trace(self) -> float:
        r"""SLQ trace estimate :math:`n \cdot \mathrm{mean}_r \sum_j \tau_{rj}^2\theta_{rj}`."""
        moments = [float((w * t).sum()) for t, w in zip(self.nodes, self.weights, strict=True)]
        return self.dim * sum(moments) / len(moments)


def spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    *,
    n_runs: int = 1,
    n_steps: int = 80,
    seed: int = 0,
    hvp_method: str = "double-backward",
    mode: str = "eval",
) -> SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each run a Rademacher probe :math:`v = z/\lVert z\rVert` starts ``n_steps`` of
    Lanczos with full reorthogonalisation; with :math:`T = S\Theta S^\top` the Gauss
    quadrature rule :math:`v^\top f(H) v \approx \sum_j \tau_j^2 f(\theta_j)`,
    :math:`\tau_j = S_{1j}`, is exact for polynomials of degree below :math:`2m`, and
    :math:`\mathbb E[v^\top f(H) v] = \frac1n \mathrm{tr} f(H)`.  Implements SLQ as in
    [Ubaru2017]_ and its use for neural-network Hessians [Ghorbani2019]_ (PyHessian's
    ``density``).

    Args:
        model, loss_fn, batch, hvp_method, mode: as in :class:`HessianOperator`.
        n_runs: independent probes (>= 1).
        n_steps: Lanczos steps per run (capped at ``dim``; fewer if the Krylov space is
            exhausted).
        seed: seed of the probes.

    Returns:
        :class:`SpectralDensity` (``.density(grid, sigma)``, ``.trace``).

    Raises:
        ValueError: ``n_runs < 1`` or ``n_steps < 1``; the errors of
            :class:`HessianOperator`.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()  # eigenvalues 3 -+ sqrt(5)
        >>> d = spectral_density(lin, mse, (x, torch.zeros(2, 1, dtype=torch.float64)))
        >>> [round(t, 10) for t in d.nodes[0].tolist()]  # two steps: exact nodes
        [0.7639320225, 5.2360679775]
        >>> [round(w, 10) for w in d.weights[0].tolist()]  # probe (1, -1)/sqrt(2) here
        [0.9472135955, 0.0527864045]
        >>> round(d.trace, 10)  # 2 v^T H v for this one probe (tr H = 6 on average)
        2.0

    References:
        .. [Ubaru2017] S. Ubaru, J. Chen, Y. Saad, "Fast Estimation of tr(f(A)) via Stochastic
           Lanczos Quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
        .. [Ghorbani2019] B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural
           Net Optimization via Hessian Eigenvalue Density", ICML 2019, arXiv:1901.10159.

    .. note:: Documented choice.
        Nodes come from a symmetric eigensolver (``eigh``) on the tridiagonal matrix;
        PyHessian 0.1 uses the removed ``torch.eig`` (a general solver).  ``n_steps=80``
        steps by default (PyHessian: ``iter=100``); the basis is kept for full
        reorthogonalisation, ``n_steps`` parameter copies per run.
    """
    fn = "spectral_density"
    v.check_int(fn, "n_runs", n_runs, low=1)
    v.check_int(fn, "n_steps", n_steps, low=1)
    op = HessianOperator._for(fn, model, loss_fn, batch, hvp_method, mode)
    gen = _generator(seed, op.device)
    nodes, weights = [], []
    for _ in range(n_runs):
        start = _random_rows((1, op.dim), op, gen, "rademacher")
        state = list(_lanczos(op, start, n_steps, gen))[-1]
        theta, s = torch.linalg.eigh(state.t[: state.m, : state.m])
        nodes.append(theta)
        weights.append(s[0] ** 2)
    return SpectralDensity(tuple(nodes), tuple(weights), op.dim, op.n_hvp, hvp_method, mode)


# --- ascent sharpness ---------------------------------------------------------------------------


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
        ValueError: ``rho < 0``, ``eta < 0``, ``m < 1``; the errors of
            :class:`HessianOperator`.

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
    if m is not None:
        v.check_int(fn, "m", m, low=1)
    f = _LossOfParams(fn, model, loss_fn, batch, mode)
    n = len(f.inputs)
    chunks = [(0, n)] if m is None else [(i, min(i + m, n)) for i in range(0, n, m)]
    loss_sum = perturbed_sum = 0.0
    for lo, hi in chunks:
        inputs, targets = (
            (f.inputs, f.targets) if m is None else (f.inputs[lo:hi], f.targets[lo:hi])
        )
        leaves = f.leaves()
        loss = f(leaves, inputs, targets)
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


# --- PyHessian ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PyHessianResult:
    """Result of :func:`pyhessian_reference` (``None`` for quantities not requested).

    Attributes:
        eigenvalues: PyHessian's top ``top_n`` eigenvalues (largest magnitude, power
            iteration with deflation).
        n_hvp_eigenvalues: Hessian-vector products the power iterations used.
        trace: mean of the trace samples.
        trace_samples: the per-probe values :math:`z^\\top H z`.
        n_hvp_trace: products used by the trace.
        trace_rule: ``"fixed"`` or ``"released"`` (see :func:`pyhessian_reference`).
        density_nodes, density_weights: one list per SLQ run.
        n_hvp_density: products used by the density.
    """

    eigenvalues: list[float] | None
    n_hvp_eigenvalues: int
    trace: float | None
    trace_samples: list[float] | None
    n_hvp_trace: int
    trace_rule: str
    density_nodes: list[list[float]] | None
    density_weights: list[list[float]] | None
    n_hvp_density: int


@contextlib.contextmanager
def _counting_hvps(module: Any, counter: list[int]) -> Iterator[None]:
    """Count calls of ``module.hessian_vector_product`` (PyHessian's single-batch HVP)."""
    original = module.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return original(*args, **kwargs)

    module.hessian_vector_product = counted
    try:
        yield
    finally:
        module.hessian_vector_product = original


def _legacy_eig(matrix: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
    """Stand-in for the ``torch.eig`` removed in PyTorch 1.13, for symmetric input.

    Same layout as the old function: eigenvalues as an ``(n, 2)`` (real, imaginary) tensor
    and eigenvectors as columns; PyHessian only passes its symmetric tridiagonal matrix.
    """
    values, vectors = torch.linalg.eigh(matrix)
    return torch.stack([values, torch.zeros_like(values)], 1), vectors


@contextlib.contextmanager
def _torch_eig_restored() -> Iterator[None]:
    original = torch.eig
    torch.eig = _legacy_eig  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.eig = original  # type: ignore[assignment]


def pyhessian_reference(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    *,
    compute: Sequence[str] = ("eigenvalues", "trace"),
    top_n: int = 1,
    max_iter: int = 100,
    tol: float = 1e-3,
    trace_max_iter: int = 100,
    trace_tol: float = 1e-3,
    trace_rule: str = "fixed",
    density_iter: int = 100,
    n_v: int = 1,
    seed: int = 0,
) -> PyHessianResult:
    r"""Run the ``pyhessian`` package (PyHessian, [Yao2020]_) on the same model and batch.

    Calls ``pyhessian.hessian(model, loss_fn, data=batch)`` and its ``eigenvalues`` (power
    iteration, relative-change stopping with ``tol``), ``trace`` (Hutchinson) and
    ``density`` (SLQ), counting Hessian-vector products, for comparison with
    :func:`top_eigenvalues`, :func:`hessian_trace` and :func:`spectral_density`.  Defects of
    the released PyPI version 0.1 and how they are handled here (spec section 5.2):

    * **Trace stopping rule**: 0.1 divides the change of the running mean by the *signed*
      previous mean, so a negative trace stops after two probes (fixed on GitHub in 2021).
      ``trace_rule="fixed"`` draws PyHessian's probes one at a time (``trace(maxIter=1)``)
      and applies the corrected rule, :math:`|\bar t_m - \bar t_{m-1}| / (|\bar t_{m-1}| +
      10^{-6}) <` ``trace_tol``; ``"released"`` runs 0.1's loop as shipped.  Either way the
      rule watches the change of the mean, not its error.
    * **Density**: 0.1 calls ``torch.eig``, removed in PyTorch 1.13 (RuntimeError); here a
      stand-in with the old layout, computed by ``torch.linalg.eigh`` (the matrix is
      symmetric tridiagonal), replaces it for the duration of the call.
    * **Side effects**, undone here: 0.1 switches the model to eval mode and leaves it
      there, and its ``backward(create_graph=True)`` leaves graph-attached ``.grad`` on
      every parameter (added to existing gradients); train/eval flags and gradients are
      restored on return.
    * **Unused parameters** (no gradient) make 0.1 fail (its gradient list holds the float
      0); they are frozen (``requires_grad=False``) for the call.
    * **Device**: ``cuda=True`` means the device string ``'cuda'``; a model on another CUDA
      device than the current one is refused with an error.  Its random probes come from
      the global RNG: they are seeded with ``seed`` inside a forked RNG state, so the
      caller's RNG is untouched.

    Args:
        model, loss_fn, batch: as in :class:`HessianOperator` (always eval mode: PyHessian
            has no train-mode option).
        compute: any of ``"eigenvalues"``, ``"trace"``, ``"density"``.
        top_n, max_iter, tol: ``eigenvalues(maxIter, tol, top_n)``.
        trace_max_iter, trace_tol, trace_rule: ``trace(maxIter, tol)`` and the rule above.
        density_iter, n_v: ``density(iter, n_v)``.
        seed: seed of PyHessian's random vectors.

    Returns:
        :class:`PyHessianResult`.

    Raises:
        ValueError: an unknown quantity or rule, bad counts or tolerances, a model on a
            non-current CUDA device; the errors of :class:`HessianOperator`.

    References:
        .. [Yao2020] Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: Neural
           Networks Through the Lens of the Hessian", IEEE BigData 2020, arXiv:1912.07145.

    .. note:: Documented choice.
        The defects are worked around from outside (probe-by-probe driving, a temporary
        ``torch.eig``), never by patching or copying PyHessian's code, so the numbers are
        those of the released algorithms.
    """
    fn = "pyhessian_reference"
    for name in compute:
        v.check_choice(fn, "compute entry", name, ("eigenvalues", "trace", "density"))
    v.check_choice(fn, "trace_rule", trace_rule, ("fixed", "released"))
    for name, value in (
        ("top_n", top_n),
        ("max_iter", max_iter),
        ("trace_max_iter", trace_max_iter),
        ("density_iter", density_iter),
        ("n_v", n_v),
    ):
        v.check_int(fn, name, value, low=1)
    v.check_positive_float(fn, "tol", tol)
    v.check_positive_float(fn, "trace_tol", trace_tol)
    f = _LossOfParams(fn, model, loss_fn, batch, "eval")  # validates model, batch and loss
    leaves = f.leaves()
    grads = torch.autograd.grad(f(leaves), list(leaves.values()), allow_unused=True)
    unused = {name for name, g in zip(leaves, grads, strict=True) if g is None}
    cuda = f.device.type == "cuda"
    if cuda and f.device.index not in (None, torch.cuda.current_device()):
        raise ValueError(
            f"{fn}: pyhessian 0.1 moves data to the device 'cuda' (the current device, "
            f"{torch.cuda.current_device()}) but the model is on {f.device}; call "
            f"torch.cuda.set_device({f.device.index}) first"
        )

    # Imported here (not needed to import amcl_lab); by module path, because the package
    # re-exports the class ``hessian`` under the same name as its module.
    ph = importlib.import_module("pyhessian.hessian")

    flags = [(m, m.training) for m in model.modules()]
    params = dict(model.named_parameters())
    saved_grads = {name: p.grad for name, p in params.items()}
    frozen = [params[name] for name in unused]
    counts = {"eigenvalues": [0], "trace": [0], "density": [0]}
    eigenvalues = trace_samples = nodes = weights = None
    try:
        for p in params.values():
            p.grad = None
        for p in frozen:
            p.requires_grad_(False)
        with torch.random.fork_rng(devices=[f.device] if cuda else []):
            torch.manual_seed(seed)
            with warnings.catch_warnings():
                # 0.1 calls backward(create_graph=True): the parameter <-> .grad reference cycle
                # PyTorch warns about is broken below, when the gradients are restored.
                warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
                h = ph.hessian(model, loss_fn, data=(f.inputs, f.targets), cuda=cuda)
            if "eigenvalues" in compute:
                with _counting_hvps(ph, counts["eigenvalues"]):
                    eigenvalues, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
            if "trace" in compute:
                with _counting_hvps(ph, counts["trace"]):
                    if trace_rule == "released":
                        trace_samples = list(h.trace(maxIter=trace_max_iter, tol=trace_tol))
                    else:
                        trace_samples = _fixed_rule_trace(h, trace_max_iter, trace_tol)
            if "density" in compute:
                with _counting_hvps(ph, counts["density"]), _torch_eig_restored():
                    nodes, weights = h.density(iter=density_iter, n_v=n_v)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        for name, p in params.items():
            p.grad = saved_grads[name]
        for m, flag in flags:
            m.training = flag
    return PyHessianResult(
        eigenvalues=None if eigenvalues is None else [float(x) for x in eigenvalues],
        n_hvp_eigenvalues=counts["eigenvalues"][0],
        trace=None if trace_samples is None else sum(trace_samples) / len(trace_samples),
        trace_samples=trace_samples,
        n_hvp_trace=counts["trace"][0],
        trace_rule=trace_rule,
        density_nodes=None if nodes is None else [[float(x) for x in run] for run in nodes],
        density_weights=None if weights is None else [[float(x) for x in run] for run in weights],
        n_hvp_density=counts["density"][0],
    )


def _fixed_rule_trace(h: Any, max_iter: int, tol: float) -> list[float]:
    """PyHessian's Hutchinson probes, one per call, stopped by the corrected rule."""
    samples: list[float] = []
    previous = 0.0
    for _ in range(max_iter):
        samples.extend(float(x) for x in h.trace(maxIter=1, tol=tol))
        mean = sum(samples) / len(samples)
        if len(samples) > 1 and abs(mean - previous) / (abs(previous) + 1e-6) < tol:
            break
        previous = mean
    return samples
