"""The reference oracle: is my (fast, fused, third-party) loss right?

:func:`check` drives a candidate implementation and a registered reference loss with the
same Hypothesis-drawn inputs, compares values and gradients with the reference's per-dtype
tolerances and returns an :class:`OracleReport`; :func:`assert_matches_reference` raises
``AssertionError`` with that report, for use inside a user's test suite.  The command
``amcl-lab oracle package.module:function --reference nt_xent`` does the same from a shell.

Design note.  Everything the oracle knows about a reference comes from its
:class:`~amcl_lab.registry.LossSpec`: the input signature (``inputs``), how to draw valid
inputs covering the documented domain (``strategy``), and the tolerance per dtype
(``tolerances``, with the 1/tau scaling rule).  The oracle adds two things:

* **Adapters** (:class:`Adapter`, :data:`ADAPTERS`) map other calling conventions onto the
  reference's: stacked embeddings plus labels, pre-normalised inputs, a loss object built
  from the hyperparameters, another reduction, a peer's documented numerical floor.
* **Failure handling**: a candidate that raises, returns a non-tensor, a tensor of the wrong
  shape or a non-finite value, modifies its inputs, or cuts the gradient to an input is a
  *mismatch* with a sentence saying what happened, never a crash of the oracle.

Conventions.  Inputs are drawn in float64 and rounded to the candidate's dtype; the
reference is evaluated in float64 on the *rounded* inputs, so only the candidate's
arithmetic is being judged, not the rounding of its inputs.  A value or gradient agrees when
``|candidate - reference| <= atol + rtol * scale`` with ``scale = |reference value|`` for the
value and ``max |reference gradient|`` for each gradient (normwise), and ``atol`` grows like
1/tau where the entry's tolerance says so.  Non-scalar outputs (``reduction="none"``) are
differentiated along a fixed random cotangent.  Gradients are checked for every floating
positional input (embeddings, queues and tensor temperatures).  The candidate receives the
drawn hyperparameters (``sample.kwargs``) but not the entry's ``fixed_kwargs``: those name
the variant the candidate is expected to implement (pass ``functools.partial(fn,
variant="in")`` to check a multi-variant function against ``supcon_in``).

Ill-conditioned inputs.  Where the reference itself, evaluated at the candidate's dtype,
misses the tolerance against its float64 value (a near-tie in a hardest-negative selection,
logits of size 1e5 at tau = 1e-5), no implementation at that dtype can meet it; there the
candidate must instead stay within :data:`ILL_CONDITIONED_SLACK` times the reference's own
error, and the report counts such inputs.  Raising, non-finite values, wrong shapes, modified
inputs and cut gradients are never excused.

On a mismatch at a reduced precision the oracle assigns blame (``OracleReport.blame``): it
recomputes the candidate in float64 on the same inputs; agreement there means the
difference is numerical (rounding, overflow), disagreement means a different definition.

Example:
    >>> import torch
    >>> from amcl_lab import oracle
    >>> def wrong(z1, z2, temperature):  # forgets to normalise the embeddings
    ...     z = torch.cat([z1, z2])
    ...     logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    ...     n = z1.shape[0]
    ...     target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    ...     return torch.nn.functional.cross_entropy(logits, target)
    >>> report = oracle.check(wrong, "nt_xent", max_examples=20)
    >>> report.passed
    False
    >>> report.failure.split(":")[0]  # the shrunk input has unit rows: only gradients differ
    'gradient of z1 differs'
    >>> report.worst.sample.summary()
    'two_view: ((2, 1):float32, (2, 1):float32) on cpu with temperature=1.0'
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import errors as hypothesis_errors
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import Tensor

from . import registry
from .losses._common import l2_normalize
from .registry import LossSpec
from .samples import SampleInput, Tolerance

__all__ = [
    "ADAPTERS",
    "ILL_CONDITIONED_SLACK",
    "Adapter",
    "Comparison",
    "Errors",
    "OracleReport",
    "add_subcommand",
    "assert_matches_reference",
    "check",
    "load_candidate",
    "resolve_adapter",
]

Candidate = Callable[..., Any]

#: Positional input names that hold embeddings (normalised by the ``prenormalized`` adapter).
EMBEDDING_INPUTS = ("z1", "z2", "query", "key", "queue", "features", "p1", "p2", "h1", "h2")

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


# --- adapters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Adapter:
    """Maps a candidate's calling convention onto a reference's.

    Attributes:
        name: the key in :data:`ADAPTERS` (``"a+b"`` for a composition).
        description: one line for reports and ``--help``.
        wrap: ``wrap(candidate, spec)`` returns a callable with the reference's signature
            (``f(*sample.args, **sample.kwargs)``); ``None`` calls the candidate as it is.
        reference_kwargs: keyword arguments added to the *reference* call (for example
            ``reduction="sum"`` when the candidate sums over anchors).
        reference_transform: ``transform(value, dtype)`` applied to the reference's output
            to obtain the expected value for a candidate computing in ``dtype`` (for
            example a peer's documented numerical floor).
        signatures: the ``LossSpec.inputs`` tuples the adapter understands; ``None`` for any.
    """

    name: str
    description: str
    wrap: Callable[[Candidate, LossSpec], Candidate] | None = None
    reference_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reference_transform: Callable[[Tensor, torch.dtype], Tensor] | None = None
    signatures: tuple[tuple[str, ...], ...] | None = None

    def problem_with(self, spec: LossSpec) -> str | None:
        """Why this adapter cannot be used with ``spec`` (``None`` if it can)."""
        if self.signatures is not None and tuple(spec.inputs) not in self.signatures:
            wanted = " or ".join(str(s) for s in self.signatures)
            return (
                f"adapter {self.name!r} maps inputs {wanted}, but reference {spec.name!r} "
                f"takes {tuple(spec.inputs)}"
            )
        params = inspect.signature(spec.fn).parameters
        missing = [k for k in self.reference_kwargs if k not in params]
        if missing:
            return (
                f"adapter {self.name!r} passes {missing} to the reference, which "
                f"{spec.fn.__name__} does not accept"
            )
        return None

    def adapt(self, candidate: Candidate, spec: LossSpec) -> Candidate:
        """The candidate as a callable with the reference's signature."""
        return candidate if self.wrap is None else self.wrap(candidate, spec)

    def expected(self, spec: LossSpec, sample: SampleInput, dtype: torch.dtype) -> Tensor:
        """The reference's value for ``sample`` as this adapter's candidate should return it."""
        value = spec(*sample.args, **{**sample.kwargs, **self.reference_kwargs})
        if self.reference_transform is not None:
            value = self.reference_transform(value, dtype)
        return value


def _two_view_labels(candidate: Candidate, spec: LossSpec) -> Candidate:
    if tuple(spec.inputs) == ("z1", "z2"):

        def call_views(z1: Tensor, z2: Tensor, **kwargs: Any) -> Any:
            labels = torch.arange(z1.shape[0], device=z1.device).repeat(2)
            return candidate(torch.cat([z1, z2]), labels, **kwargs)

        return call_views

    def call_features(features: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Any:
        n, views, dim = features.shape
        if labels is None:
            labels = torch.arange(n, device=features.device)
        # view-major, like the reference's item order: item r is view r // N of sample r % N
        flat = features.transpose(0, 1).reshape(views * n, dim)
        return candidate(flat, labels.repeat(views), **kwargs)

    return call_features


def _module(candidate: Candidate, spec: LossSpec) -> Candidate:
    def call(*args: Any, **kwargs: Any) -> Any:
        return candidate(**kwargs)(*args)

    return call


def _views_stacked(candidate: Candidate, spec: LossSpec) -> Candidate:
    def call(z1: Tensor, z2: Tensor, **kwargs: Any) -> Any:
        return candidate(torch.stack([z1, z2], dim=1), **kwargs)

    return call


def _prenormalized(candidate: Candidate, spec: LossSpec) -> Candidate:
    embedded = {i for i, name in enumerate(spec.inputs) if name in EMBEDDING_INPUTS}

    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(
            l2_normalize(a) if i in embedded and isinstance(a, Tensor) else a
            for i, a in enumerate(args)
        )
        return candidate(*args, **kwargs)

    return call


def _log_floor(per_anchor: Tensor, dtype: torch.dtype) -> Tensor:
    # -log(p + tiny) with p = exp(-loss): pytorch-metric-learning adds finfo(dtype).tiny
    # inside the log of every positive pair (../shared/spec/peers.md section 5).
    log_tiny = torch.tensor(math.log(torch.finfo(dtype).tiny), dtype=per_anchor.dtype)
    return -torch.logaddexp(-per_anchor, log_tiny.to(per_anchor.device)).mean()


_TWO_VIEW = (("z1", "z2"),)

#: The built-in adapters, by name.
ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter("identity", "calls the candidate exactly like the reference"),
        Adapter(
            "embeddings_labels",
            "candidate(embeddings (M, D), labels (M,), **hyper): two views stacked with "
            "sample ids as labels, or SupCon features flattened view-major",
            wrap=_two_view_labels,
            signatures=(*_TWO_VIEW, ("features", "labels")),
        ),
        Adapter(
            "module",
            "the candidate is a loss class built from the hyperparameters: "
            "candidate(**hyper)(*tensors)",
            wrap=_module,
        ),
        Adapter(
            "views_stacked",
            "candidate(features (N, 2, D), **hyper) for [batch, views, dim] layouts",
            wrap=_views_stacked,
            signatures=_TWO_VIEW,
        ),
        Adapter(
            "prenormalized",
            "the candidate expects unit-norm rows: embeddings are L2-normalised before the call",
            wrap=_prenormalized,
        ),
        Adapter(
            "sum",
            "the candidate sums over anchors instead of averaging",
            reference_kwargs={"reduction": "sum"},
        ),
        Adapter(
            "per_anchor",
            "the candidate returns the per-anchor losses (reduction='none')",
            reference_kwargs={"reduction": "none"},
        ),
        Adapter(
            "pml_log_floor",
            "each per-anchor loss is -log(p + tiny) as in pytorch-metric-learning's NTXentLoss, "
            "so losses are capped at -log(finfo.tiny) (87.34 in float32)",
            reference_kwargs={"reduction": "none"},
            reference_transform=_log_floor,
            signatures=_TWO_VIEW,
        ),
    )
}


def _compose(adapters: Sequence[Adapter]) -> Adapter:
    """One adapter applying ``adapters`` from the outside in (the first sees the reference's
    arguments, the last calls the candidate)."""
    if len(adapters) == 1:
        return adapters[0]
    merged: dict[str, Any] = {}
    for a in adapters:
        clash = set(merged) & set(a.reference_kwargs)
        if clash:
            raise ValueError(f"adapters set the reference's {sorted(clash)} twice")
        merged.update(a.reference_kwargs)
    transforms = [a.reference_transform for a in adapters if a.reference_transform is not None]
    if len(transforms) > 1:
        raise ValueError("at most one adapter may transform the reference's value")
    signature_sets = [set(a.signatures) for a in adapters if a.signatures is not None]
    signatures = tuple(set.intersection(*signature_sets)) if signature_sets else None

    def wrap(candidate: Candidate, spec: LossSpec) -> Candidate:
        for a in reversed(adapters):
            candidate = a.adapt(candidate, spec)
        return candidate

    return Adapter(
        "+".join(a.name for a in adapters),
        "; ".join(a.description for a in adapters),
        wrap=wrap,
        reference_kwargs=merged,
        reference_transform=transforms[0] if transforms else None,
        signatures=signatures,
    )


def resolve_adapter(
    adapter: str | Adapter | Sequence[str | Adapter] | None, spec: LossSpec
) -> Adapter:
    """Turn ``adapter`` (a name, ``"a,b"``, an :class:`Adapter` or a sequence) into one adapter.

    Raises:
        ValueError: an unknown name, or an adapter that does not fit ``spec``.
    """
    if adapter is None:
        items: list[str | Adapter] = ["identity"]
    elif isinstance(adapter, (str, Adapter)):
        items = [adapter]
    else:
        items = list(adapter)
    resolved: list[Adapter] = []
    for item in items:
        if isinstance(item, Adapter):
            resolved.append(item)
            continue
        for name in filter(None, (part.strip() for part in str(item).split(","))):
            if name not in ADAPTERS:
                raise ValueError(
                    f"unknown adapter {name!r}; available: {', '.join(sorted(ADAPTERS))}"
                )
            resolved.append(ADAPTERS[name])
    if not resolved:
        resolved = [ADAPTERS["identity"]]
    combined = _compose(resolved)
    problem = combined.problem_with(spec)
    if problem is not None:
        raise ValueError(problem)
    return combined


# --- comparing one input ----------------------------------------------------------------------


@dataclass(frozen=True)
class Errors:
    """Largest absolute and (normwise) relative error seen for one quantity.

    ``rel`` is the error over the largest reference entry, taken only where that entry
    exceeds the absolute tolerance (a ratio to a near-zero reference says nothing).
    """

    abs: float = 0.0
    rel: float = 0.0

    def max(self, other: Errors) -> Errors:
        return Errors(max(self.abs, other.abs), max(self.rel, other.rel))


@dataclass(frozen=True)
class Comparison:
    """The candidate against the reference on one input.

    Attributes:
        sample: the input as the candidate received it (at the candidate's dtype/device).
        failure: what went wrong, or ``None`` if the candidate agrees.
        value: errors of the value.
        gradients: errors of each input's gradient, by input name.
        ratio: the largest error divided by its bound (> 1 is a mismatch).
        candidate_value: the candidate's output (detached, CPU), if it produced a tensor.
        expected_value: the reference's float64 output (detached, CPU).
        ill_conditioned: the reference evaluated at the candidate's dtype missed the
            tolerance on this input, so the candidate was held to the reference's own
            accuracy at that dtype (within :data:`ILL_CONDITIONED_SLACK`).
    """

    sample: SampleInput
    failure: str | None
    value: Errors
    gradients: Mapping[str, Errors]
    ratio: float
    candidate_value: Tensor | None
    expected_value: Tensor
    ill_conditioned: bool


def _input_names(spec: LossSpec, sample: SampleInput) -> list[str]:
    return [spec.inputs[i] if i < len(spec.inputs) else f"arg{i}" for i in range(len(sample.args))]


def _temperature(spec: LossSpec, sample: SampleInput) -> float | None:
    """The smallest temperature of a sample (a keyword or a positional ``temperature``)."""
    tau = sample.kwargs.get("temperature")
    if tau is None and "temperature" in spec.inputs:
        index = spec.inputs.index("temperature")
        tau = sample.args[index] if index < len(sample.args) else None
    if isinstance(tau, Tensor):
        return float(tau.detach().min())
    return None if tau is None else float(tau)


def _cotangent(value: Tensor) -> Tensor:
    """1 for a scalar; fixed weights in [0.5, 1.5) otherwise (same for both sides)."""
    if value.ndim == 0:
        return torch.ones((), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    return 0.5 + torch.rand(value.shape, generator=gen, dtype=torch.float64)


def _gradients(value: Tensor, leaves: list[Tensor]) -> tuple[Tensor | None, ...]:
    cot = _cotangent(value).to(device=value.device, dtype=value.dtype)
    return torch.autograd.grad(value, leaves, grad_outputs=cot, allow_unused=True)


def _relative(err: float, scale: float, atol: float) -> float:
    """``err / scale``; 0 where the reference is below the absolute tolerance (there the
    comparison is absolute and a ratio to a near-zero reference says nothing)."""
    return err / scale if scale > atol else 0.0


def _describe_shape(shape: torch.Size) -> str:
    return "a scalar" if len(shape) == 0 else f"shape {tuple(shape)}"


def _tensors(sample: SampleInput) -> list[tuple[str, Tensor]]:
    named = [(f"argument {i}", a) for i, a in enumerate(sample.args) if isinstance(a, Tensor)]
    named += [(k, v) for k, v in sample.kwargs.items() if isinstance(v, Tensor)]
    return named


def _run_candidate(
    fn: Candidate,
    leaves: SampleInput,
    names: list[str],
    expected: Tensor,
    grad: bool,
) -> tuple[Tensor | None, tuple[Tensor | None, ...], str | None]:
    """Call the candidate and differentiate it; every misbehaviour becomes a failure string."""
    before = [(n, t.detach().clone()) for n, t in _tensors(leaves)]
    try:
        out = fn(*leaves.args, **dict(leaves.kwargs))
    except Exception as error:  # a crash of the candidate is a finding, not an oracle error
        return None, (), f"the candidate raised {type(error).__name__}: {error}"
    after = dict(_tensors(leaves))
    modified = [n for n, t in before if not torch.equal(after[n].detach(), t)]
    for i, name in enumerate(names):
        modified = [name if m == f"argument {i}" else m for m in modified]
    if modified:
        return None, (), f"the candidate modified its input(s) {', '.join(modified)} in place"
    if not isinstance(out, Tensor):
        return None, (), f"the candidate returned a {type(out).__name__}, not a tensor"
    if out.shape != expected.shape:
        return (
            None,
            (),
            f"the candidate returned {_describe_shape(out.shape)}, "
            f"expected {_describe_shape(expected.shape)}",
        )
    if not out.is_floating_point():
        return None, (), f"the candidate returned a {out.dtype} tensor, not a floating one"
    if not bool(torch.isfinite(out).all()):
        shown = out.detach().cpu().double().flatten()[:4].tolist()
        return out.detach().cpu(), (), f"the candidate returned a non-finite value {shown}"
    if not grad:
        return out.detach().cpu(), (), None
    floating = [leaves.args[i] for i in leaves.floating_indices()]
    if not out.requires_grad:
        return (
            out.detach().cpu(),
            (),
            "the candidate's value carries no gradient: it is detached from every input",
        )
    try:
        grads = _gradients(out, floating)
    except Exception as error:
        return (
            out.detach().cpu(),
            (),
            f"the candidate's backward raised {type(error).__name__}: {error}",
        )
    return out.detach().cpu(), grads, None


@dataclass(frozen=True)
class _Quantity:
    """The error of one compared quantity (the value or one gradient) against its bound."""

    name: str
    err: float
    bound: float
    ratio: float  # largest elementwise error / bound
    scale: float
    detail: str


def _value_quantity(out: Tensor, expected: Tensor, atol: float, rtol: float) -> _Quantity:
    candidate = out.double()
    err = (candidate - expected).abs()
    bound = atol + rtol * expected.abs()
    if not err.numel():
        return _Quantity("value", 0.0, atol, 0.0, 0.0, "")
    ratios = (err / bound).flatten()
    worst = int(ratios.argmax())
    detail = (
        f"value differs: |candidate - reference| = {float(err.flatten()[worst]):.3e} > "
        f"bound {float(bound.flatten()[worst]):.3e} (candidate "
        f"{float(candidate.flatten()[worst]):.10g}, reference "
        f"{float(expected.flatten()[worst]):.10g})"
    )
    scale = float(expected.abs().max())
    return _Quantity(
        "value", float(err.max()), float(bound.max()), float(ratios[worst]), scale, detail
    )


def _gradient_quantity(name: str, g: Tensor, g64: Tensor, atol: float, rtol: float) -> _Quantity:
    g = g.detach().cpu().double()
    scale = float(g64.abs().max()) if g64.numel() else 0.0
    err = float((g - g64).abs().max()) if g64.numel() else 0.0
    bound = atol + rtol * scale
    detail = (
        f"gradient of {name} differs: max |candidate - reference| = {err:.3e} > "
        f"bound {bound:.3e} (largest reference entry {scale:.3e})"
    )
    return _Quantity(f"grad {name}", err, bound, err / bound, scale, detail)


def _quantities(
    out: Tensor,
    grads: Sequence[Tensor | None],
    expected: Tensor,
    expected_grads: Sequence[Tensor],
    names: Sequence[str],
    atol: float,
    rtol: float,
) -> tuple[list[_Quantity], list[str]]:
    """Errors of a value and its gradients, and the failures no tolerance can excuse."""
    quantities = [_value_quantity(out, expected, atol, rtol)]
    hard: list[str] = []
    for name, g, g64 in zip(names, grads, expected_grads, strict=True):
        if g is None:
            if bool((g64 != 0).any()):
                hard.append(
                    f"no gradient reaches {name} (the candidate cuts it; the reference's "
                    f"gradient has norm {float(g64.norm()):.3e})"
                )
                continue
            g = torch.zeros_like(g64)
        if not bool(torch.isfinite(g).all()):
            hard.append(f"the gradient of {name} is not finite")
            continue
        quantities.append(_gradient_quantity(name, g, g64, atol, rtol))
    return quantities, hard


#: Where the reference itself, evaluated at the candidate's dtype, misses the tolerance (an
#: input ill-conditioned at that precision), the candidate may be at most this many times
#: as far from the float64 value as the reference at that dtype is.
ILL_CONDITIONED_SLACK = 4.0


def _compare(
    fn: Candidate,
    spec: LossSpec,
    adapter: Adapter,
    sample: SampleInput,
    dtype: torch.dtype,
    device: torch.device,
    grad: bool,
    tol: Tolerance,
) -> Comparison:
    low = sample.to(dtype, device)
    exact = low.to(torch.float64).to(requires_grad=grad)
    expected = adapter.expected(spec, exact, dtype)
    index = exact.floating_indices()
    expected_grads: list[Tensor] = []
    if grad:
        for i, g64 in zip(index, _gradients(expected, [exact.args[i] for i in index]), strict=True):
            g64 = torch.zeros_like(exact.args[i]) if g64 is None else g64
            expected_grads.append(g64.detach().cpu())
    expected = expected.detach().cpu()
    all_names = _input_names(spec, low)
    names = [all_names[i] for i in index] if grad else []

    out, grads, failure = _run_candidate(fn, low.to(requires_grad=grad), all_names, expected, grad)
    if failure is not None:
        return Comparison(low, failure, Errors(), {}, math.inf, out, expected, False)
    atol, rtol = tol.atol_for(_temperature(spec, exact)), tol.rtol
    quantities, hard = _quantities(out, grads, expected, expected_grads, names, atol, rtol)
    failing = [q for q in quantities if q.ratio > 1.0]
    ill_conditioned = False
    if failing and not hard and dtype != torch.float64:
        # Blame the right side: is the input ill-conditioned at this dtype, i.e. does the
        # reference itself, evaluated at the candidate's dtype, miss the tolerance too?
        def reference(*args: Any, **kwargs: Any) -> Tensor:
            return adapter.expected(spec, SampleInput(args, kwargs), dtype)

        ref_out, ref_grads, ref_failure = _run_candidate(
            reference, low.to(requires_grad=grad), all_names, expected, grad
        )
        if ref_failure is None:
            ref_q, _ = _quantities(ref_out, ref_grads, expected, expected_grads, names, atol, rtol)
            own = {q.name: q.ratio for q in ref_q}
            ill_conditioned = any(r > 1.0 for r in own.values())
            failing = [
                q
                for q in failing
                if not (
                    own.get(q.name, 0.0) > 1.0 and q.ratio <= ILL_CONDITIONED_SLACK * own[q.name]
                )
            ]
    problems = hard + [q.detail for q in failing]
    value = quantities[0]
    gradients = {
        q.name.removeprefix("grad "): Errors(q.err, _relative(q.err, q.scale, atol))
        for q in quantities[1:]
    }
    for name in names:
        gradients.setdefault(name, Errors(math.inf, math.inf))
    ratio = math.inf if hard else max(q.ratio for q in quantities)
    return Comparison(
        low,
        "; ".join(problems) if problems else None,
        Errors(value.err, _relative(value.err, value.scale, atol)),
        gradients,
        ratio,
        out,
        expected,
        ill_conditioned,
    )


# --- the report -------------------------------------------------------------------------------


def _format_tensor(t: Tensor) -> str:
    if t.numel() > 48:
        return f"<{tuple(t.shape)} tensor, first entries {t.flatten()[:6].tolist()}>"
    return repr(t.detach().cpu().tolist())


@dataclass(frozen=True)
class OracleReport:
    """What :func:`check` found.

    Attributes:
        candidate: the candidate's qualified name.
        reference: the registry name of the reference.
        adapter: the adapter(s) used.
        dtype: the candidate's input dtype; device: where it ran.
        grad: whether gradients were compared.
        examples: inputs evaluated in total; shrink_examples: of those, how many after the
            first failure (shrinking it to a minimal input, then replaying it).
        ill_conditioned: inputs on which the reference itself, evaluated at ``dtype``,
            missed the tolerance (see :class:`Comparison`).
        value: largest value errors over every input; gradients: the same per input.
        ratio: the largest error/bound ratio over the inputs that agreed (how much of the
            tolerance the candidate used; below 1 by definition).
        worst: the shrunk failing input, or (when everything agreed) the input closest to
            its bound.
        failure: what went wrong on ``worst``, or ``None``.
        blame: on a reduced-precision mismatch, whether the candidate agrees in float64.
        tolerance: the tolerance used; seed: the Hypothesis seed.
    """

    candidate: str
    reference: str
    adapter: str
    dtype: torch.dtype
    device: str
    grad: bool
    examples: int
    shrink_examples: int
    ill_conditioned: int
    value: Errors
    gradients: Mapping[str, Errors]
    ratio: float
    worst: Comparison | None
    failure: str | None
    blame: str | None
    tolerance: Tolerance
    seed: int | None

    @property
    def passed(self) -> bool:
        """True when the candidate agreed with the reference on every input."""
        return self.failure is None

    def __str__(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        verdict = "PASS" if self.passed else "MISMATCH"
        lines = [
            f"oracle {verdict}: {self.candidate} vs reference {self.reference!r} "
            f"(adapter {self.adapter})",
            f"  {dtype} on {self.device}, gradients {'checked' if self.grad else 'not checked'}, "
            f"{self.examples} inputs"
            + (f" ({self.shrink_examples} after the first failure)" if self.shrink_examples else "")
            + f", seed {self.seed}, tolerance rtol={self.tolerance.rtol:g} "
            f"atol={self.tolerance.atol:g}"
            + (" x max(1, 1/tau)" if self.tolerance.inverse_temperature else ""),
        ]
        if self.ill_conditioned:
            lines.append(
                f"  {self.ill_conditioned} input(s) were ill-conditioned at {dtype}: the reference "
                f"evaluated at {dtype} missed the tolerance itself, so the candidate was held "
                f"to within {ILL_CONDITIONED_SLACK:g}x of the reference's own error there"
            )
        if self.failure is not None:
            lines.append(f"  what happened: {self.failure}")
        lines.append(
            f"  {'largest error':<20}{'abs':>12}{'rel':>12}   (agreeing inputs used at most "
            f"{self.ratio:.2g} of the tolerance)"
        )
        lines.append(f"    {'value':<18}{self.value.abs:>12.3e}{self.value.rel:>12.3e}")
        for name, e in self.gradients.items():
            lines.append(f"    {'grad ' + name:<18}{e.abs:>12.3e}{e.rel:>12.3e}")
        if self.worst is not None:
            label = "minimal failing input" if self.failure else "input closest to its bound"
            lines.append(f"  {label}: {self.worst.sample.summary()}")
            for i, a in enumerate(self.worst.sample.args):
                if isinstance(a, Tensor):
                    lines.append(f"    args[{i}] = {_format_tensor(a)}")
            if self.worst.candidate_value is not None:
                lines.append(f"    candidate value = {_format_tensor(self.worst.candidate_value)}")
            lines.append(
                "    reference value (float64, same rounded inputs) = "
                f"{_format_tensor(self.worst.expected_value)}"
            )
        if self.blame is not None:
            lines.append(f"  blame: {self.blame}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the worst input as its one-line summary)."""
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "adapter": self.adapter,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": self.device,
            "grad": self.grad,
            "passed": self.passed,
            "examples": self.examples,
            "shrink_examples": self.shrink_examples,
            "ill_conditioned": self.ill_conditioned,
            "value": {"abs": self.value.abs, "rel": self.value.rel},
            "gradients": {k: {"abs": e.abs, "rel": e.rel} for k, e in self.gradients.items()},
            "ratio": self.ratio,
            "failure": self.failure,
            "blame": self.blame,
            "worst_input": None if self.worst is None else self.worst.sample.summary(),
            "tolerance": {
                "rtol": self.tolerance.rtol,
                "atol": self.tolerance.atol,
                "inverse_temperature": self.tolerance.inverse_temperature,
            },
            "seed": self.seed,
        }


class _Mismatch(AssertionError):
    """Raised inside the Hypothesis run so that it shrinks the failing input."""


@dataclass
class _Tally:
    examples: int = 0
    shrink_examples: int = 0
    ill_conditioned: int = 0
    value: Errors = field(default_factory=Errors)
    gradients: dict[str, Errors] = field(default_factory=dict)
    closest: Comparison | None = None
    failing: Comparison | None = None

    def add(self, c: Comparison) -> None:
        self.examples += 1
        self.ill_conditioned += c.ill_conditioned
        if self.failing is not None:
            self.shrink_examples += 1
        self.value = self.value.max(c.value)
        for name, e in c.gradients.items():
            self.gradients[name] = self.gradients.get(name, Errors()).max(e)
        if c.failure is not None:
            self.failing = c  # the last failure seen is the shrunk one Hypothesis replays
        elif self.closest is None or c.ratio > self.closest.ratio:
            self.closest = c


def _qualname(candidate: Candidate) -> str:
    if isinstance(candidate, functools.partial):
        inner = _qualname(candidate.func)
        kw = ", ".join(f"{k}={v!r}" for k, v in candidate.keywords.items())
        return f"partial({inner}, {kw})" if kw else inner
    module = getattr(candidate, "__module__", None)
    name = getattr(candidate, "__qualname__", None) or type(candidate).__qualname__
    return f"{module}:{name}" if module else name


def _check_arguments(dtype: torch.dtype, max_examples: int) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"check: dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"check: max_examples must be an int >= 1, got {max_examples!r}")


def check(
    candidate: Candidate,
    reference: str | LossSpec,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    grad: bool = True,
    max_examples: int = 100,
    adapter: str | Adapter | Sequence[str | Adapter] | None = None,
    strategy: st.SearchStrategy[SampleInput] | None = None,
    tolerance: Tolerance | None = None,
    seed: int | None = 0,
    shrink: bool = True,
) -> OracleReport:
    """Compare ``candidate`` with a registered reference loss on Hypothesis-drawn inputs.

    Inputs come from the entry's strategy (the whole documented domain: temperatures from
    1e-3 to 1e3, row norms from 1e-3 to 1e3, dimensions from 1, batches from 2 for the
    contrastive losses), are rounded to ``dtype`` and moved to ``device``.  The reference is
    evaluated in float64 on the same rounded inputs.  The first disagreement is shrunk by
    Hypothesis to a minimal input.

    Args:
        candidate: the implementation under test; called (after ``adapter``) like the
            reference, ``candidate(*tensors, **hyperparameters)``.
        reference: a registry name (``"nt_xent"``, ``"supcon"``, ...) or a
            :class:`~amcl_lab.registry.LossSpec`.
        dtype: the candidate's input dtype.
        device: the candidate's device (the reference runs there too, in float64).
        grad: also compare the gradient of every floating input.
        max_examples: inputs to draw (shrinking a failure adds more evaluations).
        adapter: a name from :data:`ADAPTERS`, ``"a,b"``, an :class:`Adapter`, or a sequence
            applied from the outside in.
        strategy: a Hypothesis strategy of :class:`~amcl_lab.samples.SampleInput` to use
            instead of the entry's (for example a restricted domain).
        tolerance: overrides the entry's tolerance for ``dtype``.
        seed: Hypothesis seed (``None`` for a random run).
        shrink: shrink a failing input to a minimal one (set ``False`` when only the
            verdict matters: shrinking can take many more evaluations than finding).

    Returns:
        An :class:`OracleReport`; ``report.passed`` tells the verdict.  A candidate that
        raises, returns a non-tensor, a wrong shape or a non-finite value, changes its
        inputs or cuts a gradient gives a failed report, not an exception.

    Raises:
        ValueError: an unknown reference or adapter, an adapter that does not fit the
            reference, a non-floating dtype or ``max_examples < 1``.
    """
    spec = reference if isinstance(reference, LossSpec) else registry.get(reference)
    _check_arguments(dtype, max_examples)
    device = torch.device(device)
    adapt = resolve_adapter(adapter, spec)
    fn = adapt.adapt(candidate, spec)
    tol = tolerance if tolerance is not None else spec.tolerance(dtype)
    drawn = strategy if strategy is not None else spec.strategy(dtype=torch.float64, device="cpu")
    tally = _Tally()

    @settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    @given(drawn)
    def run(sample: SampleInput) -> None:
        comparison = _compare(fn, spec, adapt, sample, dtype, device, grad, tol)
        tally.add(comparison)
        if comparison.failure is not None:
            raise _Mismatch(comparison.failure)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    note = None
    try:
        run()
    except _Mismatch:
        pass
    except (hypothesis_errors.Flaky, hypothesis_errors.FlakyFailure):
        note = "the failure did not reproduce on a second call: the candidate is not deterministic"

    failing = tally.failing
    failure = None if failing is None else failing.failure
    if failure is not None and note is not None:
        failure = f"{failure} ({note})"
    blame = None
    if failing is not None and dtype != torch.float64:
        blame = _blame(fn, spec, adapt, failing, device, grad)
    return OracleReport(
        candidate=_qualname(candidate),
        reference=spec.name,
        adapter=adapt.name,
        dtype=dtype,
        device=str(device),
        grad=grad,
        examples=tally.examples,
        shrink_examples=tally.shrink_examples,
        ill_conditioned=tally.ill_conditioned,
        value=tally.value,
        gradients=dict(tally.gradients),
        ratio=0.0 if tally.closest is None else tally.closest.ratio,
        worst=failing if failing is not None else tally.closest,
        failure=failure,
        blame=blame,
        tolerance=tol,
        seed=seed,
    )


def _blame(
    fn: Candidate,
    spec: LossSpec,
    adapter: Adapter,
    failing: Comparison,
    device: torch.device,
    grad: bool,
) -> str:
    """Recompute a reduced-precision mismatch in float64 and say which side it comes from."""
    exact = failing.sample.to(torch.float64)
    again = _compare(
        fn, spec, adapter, exact, torch.float64, device, grad, spec.tolerance(torch.float64)
    )
    if again.failure is None:
        return (
            "given the same inputs in float64 the candidate agrees with the reference "
            f"(worst error/bound {again.ratio:.2g}): the difference is numerical "
            "(rounding or overflow in the candidate's reduced-precision arithmetic)"
        )
    return (
        "given the same inputs in float64 the candidate still disagrees "
        f"({again.failure}): the difference does not come from the input precision "
        "(a different definition, or arithmetic the candidate does in a fixed lower precision)"
    )


def assert_matches_reference(
    candidate: Candidate, reference: str | LossSpec, **kwargs: Any
) -> OracleReport:
    """:func:`check`, raising ``AssertionError`` with the full report on a mismatch.

    Takes the keyword arguments of :func:`check` and returns the report when the candidate
    agrees, so a test can also inspect the errors.

    Example:
        >>> from amcl_lab import fast, oracle
        >>> report = oracle.assert_matches_reference(fast.nt_xent, "nt_xent", max_examples=10)
        >>> report.passed
        True
    """
    report = check(candidate, reference, **kwargs)
    if not report.passed:
        raise AssertionError(str(report))
    return report


# --- command line -----------------------------------------------------------------------------


def load_candidate(target: str) -> Candidate:
    """Import ``package.module:attribute[.attribute]`` and return the attribute.

    Raises:
        ValueError: a malformed target, a module that cannot be imported, a missing
            attribute or one that is not callable (each message names the target).
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"candidate must look like package.module:function, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} for {target!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{target!r}: {module_name!r} has no attribute path {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def _run_cli(args: argparse.Namespace) -> int:
    try:
        candidate = load_candidate(args.candidate)
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch.cuda.is_available() is False")
        report = check(
            candidate,
            args.reference,
            dtype=DTYPES[args.dtype],
            device=device,
            grad=not args.no_grad,
            max_examples=args.max_examples,
            adapter=args.adapter or None,
            seed=args.seed,
            shrink=not args.no_shrink,
        )
    except (ValueError, RuntimeError) as error:
        print(f"amcl-lab oracle: error: {error}", file=sys.stderr)
        return 2
    print(report)
    if args.json is not None:
        from .io import write_json

        write_json(args.json, report.to_dict())
    return 0 if report.passed else 1


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``oracle`` to an ``argparse`` sub-command set (the ``amcl-lab`` command line).

    ``amcl-lab oracle package.module:function --reference NAME [--adapter A[,B]]
    [--device DEV] [--dtype DTYPE] [--max-examples K] [--seed S] [--no-grad] [--no-shrink]
    [--json PATH]``
    prints the report and exits 0 on agreement, 1 on a mismatch and 2 on a usage error.
    """
    parser = subparsers.add_parser(
        "oracle",
        help="check a loss implementation against a reference loss",
        description=(
            "Drive a candidate loss and a registered reference with the same Hypothesis "
            "inputs; compare values and gradients; print the report. Exit status: 0 agree, "
            "1 mismatch, 2 usage error."
        ),
    )
    parser.add_argument("candidate", help="the implementation, as package.module:function")
    parser.add_argument(
        "--reference",
        required=True,
        help=f"registered reference loss ({', '.join(registry.names())})",
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        help=(
            "calling-convention adapter, repeatable or comma-separated, outermost first: "
            + ", ".join(sorted(ADAPTERS))
        ),
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="candidate input dtype"
    )
    parser.add_argument("--max-examples", type=int, default=100, help="inputs to draw")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    parser.add_argument("--no-grad", action="store_true", help="compare values only")
    parser.add_argument(
        "--no-shrink", action="store_true", help="report the first failing input as found"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.set_defaults(func=_run_cli)
    return parser
