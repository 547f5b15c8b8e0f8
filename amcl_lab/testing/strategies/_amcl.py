"""Strategies for AMCL losses.

Private module of :mod:`amcl_lab.testing.strategies`.
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

from ...samples import SampleInput
from ._base import (
    _DIM,
    _ROWS,
    RELATIONS,
    _as_strategy,
    _check_dtype,
    _check_range,
    _check_relations,
    _check_size,
    _tensor,
    embedding_pairs,
    embeddings,
)

__all__ = [
    "amcl_barlow_samples",
    "amcl_queue_samples",
    "amcl_simsiam_samples",
    "amcl_two_view_samples",
    "head_stacks",
    "pair_temperatures",
]

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
