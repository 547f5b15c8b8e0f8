"""Hypothesis strategies for embeddings, labels, temperatures and whole loss inputs.

These are public so that users can property-test their own implementations on the same
input domain amcl_lab tests itself on.  Every strategy takes keyword arguments only, draws
small shapes by default, and raises :class:`hypothesis.errors.InvalidArgument` naming the
argument when it is called with bad bounds.

Values are drawn element-wise (so failing examples shrink towards simple ones) in float64
and then cast, which keeps the drawn numbers identical across dtypes.  Embedding rows get a
direction and, separately, a norm drawn log-uniformly between ``min_norm`` and ``max_norm``,
so scales over many decades are reached.

Example:
    >>> from hypothesis import given
    >>> from amcl_lab.testing import strategies as ams
    >>> @given(ams.two_view_samples())
    ... def test_finite(sample):
    ...     z1, z2 = sample.args
    ...     assert z1.shape == z2.shape
    >>> test_finite()
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.extra import numpy as hnp

from ..samples import SampleInput

__all__ = [
    "RELATIONS",
    "amcl_barlow_samples",
    "amcl_queue_samples",
    "amcl_simsiam_samples",
    "amcl_two_view_samples",
    "augmentation_graphs",
    "barlow_samples",
    # self-supervised losses
    "dcl_samples",
    "dino_samples",
    "embedding_pairs",
    "embeddings",
    "hard_negative_samples",
    "head_stacks",
    "invariance_orthogonality_samples",
    "kernel_samples",
    "labels",
    "moco_v3_samples",
    "multiview_barlow_samples",
    "multiview_features",
    "multiview_vicreg_samples",
    "multiview_views",
    "negative_cosine_samples",
    "pair_temperatures",
    "query_key_queue_samples",
    "supcon_samples",
    "swav_samples",
    "temperatures",
    "two_view_samples",
    "vicreg_samples",
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


# --- AMCL (issue 3) ------------------------------------------------------------------------
# Multi-head stacks (C, N, D) and per-pair temperature tensors for the AMCL losses.  The
# hardest-negative selection is a discontinuous function of the similarities, so the whole
# samples keep every anchor's selection clear of near-ties (a tie between two candidates with
# different temperatures is decided by rounding).

_HEADS = st.integers(1, 3)
_AMCL_ROWS = st.integers(2, 5)
_AMCL_DIM = st.integers(2, 8)
_AMCL_RELATIONS = ("independent", "near_duplicate", "antipodal")
_BETAS = (0.0, 1e-4, 1e-2, 1.0)
#: Candidates closer than this many machine epsilons (of the compute dtype) count as tied.
_AMCL_TIE_ULPS = 1024


@st.composite
def _head_stacks(draw, heads, rows, dim, dtype, device, min_norm, max_norm, relations):
    c, n, d = draw(heads), draw(rows), draw(dim)
    views = [
        draw(
            embedding_pairs(
                rows=n, dim=d, min_norm=min_norm, max_norm=max_norm, relations=relations
            )
        )
        for _ in range(c)
    ]
    return tuple(torch.stack(v).to(dtype=dtype, device=device) for v in zip(*views, strict=True))


def head_stacks(
    *,
    heads: int | st.SearchStrategy[int] = _HEADS,
    rows: int | st.SearchStrategy[int] = _ROWS,
    dim: int | st.SearchStrategy[int] = _DIM,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_norm: float = 1e-3,
    max_norm: float = 1e3,
    relations: Sequence[str] = RELATIONS,
) -> st.SearchStrategy[tuple[torch.Tensor, torch.Tensor]]:
    """Two views ``(z1, z2)`` of a multi-head projector, each ``(heads, rows, dim)``.

    Each head's pair is drawn by :func:`embedding_pairs` (same rows and dim for every head,
    its own relation), so heads are independent as in AMCL's projector.
    """
    for name, value in (("heads", heads), ("rows", rows), ("dim", dim)):
        _check_size(name, value, 1)
    _check_dtype(dtype)
    _check_range("norm", min_norm, max_norm)
    return _head_stacks(
        _as_strategy(heads),
        _as_strategy(rows),
        _as_strategy(dim),
        dtype,
        device,
        min_norm,
        max_norm,
        _check_relations(relations),
    )


def pair_temperatures(
    shape: Sequence[int],
    *,
    min_value: float = 1e-5,
    max_value: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> st.SearchStrategy[torch.Tensor]:
    """A tensor of per-pair temperatures of ``shape``, each log-uniform in
    ``[min_value, max_value]`` (default the AMCL temperature network's range 1e-5 to 2)."""
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise InvalidArgument(f"shape must be a sequence of ints >= 0, got {shape!r}")
    _check_range("value", min_value, max_value)
    _check_dtype(dtype)
    low, high = math.log10(min_value), math.log10(max_value)
    # draw exponents element-wise and exponentiate the whole array at once (fast, and
    # failing examples still shrink element by element)
    exponents = hnp.arrays(np.float64, tuple(shape), elements=st.floats(low, high))
    return exponents.map(lambda e: _tensor(np.clip(10.0**e, min_value, max_value), dtype, device))


def _clear_selection(candidates: np.ndarray, count: int, dtype: torch.dtype) -> bool:
    """True when the ``count`` hardest of each row's candidates are separated from the rest."""
    if count >= candidates.shape[-1]:
        return True
    ordered = -np.sort(-candidates, axis=-1)
    eps = torch.finfo(torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype).eps
    return bool(np.all(ordered[..., count - 1] - ordered[..., count] > _AMCL_TIE_ULPS * eps))


def _unit_rows(x: torch.Tensor) -> np.ndarray:
    z = x.detach().cpu().double().numpy()
    return z / np.maximum(np.linalg.norm(z, axis=-1, keepdims=True), 1e-8)


def _draw_selection(draw, candidates: int, modes: tuple[str, ...]) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "beta": draw(st.sampled_from(_BETAS)),
        "neg_regularizer": draw(st.sampled_from(("omega", "release2"))),
    }
    if draw(st.sampled_from(modes)) == "topk":
        kwargs.update(mode="topk", k=draw(st.integers(1, candidates)))
    return kwargs


def _check_modes(modes: Sequence[str]) -> tuple[str, ...]:
    modes = tuple(modes)
    if not modes or set(modes) - {"max", "topk"}:
        raise InvalidArgument(f"modes must be a non-empty subset of ('max', 'topk'), got {modes}")
    return modes


@st.composite
def _amcl_two_view_samples(draw, dtype, device, min_temperature, max_temperature, positive, modes):
    z1, z2 = draw(
        head_stacks(rows=_AMCL_ROWS, dim=_AMCL_DIM, dtype=dtype, relations=_AMCL_RELATIONS)
    )
    c, n, _ = z1.shape
    m = 2 * n - 1 if positive else 2 * n - 2
    tau = draw(
        pair_temperatures(
            (c, 2 * n, 2 * n), min_value=min_temperature, max_value=max_temperature, dtype=dtype
        )
    )
    kwargs = _draw_selection(draw, m, modes)
    z = _unit_rows(torch.cat([z1, z2], dim=1))
    sim = z @ z.transpose(0, 2, 1)
    rows = np.arange(2 * n)
    keep = (rows[:, None] != rows[None, :]) & (
        positive | (rows[None, :] != (rows[:, None] + n) % (2 * n))
    )
    cands = sim[:, keep].reshape(c, 2 * n, m)
    assume(_clear_selection(cands, int(kwargs.get("k", 1)), dtype))
    args = tuple(t.to(device) for t in (z1, z2, tau))
    return SampleInput(args, kwargs, name="amcl_info_nce" if positive else "amcl_nt_xent")


def amcl_two_view_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-5,
    max_temperature: float = 2.0,
    positive_is_candidate: bool = False,
    modes: Sequence[str] = ("max", "topk"),
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2, temperature)`` and keywords for ``amcl_nt_xent`` / ``amcl_info_nce``.

    ``z1, z2`` are ``(C, N, D)`` head stacks (C 1-3, N 2-5, D 2-8: with D = 1 every cosine
    is +-1 and the hardest negative is a tie), ``temperature`` is ``(C, 2N, 2N)``
    log-uniform in ``[min_temperature, max_temperature]``; ``beta``, ``neg_regularizer`` and
    ``mode`` (one of ``modes``) with ``k`` are drawn.  Samples where an anchor's selection
    would be a near-tie are rejected.  ``positive_is_candidate=True`` draws ``k`` up to
    2N - 1 (``amcl_info_nce``).
    """
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _amcl_two_view_samples(
        dtype,
        device,
        min_temperature,
        max_temperature,
        bool(positive_is_candidate),
        _check_modes(modes),
    )


@st.composite
def _amcl_queue_samples(draw, dtype, device, min_temperature, max_temperature, modes):
    q, k = draw(
        head_stacks(rows=st.integers(1, 4), dim=_AMCL_DIM, dtype=dtype, relations=_AMCL_RELATIONS)
    )
    c, n, d = q.shape
    size = draw(st.integers(1, 8))
    queue = torch.stack([draw(embeddings(rows=size, dim=d, dtype=dtype)) for _ in range(c)])
    tau = draw(
        pair_temperatures(
            (c, n, 1 + size), min_value=min_temperature, max_value=max_temperature, dtype=dtype
        )
    )
    kwargs = _draw_selection(draw, size, modes)
    cands = _unit_rows(q) @ _unit_rows(queue).transpose(0, 2, 1)
    assume(_clear_selection(cands, int(kwargs.get("k", 1)), dtype))
    args = tuple(t.to(device) for t in (q, k, queue, tau))
    return SampleInput(args, kwargs, name="amcl_moco")


def amcl_queue_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-5,
    max_temperature: float = 2.0,
    modes: Sequence[str] = ("max", "topk"),
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(query, key, queue, temperature)`` and keywords for ``amcl_moco``.

    ``query, key``: ``(C, N, D)``, N 1-4; ``queue``: ``(C, K, D)``, K 1-8;
    ``temperature``: ``(C, N, 1 + K)``; selection keywords as in
    :func:`amcl_two_view_samples`.
    """
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _amcl_queue_samples(dtype, device, min_temperature, max_temperature, _check_modes(modes))


@st.composite
def _amcl_simsiam_samples(draw, dtype, device, min_temperature, max_temperature):
    p1, h2 = draw(head_stacks(rows=st.integers(1, 5), dtype=dtype))
    c, n, d = p1.shape
    p2, h1 = draw(head_stacks(heads=c, rows=n, dim=d, dtype=dtype))
    tau = draw(
        pair_temperatures(
            (c, 2, n), min_value=min_temperature, max_value=max_temperature, dtype=dtype
        )
    )
    args = tuple(t.to(device) for t in (p1, p2, h1, h2, tau))
    return SampleInput(args, {"beta": draw(st.sampled_from(_BETAS))}, name="amcl_simsiam")


def amcl_simsiam_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-5,
    max_temperature: float = 2.0,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(p1, p2, h1, h2, temperature)`` and ``beta`` for ``amcl_simsiam``.

    Predictions and targets are ``(C, N, D)`` (N 1-5); ``(p1, h2)`` and ``(p2, h1)`` are
    drawn as related pairs; ``temperature`` is ``(C, 2, N)``.
    """
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _amcl_simsiam_samples(dtype, device, min_temperature, max_temperature)


@st.composite
def _amcl_barlow_samples(draw, dtype, device, min_temperature, max_temperature):
    z1, z2 = draw(
        head_stacks(
            rows=st.integers(2, 8),
            dim=st.integers(1, 5),
            dtype=dtype,
            min_norm=0.1,
            max_norm=10.0,
            relations=("independent", "near_duplicate", "mixed"),
        )
    )
    c, _, d = z1.shape
    tau = draw(
        pair_temperatures(
            (c, d, d), min_value=min_temperature, max_value=max_temperature, dtype=dtype
        )
    )
    kwargs = {
        "lambda_offdiag": draw(st.sampled_from((0.0, 5e-3, 0.1, 1.0))),
        "beta": draw(st.sampled_from(_BETAS)),
        "omega_dim": draw(st.sampled_from(("features", "batch"))),
    }
    args = tuple(t.to(device) for t in (z1, z2, tau))
    return SampleInput(args, kwargs, name="amcl_barlow_twins")


def amcl_barlow_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-5,
    max_temperature: float = 2.0,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2, temperature)`` and keywords for ``amcl_barlow_twins``.

    ``z1, z2``: ``(C, N, D)`` with N 2-8, D 1-5 and row norms 0.1 to 10 (as
    :func:`barlow_samples`); ``temperature``: ``(C, D, D)``.
    """
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _amcl_barlow_samples(dtype, device, min_temperature, max_temperature)


# --- kernel losses (issue 5) ---------------------------------------------------------------
# Multi-view features (N, m, D) and finite augmentation graphs with a known kernel for the
# losses of ``amcl_lab.losses.kernel``.

_NOISE_SCALES = (0.0, 1e-3, 0.3, 1.0)
_KERNEL_VIEWS = st.integers(2, 4)
_KERNEL_DIM = st.integers(1, 6)
_GRAPH_IMAGES = st.integers(1, 5)
_GRAPH_POINTS = st.integers(1, 8)


@st.composite
def _multiview_views(draw, rows, views, dim, dtype, device, min_norm, max_norm):
    n, m, d = draw(rows), draw(views), draw(dim)
    base = draw(multiview_features(n=n, views=1, dim=d, min_norm=min_norm, max_norm=max_norm))
    noise = draw(multiview_features(n=n, views=m, dim=d, min_norm=min_norm, max_norm=max_norm))
    return (base + draw(st.sampled_from(_NOISE_SCALES)) * noise).to(dtype=dtype, device=device)


def multiview_views(
    *,
    rows: int | st.SearchStrategy[int] = _ROWS,
    views: int | st.SearchStrategy[int] = _KERNEL_VIEWS,
    dim: int | st.SearchStrategy[int] = _KERNEL_DIM,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_norm: float = 0.1,
    max_norm: float = 10.0,
) -> st.SearchStrategy[torch.Tensor]:
    """``(rows, views, dim)`` views of each image: a shared embedding plus per-view noise.

    The noise scale is drawn from 0 (identical views), 1e-3, 0.3 and 1 times a fresh
    embedding, so invariance terms range from exactly zero to dominant.
    """
    _check_size("rows", rows, 1)
    _check_size("views", views, 1)
    _check_size("dim", dim, 1)
    _check_dtype(dtype)
    _check_range("norm", min_norm, max_norm)
    return _multiview_views(
        _as_strategy(rows),
        _as_strategy(views),
        _as_strategy(dim),
        dtype,
        device,
        min_norm,
        max_norm,
    )


_PROBABILITY_ELEMENTS = st.floats(0.05, 1.0, width=64)


@st.composite
def _augmentation_graphs(draw, images, augmentations, dtype, device):
    # imported here so that importing the strategies does not load the data package
    from ..data.synthetic import AugmentationGraph

    n, m = draw(images), draw(augmentations)
    prior = draw(hnp.arrays(np.float64, (n,), elements=_PROBABILITY_ELEMENTS))
    weights = draw(hnp.arrays(np.float64, (n, m), elements=_PROBABILITY_ELEMENTS))
    sparsity = draw(st.sampled_from((1.0, 6.0)))  # 6: mass on a few points per image
    weights = weights**sparsity
    return AugmentationGraph(
        _tensor(prior / prior.sum(), dtype, device),
        _tensor(weights / weights.sum(axis=1, keepdims=True), dtype, device),
    )


def augmentation_graphs(
    *,
    images: int | st.SearchStrategy[int] = _GRAPH_IMAGES,
    augmentations: int | st.SearchStrategy[int] = _GRAPH_POINTS,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> st.SearchStrategy:
    """Random :class:`~amcl_lab.data.synthetic.AugmentationGraph` objects (small by default).

    Probabilities are drawn in [0.05, 1] and normalised, with ``p(a | x)`` either used as
    drawn or raised to the 6th power (sparse, as
    :func:`~amcl_lab.data.synthetic.random_augmentation_graph` by default).
    """
    _check_size("images", images, 1)
    _check_size("augmentations", augmentations, 1)
    _check_dtype(dtype)
    return _augmentation_graphs(_as_strategy(images), _as_strategy(augmentations), dtype, device)


@st.composite
def _kernel_samples(draw, dtype, device, max_dim):
    graph = draw(augmentation_graphs())
    features = draw(
        embeddings(
            rows=graph.num_augmentations,
            dim=st.integers(1, max_dim),
            min_norm=0.1,
            max_norm=10.0,
        )
    )
    args = (features, graph.kernel, graph.marginal)
    kwargs = {"c": draw(st.sampled_from((0.0, 0.5, 1.0, 2.0)))}
    return SampleInput(tuple(a.to(dtype=dtype, device=device) for a in args), kwargs, "kernel")


def kernel_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu", max_dim: int = 4
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(features, kernel, marginal)`` and ``c`` for ``kernel_loss`` on a random graph."""
    _check_dtype(dtype)
    _check_size("max_dim", max_dim, 1)
    return _kernel_samples(dtype, device, max_dim)


@st.composite
def _invariance_orthogonality_samples(draw, dtype, device):
    views = draw(multiview_views(dtype=dtype, device=device))
    beta = draw(st.sampled_from((0.0, 0.01, 0.5, 2.0)))
    return SampleInput((views,), {"beta": beta}, name="invariance_orthogonality")


def invariance_orthogonality_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(views,)`` (``(N, m, D)``, m 2-4) and ``beta`` for the sampled-view estimator."""
    _check_dtype(dtype)
    return _invariance_orthogonality_samples(dtype, device)


@st.composite
def _multiview_barlow_samples(draw, dtype, device):
    views = draw(multiview_views(dtype=dtype, device=device))
    kwargs = {
        "lambda_offdiag": draw(st.sampled_from((0.0, 5e-3, 0.1, 1.0))),
        "standardize": draw(st.sampled_from(("per_view", "joint"))),
        "normalize": draw(st.booleans()),
    }
    return SampleInput((views,), kwargs, name="multiview_barlow")


def multiview_barlow_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(views,)`` (``(N, m, D)``, m 2-4) and keywords for multi-view Barlow Twins."""
    _check_dtype(dtype)
    return _multiview_barlow_samples(dtype, device)


# --- self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV) ------------------

_SSL_RELATIONS = ("independent", "near_duplicate", "mixed")
_LOGIT_ELEMENTS = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False, width=64)
_SCORE_ELEMENTS = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False, width=64)


@st.composite
def _vicreg_samples(draw, dtype, device):
    z1, z2 = draw(
        embedding_pairs(
            rows=st.integers(2, 12),
            dim=st.integers(1, 8),
            dtype=dtype,
            device=device,
            min_norm=0.1,
            max_norm=10.0,
            relations=_SSL_RELATIONS,
        )
    )
    kwargs = {
        "lambda_invariance": draw(st.sampled_from((0.0, 1.0, 25.0))),
        "mu_variance": draw(st.sampled_from((0.0, 1.0, 25.0))),
        "nu_covariance": draw(st.sampled_from((0.0, 1.0))),
        "gamma": draw(st.sampled_from((0.5, 1.0, 2.0))),
    }
    return SampleInput((z1, z2), kwargs, name="vicreg")


def vicreg_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` (N 2-12, D 1-8, row norms 0.1 to 10) and coefficients for VICReg."""
    _check_dtype(dtype)
    return _vicreg_samples(dtype, device)


@st.composite
def _multiview_vicreg_samples(draw, dtype, device):
    views = draw(multiview_views(rows=st.integers(2, 8), dtype=dtype, device=device))
    kwargs = {
        "lambda_invariance": draw(st.sampled_from((1.0, 25.0))),
        "mu_variance": draw(st.sampled_from((0.0, 25.0))),
        "nu_covariance": draw(st.sampled_from((0.0, 1.0))),
    }
    return SampleInput((views,), kwargs, name="multiview_vicreg")


def multiview_vicreg_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(views,)`` (``(N, m, D)``, N 2-8, m 2-4) and coefficients for multi-view VICReg."""
    _check_dtype(dtype)
    return _multiview_vicreg_samples(dtype, device)


@st.composite
def _four_embeddings(draw, dtype, device, min_rows, min_norm, max_norm):
    """Two positive pairs ``(a, b)`` and ``(c, d)`` of one shape (each pair with a relation)."""
    n, d = draw(st.integers(min_rows, 8)), draw(st.integers(1, 16))
    pairs = [
        draw(
            embedding_pairs(
                rows=n, dim=d, dtype=dtype, device=device, min_norm=min_norm, max_norm=max_norm
            )
        )
        for _ in range(2)
    ]
    return pairs[0], pairs[1]


@st.composite
def _negative_cosine_samples(draw, dtype, device):
    (p1, z2), (p2, z1) = draw(_four_embeddings(dtype, device, 1, 1e-3, 1e3))
    kwargs = {"convention": draw(st.sampled_from(("simsiam", "byol")))}
    return SampleInput((p1, p2, z1, z2), kwargs, name="negative_cosine")


def negative_cosine_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(p1, p2, z1, z2)`` (N 1-8, D 1-16) and ``convention``; ``p1`` is drawn
    against ``z2`` and ``p2`` against ``z1`` with the relations of :func:`embedding_pairs`."""
    _check_dtype(dtype)
    return _negative_cosine_samples(dtype, device)


@st.composite
def _dcl_samples(draw, dtype, device, min_temperature, max_temperature, weighted):
    z1, z2 = draw(embedding_pairs(rows=st.integers(2, 8), dtype=dtype, device=device))
    kwargs: dict[str, object] = {
        "temperature": draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    }
    if weighted:
        kwargs["sigma"] = draw(_log_uniform(0.05, 10.0))
    return SampleInput((z1, z2), kwargs, name="dclw" if weighted else "dcl")


def dcl_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    weighted: bool = False,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` plus ``temperature`` (and, ``weighted``, a von Mises-Fisher
    ``sigma`` in [0.05, 10]) for DCL / DCLW."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _dcl_samples(dtype, device, min_temperature, max_temperature, weighted)


@st.composite
def _moco_v3_samples(draw, dtype, device, min_temperature, max_temperature):
    (q1, k2), (q2, k1) = draw(_four_embeddings(dtype, device, 2, 1e-3, 1e3))
    tau = draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    return SampleInput((q1, q2, k1, k2), {"temperature": tau}, name="moco_v3")


def moco_v3_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(q1, q2, k1, k2)`` (N 2-8) plus ``temperature`` for MoCo v3; ``q1`` is drawn
    against its positive ``k2`` and ``q2`` against ``k1``."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _moco_v3_samples(dtype, device, min_temperature, max_temperature)


def _array(draw, shape, elements, dtype, device) -> torch.Tensor:
    return _tensor(draw(hnp.arrays(np.float64, shape, elements=elements)), dtype, device)


@st.composite
def _dino_samples(draw, dtype, device):
    n, crops, k = draw(st.integers(1, 5)), draw(st.integers(2, 4)), draw(st.integers(1, 6))
    teacher_crops = draw(st.integers(1, min(2, crops)))
    student = _array(draw, (n, crops, k), _LOGIT_ELEMENTS, dtype, device)
    teacher = _array(draw, (n, teacher_crops, k), _LOGIT_ELEMENTS, dtype, device)
    center = _array(draw, (k,), _LOGIT_ELEMENTS, dtype, device) * draw(st.sampled_from((0, 1)))
    kwargs = {
        "student_temperature": draw(_log_uniform(0.05, 1.0)),
        "teacher_temperature": draw(_log_uniform(0.02, 1.0)),
    }
    return SampleInput((student, teacher, center), kwargs, name="dino")


def dino_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(student (N, V_s, K), teacher (N, V_t, K), center (K,))``, logits in [-3, 3]
    (N 1-5, V_s 2-4, V_t 1-2, K 1-6; the centre zero or drawn), and the two temperatures
    (student 0.05 to 1, teacher 0.02 to 1) for DINO."""
    _check_dtype(dtype)
    return _dino_samples(dtype, device)


@st.composite
def _swav_samples(draw, dtype, device):
    n, crops, k = draw(st.integers(1, 6)), draw(st.integers(2, 4)), draw(st.integers(1, 6))
    scores = _array(draw, (n, crops, k), _SCORE_ELEMENTS, dtype, device)
    kwargs = {
        "assigned": draw(st.integers(1, min(2, crops))),
        "temperature": draw(_log_uniform(0.05, 1.0)),
        "epsilon": draw(st.sampled_from((0.05, 0.1, 0.5))),
        "iterations": draw(st.sampled_from((1, 3, 10))),
    }
    return SampleInput((scores,), kwargs, name="swav")


def swav_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(scores,)`` (``(N, V, K)`` prototype cosines in [-1, 1], N 1-6, V 2-4, K 1-6)
    and the keywords of SwAV (``assigned`` 1-2, ``temperature``, ``epsilon``, ``iterations``)."""
    _check_dtype(dtype)
    return _swav_samples(dtype, device)
