"""Bad input to the AMCL modules and functions: a ValueError naming the function, the
argument, what was expected and what was received (issue 3, "Bad input").

The functional losses' error inputs live in their registry entries (checked by
``tests/registry/test_generic.py``); these are the modules and ``omega``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amcl_lab import AMCLModel, MultiHeadProjector, PairTemperature, omega


def _views(n=4, d=6):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"tau_min": 2.0, "tau_max": 2.0}, "tau_min must be < tau_max", id="equal"),
        pytest.param({"tau_min": 3.0, "tau_max": 2.0}, "tau_min must be < tau_max", id="above"),
        pytest.param({"tau_min": 0.0}, "tau_min must be finite and > 0", id="tau_min=0"),
        pytest.param({"tau_min": -1e-5}, "tau_min must be finite and > 0", id="tau_min<0"),
        pytest.param({"tau_max": float("inf")}, "tau_max must be finite", id="tau_max=inf"),
        pytest.param({"hidden": 0}, "hidden must be >= 1", id="hidden=0"),
        pytest.param({"dim": 0}, "dim must be >= 1", id="dim=0"),
    ],
)
def test_pair_temperature_rejects_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=f"PairTemperature: {match}"):
        PairTemperature(**{"dim": 8, **kwargs})


def test_pair_temperature_rejects_the_wrong_feature_dimension():
    net = PairTemperature(8)
    with pytest.raises(ValueError, match=r"PairTemperature: b must have feature dimension 8 .*"):
        net(torch.randn(3, 8), torch.randn(3, 7))
    with pytest.raises(ValueError, match="feature dimension 8"):
        net.pairwise(torch.randn(2, 5, 6), torch.randn(2, 5, 6))


def test_pair_temperature_rejects_mismatched_heads_and_half_parameters():
    net = PairTemperature(4)
    with pytest.raises(ValueError, match="same leading \\(head\\) dimensions"):
        net.pairwise(torch.randn(3, 5, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match=r"parameters are torch\.float16"):
        net.half()(torch.randn(2, 4), torch.randn(2, 4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"heads": 0}, "heads must be >= 1", id="heads=0"),
        pytest.param({"in_dim": 0}, "in_dim must be >= 1", id="in_dim=0"),
        pytest.param({"out_dim": 2.5}, "out_dim must be an int", id="out_dim=2.5"),
    ],
)
def test_projector_rejects_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=f"MultiHeadProjector: {match}"):
        MultiHeadProjector(**{"in_dim": 6, "hidden_dim": 8, "out_dim": 4, **kwargs})


def test_projector_rejects_features_of_the_wrong_width_or_head_count():
    projector = MultiHeadProjector(6, 8, 4, heads=3)
    with pytest.raises(ValueError, match=r"x must be \(N, 6\) features .* got shape \(5, 7\)"):
        projector(torch.randn(5, 7))
    with pytest.raises(ValueError, match="stack of 2 heads but the projector has 3"):
        projector(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match="got shape \\(1, 2, 5, 6\\)"):
        projector(torch.randn(1, 2, 5, 6))


def _model(**kwargs):
    args = {
        "encoder": nn.Linear(6, 10),
        "projector": MultiHeadProjector(10, 12, 5),
        "temperature": PairTemperature(5),
        **kwargs,
    }
    return AMCLModel(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"loss": "amcl_triplet"}, "loss must be one of", id="unknown_loss"),
        pytest.param(
            {"loss": "nt_xent"}, "needs a constant temperature", id="baseline_adaptive_tau"
        ),
        pytest.param({"loss": "amcl_simsiam"}, "needs predictor", id="simsiam_no_predictor"),
        pytest.param({"predictor": nn.Identity()}, "takes no predictor", id="stray_predictor"),
        pytest.param({"gamma": 1.0}, "bad keyword arguments .* 'gamma'", id="unknown_kwarg"),
        pytest.param({"reduction": "sum"}, "set by the model", id="reduction_kwarg"),
        pytest.param({"temperature": -0.5}, "temperature must be finite and > 0", id="tau<0"),
        pytest.param({"temperature": nn.Identity()}, "temperature must be", id="tau_module"),
        pytest.param(
            {"gather_distributed": "yes"}, "gather_distributed must be a bool", id="gather_str"
        ),
    ],
)
def test_model_rejects_bad_construction(kwargs, match):
    with pytest.raises(ValueError, match=f"AMCLModel: .*{match}"):
        _model(**kwargs)


def test_model_rejects_one_view_and_a_single_head_projector_output():
    x1, x2 = _views()
    with pytest.raises(ValueError, match="needs at least two views, got 1"):
        _model()(x1)
    flat = AMCLModel(nn.Linear(6, 5), nn.Identity(), 0.5)
    with pytest.raises(ValueError, match=r"must return a \(C, N, D\) head stack, got \(4, 5\)"):
        flat(x1, x2)


def test_barlow_twins_model_refuses_a_batch_size_other_than_the_temperature_networks():
    """The Barlow Twins temperature network compares N-dimensional channel vectors, so
    the model is tied to one batch size."""
    model = _model(loss="amcl_barlow_twins", temperature=PairTemperature(4))
    model(*_views(n=4))
    with pytest.raises(ValueError, match="built for batch size 4; got a batch of 6"):
        model(*_views(n=6))


@pytest.mark.parametrize(
    ("tau", "match"),
    [
        pytest.param(0.0, "omega: tau must be finite and > 0", id="float 0"),
        pytest.param(torch.tensor([0.5, -1.0]), "omega: tau must be > 0 everywhere", id="tensor"),
        pytest.param(torch.tensor([float("nan")]), "omega: tau contains NaN", id="nan"),
    ],
)
def test_omega_rejects_non_positive_temperatures(tau, match):
    with pytest.raises(ValueError, match=match):
        omega(tau, 16)


def test_omega_rejects_a_bad_dimension():
    with pytest.raises(ValueError, match="omega: dim must be >= 1, got 0"):
        omega(1.0, 0)
