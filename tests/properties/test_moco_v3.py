"""Properties of MoCo v3's loss (Chen, Xie, He, ICCV 2021, arXiv:2104.02057, Algorithm 1).

Each test is named after the statement it checks; the docstring cites it.  The checks take
the implementation as an argument; the mutation test runs them on ``tests/mutants.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given

from amcl_lab import registry
from amcl_lab.losses import info_nce, moco_v3
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import SSL_MUTANTS

pytestmark = pytest.mark.props

F64 = registry.get("moco_v3").tolerance(torch.float64)


def _np(args):
    return [a.detach().double().numpy() for a in args]


def _atol(tau: float) -> float:
    return F64.atol_for(tau) * max(1.0, tau)  # the loss is 2 tau times logits of size 1/tau


def check_value(loss, sample) -> None:
    """ctr(q1, k2) + ctr(q2, k1) of Algorithm 1, transcribed in NumPy."""
    tau = sample.kwargs["temperature"]
    checks.assert_close(
        float(sample.call(loss)),
        ref.moco_v3(*_np(sample.args), tau),
        rtol=1e-10,
        atol=_atol(tau),
        what="moco_v3 vs NumPy",
    )


def check_is_scaled_symmetric_info_nce(loss, sample) -> None:
    """L = 2 tau [InfoNCE(q1, k2) + InfoNCE(q2, k1)] with in-batch keys (amcl_lab's info_nce,
    queue=None): only the keys of the batch are candidates, not the other queries."""
    q1, q2, k1, k2 = sample.args
    tau = sample.kwargs["temperature"]
    expected = 2 * tau * (float(info_nce(q1, k2, None, tau)) + float(info_nce(q2, k1, None, tau)))
    checks.assert_close(
        float(sample.call(loss)), expected, rtol=1e-10, atol=_atol(tau), what="2 tau InfoNCE"
    )


def _hinge(q: np.ndarray, k: np.ndarray) -> float:
    """Mean over queries of max(0, max_{j != i} s_ij - s_ii) for cosine similarities."""
    s = checks.unit(q) @ checks.unit(k).T
    n = s.shape[0]
    return float(
        np.mean([max(0.0, max(s[i, j] for j in range(n) if j != i) - s[i, i]) for i in range(n)])
    )


def check_small_temperature_limit(loss, sample) -> None:
    """The 2 tau factor keeps the loss bounded as tau -> 0: each direction lies in
    [2 h, 2 h + 2 tau log N] with h the mean margin hinge (the logits' max dominates)."""
    q1, q2, k1, k2 = _np(sample.args)
    hinge = 2 * (_hinge(q1, k2) + _hinge(q2, k1))
    n = q1.shape[0]
    for tau in (1e-2, 1e-3):
        value = float(loss(*sample.args, temperature=tau))
        assert hinge - 1e-9 <= value <= hinge + 4 * tau * math.log(n) + 1e-9, (tau, value, hinge)


def check_keys_get_no_gradient(loss, sample) -> None:
    """The keys come from the momentum encoder, which no gradient trains (stop-gradient)."""
    leaves = sample.to(requires_grad=True)
    value = leaves.call(loss)
    grads = torch.autograd.grad(value, list(leaves.args), allow_unused=True)
    for name, g in zip(("k1", "k2"), grads[2:], strict=True):
        assert g is None or not bool(g.any()), f"gradient reaches {name}"
    assert grads[0] is not None and grads[1] is not None, "no gradient reaches the queries"


BATTERY = {
    "value": check_value,
    "scaled_info_nce": check_is_scaled_symmetric_info_nce,
    "small_temperature": check_small_temperature_limit,
    "stop_gradient": check_keys_get_no_gradient,
}


@given(ams.moco_v3_samples())
def test_moco_v3_equals_the_symmetric_in_batch_info_nce_times_two_tau(sample):
    """Algorithm 1: loss = ctr(q1, k2) + ctr(q2, k1), ctr = CrossEntropy(q k^T / tau, arange)
    x 2 tau, i.e. 2 tau times amcl_lab's info_nce with in-batch keys, in both directions."""
    check_is_scaled_symmetric_info_nce(moco_v3, sample)


@given(ams.moco_v3_samples())
def test_two_tau_scaling_makes_the_loss_tend_to_the_margin_hinge_as_tau_goes_to_zero(sample):
    """With the 2 tau factor, tau -> 0 gives 2 x max(0, max_j s_ij - s_ii) per query and
    direction (the log-sum-exp's max term) instead of a 1/tau divergence."""
    check_small_temperature_limit(moco_v3, sample)


@given(ams.moco_v3_samples())
def test_moco_v3_keys_receive_no_gradient(sample):
    """The momentum encoder's keys are constants for the loss (stop-gradient)."""
    check_keys_get_no_gradient(moco_v3, sample)


def test_collinear_queries_and_keys_give_four_tau_log_n():
    """Every cosine 1: each direction is 2 tau log N, the sum 4 tau log N."""
    z = torch.ones(5, 3, dtype=torch.float64)
    assert math.isclose(float(moco_v3(z, z, z, z, 0.3)), 4 * 0.3 * math.log(5), rel_tol=1e-12)


# --- mutation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_moco_v3_property(prop):
    assert not checks.violates(BATTERY[prop], moco_v3, ams.moco_v3_samples(), max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target == "moco_v3"], ids=lambda m: m.name
)
def test_every_moco_v3_mutant_violates_a_property(mutant):
    caught = [
        name
        for name, check in BATTERY.items()
        if checks.violates(check, mutant.fn, ams.moco_v3_samples(), max_examples=40)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"
