"""The ``pyhessian`` 0.1 package on the same model and batch: :func:`pyhessian_reference`.

A reference to compare :mod:`.eigen`, :mod:`.trace` and :mod:`.density` with; the released
package's defects are worked around from outside (see :func:`pyhessian_reference`).
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import _validation as v
from .operator import LossFn, LossOfParams


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
    the released PyPI version 0.1 (of its code, not of the algorithms of [Yao2020]_) and how
    they are handled here (the cost and accuracy of its stopping rules are measured in
    ``docs/benchmarks.md``):

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
    f = LossOfParams(fn, model, loss_fn, batch, "eval")  # validates model, batch and loss
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
