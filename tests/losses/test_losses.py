"""Unit tests of documented behaviour that the generic and property tests do not pin down."""

from __future__ import annotations

import math

import pytest
import torch

from amcl_lab import losses
from amcl_lab.losses._common import l2_normalize


def _pair(n=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, d, generator=g, dtype=torch.float64),
        torch.randn(n, d, generator=g, dtype=torch.float64),
    )


def test_zero_row_is_treated_as_zero_vector_with_zero_gradient():
    """Documented choice: a zero embedding has cosine 0 with everything and no gradient."""
    z1, z2 = _pair()
    z1[2] = 0.0
    z1.requires_grad_(True)
    value = losses.nt_xent(z1, z2, 0.5)
    (grad,) = torch.autograd.grad(value, z1)
    assert torch.isfinite(value)
    assert torch.all(grad[2] == 0)
    assert torch.equal(l2_normalize(z1.detach())[2], torch.zeros(4, dtype=torch.float64))


def test_zero_row_gradient_is_finite_in_float16():
    z1, z2 = _pair()
    z1[0] = 0.0
    z1 = z1.half().requires_grad_(True)
    value = losses.nt_xent(z1, z2.half(), 0.01)
    (grad,) = torch.autograd.grad(value, z1)
    assert value.dtype == torch.float32 and torch.isfinite(grad).all()


def test_learnable_temperature_receives_the_analytic_gradient():
    """A 0-d tensor temperature gets the gradient that central differences predict."""
    z1, z2 = _pair()
    tau = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    value = losses.nt_xent(z1, z2, tau)
    (g_tau,) = torch.autograd.grad(value, tau)
    eps = 1e-6
    numeric = (losses.nt_xent(z1, z2, 0.3 + eps) - losses.nt_xent(z1, z2, 0.3 - eps)) / (2 * eps)
    assert math.isclose(float(g_tau), float(numeric), rel_tol=1e-7)


@pytest.mark.parametrize("bad", [torch.tensor([0.1, 0.2]), "0.5", True])
def test_temperature_must_be_a_scalar_number(bad):
    z1, z2 = _pair()
    with pytest.raises(ValueError, match="temperature"):
        losses.nt_xent(z1, z2, bad)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match=r"z1 must be a torch\.Tensor"):
        losses.nt_xent([[1.0, 2.0]], torch.ones(1, 2))


def test_inputs_on_different_devices_are_rejected():
    z1, z2 = _pair()
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="one device"):
        losses.nt_xent(z1, z2.cuda())


def test_reduction_none_orders_anchors_view1_then_view2():
    z1, z2 = _pair(n=3)
    per = losses.nt_xent(z1, z2, 0.5, reduction="none")
    swapped = losses.nt_xent(z2, z1, 0.5, reduction="none")
    assert per.shape == (6,)
    assert torch.allclose(per, torch.cat([swapped[3:], swapped[:3]]), rtol=0, atol=1e-14)
    assert torch.isclose(per.sum(), losses.nt_xent(z1, z2, 0.5, reduction="sum"))


def test_info_nce_without_queue_uses_the_other_keys_as_negatives():
    q, k = _pair(n=4)
    # with queue = the other keys, each query sees its key + 3 others, i.e. the same logits
    per = losses.info_nce(q, k, None, 0.2, reduction="none")
    for i in range(4):
        others = torch.cat([k[:i], k[i + 1 :]])
        single = losses.info_nce(q[i : i + 1], k[i : i + 1], others, 0.2)
        assert torch.isclose(per[i], single, rtol=1e-12)


def test_supcon_reduction_none_shapes():
    f = torch.randn(4, 3, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1])
    assert losses.supcon(f, y, reduction="none").shape == (4, 3)
    assert losses.supcon(f, y, contrast_mode="one", reduction="none").shape == (4,)


def test_barlow_unbiased_variance_differs_by_order_one_over_n():
    z1, z2 = _pair(n=64, d=3)
    biased = float(losses.barlow_twins(z1, z2, eps=0.0))
    unbiased = float(losses.barlow_twins(z1, z2, eps=0.0, variance="unbiased"))
    assert biased != unbiased
    # standardised features scale by sqrt((N-1)/N): C scales by (N-1)/N
    c_b = losses.cross_correlation(z1, z2, eps=0.0)
    c_u = losses.cross_correlation(z1, z2, eps=0.0, variance="unbiased")
    assert torch.allclose(c_u, c_b * 63 / 64, rtol=1e-12)


def test_hard_negative_mask_keeps_ties_at_the_threshold():
    sim = torch.tensor([[0.0, 0.5, 0.5, 0.1]], dtype=torch.float64)
    negatives = torch.tensor([[False, True, True, True]])
    kept = losses.hard_negative_mask(sim, negatives, k=1)
    assert kept.tolist() == [[False, True, True, False]]


def test_modules_match_the_functions():
    z1, z2 = _pair()
    f = torch.stack([z1, z2], dim=1)
    y = torch.tensor([0, 1, 0, 1, 2])
    pairs = [
        (losses.NTXentLoss(0.3)(z1, z2), losses.nt_xent(z1, z2, 0.3)),
        (
            losses.NTXentLoss(0.3, decoupled=True)(z1, z2),
            losses.nt_xent(z1, z2, 0.3, decoupled=True),
        ),
        (losses.InfoNCELoss(0.2)(z1, z2, z1), losses.info_nce(z1, z2, z1, 0.2)),
        (losses.SupConLoss(0.2, variant="in")(f, y), losses.supcon(f, y, 0.2, variant="in")),
        (losses.BarlowTwinsLoss(0.1)(z1, z2), losses.barlow_twins(z1, z2, 0.1)),
        (losses.HardContrastiveLoss(0.4, k=3)(z1, z2), losses.hard_contrastive(z1, z2, 0.4, k=3)),
        (losses.SimpleContrastiveLoss(k=2)(z1, z2), losses.simple_contrastive(z1, z2, k=2)),
    ]
    for module_value, function_value in pairs:
        assert torch.equal(module_value, function_value)
