"""Input checks shared by every public function of amcl_lab.

Each check raises a ``ValueError`` (or ``TypeError`` for a non-tensor) whose message names
the calling function, the argument, what was expected and what was received, so that a
wrong call never turns into a silently wrong number.  The checks run on every call; they
read tensor values (finiteness, temperature sign) and therefore synchronise with the
device, which is the price of a reference implementation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from numpy import bool_ as np_bool
from torch import Tensor

REDUCTIONS = ("mean", "sum", "none")
LOW_PRECISION = (torch.float16, torch.bfloat16)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def is_real(value: object) -> bool:
    """A real number: Python ``int``/``float`` or a NumPy real scalar, never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np_bool))


def is_integer(value: object) -> bool:
    """An integer: Python ``int`` or a NumPy integer scalar, never a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np_bool))


def check_not_meta(fn: str, name: str, x: Tensor) -> None:
    """Raise for a meta tensor: the checks read values, which a meta tensor does not have."""
    if x.is_meta:
        raise ValueError(
            f"{fn}: {name} is a meta tensor (shape {_shape(x)}, no data); amcl_lab validates "
            "values, so meta tensors are not supported - pass a tensor on cpu or cuda"
        )


def check_bool(fn: str, name: str, value: object) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool (``"False"`` and ``0`` are not)."""
    if not isinstance(value, (bool, np_bool)):
        raise TypeError(
            f"{fn}: {name} must be a bool (True or False), got {type(value).__name__} {value!r}"
        )


def check_tensor(
    fn: str,
    name: str,
    x: object,
    *,
    ndim: int | None = None,
    min_rows: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> Tensor:
    """Check that ``x`` is a (floating, finite) tensor of ``ndim`` dims with enough rows."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    check_not_meta(fn, name, x)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{fn}: {name} must be a {ndim}-D tensor, got shape {_shape(x)} ({x.ndim}-D)"
        )
    if floating and not x.dtype.is_floating_point:
        raise ValueError(
            f"{fn}: {name} must have a floating dtype (float16/bfloat16/float32/float64), "
            f"got {x.dtype}"
        )
    if min_rows is not None and x.shape[0] < min_rows:
        raise ValueError(
            f"{fn}: {name} must have at least {min_rows} rows (batch size), got shape {_shape(x)}"
        )
    if x.ndim >= 1 and x.shape[-1] < 1:
        raise ValueError(f"{fn}: {name} must have a feature dimension >= 1, got {_shape(x)}")
    if finite and floating and not all_finite(x):
        raise ValueError(f"{fn}: {name} contains NaN or inf values")
    return x


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite; exact, and cheap in the common case.

    A NaN or an infinity among the entries makes their sum NaN or infinite, so a finite sum
    proves them all finite at the cost of one reduction (``isfinite(x).all()`` is two
    passes and a boolean tensor).  Only a sum that overflows with finite entries needs the
    entry-wise check.
    """
    if x.numel() == 0 or math.isfinite(float(x.detach().sum())):
        return True
    return bool(torch.isfinite(x).all())


def first_nonfinite(tensors: Sequence[Tensor]) -> int | None:
    """Index of the first tensor holding a NaN or inf, else ``None`` (one sync if all finite)."""
    if not tensors:
        return None
    device = tensors[0].device
    if bool(torch.stack([torch.isfinite(t).all().to(device) for t in tensors]).all()):
        return None
    return next(i for i, t in enumerate(tensors) if not bool(torch.isfinite(t).all()))


def check_floating(fn: str, name: str, x: object) -> Tensor:
    """A floating tensor with data, of any shape and values (finiteness is checked apart)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(x).__name__}")
    check_not_meta(fn, name, x)
    if not x.dtype.is_floating_point:
        raise ValueError(f"{fn}: {name} must have a floating dtype, got {x.dtype}")
    return x


def check_same_shape(fn: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {name_a} and {name_b} must have the same shape, got {_shape(a)} and {_shape(b)}"
        )


def check_same_device(fn: str, tensors: Sequence[tuple[str, Tensor]]) -> None:
    """Raise unless every tensor lives on the same device."""
    devices = {t.device for _, t in tensors}
    if len(devices) > 1:
        where = ", ".join(f"{n} on {t.device}" for n, t in tensors)
        raise ValueError(f"{fn}: all inputs must be on one device, got {where}")


def check_temperature(
    fn: str, temperature: float | Tensor, name: str = "temperature"
) -> float | Tensor:
    """Raise unless ``temperature`` is a finite, strictly positive scalar (float or 0-d tensor).

    Returns the temperature with a one-element tensor reshaped to 0-d (a ``(1,)`` or
    ``(1, 1)`` tensor would otherwise broadcast a scalar loss to that shape), anything else
    unchanged.
    """
    if isinstance(temperature, Tensor):
        check_not_meta(fn, name, temperature)
        if temperature.dtype == torch.bool or temperature.dtype.is_complex:
            raise ValueError(
                f"{fn}: {name} must be a real (floating) tensor, got dtype {temperature.dtype}"
            )
        if temperature.numel() != 1:
            raise ValueError(
                f"{fn}: {name} must be a scalar, got a tensor of shape {_shape(temperature)}"
            )
        value = float(temperature.detach().reshape(()).item())
    elif is_real(temperature):
        value = float(temperature)
    else:
        raise ValueError(
            f"{fn}: {name} must be a positive float or 0-d tensor, got {type(temperature).__name__}"
        )
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{fn}: {name} must be finite and > 0, got {value!r}")
    return temperature.reshape(()) if isinstance(temperature, Tensor) else temperature


def check_positive_float(fn: str, name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise unless ``value`` is a finite float > 0 (or >= 0 with ``allow_zero``)."""
    if not is_real(value):
        raise ValueError(f"{fn}: {name} must be a float, got {type(value).__name__}")
    value = float(value)
    ok = value >= 0.0 if allow_zero else value > 0.0
    if not math.isfinite(value) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be finite and {bound}, got {value!r}")


def check_reduction(fn: str, reduction: str) -> None:
    """Raise unless ``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")


def check_choice(fn: str, name: str, value: str, choices: Sequence[str]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {tuple(choices)}, got {value!r}")


def check_labels(fn: str, labels: object, n: int, name: str = "labels") -> Tensor:
    """Check that ``labels`` is a 1-D integer tensor of length ``n``."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(labels).__name__}")
    check_not_meta(fn, name, labels)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{fn}: {name} must have an integer dtype, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{fn}: {name} must be a 1-D tensor of length {n} (one label per sample), "
            f"got shape {_shape(labels)}"
        )
    return labels


def check_int(fn: str, name: str, value: int, *, low: int, high: int | None = None) -> None:
    """Raise unless ``low <= value <= high`` for an integer ``value``."""
    if not is_integer(value):
        raise ValueError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{fn}: {name} must be {rng}, got {value}")


def check_finite_result(fn: str, result: Tensor, inputs: str) -> Tensor:
    """Return ``result``, or raise ``ValueError`` if it holds NaN or inf.

    For results of inputs already checked finite: a non-finite value means the computation
    overflowed the dtype (float32 products above ~3e38 turn into inf and then NaN), which
    would otherwise pass as a number.  ``inputs`` names the arguments to blame.
    """
    if not bool(torch.isfinite(result).all()):
        raise ValueError(
            f"{fn}: the result overflows {result.dtype}: {inputs} are too large for this "
            "precision (their products exceed its range); pass float64 or rescale them"
        )
    return result


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype a reference computes in: float16/bfloat16 are promoted to float32."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return torch.float32 if dtype in LOW_PRECISION else dtype


def reduce(losses: Tensor, reduction: str) -> Tensor:
    """Apply ``reduction`` (already validated) to a tensor of per-anchor losses."""
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
