"""The core strategies: embeddings, pairs, labels, temperatures and the classic losses' samples.

Private module of :mod:`amcl_lab.testing.strategies`; the helpers here are shared by its
other modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from ...samples import SampleInput

__all__ = [
    "RELATIONS",
    "barlow_samples",
    "embedding_pairs",
    "embeddings",
    "hard_negative_samples",
    "labels",
    "multiview_features",
    "query_key_queue_samples",
    "supcon_samples",
    "temperatures",
    "two_view_samples",
]

#: How the second view relates to the first in :func:`embedding_pairs`.
RELATIONS = ("independent", "near_duplicate", "antipodal", "collinear", "mixed")

# Default sizes (module-level so that signatures show them and they are built once).
_ROWS = st.integers(2, 8)
_DIM = st.integers(1, 16)
_CLASSES = st.integers(1, 4)
_FEATURE_ROWS = st.integers(2, 6)
_VIEWS = st.integers(1, 3)
_FEATURE_DIM = st.integers(1, 8)

_UNIT_ELEMENTS = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False, width=64)


def _check_size(name: str, value: int | st.SearchStrategy[int], minimum: int) -> None:
    if isinstance(value, st.SearchStrategy):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidArgument(f"{name} must be an int >= {minimum} or a strategy, got {value!r}")


def _as_strategy(value: int | st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def _check_range(name: str, low: float, high: float, *, positive: bool = True) -> None:
    for label, x in ((f"min_{name}", low), (f"max_{name}", high)):
        if not isinstance(x, (int, float)) or not math.isfinite(x) or (positive and x <= 0):
            raise InvalidArgument(f"{label} must be a finite positive number, got {x!r}")
    if low > high:
        raise InvalidArgument(f"min_{name}={low!r} must not exceed max_{name}={high!r}")


def _check_relations(relations: Sequence[str]) -> tuple[str, ...]:
    relations = tuple(relations)
    if not relations or set(relations) - set(RELATIONS):
        raise InvalidArgument(
            f"relations must be a non-empty subset of {RELATIONS}, got {relations}"
        )
    return relations


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidArgument(f"dtype must be a floating torch.dtype, got {dtype!r}")


def _log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats spread evenly over decades between ``low`` and ``high`` (both included)."""
    if low == high:
        return st.just(float(low))
    a, b = math.log10(low), math.log10(high)
    return st.floats(a, b).map(lambda e: float(min(max(10.0**e, low), high)))


def temperatures(*, min_value: float = 1e-3, max_value: float = 1e3) -> st.SearchStrategy[float]:
    """Temperatures drawn log-uniformly in ``[min_value, max_value]`` (default 1e-3 to 1e3)."""
    _check_range("value", min_value, max_value)
    return _log_uniform(min_value, max_value)


def _directions(draw: st.DrawFn, rows: int, dim: int) -> np.ndarray:
    x = draw(hnp.arrays(np.float64, (rows, dim), elements=_UNIT_ELEMENTS))
    norms = np.linalg.norm(x, axis=1)
    for r in np.flatnonzero(norms < 1e-6):  # give degenerate rows a definite direction
        x[r] = 0.0
        x[r, r % dim] = 1.0
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _row_norms(draw: st.DrawFn, rows: int, min_norm: float, max_norm: float) -> np.ndarray:
    return np.array(draw(st.lists(_log_uniform(min_norm, max_norm), min_size=rows, max_size=rows)))


def _tensor(x: np.ndarray, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype=dtype, device=device)


@st.composite
def _embeddings(draw, rows, dim, dtype, device, min_norm, max_norm):
    n, d = draw(rows), draw(dim)
    x = _directions(draw, n, d) * _row_norms(draw, n, min_norm, max_norm)[:, None]
    return _tensor(x, dtype, device)


def embeddings(
    *,
    rows: int | st.SearchStrategy[int] = _ROWS,
    dim: int | st.SearchStrategy[int] = _DIM,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_norm: float = 1e-3,
    max_norm: float = 1e3,
) -> st.SearchStrategy[torch.Tensor]:
    """``(rows, dim)`` embeddings: uniform-ish directions, log-uniform row norms."""
    _check_size("rows", rows, 1)
    _check_size("dim", dim, 1)
    _check_dtype(dtype)
    _check_range("norm", min_norm, max_norm)
    return _embeddings(_as_strategy(rows), _as_strategy(dim), dtype, device, min_norm, max_norm)


def _second_view(draw, x: np.ndarray, relation: str) -> np.ndarray:
    n, d = x.shape
    if relation == "independent":
        return _directions(draw, n, d)
    if relation == "near_duplicate":
        noise = draw(hnp.arrays(np.float64, (n, d), elements=_UNIT_ELEMENTS))
        y = x + 1e-3 * noise
    elif relation == "antipodal":
        y = -x
    else:  # mixed: each row independently a copy, an antipode or a fresh direction
        fresh = _directions(draw, n, d)
        kinds = draw(st.lists(st.sampled_from((0, 1, 2)), min_size=n, max_size=n))
        y = np.stack([(x[r], -x[r], fresh[r])[k] for r, k in enumerate(kinds)])
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return np.where(norms > 1e-9, y / np.maximum(norms, 1e-300), x)


@st.composite
def _embedding_pairs(draw, rows, dim, dtype, device, min_norm, max_norm, relations):
    n, d = draw(rows), draw(dim)
    relation = draw(st.sampled_from(relations))
    if relation == "collinear":  # every row of both views on one line
        u = _directions(draw, 1, d)
        signs = np.array(
            draw(st.lists(st.sampled_from((-1.0, 1.0)), min_size=2 * n, max_size=2 * n))
        )
        x, y = u * signs[:n, None], u * signs[n:, None]
    else:
        x = _directions(draw, n, d)
        y = _second_view(draw, x, relation)
    x = x * _row_norms(draw, n, min_norm, max_norm)[:, None]
    y = y * _row_norms(draw, n, min_norm, max_norm)[:, None]
    return _tensor(x, dtype, device), _tensor(y, dtype, device)


def embedding_pairs(
    *,
    rows: int | st.SearchStrategy[int] = _ROWS,
    dim: int | st.SearchStrategy[int] = _DIM,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_norm: float = 1e-3,
    max_norm: float = 1e3,
    relations: Sequence[str] = RELATIONS,
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """Two views ``(z1, z2)`` of shape ``(rows, dim)`` with a drawn relation between them.

    ``relations`` chooses among ``"independent"`` (unrelated directions),
    ``"near_duplicate"`` (the second view within 1e-3 of the first, similarities near 1),
    ``"antipodal"`` (``z2 = -z1``, similarity -1), ``"collinear"`` (all rows of both views
    on one line, the closed-form case) and ``"mixed"`` (a per-row choice of the first three).
    """
    _check_size("rows", rows, 1)
    _check_size("dim", dim, 1)
    _check_dtype(dtype)
    _check_range("norm", min_norm, max_norm)
    relations = _check_relations(relations)
    return _embedding_pairs(
        _as_strategy(rows), _as_strategy(dim), dtype, device, min_norm, max_norm, relations
    )


@st.composite
def _labels(draw, n, num_classes, min_per_class):
    size, classes = draw(n), draw(num_classes)
    if classes * min_per_class > size:
        classes = max(1, size // max(min_per_class, 1))
    base = [c for c in range(classes) for _ in range(min_per_class)]
    rest = draw(
        st.lists(st.integers(0, classes - 1), min_size=size - len(base), max_size=size - len(base))
    )
    values = draw(st.permutations(base + rest))
    return torch.tensor(values, dtype=torch.long)


def labels(
    *,
    n: int | st.SearchStrategy[int] = _ROWS,
    num_classes: int | st.SearchStrategy[int] = _CLASSES,
    min_per_class: int = 1,
) -> st.SearchStrategy[torch.Tensor]:
    """``(n,)`` int64 labels in ``[0, num_classes)`` with at least ``min_per_class`` each.

    If the drawn ``n`` cannot hold ``num_classes * min_per_class`` labels, fewer classes
    are used (never fewer than one).
    """
    _check_size("n", n, 1)
    _check_size("num_classes", num_classes, 1)
    _check_size("min_per_class", min_per_class, 0)
    return _labels(_as_strategy(n), _as_strategy(num_classes), min_per_class)


@st.composite
def _multiview(draw, n, views, dim, dtype, device, min_norm, max_norm):
    size, v, d = draw(n), draw(views), draw(dim)
    flat = draw(
        embeddings(
            rows=size * v, dim=d, dtype=dtype, device=device, min_norm=min_norm, max_norm=max_norm
        )
    )
    return flat.reshape(size, v, d)


def multiview_features(
    *,
    n: int | st.SearchStrategy[int] = _FEATURE_ROWS,
    views: int | st.SearchStrategy[int] = _VIEWS,
    dim: int | st.SearchStrategy[int] = _FEATURE_DIM,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_norm: float = 1e-3,
    max_norm: float = 1e3,
) -> st.SearchStrategy[torch.Tensor]:
    """``(n, views, dim)`` features for SupCon-style losses."""
    for name, value in (("n", n), ("views", views), ("dim", dim)):
        _check_size(name, value, 1)
    _check_dtype(dtype)
    _check_range("norm", min_norm, max_norm)
    return _multiview(
        _as_strategy(n), _as_strategy(views), _as_strategy(dim), dtype, device, min_norm, max_norm
    )


# --- whole samples for the registered losses -------------------------------------------


@st.composite
def _two_view_samples(draw, dtype, device, min_temperature, max_temperature, max_rows):
    z1, z2 = draw(embedding_pairs(rows=st.integers(2, max_rows), dtype=dtype, device=device))
    tau = draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    return SampleInput((z1, z2), {"temperature": tau}, name="two_view")


def two_view_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    max_rows: int = 8,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` plus ``temperature`` for NT-Xent-style losses."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    _check_size("max_rows", max_rows, 2)
    return _two_view_samples(dtype, device, min_temperature, max_temperature, max_rows)


@st.composite
def _query_key_queue_samples(draw, dtype, device, min_temperature, max_temperature):
    q, k = draw(embedding_pairs(rows=st.integers(1, 6), dtype=dtype, device=device))
    queue = draw(embeddings(rows=st.integers(1, 8), dim=q.shape[1], dtype=dtype, device=device))
    tau = draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    return SampleInput((q, k, queue), {"temperature": tau}, name="query_key_queue")


def query_key_queue_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(query, key, queue)`` plus ``temperature`` for MoCo-style InfoNCE."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _query_key_queue_samples(dtype, device, min_temperature, max_temperature)


@st.composite
def _supcon_samples(draw, dtype, device, min_temperature, max_temperature):
    features = draw(multiview_features(dtype=dtype, device=device))
    n, views, _ = features.shape
    y = draw(labels(n=n, num_classes=st.integers(1, n), min_per_class=1 if views > 1 else 2))
    tau = draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    return SampleInput((features, y.to(device)), {"temperature": tau}, name="supcon")


def supcon_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(features, labels)`` plus ``temperature``; every anchor has a positive."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _supcon_samples(dtype, device, min_temperature, max_temperature)


@st.composite
def _hard_negative_samples(draw, dtype, device, min_temperature, max_temperature, temperature):
    z1, z2 = draw(embedding_pairs(rows=st.integers(2, 8), dtype=dtype, device=device))
    kwargs: dict[str, object] = {"k": draw(st.none() | st.integers(1, 2 * z1.shape[0] - 2))}
    if temperature:
        kwargs["temperature"] = draw(
            temperatures(min_value=min_temperature, max_value=max_temperature)
        )
    return SampleInput((z1, z2), kwargs, name="hard_negatives")


def hard_negative_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    temperature: bool = True,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` with ``k`` (None or 1..2N-2) and, if asked, ``temperature``."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _hard_negative_samples(dtype, device, min_temperature, max_temperature, temperature)


@st.composite
def _barlow_samples(draw, dtype, device):
    relations = ("independent", "near_duplicate", "mixed")
    z1, z2 = draw(
        embedding_pairs(
            rows=st.integers(2, 12),
            dim=st.integers(1, 8),
            dtype=dtype,
            device=device,
            min_norm=0.1,
            max_norm=10.0,
            relations=relations,
        )
    )
    lam = draw(st.sampled_from((0.0, 5e-3, 0.1, 1.0)))
    return SampleInput((z1, z2), {"lambda_offdiag": lam}, name="barlow")


def barlow_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` and ``lambda_offdiag`` for Barlow Twins (row norms 0.1 to 10)."""
    _check_dtype(dtype)
    return _barlow_samples(dtype, device)
