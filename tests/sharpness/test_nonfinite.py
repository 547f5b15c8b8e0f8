"""An empty batch or a NaN loss is an error, never a "converged" eigenvalue of 0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amcl_lab.sharpness import (
    HessianOperator,
    ascent_sharpness,
    hessian_trace,
    hvp,
    spectral_density,
    top_eigenvalues,
)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _batch(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(
        0, 2, (n,), generator=g
    )


CALLS = {
    "top_eigenvalues": lambda b, net: top_eigenvalues(net, F.cross_entropy, b),
    "hessian_trace": lambda b, net: hessian_trace(net, F.cross_entropy, b),
    "spectral_density": lambda b, net: spectral_density(net, F.cross_entropy, b, n_runs=1),
    "HessianOperator": lambda b, net: HessianOperator(net, F.cross_entropy, b),
    "hvp": lambda b, net: hvp(net, F.cross_entropy, b, torch.ones(22, dtype=torch.float64)),
    "ascent_sharpness": lambda b, net: ascent_sharpness(net, F.cross_entropy, b),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_an_empty_batch_is_refused(name):
    """Before: top_eigenvalues returned [0.] 'converged' and hessian_trace 0.0 (loss NaN)."""
    x, y = _batch()
    with pytest.raises(ValueError, match=rf"{name}: batch inputs must hold at least one sample"):
        CALLS[name]((x[:0], y[:0]), _net())


@pytest.mark.parametrize("name", sorted(CALLS))
def test_nan_inputs_are_refused(name):
    x, y = _batch()
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"{name}: batch inputs contain NaN or inf values"):
        CALLS[name]((x, y), _net())


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_nan_loss_is_refused(name):
    net = _net()
    with torch.no_grad():
        net[0].weight[1, 1] = float("nan")
    with pytest.raises(ValueError, match=rf"{name}: loss_fn\(model\(inputs\), targets\) is nan"):
        CALLS[name](_batch(), net)


def test_m_larger_than_the_batch_is_refused():
    """Before: ascent_sharpness(m=100) on a batch of 8 was accepted (one chunk, silently)."""
    with pytest.raises(ValueError, match=r"ascent_sharpness: m must be in \[1, 8\], got 100"):
        ascent_sharpness(_net(), F.cross_entropy, _batch(), m=100)
    assert ascent_sharpness(_net(), F.cross_entropy, _batch(), m=8).m == 8
