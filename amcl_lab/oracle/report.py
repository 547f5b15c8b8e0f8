"""What an oracle found, in types every oracle shares.

:class:`Errors` is the largest absolute and relative error of one quantity,
:class:`Comparison` the candidate against the reference on one input, and
:class:`OracleReport` a whole run: the verdict, the errors over every input, the worst input,
printed by ``str()`` and serialised by :meth:`OracleReport.to_dict`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..samples import SampleInput, Tolerance
from .tolerance import ILL_CONDITIONED_SLACK


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
        world_size: 1 for a single-process check; W for the distributed oracle, whose
            ``worst.candidate_value`` holds the W values the ranks returned.
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
    world_size: int = 1

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
            f"  {dtype} on {self.device}"
            + (f" x {self.world_size} gloo ranks" if self.world_size > 1 else "")
            + f", gradients {'checked' if self.grad else 'not checked'}, "
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
            distributed = self.world_size > 1
            if self.worst.candidate_value is not None:
                label = "candidate values by rank" if distributed else "candidate value"
                lines.append(f"    {label} = {_format_tensor(self.worst.candidate_value)}")
            where = "single process on the global batch" if distributed else "same rounded inputs"
            lines.append(
                f"    reference value (float64, {where}) = "
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
            "world_size": self.world_size,
        }


@dataclass(frozen=True)
class StepwiseReport:
    """What an oracle that drives a candidate through several steps found
    (:func:`~amcl_lab.oracle.check_optimizer`).

    Attributes:
        candidate: the candidate's qualified name; reference: the reference's name.
        adapter: how the candidate was driven (``"two_step"``, ``"closure"``, ...).
        examples: drawn cases run in total; shrink_examples: of those, how many after the
            first failure.
        steps: steps compared over the agreeing cases (each compares every tensor).
        largest_error: the largest ``|candidate - reference|`` over the agreeing cases;
            ratio: the largest error/bound ratio there (below 1 by definition).
        worst: a description of the shrunk failing case (or of the case closest to its
            bound), one line per fact.
        failure: what went wrong on that case, or ``None``.
        tolerance: the tolerance used; seed: the Hypothesis seed.
    """

    candidate: str
    reference: str
    adapter: str
    examples: int
    shrink_examples: int
    steps: int
    largest_error: float
    ratio: float
    worst: tuple[str, ...]
    failure: str | None
    tolerance: Tolerance
    seed: int | None

    @property
    def passed(self) -> bool:
        """True when the candidate agreed with the reference on every case."""
        return self.failure is None

    def __str__(self) -> str:
        verdict = "PASS" if self.passed else "MISMATCH"
        lines = [
            f"oracle {verdict}: {self.candidate} vs reference {self.reference!r} "
            f"(adapter {self.adapter})",
            f"  {self.examples} cases"
            + (f" ({self.shrink_examples} after the first failure)" if self.shrink_examples else "")
            + f", {self.steps} steps compared in agreeing cases, seed {self.seed}, tolerance "
            f"rtol={self.tolerance.rtol:g} atol={self.tolerance.atol:g}",
        ]
        if self.failure is not None:
            lines.append(f"  what happened: {self.failure}")
        else:
            lines.append(
                f"  largest error {self.largest_error:.3e} (at most {self.ratio:.2g} of the "
                "tolerance)"
            )
        if self.worst:
            label = "minimal failing case" if self.failure else "case closest to its bound"
            lines.append(f"  {label}:")
            lines += [f"    {line}" for line in self.worst]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary."""
        return {
            "candidate": self.candidate,
            "reference": self.reference,
            "adapter": self.adapter,
            "passed": self.passed,
            "examples": self.examples,
            "shrink_examples": self.shrink_examples,
            "steps": self.steps,
            "largest_error": self.largest_error,
            "ratio": self.ratio,
            "failure": self.failure,
            "worst_case": list(self.worst),
            "tolerance": {"rtol": self.tolerance.rtol, "atol": self.tolerance.atol},
            "seed": self.seed,
        }
