"""Unit tests of the kernel losses' documented behaviour not covered by the registry tests.

The registry (``amcl_lab.registry``) already runs finite values, precision, gradcheck of the
view losses and the error table of every loss; the properties live in
``tests/properties/test_kernel.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amcl_lab.data.synthetic import random_augmentation_graph
from amcl_lab.losses import (
    TUNED_BETA,
    InvarianceOrthogonalityLoss,
    MultiViewBarlowTwinsLoss,
    beta_for_dim,
    invariance_orthogonality_loss,
    kernel_loss,
    multiview_barlow_twins,
)


def _graph(seed: int = 0, n: int = 4, m: int = 6):
    return random_augmentation_graph(n, m, generator=torch.Generator().manual_seed(seed))


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- gradients on the constrained domains (the registry skips these) -------------------------


def test_kernel_loss_gradcheck_through_a_symmetric_kernel_and_a_softmax_marginal():
    """Gradients w.r.t. features, kernel and marginal, with steps that stay in the domain."""
    graph = _graph()
    features = _randn(6, 3).requires_grad_(True)
    half = (0.5 * graph.kernel).clone().requires_grad_(True)  # kernel = half + half^T
    logits = graph.marginal.log().clone().requires_grad_(True)  # marginal = softmax(logits)

    def f(features, half, logits):
        return kernel_loss(features, half + half.T, torch.softmax(logits, 0), c=0.7)

    assert torch.autograd.gradcheck(f, (features, half, logits), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_population_loss_gradcheck_through_softmax_weights():
    graph = _graph(1)
    views, weights = graph.population_views(_randn(6, 2, seed=1))
    views = views.clone().requires_grad_(True)
    logits = weights.log().clone().requires_grad_(True)

    def f(views, logits):
        w = torch.softmax(logits.flatten(), 0).reshape(logits.shape)
        return invariance_orthogonality_loss(views, 0.3, weights=w)

    assert torch.autograd.gradcheck(f, (views, logits), eps=1e-6, atol=1e-5, rtol=1e-3)


# --- documented behaviour --------------------------------------------------------------------


def test_identical_views_leave_only_the_orthogonality_term():
    """Inv = 0 when every view equals its image's embedding; L = beta ||G - I||^2."""
    base = _randn(5, 1, 3)
    views = base.expand(5, 4, 3)
    z = base[:, 0].numpy()
    expected = 2.0 * ((z.T @ z / 5 - np.eye(3)) ** 2).sum()
    assert float(invariance_orthogonality_loss(views, 2.0)) == pytest.approx(expected, rel=1e-12)


def test_beta_zero_is_the_invariance_term_alone():
    views = _randn(4, 3, 2)
    z = views.numpy()
    expected = np.mean([z[n].var(axis=0, ddof=1).sum() for n in range(4)])
    assert float(invariance_orthogonality_loss(views, 0.0)) == pytest.approx(expected, rel=1e-12)


def test_a_single_augmented_point_is_allowed_with_weights_but_not_as_sampled_views():
    views = _randn(3, 1, 2)
    weights = torch.full((3, 1), 1.0 / 3, dtype=torch.float64)
    value = invariance_orthogonality_loss(views, 0.5, weights=weights)
    gram = sum(np.outer(v, v) for v in views[:, 0].numpy()) / 3
    assert float(value) == pytest.approx(0.5 * ((gram - np.eye(2)) ** 2).sum(), rel=1e-12)
    with pytest.raises(ValueError, match="m >= 2 views"):
        invariance_orthogonality_loss(views, 0.5)


def test_weights_with_an_empty_image_are_rejected():
    weights = torch.tensor([[0.5, 0.5], [0.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="positive sum"):
        invariance_orthogonality_loss(_randn(2, 2, 3), weights=weights)


def test_weights_on_another_shape_or_negative_are_rejected():
    with pytest.raises(ValueError, match="weights must be non-negative"):
        invariance_orthogonality_loss(
            _randn(2, 2, 3), weights=torch.tensor([[0.6, -0.1], [0.25, 0.25]])
        )


def test_joint_and_per_view_standardisation_agree_when_views_share_their_statistics():
    """Documented choice: the readings differ only through per-view means and spreads.

    Views that are row permutations of one another have identical per-view statistics, so
    joint and per-view standardisation coincide; shifting one view separates them.
    """
    z = _randn(6, 3)
    views = torch.stack([z, z[torch.randperm(6, generator=torch.Generator().manual_seed(1))]], 1)
    views = torch.cat([views, z[torch.arange(5, -1, -1)][:, None]], 1)  # a third permutation
    joint = multiview_barlow_twins(views, 0.1, standardize="joint")
    per_view = multiview_barlow_twins(views, 0.1, standardize="per_view")
    assert float(joint) == pytest.approx(float(per_view), rel=1e-12)
    shifted = views.clone()
    shifted[:, 1] += 1.0
    assert float(multiview_barlow_twins(shifted, 0.1, standardize="per_view")) == pytest.approx(
        float(per_view), rel=1e-12
    )
    assert (
        abs(float(multiview_barlow_twins(shifted, 0.1, standardize="joint")) - float(joint)) > 1e-3
    )


def test_normalize_makes_the_loss_blind_to_row_scales():
    """With ``normalize=True`` (the paper's code) each row is L2-normalised first."""
    views = _randn(8, 3, 4)
    scales = torch.rand(8, 3, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a = multiview_barlow_twins(views, 0.05, normalize=True, standardize="joint")
    b = multiview_barlow_twins(
        views * (0.1 + 10 * scales), 0.05, normalize=True, standardize="joint"
    )
    assert float(a) == pytest.approx(float(b), rel=1e-10)


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (kernel_loss, lambda g: (_randn(6, 2), g.kernel, g.marginal)),
        (invariance_orthogonality_loss, lambda g: (_randn(4, 3, 2),)),
        (multiview_barlow_twins, lambda g: (_randn(4, 3, 2),)),
    ],
    ids=["kernel_loss", "invariance_orthogonality", "multiview_barlow_twins"],
)
def test_half_precision_inputs_are_computed_in_float32(fn, args):
    half = [a.half() for a in args(_graph())]
    assert fn(*half).dtype == torch.float32


def test_a_kernel_with_rounding_level_asymmetry_is_accepted():
    graph = _graph()
    k = graph.kernel.clone()
    k[0, 1] += 1e-13
    assert torch.isfinite(kernel_loss(_randn(6, 2), k, graph.marginal))


def test_non_tensor_features_are_a_type_error():
    graph = _graph()
    with pytest.raises(TypeError, match=r"features must be a torch\.Tensor"):
        kernel_loss([[1.0]] * 6, graph.kernel, graph.marginal)


# --- the knobs ---------------------------------------------------------------------------------


def test_beta_for_dim_is_inverse_in_the_projector_dimension():
    assert beta_for_dim(256) == pytest.approx(3.0 / 256)
    assert beta_for_dim(64, beta_times_dim=2.0) == pytest.approx(2.0 / 64)
    assert beta_for_dim(8192) * 8192 == pytest.approx(3.0)


@pytest.mark.parametrize("dim", [0, -4, 2.5, True])
def test_projector_dimension_below_one_or_not_an_int_is_rejected(dim):
    with pytest.raises(ValueError, match="beta_for_dim: dim must be"):
        beta_for_dim(dim)


@pytest.mark.parametrize("product", [0.0, -1.0, float("inf")])
def test_beta_times_dim_must_be_positive(product):
    with pytest.raises(ValueError, match="beta_times_dim must be finite and > 0"):
        beta_for_dim(16, beta_times_dim=product)


def test_tuned_cifar10_betas_keep_beta_times_dim_between_1_5_and_6_6():
    """The tuned lambda of the fastssl CIFAR-10 scripts has lambda * d in [1.5, 6.6]."""
    products = [beta * d for d, beta in TUNED_BETA["barlow_twins_cifar10"].items()]
    assert min(products) == pytest.approx(1.536) and max(products) == pytest.approx(6.5536)
    with pytest.raises(TypeError):
        TUNED_BETA["barlow_twins_cifar10"][64] = 1.0  # presets are read-only


def test_modules_call_the_functions_with_their_stored_hyperparameters():
    views = _randn(5, 3, 4)
    assert torch.equal(
        InvarianceOrthogonalityLoss(beta=0.2)(views), invariance_orthogonality_loss(views, 0.2)
    )
    module = MultiViewBarlowTwinsLoss(0.1, standardize="joint", normalize=True)
    expected = multiview_barlow_twins(views, 0.1, standardize="joint", normalize=True)
    assert torch.equal(module(views), expected)
