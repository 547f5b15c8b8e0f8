"""The loss oracle: is my (fast, fused, third-party) loss right?

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

import math
from collections.abc import Sequence
from typing import Any

import torch
from hypothesis import errors as hypothesis_errors
from hypothesis import given
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import Tensor

from .. import _validation as v
from .. import registry
from ..registry import LossSpec
from ..samples import SampleInput, Tolerance
from .adapters import Adapter, resolve_adapter
from .candidate import Candidate, qualname
from .report import Comparison, Errors, OracleReport
from .search import Mismatch, Tally, search_settings
from .tolerance import ILL_CONDITIONED_SLACK, Quantity, gradient_quantity, relative, value_quantity


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


def _quantities(
    out: Tensor,
    grads: Sequence[Tensor | None],
    expected: Tensor,
    expected_grads: Sequence[Tensor],
    names: Sequence[str],
    atol: float,
    rtol: float,
) -> tuple[list[Quantity], list[str]]:
    """Errors of a value and its gradients, and the failures no tolerance can excuse."""
    quantities = [value_quantity(out, expected, atol, rtol)]
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
        quantities.append(gradient_quantity(name, g, g64, atol, rtol))
    return quantities, hard


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
        q.name.removeprefix("grad "): Errors(q.err, relative(q.err, q.scale, atol))
        for q in quantities[1:]
    }
    for name in names:
        gradients.setdefault(name, Errors(math.inf, math.inf))
    ratio = math.inf if hard else max(q.ratio for q in quantities)
    return Comparison(
        low,
        "; ".join(problems) if problems else None,
        Errors(value.err, relative(value.err, value.scale, atol)),
        gradients,
        ratio,
        out,
        expected,
        ill_conditioned,
    )


def resolve_reference(reference: str | LossSpec) -> LossSpec:
    """A :class:`~amcl_lab.registry.LossSpec` as given, or the loss
    (:data:`~amcl_lab.registry.REGISTRY`) or metric (:data:`~amcl_lab.registry.METRICS`) of
    that name.

    Raises:
        ValueError: an unknown name (the message lists the losses and the metrics).
    """
    if isinstance(reference, LossSpec):
        return reference
    if reference in registry.METRICS:
        return registry.METRICS[reference]
    try:
        return registry.get(reference)
    except ValueError as error:
        raise ValueError(f"{error}; metrics: {', '.join(sorted(registry.METRICS))}") from None


def _check_arguments(
    dtype: torch.dtype, max_examples: int, device: str | torch.device, grad: bool, shrink: bool
) -> torch.device:
    """Validate ``check``'s own arguments; returns the device."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"check: dtype must be a floating torch.dtype, got {dtype!r}")
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"check: max_examples must be an int >= 1, got {max_examples!r}")
    v.check_bool("check", "grad", grad)
    v.check_bool("check", "shrink", shrink)
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"check: device must be a torch device such as 'cpu', got {device!r}"
        ) from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"check: device {str(where)!r} was asked for, but CUDA is not available "
            "(torch.cuda.is_available() is False); use device='cpu'"
        )
    return where


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
    world_size: int = 1,
    **distributed_options: Any,
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
        reference: a registry name (``"nt_xent"``, ``"supcon"``, ...), a metric name
            (``"uniformity"``, ...; :func:`~amcl_lab.oracle.metrics.check_metric`) or a
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
        world_size: ``W > 1`` runs the distributed oracle instead
            (:func:`~amcl_lab.oracle.distributed.check_distributed`): W gloo processes on
            this machine, the candidate called on each rank's shard of the global batch and
            compared with the single-process reference; ``distributed_options``
            (``splits``, ``start_method``, ``timeout``) go to it.

    Returns:
        An :class:`OracleReport`; ``report.passed`` tells the verdict.  A candidate that
        raises, returns a non-tensor, a wrong shape or a non-finite value, changes its
        inputs or cuts a gradient gives a failed report, not an exception.

    Raises:
        ValueError: an unknown reference or adapter, an adapter that does not fit the
            reference, a non-floating dtype, ``max_examples < 1``, an unknown device or a
            CUDA device without CUDA.
        TypeError: ``grad`` or ``shrink`` not a bool.
    """
    where = _check_arguments(dtype, max_examples, device, grad, shrink)
    if world_size != 1:
        from .distributed import check_distributed

        if where.type != "cpu":
            raise ValueError(f"check: world_size > 1 runs on CPU (gloo), got device={device!r}")
        return check_distributed(
            candidate,
            reference,
            world_size=world_size,
            dtype=dtype,
            grad=grad,
            max_examples=max_examples,
            adapter=adapter,
            strategy=strategy,
            tolerance=tolerance,
            seed=seed,
            shrink=shrink,
            **distributed_options,
        )
    if distributed_options:
        raise ValueError(
            f"check: {', '.join(sorted(distributed_options))} only apply with world_size > 1"
        )
    spec = resolve_reference(reference)
    device = where
    adapt = resolve_adapter(adapter, spec)
    fn = adapt.adapt(candidate, spec)
    tol = tolerance if tolerance is not None else spec.tolerance(dtype)
    drawn = strategy if strategy is not None else spec.strategy(dtype=torch.float64, device="cpu")
    tally = Tally()

    @search_settings(max_examples, shrink)
    @given(drawn)
    def run(sample: SampleInput) -> None:
        comparison = _compare(fn, spec, adapt, sample, dtype, device, grad, tol)
        tally.add(comparison)
        if comparison.failure is not None:
            raise Mismatch(comparison.failure)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    note = None
    try:
        run()
    except Mismatch:
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
        candidate=qualname(candidate),
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
