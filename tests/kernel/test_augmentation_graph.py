"""Unit tests of the synthetic augmentation graphs (``amcl_lab.data.synthetic``).

Expected values are computed here in NumPy from p(x) and p(a | x) (the definitions in the
:mod:`amcl_lab.data.synthetic` docstring).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.linalg import subspace_angles

from amcl_lab.data.synthetic import (
    AugmentationGraph,
    clustered_augmentation_graph,
    random_augmentation_graph,
)
from amcl_lab.testing import strategies as ams


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the kernel and its operator ---------------------------------------------------------------


@given(ams.augmentation_graphs())
def test_graph_matrices_match_their_definitions(graph):
    """p(a) = sum_x p(x)p(a|x), w = sum_x p(x) p(.|x) p(.|x)^T, k = w / (p p^T)."""
    prior, cond = _np(graph.prior), _np(graph.conditional)
    p = prior @ cond
    w = sum(prior[x] * np.outer(cond[x], cond[x]) for x in range(len(prior)))
    np.testing.assert_allclose(_np(graph.marginal), p, rtol=1e-12)
    np.testing.assert_allclose(_np(graph.joint), w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_np(graph.kernel), w / np.outer(p, p), rtol=1e-10)
    assert _np(graph.joint).sum() == pytest.approx(1.0, rel=1e-12)


@given(ams.augmentation_graphs())
def test_spectrum_lies_in_zero_one_with_the_constant_on_top(graph):
    """T is PSD with eigenvalues in [0, 1]; its top eigenfunction is the constant 1."""
    values, functions = graph.eigenpairs
    p = _np(graph.marginal)
    assert values[0].item() == pytest.approx(1.0, abs=1e-10)
    assert np.all(_np(values) >= -1e-10) and np.all(_np(values) <= 1 + 1e-10)
    assert np.all(np.diff(_np(values)) <= 1e-12)  # decreasing
    top = _np(functions[:, 0])
    np.testing.assert_allclose(np.abs(top), 1.0, rtol=1e-8)
    phi = _np(functions)
    np.testing.assert_allclose(phi.T @ (p[:, None] * phi), np.eye(len(p)), atol=1e-8)


@given(ams.augmentation_graphs(), st.data())
def test_eigenfunctions_satisfy_t_phi_equals_lambda_phi(graph, data):
    """(T phi)(a) = sum_a' p(a') k(a, a') phi(a') = lambda phi(a)."""
    values, functions = (_np(t) for t in graph.eigenpairs)
    k, p = _np(graph.kernel), _np(graph.marginal)
    j = data.draw(st.integers(0, len(p) - 1))
    np.testing.assert_allclose(k @ (p * functions[:, j]), values[j] * functions[:, j], atol=1e-8)


@given(ams.augmentation_graphs(), st.data())
def test_quadratic_form_of_t_is_the_energy_of_view_averaged_features(graph, data):
    """T = A A*: <f, T f> = E_x (E_{a|x} f)^2; and ||operator_matrix||_F = ||T||_HS."""
    f = np.array(
        data.draw(
            st.lists(
                st.floats(-3, 3), min_size=graph.num_augmentations, max_size=graph.num_augmentations
            )
        )
    )
    k, p = _np(graph.kernel), _np(graph.marginal)
    prior, cond = _np(graph.prior), _np(graph.conditional)
    assert float((p * f) @ k @ (p * f)) == pytest.approx(float(prior @ (cond @ f) ** 2), abs=1e-10)
    hs = float((np.outer(p, p) * k**2).sum())
    assert float((graph.operator_matrix**2).sum()) == pytest.approx(hs, rel=1e-10)


def test_optimal_features_are_scaled_orthogonal_eigenfunctions():
    """Columns orthogonal in L2(p) with squared norms max(0, 1 - c + c lambda_k)."""
    graph = random_augmentation_graph(generator=_gen(0))
    p = _np(graph.marginal)
    values = _np(graph.eigenpairs.values)
    for c in (0.5, 1.0, 3.0):
        f = _np(graph.optimal_features(6, c=c))
        target = np.maximum(0.0, 1 - c + c * values[:6])
        np.testing.assert_allclose(f.T @ (p[:, None] * f), np.diag(target), atol=1e-10)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dim": 0}, "dim must be in"),
        ({"dim": 41}, "dim must be in"),
        ({"dim": 2, "c": -1.0}, "c must be finite"),
    ],
)
def test_optimal_features_reject_bad_arguments(kw, match):
    graph = random_augmentation_graph(generator=_gen(0))
    with pytest.raises(ValueError, match=match):
        graph.optimal_features(**kw)


def test_population_views_weight_every_point_of_every_image():
    graph = random_augmentation_graph(3, 5, generator=_gen(1))
    f = torch.randn(5, 2, dtype=torch.float64, generator=_gen(2))
    views, weights = graph.population_views(f)
    assert views.shape == (3, 5, 2) and torch.equal(views[1], f)
    np.testing.assert_allclose(_np(weights), _np(graph.prior)[:, None] * _np(graph.conditional))
    with pytest.raises(ValueError, match="features must have 5 rows"):
        graph.population_views(f[:4])


# --- sampling views and estimating the kernel ----------------------------------------------------


def test_sampling_is_deterministic_given_the_generator():
    graph = random_augmentation_graph(generator=_gen(0))
    a = graph.sample_views(4, batch_size=10, generator=_gen(5))
    b = graph.sample_views(4, batch_size=10, generator=_gen(5))
    assert torch.equal(a.images, b.images) and torch.equal(a.augmentations, b.augmentations)
    assert a.augmentations.shape == (10, 4) and a.augmentations.dtype == torch.int64
    every = graph.sample_views(3, generator=_gen(5))
    assert torch.equal(every.images, torch.arange(12)) and every.augmentations.shape == (12, 3)


def test_sampled_pairs_follow_p_of_x_times_p_of_a_given_x():
    """Frequencies of (image, augmentation) pairs match p(x) p(a|x) within 5 standard errors."""
    graph = random_augmentation_graph(3, 4, sparsity=1.0, generator=_gen(3))
    draws = 20000
    sample = graph.sample_views(2, batch_size=draws, generator=_gen(4))
    counts = np.zeros((3, 4))
    np.add.at(counts, (sample.images.numpy(), sample.augmentations[:, 1].numpy()), 1)
    expected = _np(graph.prior)[:, None] * _np(graph.conditional)
    se = np.sqrt(expected * (1 - expected) / draws)
    assert np.all(np.abs(counts / draws - expected) < 5 * se)


def test_empirical_kernel_counts_ordered_pairs_of_distinct_views():
    """Hand-computed: image 0 has views (0, 1, 1), image 1 has views (2, 2, 0)."""
    prior = torch.tensor([0.25, 0.75], dtype=torch.float64)
    cond = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8]], dtype=torch.float64)
    graph = AugmentationGraph(prior, cond)
    views = torch.tensor([[0, 1, 1], [2, 2, 0]])
    pair0 = np.array([[0, 2, 0], [2, 2, 0], [0, 0, 0]]) / 6  # (0,1)x2, (1,0)x2, (1,1)x2
    pair1 = np.array([[0, 0, 2], [0, 0, 0], [2, 0, 2]]) / 6
    pp = np.outer(_np(graph.marginal), _np(graph.marginal))
    stratified = (0.25 * pair0 + 0.75 * pair1) / pp
    np.testing.assert_allclose(_np(graph.empirical_kernel(views)), stratified, rtol=1e-12)
    batch = (0.5 * pair0 + 0.5 * pair1) / pp
    np.testing.assert_allclose(
        _np(graph.empirical_kernel(views, images=torch.tensor([1, 0]))), batch, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("views", "kw", "match"),
    [
        (torch.zeros(12, 1, dtype=torch.long), {}, "m >= 2 views"),
        (torch.zeros(12, 2), {}, "integer indices"),
        (torch.full((12, 2), 40), {}, r"indices in \[0, 39\]"),
        (torch.zeros(5, 2, dtype=torch.long), {}, "one row per image"),
        (
            torch.zeros(5, 2, dtype=torch.long),
            {"images": torch.zeros(4, dtype=torch.long)},
            "length 5",
        ),
    ],
)
def test_empirical_kernel_rejects_bad_views(views, kw, match):
    graph = random_augmentation_graph(generator=_gen(0))
    with pytest.raises(ValueError, match=match):
        graph.empirical_kernel(views, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"views": 0}, "views must be >= 1"),
        ({"views": 2, "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_sample_views_rejects_bad_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        random_augmentation_graph(generator=_gen(0)).sample_views(**kw)


# --- construction errors -------------------------------------------------------------------------


def _graph_errors():
    prior = torch.tensor([0.5, 0.5], dtype=torch.float64)
    cond = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], dtype=torch.float64)
    return [
        ((prior * 2, cond), {}, "prior must sum to 1"),
        ((prior[:1] * 2, cond), {}, r"prior must have shape \(2,\)"),
        ((prior, cond * 2), {}, "each row of conditional must sum to 1"),
        ((prior, cond - 0.25), {}, "conditional must be non-negative"),
        (
            (prior, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)),
            {},
            r"augmented points \[2\] have p\(a\) = 0",
        ),
        (
            (prior, cond),
            {"labels": torch.tensor([0, 1, 1])},
            "labels must be a 1-D tensor of length 2",
        ),
        ((prior, cond[0]), {}, "conditional must be a 2-D tensor"),
    ]


@pytest.mark.parametrize(("args", "kw", "match"), _graph_errors())
def test_invalid_graphs_are_rejected_with_the_reason(args, kw, match):
    with pytest.raises(ValueError, match=match):
        AugmentationGraph(*args, **kw)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: random_augmentation_graph(0, 5), "num_images must be >= 1"),
        (lambda: random_augmentation_graph(3, 0), "num_augmentations must be >= 1"),
        (lambda: random_augmentation_graph(sparsity=0.0), "sparsity must be finite and > 0"),
        (lambda: random_augmentation_graph(dtype=torch.int64), "floating dtype"),
        (lambda: clustered_augmentation_graph(0), "num_classes must be >= 1"),
        (lambda: clustered_augmentation_graph(class_overlap=-0.1), "class_overlap must be finite"),
        (lambda: clustered_augmentation_graph(background=math.inf), "background must be finite"),
    ],
)
def test_generators_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --- the generators -----------------------------------------------------------------------------


def test_random_graph_is_reproducible_and_in_the_requested_dtype():
    a = random_augmentation_graph(5, 7, generator=_gen(9), dtype=torch.float32)
    b = random_augmentation_graph(5, 7, generator=_gen(9), dtype=torch.float32)
    assert a.conditional.dtype == torch.float32 and torch.equal(a.conditional, b.conditional)


def test_clustered_graph_top_eigenfunctions_are_class_indicators():
    """Strong within-class overlap: the top-C eigenspace is the span of the class indicators
    (principal angle < 0.1 rad); without overlap it is unrelated to the classes (> 1 rad)."""
    angles = {}
    for overlap in (0.0, 0.3):
        graph = clustered_augmentation_graph(4, 5, 6, class_overlap=overlap, generator=_gen(0))
        assert graph.labels.tolist() == [c for c in range(4) for _ in range(5)]
        point_class = graph.labels[torch.arange(graph.num_augmentations) // 6]
        root = np.sqrt(_np(graph.marginal))[:, None]
        indicators = np.eye(4)[point_class.numpy()]
        top = _np(graph.eigenpairs.functions[:, :4])
        angles[overlap] = float(subspace_angles(root * top, root * indicators).max())
    assert angles[0.3] < 0.1 and angles[0.0] > 1.0, angles
