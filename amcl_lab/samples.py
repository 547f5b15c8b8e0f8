"""Value types shared by the loss registry, the Hypothesis strategies and the oracle."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = ["ErrorInput", "SampleInput", "Tolerance"]


@dataclass(frozen=True)
class SampleInput:
    """One call of a loss: positional tensors (``None`` allowed) and keyword hyperparameters.

    ``args`` follow the reference function's positional order; floating tensors among them
    are the differentiable inputs.  ``name`` labels the case in test ids and reports.
    """

    args: tuple[Tensor | None, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    name: str = ""

    def call(self, fn: Any) -> Any:
        """Evaluate ``fn(*args, **kwargs)``."""
        return fn(*self.args, **self.kwargs)

    def floating_indices(self) -> tuple[int, ...]:
        """Positions of the floating-point tensors among ``args``."""
        return tuple(
            i for i, a in enumerate(self.args) if isinstance(a, Tensor) and a.is_floating_point()
        )

    def to(
        self,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        requires_grad: bool = False,
    ) -> SampleInput:
        """A copy with floating tensors cast to ``dtype`` and every tensor moved to ``device``.

        Copies are fresh leaves (``requires_grad`` as asked), so a caller that modifies them
        cannot change this sample.
        """
        args: list[Tensor | None] = []
        for a in self.args:
            if not isinstance(a, Tensor):
                args.append(a)
                continue
            b = a.detach().to(device=device if device is not None else a.device)
            if b.is_floating_point():
                b = b.to(dtype if dtype is not None else b.dtype).clone()
                b.requires_grad_(requires_grad)
            else:
                b = b.clone()
            args.append(b)
        return SampleInput(tuple(args), dict(self.kwargs), self.name)

    def summary(self) -> str:
        """A one-line description: shapes, dtypes, device and hyperparameters."""
        parts = []
        for a in self.args:
            if isinstance(a, Tensor):
                parts.append(f"{tuple(a.shape)}:{str(a.dtype).replace('torch.', '')}")
            else:
                parts.append(repr(a))
        device = next((str(a.device) for a in self.args if isinstance(a, Tensor)), "-")
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        label = f"{self.name}: " if self.name else ""
        return f"{label}({', '.join(parts)}) on {device}" + (f" with {kw}" if kw else "")


@dataclass(frozen=True)
class ErrorInput:
    """A call that must raise ``error`` with a message matching the regex ``match``."""

    sample: SampleInput
    error: type[Exception]
    match: str


@dataclass(frozen=True)
class Tolerance:
    """Comparison tolerance ``|a - b| <= atol_eff + rtol * |b|`` for one dtype.

    With ``inverse_temperature=True`` the absolute part grows like the logits,
    ``atol_eff = atol * max(1, 1 / tau)``: rounding of a similarity is amplified by 1/tau.
    """

    rtol: float
    atol: float
    inverse_temperature: bool = True

    def atol_for(self, temperature: float | None) -> float:
        """The effective absolute tolerance at ``temperature``."""
        if not self.inverse_temperature or temperature is None:
            return self.atol
        return self.atol * max(1.0, 1.0 / float(temperature))
