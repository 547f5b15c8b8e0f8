"""The kernel-loss strategies of ``amcl_lab.testing.strategies``: bad calls, draw contracts."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis.errors import InvalidArgument

from amcl_lab.data.synthetic import AugmentationGraph
from amcl_lab.testing import strategies as ams

INVALID = [
    pytest.param(ams.multiview_views, {"views": 0}, id="multiview_views(views=0)"),
    pytest.param(ams.multiview_views, {"dim": 2.5}, id="multiview_views(dim=2.5)"),
    pytest.param(ams.multiview_views, {"min_norm": 0.0}, id="multiview_views(min_norm=0)"),
    pytest.param(ams.augmentation_graphs, {"images": 0}, id="augmentation_graphs(images=0)"),
    pytest.param(ams.augmentation_graphs, {"dtype": torch.int32}, id="augmentation_graphs(int32)"),
    pytest.param(ams.kernel_samples, {"max_dim": 0}, id="kernel_samples(max_dim=0)"),
    pytest.param(
        ams.invariance_orthogonality_samples,
        {"dtype": torch.bool},
        id="invariance_orthogonality_samples(bool)",
    ),
    pytest.param(ams.multiview_barlow_samples, {"dtype": "float"}, id="multiview_barlow(str)"),
]


@pytest.mark.parametrize(("strategy", "kwargs"), INVALID)
def test_invalid_arguments_raise_invalid_argument(strategy, kwargs):
    with pytest.raises(InvalidArgument):
        strategy(**kwargs).example()


@given(ams.multiview_views(rows=3, views=4, dim=2, dtype=torch.float32))
def test_multiview_views_have_the_requested_shape_and_dtype(views):
    assert views.shape == (3, 4, 2) and views.dtype == torch.float32
    assert torch.isfinite(views).all()


@given(ams.augmentation_graphs(images=2, augmentations=5))
def test_augmentation_graphs_are_valid_graphs_of_the_requested_size(graph):
    assert isinstance(graph, AugmentationGraph)
    assert (graph.num_images, graph.num_augmentations) == (2, 5)
    assert bool((graph.marginal > 0).all())


@given(ams.kernel_samples(max_dim=2))
def test_kernel_samples_are_consistent_graph_inputs(sample):
    features, kernel, marginal = sample.args
    m = marginal.shape[0]
    assert features.shape[0] == m and 1 <= features.shape[1] <= 2
    assert kernel.shape == (m, m) and torch.equal(kernel, kernel.T)
    assert sample.kwargs["c"] >= 0


@given(ams.invariance_orthogonality_samples())
def test_invariance_orthogonality_samples_have_two_or_more_views(sample):
    (views,) = sample.args
    assert views.ndim == 3 and views.shape[1] >= 2 and sample.kwargs["beta"] >= 0


@given(ams.multiview_barlow_samples())
def test_multiview_barlow_samples_have_two_images_and_two_views(sample):
    (views,) = sample.args
    assert views.shape[0] >= 2 and views.shape[1] >= 2
    assert sample.kwargs["standardize"] in ("per_view", "joint")
