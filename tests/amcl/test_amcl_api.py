"""Unit tests of documented AMCL behaviour that the registry and property tests do not pin
down: the modules, the model wrapper, the tie rule, dtypes and the README example."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from amcl_lab import (
    AMCLModel,
    MultiHeadProjector,
    PairTemperature,
    ScalarTemperature,
    amcl_barlow_twins,
    amcl_info_nce,
    amcl_nt_xent,
    amcl_simsiam,
    nt_xent,
)

ROOT = Path(__file__).resolve().parents[2]


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- modules -----------------------------------------------------------------------------------


def test_projector_heads_share_the_architecture_but_not_the_weights():
    torch.manual_seed(0)
    projector = MultiHeadProjector(6, 8, 4, heads=3)
    shapes = {tuple(p.shape for p in head.parameters()) for head in projector.heads}
    assert len(shapes) == 1 and projector.num_heads == 3
    first, second = (head[0].weight for head in projector.heads[:2])
    assert not torch.equal(first, second)


def test_projector_applies_head_c_to_input_c_of_a_stack():
    torch.manual_seed(0)
    projector = MultiHeadProjector(6, 8, 4, heads=2).double()
    x = _randn(2, 5, 6)
    out = projector(x)
    for c, head in enumerate(projector.heads):
        assert torch.equal(out[c], head(x[c]))
    shared = projector(x[0])
    assert torch.equal(shared[0], out[0]) and shared.shape == (2, 5, 4)


def test_pairwise_temperatures_equal_the_elementwise_ones():
    torch.manual_seed(0)
    net = PairTemperature(4, hidden=8).double()
    a, b = _randn(3, 5, 4), _randn(3, 6, 4, seed=1)
    matrix = net.pairwise(a, b)
    assert matrix.shape == (3, 5, 6)
    torch.testing.assert_close(matrix, net(a[:, :, None], b[:, None]), rtol=1e-12, atol=0)


def test_temperature_scores_are_squashed_in_at_least_float32():
    net = PairTemperature(4)
    tau = net.from_score(torch.tensor([40.0], dtype=torch.float16))
    assert tau.dtype == torch.float32 and float(tau) > 0


# --- the selection rule and dtypes ------------------------------------------------------------


def test_tied_hardest_negatives_go_to_the_lowest_index():
    """Documented choice: among exactly tied hardest negatives, the first candidate row is
    selected (its temperature gets the gradient, the tied one none)."""
    eye = torch.eye(3, dtype=torch.float64)
    z1 = torch.stack([eye[0], eye[0], eye[1]])[None]  # rows 0 and 1 coincide
    z2 = torch.stack([eye[2], eye[0], eye[2]])[None]  # row 4 (= z2[1]) equals row 0 as well
    tau = (0.1 + torch.arange(36, dtype=torch.float64).reshape(1, 6, 6) / 36).requires_grad_()
    loss = amcl_nt_xent(z1, z2, tau, beta=0.5, reduction="none")
    (grad,) = torch.autograd.grad(loss[0], tau)
    # anchor 0: positive is row 3 (z2[0]); rows 1 and 4 tie at similarity 1 -> row 1 wins
    assert grad[0, 0, 1] != 0 and grad[0, 0, 4] == 0
    assert torch.count_nonzero(grad) == 2  # the positive's and the hardest negative's


def test_half_precision_inputs_are_computed_in_float32():
    z1, z2 = _randn(2, 4, 5).half(), _randn(2, 4, 5, seed=1).half()
    tau = torch.full((2, 8, 8), 1e-4, dtype=torch.float16)  # subnormal in float16
    value = amcl_nt_xent(z1, z2, tau)
    reference = amcl_nt_xent(z1.float(), z2.float(), tau.float())
    assert value.dtype == torch.float32 and torch.equal(value, reference)


def test_a_float64_temperature_promotes_float32_features():
    z1, z2 = _randn(1, 3, 4).float(), _randn(1, 3, 4, seed=1).float()
    assert amcl_info_nce(z1, z2, torch.full((1, 6, 6), 0.5, dtype=torch.float64)).dtype == (
        torch.float64
    )


def test_barlow_twins_default_omega_dimension_is_the_feature_width():
    """Documented choice: d' = D by default, N with omega_dim="batch" (equal at tau = 1)."""
    z1, z2 = _randn(1, 8, 3), _randn(1, 8, 3, seed=1)
    tau = torch.full((1, 3, 3), 0.5, dtype=torch.float64)
    base = float(amcl_barlow_twins(z1, z2, tau, beta=0.0))
    features = float(amcl_barlow_twins(z1, z2, tau, beta=1.0))
    batch = float(amcl_barlow_twins(z1, z2, tau, beta=1.0, omega_dim="batch"))
    # Omega(0.5) = (d'/2) log 0.5 + 2, on 3 diagonal and -6 off-diagonal entries
    for dim, value in ((3, features), (8, batch)):
        omega_half = dim / 2 * math.log(0.5) + 2.0
        assert value == pytest.approx(base + (3 - 6) * omega_half, rel=1e-12)


# --- the model wrapper ------------------------------------------------------------------------


def _parts(heads=3, dim=5):
    torch.manual_seed(0)
    return nn.Linear(6, 10).double(), MultiHeadProjector(10, 12, dim, heads=heads).double()


def test_baseline_model_is_nt_xent_of_the_single_head():
    encoder, projector = _parts(heads=1)
    model = AMCLModel(encoder, projector, 0.5, loss="nt_xent", decoupled=True)
    x1, x2 = _randn(4, 6), _randn(4, 6, seed=1)
    z1, z2 = projector(encoder(x1))[0], projector(encoder(x2))[0]
    assert model(x1, x2).item() == nt_xent(z1, z2, 0.5, decoupled=True).item()


def test_adaptive_model_computes_the_functional_loss_and_trains_every_part():
    encoder, projector = _parts()
    net = PairTemperature(5, hidden=8).double()
    model = AMCLModel(encoder, projector, net, mode="topk", k=3, beta=0.1)
    x1, x2 = _randn(4, 6), _randn(4, 6, seed=1)
    loss = model(x1, x2)
    z1, z2 = projector(encoder(x1)), projector(encoder(x2))
    rows = torch.cat([z1, z2], dim=1)
    expected = amcl_nt_xent(z1, z2, net.pairwise(rows, rows), mode="topk", k=3, beta=0.1)
    assert loss.item() == expected.item()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    ("loss", "mode"),
    [("amcl_nt_xent", "softmax"), ("amcl_nt_xent", "nt_xent"), ("amcl_info_nce", "softmax")],
)
def test_adaptive_model_passes_the_log_sum_exp_modes_through(loss, mode):
    """AMCLModel hands ``mode`` to the loss unchanged: the model's value is the functional
    loss's in the log-sum-exp modes too, and every part receives gradient."""
    encoder, projector = _parts()
    net = PairTemperature(5, hidden=8).double()
    model = AMCLModel(encoder, projector, net, loss, mode=mode, beta=0.1)
    x1, x2 = _randn(4, 6), _randn(4, 6, seed=1)
    value = model(x1, x2)
    z1, z2 = projector(encoder(x1)), projector(encoder(x2))
    rows = torch.cat([z1, z2], dim=1)
    fn = amcl_nt_xent if loss == "amcl_nt_xent" else amcl_info_nce
    assert value.item() == fn(z1, z2, net.pairwise(rows, rows), mode=mode, beta=0.1).item()
    value.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_three_views_average_the_three_view_pairs():
    encoder, projector = _parts()
    model = AMCLModel(encoder, projector, 0.3, loss="amcl_info_nce")
    views = [_randn(4, 6, seed=s) for s in range(3)]
    pairs = [model(views[a], views[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert model(*views).item() == pytest.approx((sum(pairs) / 3).item(), rel=1e-14)


def test_simsiam_model_uses_detached_targets_and_the_predictor():
    encoder, projector = _parts(heads=2)
    predictor = MultiHeadProjector(5, 7, 5, heads=2).double()
    net = PairTemperature(5, hidden=8).double()
    model = AMCLModel(encoder, projector, net, loss="amcl_simsiam", predictor=predictor)
    x1, x2 = _randn(4, 6), _randn(4, 6, seed=1)
    z1, z2 = projector(encoder(x1)), projector(encoder(x2))
    p1, p2 = predictor(z1), predictor(z2)
    tau = torch.stack([net(p1, z2.detach()), net(p2, z1.detach())], dim=1)
    assert model(x1, x2).item() == amcl_simsiam(p1, p2, z1, z2, tau).item()


def test_barlow_twins_model_builds_channel_vector_temperatures():
    encoder, projector = _parts(heads=2)
    net = PairTemperature(4, hidden=8).double()  # batch size 4
    model = AMCLModel(encoder, projector, net, loss="amcl_barlow_twins", beta=1e-3)
    x1, x2 = _randn(4, 6), _randn(4, 6, seed=1)
    z1, z2 = projector(encoder(x1)), projector(encoder(x2))
    tau = net.pairwise(z1.transpose(1, 2), z2.transpose(1, 2))
    assert tau.shape == (2, 5, 5)
    assert model(x1, x2).item() == amcl_barlow_twins(z1, z2, tau, beta=1e-3).item()


# --- README example -----------------------------------------------------------------------------


def _readme_example() -> str:
    """The AMCL example of the API tour (README once merged, the issue notes until then)."""
    for path in (ROOT / "README.md", ROOT / "notes" / "issue-3-readme.md"):
        if path.exists():
            text = path.read_text()
            found = re.search(
                r"```python\n(import torch\nfrom amcl_lab import AMCLModel.*?)```", text, re.S
            )
            if found:
                return found.group(1)
    raise AssertionError("the three-line AMCL example is in neither README.md nor the notes")


def test_readme_amcl_example_runs_and_trains():
    namespace: dict = {}
    exec(compile(_readme_example(), "README.md", "exec"), namespace)
    loss = namespace["loss"]
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    temperature = namespace["model"].temperature
    assert all(p.grad is not None for p in temperature.parameters())


def test_the_scalar_temperature_starts_at_init_and_learns_one_value():
    temperature = ScalarTemperature(0.3, tau_min=0.01, tau_max=1.0)
    a, b = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    assert float(temperature.value) == pytest.approx(0.3, abs=1e-7)
    pair = temperature.pairwise(a, b)
    assert pair.shape == (3, 5, 5) and bool((pair == temperature.value).all())
    assert temperature(a, b).shape == (3, 5)
    model = AMCLModel(nn.Identity(), nn.Identity(), temperature, "amcl_nt_xent", mode="max")
    model(a, b).backward()
    assert temperature.theta.grad is not None and float(temperature.theta.grad) != 0.0
    for bad in ({"init": 1.0}, {"init": 0.001}, {"init": 0.5, "tau_min": 2.0}):
        with pytest.raises(ValueError):
            ScalarTemperature(**{"init": 0.5, "tau_min": 0.01, "tau_max": 1.0, **bad})
