"""How far a candidate's value or gradient is from its bound, for every oracle.

A quantity agrees when ``|candidate - reference| <= atol + rtol * scale``, with ``rtol`` and
the effective ``atol`` from a :class:`~amcl_lab.samples.Tolerance`:
:func:`value_quantity` measures a value elementwise (``scale = |reference|``),
:func:`gradient_quantity` a gradient normwise (``scale`` = its largest reference entry), each
as a :class:`Quantity` whose ``ratio`` above 1 is a mismatch.  :func:`relative` is the
relative error a report shows next to the absolute one, and :data:`ILL_CONDITIONED_SLACK`
the allowance on inputs where the reference itself misses the tolerance at the candidate's
dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

#: Where the reference itself, evaluated at the candidate's dtype, misses the tolerance (an
#: input ill-conditioned at that precision), the candidate may be at most this many times
#: as far from the float64 value as the reference at that dtype is.
ILL_CONDITIONED_SLACK = 4.0


def relative(err: float, scale: float, atol: float) -> float:
    """``err / scale``; 0 where the reference is below the absolute tolerance (there the
    comparison is absolute and a ratio to a near-zero reference says nothing)."""
    return err / scale if scale > atol else 0.0


@dataclass(frozen=True)
class Quantity:
    """The error of one compared quantity (the value or one gradient) against its bound."""

    name: str
    err: float
    bound: float
    ratio: float  # largest elementwise error / bound
    scale: float
    detail: str


def value_quantity(out: Tensor, expected: Tensor, atol: float, rtol: float) -> Quantity:
    candidate = out.double()
    err = (candidate - expected).abs()
    bound = atol + rtol * expected.abs()
    if not err.numel():
        return Quantity("value", 0.0, atol, 0.0, 0.0, "")
    ratios = (err / bound).flatten()
    worst = int(ratios.argmax())
    detail = (
        f"value differs: |candidate - reference| = {float(err.flatten()[worst]):.3e} > "
        f"bound {float(bound.flatten()[worst]):.3e} (candidate "
        f"{float(candidate.flatten()[worst]):.10g}, reference "
        f"{float(expected.flatten()[worst]):.10g})"
    )
    scale = float(expected.abs().max())
    return Quantity(
        "value", float(err.max()), float(bound.max()), float(ratios[worst]), scale, detail
    )


def gradient_quantity(name: str, g: Tensor, g64: Tensor, atol: float, rtol: float) -> Quantity:
    g = g.detach().cpu().double()
    scale = float(g64.abs().max()) if g64.numel() else 0.0
    err = float((g - g64).abs().max()) if g64.numel() else 0.0
    bound = atol + rtol * scale
    detail = (
        f"gradient of {name} differs: max |candidate - reference| = {err:.3e} > "
        f"bound {bound:.3e} (largest reference entry {scale:.3e})"
    )
    return Quantity(f"grad {name}", err, bound, err / bound, scale, detail)
