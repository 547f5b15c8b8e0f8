"""Finite inputs whose squares overflow float32 are computed correctly, and ordinary inputs
exactly as before the overflow handling existed (bit for bit, values and gradients).

The ``_plain_*`` functions are the formulas as they were before the overflow cases were
handled; the tests compare the current code with them on ordinary inputs with
``torch.equal``, and a short training run with the current code against one with the plain
formulas patched back in.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch

from amcl_lab import barlow_twins, effective_rank, nt_xent, spectrum_decay, supcon, uniformity
from amcl_lab import metrics as metrics_module
from amcl_lab import optim as optim_module
from amcl_lab.engine import TrainConfig, train
from amcl_lab.losses import _common
from amcl_lab.optim import sam_perturbation

barlow_module = importlib.import_module("amcl_lab.losses.barlow_twins")

# --- the formulas before the overflow handling ---------------------------------------------


def _plain_l2_normalize(z, eps=_common.NORM_EPS):
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    return torch.where(norm < eps, torch.zeros_like(z), z / norm.clamp_min(eps))


def _plain_standardize(z, eps, unbiased):
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=unbiased, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def _plain_sam(grads, rho, *, scales=None, eps=optim_module.SAM_EPS):
    rhos = [rho] * len(grads) if isinstance(rho, float) else list(rho)
    ts = [None] * len(grads) if scales is None else list(scales)
    scaled = [g if t is None else t * g for g, t in zip(grads, ts, strict=True)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
    return [
        (s if t is None else t * s) * (r / (norm + eps))
        for s, t, r in zip(scaled, ts, rhos, strict=True)
    ]


def _ordinary(dtype, seed=0, shape=(16, 8)):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=torch.float64)
    z[0] = 0.0  # a zero row: the eps branch
    wide = dtype in (torch.float32, torch.float64)
    z[1] *= 1e6 if wide else 1e3
    z[2] *= 1e-6 if wide else 1e-2
    return z.to(dtype)


def _same_bits(a, b):
    """Equal bit patterns (NaN payloads and the sign of zero included)."""
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(
        a.detach().contiguous().view(as_int), b.detach().contiguous().view(as_int)
    )


DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --- bit-identity on ordinary inputs -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_normalize_is_unchanged_on_ordinary_inputs(dtype):
    for seed in range(5):
        z = _ordinary(dtype, seed).requires_grad_(True)
        z_plain = z.detach().clone().requires_grad_(True)
        out, plain = _common.l2_normalize(z), _plain_l2_normalize(z_plain)
        assert _same_bits(out, plain)
        cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
        (g,) = torch.autograd.grad(out, z, cot)
        (g_plain,) = torch.autograd.grad(plain, z_plain, cot)
        assert _same_bits(g, g_plain)


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("unbiased", (False, True))
def test_standardize_is_unchanged_on_ordinary_inputs(dtype, unbiased):
    for seed in range(5):
        z = _ordinary(dtype, seed).requires_grad_(True)
        out = barlow_module._standardize(z, 1e-5, unbiased)
        plain = _plain_standardize(z, 1e-5, unbiased)
        assert _same_bits(out, plain)
        assert _same_bits(*(torch.autograd.grad(x.sum(), z)[0] for x in (out, plain)))


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
def test_spectrum_is_unchanged_on_ordinary_inputs(dtype):
    for seed in range(5):
        z = _ordinary(dtype, seed, (40, 6))
        x = z - z.mean(dim=0, keepdim=True)
        sigma = torch.linalg.svdvals(x)
        sigma = sigma[sigma > max(x.shape) * torch.finfo(dtype).eps * sigma[0]]
        assert _same_bits(metrics_module._spectrum("t", z, True), sigma**2 / (x.shape[0] - 1))


@pytest.mark.parametrize("dtype", (torch.float32, torch.float64))
@pytest.mark.parametrize("adaptive", (False, True))
def test_sam_perturbation_is_unchanged_on_ordinary_inputs(dtype, adaptive):
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(5, 3, generator=g).to(dtype), torch.randn(7, generator=g).to(dtype)]
    scales = [t.abs() + 0.01 for t in grads] if adaptive else None
    new = sam_perturbation(grads, 0.05, scales=scales)
    for a, b in zip(new, _plain_sam(grads, 0.05, scales=scales), strict=True):
        assert _same_bits(a, b)


def test_a_training_run_is_bit_identical_to_one_with_the_plain_formulas(monkeypatch):
    """The engine's numbers do not move: SAM on NT-Xent and Barlow Twins, current vs plain."""
    tiny = TrainConfig(
        encoder="mlp",
        width=16,
        proj_hidden=16,
        proj_dim=8,
        batch_size=32,
        steps=3,
        eval_every=0,
        probe_steps=3,
        knn_k=5,
        augment="ab",
        crop_min_scale=0.5,
        device="cpu",
        optimizer="sam",
        geometry=("uniformity", "effective_rank"),
    )
    for config in (tiny, dataclasses.replace(tiny, loss="barlow_twins")):
        current = train(config, tag="t")
        with monkeypatch.context() as patch:
            for module in (_common, metrics_module):
                patch.setattr(module, "l2_normalize", _plain_l2_normalize)
            patch.setattr(barlow_module, "_standardize", _plain_standardize)
            patch.setattr(optim_module, "_perturbation", _plain_perturbation)
            plain = train(config, tag="t")
        assert json.dumps(current.history) == json.dumps(plain.history)
        for key, value in plain.network.state_dict().items():
            assert _same_bits(current.network.state_dict()[key], value), key


def _plain_perturbation(fn, what, grads, rhos, scales, eps):
    return _plain_sam(grads, rhos, scales=scales, eps=eps)


# --- the overflow cases ---------------------------------------------------------------------


def _views(seed=0, n=8, d=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize("scale", (1e20, 1e30, 1e37))
def test_nt_xent_of_huge_float32_rows_equals_the_float64_value(scale):
    """Before: rows above ~5e18 had an infinite norm and became zero vectors (2.767 vs 2.989)."""
    z1, z2 = _views()
    expected = float(nt_xent(z1.double(), z2.double(), 0.5))
    assert float(nt_xent(z1 * scale, z2, 0.5)) == pytest.approx(expected, rel=1e-5)
    big = (z1 * scale).requires_grad_(True)
    (grad,) = torch.autograd.grad(nt_xent(big, z2, 0.5), big)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0
    features = torch.stack([z1 * scale, z2], dim=1)
    labels = torch.arange(8) % 3
    reference = supcon(torch.stack([z1, z2], dim=1).double(), labels)
    assert float(supcon(features, labels)) == pytest.approx(float(reference), rel=1e-5)


def test_barlow_twins_of_huge_float32_features_equals_the_float64_value():
    """Before: the variance overflowed and the loss was D (here 16.0)."""
    z1, z2 = _views(1, n=32, d=4)
    expected = float(barlow_twins(z1.double(), z2.double()))
    assert float(barlow_twins(z1 * 1e20, z2 * 1e20)) == pytest.approx(expected, rel=1e-4)


def test_uniformity_and_spectra_of_huge_float32_rows():
    """Before: uniformity 0, effective_rank and spectrum_decay NaN."""
    z, _ = _views(2, n=64, d=8)
    assert float(uniformity(z * 1e20)) == pytest.approx(float(uniformity(z.double())), rel=1e-5)
    erank = float(effective_rank(z.double()))
    assert float(effective_rank(z * 1e20)) == pytest.approx(erank, rel=1e-4)
    alpha = float(spectrum_decay(z.double()).alpha)
    assert float(spectrum_decay(z * 1e20).alpha) == pytest.approx(alpha, rel=1e-3, abs=1e-4)


def test_sam_perturbation_of_a_huge_gradient_keeps_length_rho():
    """Before: a 1e30 gradient gave a zero step, so SAM silently became SGD."""
    grads = [torch.full((3,), 1e30), torch.full((2, 2), -2e30)]
    steps = sam_perturbation(grads, 0.05)
    norm = torch.sqrt(sum((s.double() ** 2).sum() for s in steps))
    assert float(norm) == pytest.approx(0.05, rel=1e-6)
    expected = sam_perturbation([g.double() for g in grads], 0.05)
    for a, b in zip(steps, expected, strict=True):
        assert torch.allclose(a.double(), b, rtol=1e-6)
