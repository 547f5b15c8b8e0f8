"""The catalogue of bad inputs and what each case must end in.

A case is one entry (:mod:`adversarial_entries`) with one mutation.  Outcomes:

* ``raise``: a ``ValueError`` or ``TypeError`` whose message names the argument (NaN, inf,
  empty, wrong rank, wrong dtype, meta tensors, lists, string flags, bad keyword values);
* ``value``: the value equals a reference computed from the same inputs - in float64 for
  huge finite values in float16/float32 (within the dtype's tolerance, or the correctly
  rounded infinity when the float64 value is beyond the dtype's range), the plain call for
  stride-0, non-contiguous, NumPy-scalar and one-element-tensor inputs - or the call raises
  as ``raise`` says.  A NaN where the reference is finite, any other exception, or a value
  off the reference is a failure: the silent wrong results this suite exists to catch.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from adversarial_entries import ENTRIES, Entry

#: Relative tolerance of a value case by dtype (half inputs are computed in float32).
RTOL = {torch.float32: 1e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}
#: ``(mutation id, dtype, largest |entry|)`` of the rescaled finite values: squares overflow
#: float32 above ~1.8e19 and underflow below ~1e-19; 3e38 is near float32's largest; 6e4 near
#: float16's (65504); bfloat16 has float32's range.  ``None``: the values as they are.
SCALES = (
    ("huge-f32-1e20", torch.float32, 1e20),
    ("huge-f32-1e30", torch.float32, 1e30),
    ("huge-f32-3e38", torch.float32, 3e38),
    ("tiny-f32-1e-30", torch.float32, 1e-30),
)
HALF_SCALES = (
    ("f16", torch.float16, None),
    ("bf16", torch.bfloat16, None),
    ("huge-f16", torch.float16, 6e4),
    ("huge-bf16", torch.bfloat16, 1e30),
)


@dataclass(frozen=True)
class Case:
    """One attack: ``build()`` gives ``(args, kwargs)``; ``expect`` is ``raise`` or ``value``.

    For ``value`` cases ``reference()`` gives the ``(args, kwargs)`` whose result the case's
    result must equal: within the dtype's tolerance for huge values (``dtype`` set), to
    rounding otherwise.
    """

    entry: Entry
    mutation: str
    expect: str
    name: str  # the argument the error must name
    build: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]
    reference: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None
    dtype: torch.dtype | None = None  # huge-value cases: the tested dtype (else exact)

    @property
    def id(self) -> str:
        return f"{self.entry.name}-{self.mutation}"


# --- the tensor mutations -------------------------------------------------------------------


def _with(args: tuple[Any, ...], i: int, value: Any) -> tuple[Any, ...]:
    return (*args[:i], value, *args[i + 1 :])


def _poison(x: torch.Tensor, value: float) -> torch.Tensor:
    y = x.clone()
    y.view(-1)[min(1, y.numel() - 1)] = value
    return y


def _huge(x: torch.Tensor, dtype: torch.dtype, scale: float | None) -> torch.Tensor:
    """``x`` rescaled so that its largest entry is ``scale`` (if given), rounded to ``dtype``."""
    if scale is None:
        return x.to(dtype)
    peak = float(x.abs().max()) or 1.0
    return (x * (scale / peak)).to(dtype)


def _offset(x: torch.Tensor) -> torch.Tensor:
    """The same values in a view that starts inside its storage (a nonzero storage offset)."""
    return torch.cat([torch.zeros_like(x[:1]), x])[1:] if x.ndim else x


TENSOR_RAISES: dict[str, Callable[[torch.Tensor], Any]] = {
    "nan": lambda x: _poison(x, math.nan),
    "inf": lambda x: _poison(x, math.inf),
    "-inf": lambda x: _poison(x, -math.inf),
    "empty": lambda x: x[:0],
    "rank+1": lambda x: x[None],
    "rank-1": lambda x: x[0] if x.ndim else x.reshape(1, 1),
    "int64": lambda x: x.round().long(),
    "bool": lambda x: x > 0,
    "complex": lambda x: x.to(torch.complex128),
    "meta": lambda x: x.to("meta"),
    "list": lambda x: x.tolist(),
}
MODEL_INPUT_RAISES = ("nan", "inf", "-inf", "empty")
VALUE_RAISES = ("nan", "inf", "-inf")
LABEL_RAISES: dict[str, Callable[[torch.Tensor], Any]] = {
    "float": lambda y: y.double() + 0.5,
    "bool": lambda y: y > 0,
    "complex": lambda y: y.to(torch.complex64),
    "empty": lambda y: y[:0],
    "rank+1": lambda y: y[None],
    "meta": lambda y: y.to("meta"),
    "list": lambda y: y.tolist(),
}


def _expanded(x: torch.Tensor) -> torch.Tensor:
    """A stride-0 tensor: the first row repeated along dim 0 without a copy."""
    return x[:1].expand_as(x)


def _strided(x: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout (a transposed copy, transposed back)."""
    return x.transpose(0, -1).contiguous().transpose(0, -1) if x.ndim >= 2 else x[::1]


def tensor_cases(entry: Entry) -> Iterator[Case]:
    for i, (arg, kind) in enumerate(zip(entry.names, entry.kinds, strict=True)):
        if kind in ("tensor", "model_input", "values"):
            raises = TENSOR_RAISES
            if kind != "tensor":
                only = MODEL_INPUT_RAISES if kind == "model_input" else VALUE_RAISES
                raises = {m: TENSOR_RAISES[m] for m in only}
            for mutation, change in raises.items():
                yield _raise_case(entry, f"{arg}:{mutation}", arg, i, change)
            scales = (*SCALES, *HALF_SCALES) if kind == "tensor" else SCALES
            for mutation, dtype, scale in scales:
                yield _huge_case(entry, f"{arg}:{mutation}", arg, i, dtype, scale)
            layouts = (("expanded", _expanded), ("strided", _strided), ("offset", _offset))
            for mutation, change in layouts:
                yield _same_case(entry, f"{arg}:{mutation}", arg, i, change)
        elif kind == "labels":
            for mutation, change in LABEL_RAISES.items():
                yield _raise_case(entry, f"{arg}:{mutation}", arg, i, change)
            yield _same_case(entry, f"{arg}:int32", arg, i, lambda y: y.int())


def _raise_case(entry: Entry, mutation: str, arg: str, i: int, change) -> Case:
    def build():
        args = entry.args()
        return _with(args, i, change(args[i])), dict(entry.kwargs)

    return Case(entry, mutation, "raise", arg, build)


def _cast(args: tuple[Any, ...], dtype: torch.dtype) -> tuple[Any, ...]:
    return tuple(
        a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    )


def _huge_case(entry, mutation, arg, i, dtype, scale) -> Case:
    """Every floating input in ``dtype``, argument ``i`` huge; the reference: the same rounded
    values in float64 (half precision is computed in float32: its other inputs stay there)."""
    low = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    def build():
        args = entry.args()
        return _with(_cast(args, low), i, _huge(args[i], dtype, scale)), dict(entry.kwargs)

    def reference():
        args, kwargs = build()
        return _cast(args, torch.float64), kwargs

    return Case(entry, mutation, "value", arg, build, reference, dtype)


def _same_case(entry, mutation, arg, i, change) -> Case:
    def build():
        args = entry.args()
        return _with(args, i, change(args[i])), dict(entry.kwargs)

    def reference():
        args = entry.args()
        return _with(args, i, change(args[i]).contiguous().clone()), dict(entry.kwargs)

    return Case(entry, mutation, "value", arg, build, reference)


# --- the keyword mutations ------------------------------------------------------------------


def keywords(entry: Entry) -> dict[str, Any]:
    """Keyword -> its valid value: the signature's defaults, overridden by ``entry.kwargs``."""
    if entry.keywords_of is None:
        return {}
    params = inspect.signature(entry.keywords_of).parameters
    out = {}
    for name, p in params.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or name in entry.names:
            continue
        if name in entry.kwargs:
            out[name] = entry.kwargs[name]
        elif p.default is not inspect.Parameter.empty:
            out[name] = p.default
    return out


def _default_is_none(entry: Entry, key: str) -> bool:
    params = inspect.signature(entry.keywords_of).parameters if entry.keywords_of else {}
    return key in params and params[key].default is None


def keyword_cases(entry: Entry) -> Iterator[Case]:
    for key, value in keywords(entry).items():
        none_ok = _default_is_none(entry, key)
        if isinstance(value, bool):
            for bad in ("False", "True", 0, 1, None):
                yield _kw_raise(entry, f"kw:{key}:{bad!r}", key, bad)
        elif isinstance(value, float):
            yield _kw_raise(entry, f"kw:{key}:nan", key, math.nan)
            yield _kw_raise(entry, f"kw:{key}:inf", key, math.inf)
            yield _kw_raise(entry, f"kw:{key}:-1.0", key, -1.0)
            yield _kw_raise(entry, f"kw:{key}:'str'", key, str(value))
            if not none_ok:
                yield _kw_raise(entry, f"kw:{key}:None", key, None)
            for kind in (np.float32, np.float64):
                scalar = kind(value)
                yield _kw_same(entry, f"kw:{key}:{kind.__name__}", key, scalar, float(scalar))
            if key == "temperature":
                for shape in ((), (1,), (1, 1)):
                    tensor = torch.full(shape, value, dtype=torch.float64)
                    yield _kw_same(entry, f"kw:{key}:tensor{shape}", key, tensor, value)
        elif isinstance(value, int):
            yield _kw_raise(entry, f"kw:{key}:1.5", key, 1.5)
            yield _kw_raise(entry, f"kw:{key}:-1", key, -1)
            yield _kw_raise(entry, f"kw:{key}:'str'", key, str(value))
            yield _kw_raise(entry, f"kw:{key}:True", key, True)
            if not none_ok:
                yield _kw_raise(entry, f"kw:{key}:None", key, None)
            yield _kw_same(entry, f"kw:{key}:int64", key, np.int64(value), value)
        elif isinstance(value, str):
            yield _kw_raise(entry, f"kw:{key}:bogus", key, "bogus")
            yield _kw_raise(entry, f"kw:{key}:3", key, 3)
            if not none_ok:
                yield _kw_raise(entry, f"kw:{key}:None", key, None)


def _kw_raise(entry: Entry, mutation: str, key: str, bad: Any) -> Case:
    return Case(entry, mutation, "raise", key, lambda: (entry.args(), {**entry.kwargs, key: bad}))


def _kw_same(entry: Entry, mutation: str, key: str, value: Any, plain: Any) -> Case:
    return Case(
        entry,
        mutation,
        "value",
        key,
        lambda: (entry.args(), {**entry.kwargs, key: value}),
        lambda: (entry.args(), {**entry.kwargs, key: plain}),
    )


# --- the matrix -----------------------------------------------------------------------------


def cases(entries: list[Entry] = ENTRIES) -> list[Case]:
    """Every case of every entry, skips removed (they are listed with their reason)."""
    out = []
    for entry in entries:
        for case in (*tensor_cases(entry), *keyword_cases(entry)):
            if case.mutation not in entry.skip:
                out.append(case)
    return out


# --- judging an outcome ---------------------------------------------------------------------


def flatten(out: Any) -> list[torch.Tensor]:
    """Every number of a result as float64 tensors (tensors, sequences, dataclasses, floats)."""
    if isinstance(out, torch.Tensor):
        return [out.detach().to("cpu", torch.float64 if not out.is_complex() else out.dtype)]
    if isinstance(out, numbers.Real) and not isinstance(out, (bool, np.bool_)):
        return [torch.tensor(float(out), dtype=torch.float64)]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in flatten(item)]
    if dataclasses.is_dataclass(out):
        return [t for f in dataclasses.fields(out) for t in flatten(getattr(out, f.name))]
    return []


def names_argument(error: BaseException, name: str) -> bool:
    return name in str(error)


def close(result: Any, reference: Any, rtol: float, atol: float) -> str | None:
    """``None`` if the two results agree, else a sentence saying where they differ."""
    got, want = flatten(result), flatten(reference)
    if len(got) != len(want):
        return f"{len(got)} numbers returned, reference has {len(want)}"
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        if a.shape != b.shape:
            return f"output {k}: shape {tuple(a.shape)}, reference {tuple(b.shape)}"
        finite = torch.isfinite(b)
        if bool((torch.isnan(a) & ~torch.isnan(b)).any()):
            return f"output {k}: NaN where the reference is {b[torch.isnan(a)][:3].tolist()}"
        if not torch.equal(torch.isinf(a) & ~finite, torch.isinf(b) & ~finite):
            return f"output {k}: infinities differ from the reference"
        diff = (a[finite] - b[finite]).abs()
        bound = atol + rtol * b[finite].abs()
        if bool((diff > bound).any()):
            worst = int((diff - bound).argmax())
            return (
                f"output {k}: {a[finite][worst].item()!r} vs reference "
                f"{b[finite][worst].item()!r} (|diff| {diff[worst].item():.3g})"
            )
    return None


def beyond_range(reference: Any, dtype: torch.dtype) -> Any:
    """The reference with entries beyond ``dtype``'s range replaced by the rounded infinity."""
    largest = torch.finfo(dtype).max
    return [
        torch.where(t.abs() > largest, torch.sign(t) * math.inf, t) if t.is_floating_point() else t
        for t in flatten(reference)
    ]
