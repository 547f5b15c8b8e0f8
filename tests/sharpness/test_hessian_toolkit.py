"""Hessian toolkit behaviour: no side effects, BatchNorm modes, unused parameters, bad input."""

from __future__ import annotations

import copy

import numpy as np
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

F64 = torch.float64


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Dropout(0.25), nn.Linear(5, 2)
    ).double()


def data(seed: int = 0, n: int = 12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 2, (n,), generator=g)


def dense_hessian(model: nn.Module, batch, training: bool) -> torch.Tensor:
    """Independent dense Hessian: autograd.functional on the flat parameters, BN buffers cloned."""
    x, y = batch
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    work = copy.deepcopy(model).train(training)

    def loss(vec):
        params = {n: t.view(s) for n, t, s in zip(names, vec.split(sizes), shapes, strict=True)}
        buffers = {n: b.clone() for n, b in work.named_buffers()}
        with torch.random.fork_rng():
            torch.manual_seed(0)  # the same dropout mask in every evaluation
            out = torch.func.functional_call(work, (params, buffers), (x,))
        return F.cross_entropy(out, y)

    return torch.autograd.functional.hessian(loss, flat)


@pytest.mark.parametrize("method", ["double-backward", "forward-over-reverse"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_operator_matches_dense_hessian_of_the_stated_mode(method, mode):
    """eval: running statistics, no dropout; train: batch statistics, one fixed mask."""
    model, batch = bn_net(), data()
    with torch.no_grad():
        model.train()(batch[0])  # non-trivial running statistics
    op = HessianOperator(model, F.cross_entropy, batch, method=method, mode=mode)
    expected = dense_hessian(model, batch, training=mode == "train")
    got = op.matmat(torch.eye(op.dim, dtype=F64))
    assert (got - expected).abs().max() <= 1e-10 * max(1.0, float(expected.abs().max()))
    assert op.n_hvp == op.dim and op.mode == mode and op.method == method


def test_eval_and_train_mode_hessians_differ_for_batchnorm():
    model, batch = bn_net(), data()
    with torch.no_grad():
        model.train()(batch[0])
    e = torch.ones(HessianOperator(model, F.cross_entropy, batch).dim, dtype=F64)
    a = hvp(model, F.cross_entropy, batch, e, mode="eval")
    b = hvp(model, F.cross_entropy, batch, e, mode="train")
    assert (a - b).abs().max() > 1e-3


def snapshot(model: nn.Module):
    return (
        {k: t.detach().clone() for k, t in model.state_dict().items()},
        [m.training for m in model.modules()],
        [None if p.grad is None else p.grad.clone() for p in model.parameters()],
    )


def assert_untouched(model: nn.Module, snap) -> None:
    state, flags, grads = snap
    for k, t in model.state_dict().items():
        assert torch.equal(t, state[k]), k
    assert [m.training for m in model.modules()] == flags
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, b: top_eigenvalues(m, F.cross_entropy, b, k=2, mode="train"),
        lambda m, b: hessian_trace(m, F.cross_entropy, b, max_hvp=60, mode="train"),
        lambda m, b: spectral_density(m, F.cross_entropy, b, n_steps=5, mode="train"),
        lambda m, b: ascent_sharpness(m, F.cross_entropy, b, 0.1, mode="train"),
        lambda m, b: hvp(
            m, F.cross_entropy, b, torch.ones(42, dtype=F64), method="forward-over-reverse"
        ),
    ],
    ids=["top_eigenvalues", "hessian_trace", "spectral_density", "ascent_sharpness", "hvp"],
)
def test_model_parameters_buffers_modes_and_grads_are_untouched(call):
    model, batch = bn_net(), data()
    model[3].eval()  # mixed per-module modes must be restored as they were
    model[0].weight.grad = torch.ones_like(model[0].weight)
    snap = snapshot(model)
    call(model, batch)
    assert_untouched(model, snap)


def test_parameter_without_gradient_gets_zero_hessian_rows():
    """A trainable parameter the loss does not use: zero rows/columns, no error."""
    torch.manual_seed(0)
    model = nn.ModuleDict({"used": nn.Linear(3, 2), "unused": nn.Linear(3, 2)}).double()

    def loss(out, y):
        return F.cross_entropy(out, y)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner["used"](x)

    wrapper, batch = Wrapper(), data()
    for method in ("double-backward", "forward-over-reverse"):
        op = HessianOperator(wrapper, loss, batch, method=method)
        h = op.matmat(torch.eye(op.dim, dtype=F64))
        assert h[8:].abs().max() == 0 and h[:, 8:].abs().max() == 0  # "unused" block
        assert h[:8].abs().max() > 0


def test_block_lanczos_recovers_a_repeated_top_eigenvalue():
    """Linear regression with K = 3 outputs: top eigenvalue has multiplicity 3 (the Hessian of
    the mean-reduced MSE is K copies of 2/(NK) X~^T X~, X~ = [X, 1])."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=g, dtype=F64), torch.randn(20, 3, generator=g, dtype=F64)
    model = nn.Linear(4, 3).double()
    xt = np.hstack([x.numpy(), np.ones((20, 1))])
    top = np.linalg.eigvalsh(2.0 / 60 * xt.T @ xt)[-1]

    def mse(out, target):
        return ((out - target) ** 2).mean()

    r = top_eigenvalues(model, mse, (x, y), k=3, tol=1e-10, block_size=3)
    np.testing.assert_allclose(r.eigenvalues.numpy(), [top] * 3, rtol=1e-9)


class Vector(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(n, dtype=F64))

    def forward(self, x):
        return self.w


@pytest.mark.parametrize(("k", "expected"), [(2, [5, 5]), (4, [5, 5, 5, 1])])
def test_single_vector_lanczos_restarts_after_breakdown(k, expected):
    """H = diag(5, 5, 5, 1, 1, .5): one Krylov vector spans 3 directions (one per distinct
    eigenvalue) and breaks down with zero residuals; convergence is judged only after the
    random restart, which finds the other copies instead of returning [5, 1, ...]."""
    d = torch.tensor([5.0, 5.0, 5.0, 1.0, 1.0, 0.5], dtype=F64)

    def loss(w, _):
        return 0.5 * (d * w * w).sum()

    r = top_eigenvalues(Vector(6), loss, (None, None), k=k, tol=1e-12, max_iter=6)
    assert r.converged
    np.testing.assert_allclose(r.eigenvalues.numpy(), expected, rtol=1e-12)


def test_breakdown_in_a_null_space_does_not_loop_until_max_iter():
    """Rank-1 H: after the breakdown, one restart (in the null space) settles convergence."""
    u = torch.ones(30, dtype=F64) / 30**0.5

    def loss(w, _):
        return 1.5 * (u @ w) ** 2  # H = 3 u u^T

    r = top_eigenvalues(Vector(30), loss, (None, None), k=1, tol=1e-10, max_iter=30)
    assert r.converged and r.n_hvp <= 3
    assert float(r.eigenvalues[0]) == pytest.approx(3.0, rel=1e-12)


def test_not_converged_is_reported_when_max_iter_is_too_small():
    model, batch = bn_net(), data()
    r = top_eigenvalues(model, F.cross_entropy, batch, k=1, tol=1e-12, max_iter=3)
    assert not r.converged and r.n_hvp == 3 and r.n_iter == 3


def two_scale_diagonal():
    """H = diag(5, 1, 1.001, 0.999): two Ritz values resolve 5 and the cluster near 1 with
    residuals far below their distance (the r^2 / gap branch)."""
    d = torch.tensor([5.0, 1.0, 1.001, 0.999], dtype=F64)
    return Vector(4), lambda w, _: 0.5 * (d * w * w).sum(), (None, None)


@pytest.mark.parametrize(
    "case",
    [two_scale_diagonal, lambda: (bn_net(), F.cross_entropy, data())],
    ids=["r2-over-gap", "residual"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_gaps_are_measured_to_the_other_ritz_values_residual_interval(case, seed):
    """Two Ritz values: gap_i = (|theta_1 - theta_2| - r_other)_+ and the estimate is
    r_i^2 / gap_i where gap_i > r_i, else r_i."""
    model, loss, batch = case()
    r = top_eigenvalues(model, loss, batch, k=2, stopping="gap", max_iter=2, seed=seed)
    theta, res = r.eigenvalues, r.residuals
    gaps = ((theta[0] - theta[1]).abs() - res.flip(0)).clamp_min(0.0)
    torch.testing.assert_close(r.gaps, gaps, rtol=1e-12, atol=0.0)
    expected = torch.where(gaps > res, res**2 / gaps, res)
    torch.testing.assert_close(r.error_estimates, expected, rtol=1e-12, atol=0.0)


def test_gap_rule_with_a_single_ritz_value_falls_back_to_the_residual():
    """One Lanczos vector: no other Ritz value, so nothing is known about the gap (0) and
    the estimate is the residual, not r^2 / infinity = 0."""
    model, batch = bn_net(), data()
    r = top_eigenvalues(model, F.cross_entropy, batch, tol=1e-3, stopping="gap", max_iter=1)
    assert not r.converged and float(r.gaps[0]) == 0.0
    assert torch.equal(r.error_estimates, r.residuals) and float(r.residuals[0]) > 0


def test_trace_reports_not_converged_when_the_budget_runs_out():
    model, batch = bn_net(), data()
    r = hessian_trace(model, F.cross_entropy, batch, "hutchinson", rtol=1e-6, max_hvp=12)
    assert not r.converged and r.n_hvp == 12 and r.n_probes == 12


def test_forward_over_reverse_batches_probes_with_vmap():
    model, batch = bn_net(), data()
    a = hessian_trace(model, F.cross_entropy, batch, "hutchinson", max_hvp=40, block_size=8)
    b = hessian_trace(
        model, F.cross_entropy, batch, "hutchinson", max_hvp=40, block_size=8,
        hvp_method="forward-over-reverse",
    )  # fmt: skip
    assert a.n_hvp == b.n_hvp and torch.allclose(a.samples, b.samples, rtol=1e-10, atol=1e-12)


def test_m_sharpness_averages_chunks_weighted_by_size():
    """m = 5 on 12 samples: chunks 5, 5, 2, each perturbed by its own gradient (SAM 3)."""
    model, batch = bn_net(), data()
    whole = ascent_sharpness(model, F.cross_entropy, batch, 0.1, m=5)
    x, y = batch
    weighted = [
        (j - i) * ascent_sharpness(model, F.cross_entropy, (x[i:j], y[i:j]), 0.1).sharpness
        for i, j in ((0, 5), (5, 10), (10, 12))
    ]
    assert whole.sharpness == pytest.approx(sum(weighted) / 12, rel=1e-12)


# --- bad input ----------------------------------------------------------------------------------


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2).requires_grad_(False)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: HessianOperator(Frozen(), F.cross_entropy, data()),
            r"HessianOperator: the model has no trainable parameters",
        ),
        (
            lambda: top_eigenvalues(bn_net(), F.cross_entropy, data(), k=43, max_iter=100),
            r"top_eigenvalues: k must be in \[1, 42\], got 43",
        ),
        (
            lambda: top_eigenvalues(bn_net(), F.cross_entropy, data(), k=5, max_iter=4),
            r"top_eigenvalues: k \(5\) must not exceed max_iter \(4\)",
        ),
        (
            lambda: HessianOperator(
                bn_net(), lambda o, y: F.cross_entropy(o, y, reduction="none"), data()
            ),
            r"must return a scalar \(0-d\) floating tensor, got \(12,\)",
        ),
        (
            lambda: hessian_trace(bn_net(), F.cross_entropy, data()[0]),
            r"hessian_trace: batch must be a pair \(inputs, targets\)",
        ),
        (
            lambda: top_eigenvalues(bn_net(), F.cross_entropy, data(), tol=0.0),
            r"top_eigenvalues: tol must be finite and > 0",
        ),
        (
            lambda: top_eigenvalues(bn_net(), F.cross_entropy, data(), which="BE"),
            r"top_eigenvalues: which must be one of \('LA', 'LM', 'SA'\)",
        ),
        (
            lambda: top_eigenvalues(bn_net(), F.cross_entropy, data(), stopping="certified"),
            r"top_eigenvalues: stopping must be one of \('residual', 'gap'\)",
        ),
        (
            lambda: hessian_trace(bn_net(), F.cross_entropy, data(), method="exact"),
            r"hessian_trace: method must be one of \('hutchinson', 'hutch\+\+'\)",
        ),
        (
            lambda: hessian_trace(bn_net(), F.cross_entropy, data(), max_hvp=20),
            r"hessian_trace: max_hvp must be >= 50",
        ),
        (
            lambda: HessianOperator(bn_net(), F.cross_entropy, data(), method="fd"),
            r"HessianOperator: method must be one of",
        ),
        (
            lambda: HessianOperator(bn_net(), F.cross_entropy, data(), mode="test"),
            r"HessianOperator: mode must be one of \('eval', 'train'\)",
        ),
        (
            lambda: ascent_sharpness(bn_net(), F.cross_entropy, data(), rho=-0.05),
            r"ascent_sharpness: rho must be finite and >= 0, got -0.05",
        ),
        (
            lambda: ascent_sharpness(bn_net(), F.cross_entropy, data(), m=0),
            r"ascent_sharpness: m must be in \[1, 12\], got 0",
        ),
        (
            lambda: HessianOperator(bn_net(), F.cross_entropy, data()).matvec(torch.ones(41)),
            r"HessianOperator.matvec: v must have 42 entries",
        ),
        (
            lambda: spectral_density(bn_net(), F.cross_entropy, data(), n_steps=0),
            r"spectral_density: n_steps must be >= 1, got 0",
        ),
    ],
)
def test_bad_input_raises_a_value_error_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
