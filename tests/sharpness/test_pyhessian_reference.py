"""pyhessian_reference: runs PyHessian 0.1 on the same problem, defects worked around.

PyHessian is Yao et al. 2020 (arXiv:1912.07145); the defects of its PyPI release 0.1 and how
they are handled are listed in the docstring of ``amcl_lab.sharpness.pyhessian_reference``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amcl_lab.sharpness import pyhessian_reference

F64 = torch.float64


def net_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(seed)
    return model, (torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g))


def dense(model: nn.Module, batch) -> np.ndarray:
    """Independent dense Hessian in float64 (eval mode, the only mode PyHessian has)."""
    m = copy.deepcopy(model).double().eval()
    x, y = batch[0].double(), batch[1]
    names = [n for n, _ in m.named_parameters()]
    shapes = [p.shape for p in m.parameters()]
    sizes = [p.numel() for p in m.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(vec):
        params = {n: t.view(s) for n, t, s in zip(names, vec.split(sizes), shapes, strict=True)}
        return F.cross_entropy(torch.func.functional_call(m, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat).numpy()


def test_eigenvalue_trace_and_density_run_and_agree_with_the_dense_hessian():
    model, batch = net_and_batch()
    h = dense(model, batch)
    eig = np.linalg.eigvalsh(h)
    r = pyhessian_reference(
        model, F.cross_entropy, batch, compute=("eigenvalues", "trace", "density"),
        tol=1e-6, trace_max_iter=400, trace_tol=1e-4, density_iter=h.shape[0],
    )  # fmt: skip
    top = eig[np.argmax(np.abs(eig))]  # power iteration: largest magnitude
    assert r.eigenvalues[0] == pytest.approx(top, rel=1e-3)
    assert r.n_hvp_eigenvalues >= 2
    assert r.n_hvp_trace == len(r.trace_samples) >= 2
    sd = np.std(r.trace_samples, ddof=1) / np.sqrt(len(r.trace_samples))
    assert abs(r.trace - np.trace(h)) <= 5 * sd
    # torch.eig stand-in: a full-length SLQ run finds the extreme eigenvalues, weights sum to 1
    # (the cluster near 0 is blurred by float32 and 0.1's norm + 1e-6 normalisation)
    nodes, weights = np.sort(r.density_nodes[0]), np.array(r.density_weights[0])
    assert r.n_hvp_density == h.shape[0]
    extreme = np.r_[0:3, -3:0]
    assert np.abs(nodes[extreme] - eig[extreme]).max() <= 1e-4 * np.abs(eig).max()
    assert abs(weights.sum() - 1) <= 1e-4


def test_torch_eig_is_removed_again_after_the_density_call():
    model, batch = net_and_batch()
    pyhessian_reference(model, F.cross_entropy, batch, compute=("density",), density_iter=4)
    with pytest.raises(RuntimeError, match="removed"):
        torch.eig(torch.eye(2))


class Concave(nn.Module):
    """L(w) = -|w|^2 / 2 in 8 dimensions: tr H = -8 < 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(8))

    def forward(self, x):
        return self.w


def neg_half_square(out, _):
    return -0.5 * (out * out).sum()


def test_released_trace_rule_stops_after_two_probes_on_a_negative_trace():
    """0.1's signed denominator: a negative running mean ends the loop at the 2nd probe."""
    model, batch = Concave(), (torch.zeros(1), torch.zeros(1))
    released = pyhessian_reference(
        model, neg_half_square, batch, compute=("trace",), trace_rule="released"
    )
    assert len(released.trace_samples) == 2
    assert released.trace == pytest.approx(-8.0)  # H = -I: every probe gives the exact trace


def test_fixed_trace_rule_keeps_drawing_probes_on_a_noisy_negative_trace():
    """Corrected rule on an indefinite H with negative trace: more than two probes."""
    torch.manual_seed(0)
    a = torch.randn(10, 10)
    a = -(a @ a.T) / 10 + 0.5 * torch.eye(10)

    class Quad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(10))

        def forward(self, x):
            return self.w

    def loss(out, _):
        return 0.5 * out @ a @ out

    batch = (torch.zeros(1), torch.zeros(1))
    released = pyhessian_reference(Quad(), loss, batch, compute=("trace",), trace_rule="released")
    fixed = pyhessian_reference(Quad(), loss, batch, compute=("trace",), trace_tol=1e-4)
    assert float(torch.trace(a)) < 0
    assert len(released.trace_samples) == 2 < len(fixed.trace_samples)


def test_model_mode_grads_requires_grad_and_caller_rng_are_restored():
    torch.manual_seed(0)
    model = nn.ModuleDict({"used": nn.Linear(4, 3), "unused": nn.Linear(4, 3)})

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner["used"](x)

    wrapper = Wrapper().train()
    grad = torch.ones_like(model["used"].weight)
    model["used"].weight.grad = grad
    _, batch = net_and_batch()
    state = torch.get_rng_state()
    r = pyhessian_reference(wrapper, F.cross_entropy, batch, compute=("eigenvalues", "trace"))
    assert r.eigenvalues is not None and r.trace is not None
    assert wrapper.training and all(m.training for m in wrapper.modules())
    assert model["used"].weight.grad is grad
    assert all(p.requires_grad for p in wrapper.parameters())
    assert all(p.grad is None for n, p in wrapper.named_parameters() if "unused" in n)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute": ("spectrum",)}, r"pyhessian_reference: compute entry must be one of"),
        ({"trace_rule": "head"}, r"pyhessian_reference: trace_rule must be one of"),
        ({"top_n": 0}, r"pyhessian_reference: top_n must be >= 1, got 0"),
        ({"tol": -1.0}, r"pyhessian_reference: tol must be finite and > 0"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    model, batch = net_and_batch()
    with pytest.raises(ValueError, match=message):
        pyhessian_reference(model, F.cross_entropy, batch, **kwargs)
