"""Strategies for the kernel losses of the small-projector paper.

Private module of :mod:`amcl_lab.testing.strategies`.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ...samples import SampleInput
from ._base import (
    _ROWS,
    _as_strategy,
    _check_dtype,
    _check_range,
    _check_size,
    _tensor,
    embeddings,
    multiview_features,
)

__all__ = [
    "augmentation_graphs",
    "invariance_orthogonality_samples",
    "kernel_samples",
    "multiview_barlow_samples",
    "multiview_views",
]

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
    from ...data.synthetic import AugmentationGraph

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
