"""Properties of decoupled contrastive learning, DCL and DCLW (Yeh et al., ECCV 2022,
arXiv:2110.06848).

Each test is named after the statement it checks; the docstring cites it.  The checks take
the implementation as an argument; the mutation tests run them on ``tests/mutants.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import dcl, nt_xent, vmf_weights
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import SSL_MUTANTS

pytestmark = pytest.mark.props

F64 = registry.get("dcl").tolerance(torch.float64)

# moderate temperatures for the gradient recovery (it divides by 1 - s^2)
GRADIENT_DOMAIN = {"min_temperature": 1e-2, "max_temperature": 1e2}


def _weighted(sample: SampleInput) -> SampleInput:
    return checks.with_kwargs(sample, weight="vmf")


STRATEGIES = {
    "dcl": lambda **kw: ams.dcl_samples(**kw),
    "dclw": lambda **kw: ams.dcl_samples(weighted=True, **kw).map(_weighted),
}


def _np(args):
    return [a.detach().double().numpy() for a in args]


def _numpy_weights(sample: SampleInput) -> np.ndarray:
    """The per-sample DCLW weights from the positive cosines (NumPy), 1 for DCL."""
    z1, z2 = (checks.unit(a) for a in _np(sample.args))
    n = z1.shape[0]
    if sample.kwargs.get("weight") != "vmf":
        return np.ones(n)
    s = (z1 * z2).sum(1) / sample.kwargs["sigma"]
    e = np.exp(s - s.max())
    return 2.0 - n * e / e.sum()


# --- the checks ---------------------------------------------------------------------------------


def check_value(loss, sample) -> None:
    """Per anchor, Eq. (6) transcribed in NumPy (weight 1, or the von Mises-Fisher weight)."""
    kw = sample.kwargs
    expected = ref.dcl(*_np(sample.args), kw["temperature"], kw.get("weight"), kw.get("sigma", 0.5))
    checks.assert_close(
        checks.as_numpy(checks.per_anchor(loss, sample)),
        expected,
        rtol=1e-10,
        atol=F64.atol_for(kw["temperature"]),
        what="dcl vs NumPy",
    )


def check_is_decoupled_nt_xent(loss, sample) -> None:
    """Unweighted DCL is NT-Xent with the positive removed from the denominator (Eq. 6, w = 1):
    the NumPy transcription of nt_xent(decoupled=True), anchor by anchor."""
    tau = sample.kwargs["temperature"]
    expected = ref.nt_xent(*_np(sample.args), tau, decoupled=True)
    checks.assert_close(
        checks.as_numpy(checks.per_anchor(loss, sample)),
        expected,
        rtol=1e-10,
        atol=F64.atol_for(tau),
        what="dcl vs decoupled NT-Xent",
    )


def check_decoupled_gradient(loss, sample) -> None:
    """The decoupling statement: dl_i/ds_pos = -w_i / tau, free of NT-Xent's coupling factor
    1 - P_pos, and dl_i/ds_ij = softmax over the negatives only / tau (weights detached)."""
    tau = sample.kwargs["temperature"]
    weights = _numpy_weights(sample)
    anchors = checks.two_view_gradients(loss, sample)
    n = len(anchors) // 2
    scale = max(1.0, 1.0 / tau) * 1e-9 / 1e-3
    for i, a in enumerate(anchors):
        if a.ok_pos:
            checks.assert_close(
                a.g_pos, -weights[i % n] / tau, rtol=1e-7, atol=scale, what=f"anchor {i}: g_pos"
            )
        logits = a.s_neg / tau
        p = np.exp(logits - logits.max())
        p /= p.sum()
        checks.assert_close(
            a.g_neg[a.ok_neg], (p / tau)[a.ok_neg], rtol=1e-7, atol=scale, what=f"anchor {i}: g_neg"
        )


def check_uniform_weights_give_dcl(loss, sample) -> None:
    """DCLW reduces to DCL where its weights are uniform: identical positive similarities
    (z2 = z1, every positive cosine 1) make w = 2 - N/N = 1 exactly, and sigma -> inf makes
    the softmax uniform (|w - 1| <= e^{2/sigma} - 1)."""
    z1, z2 = sample.args
    tau = sample.kwargs["temperature"]
    same = SampleInput((z1, z1), sample.kwargs)
    checks.assert_close(
        checks.as_numpy(checks.per_anchor(loss, same)),
        ref.dcl(*_np((z1, z1)), tau),
        rtol=1e-10,
        atol=F64.atol_for(tau),
        what="DCLW at uniform positive similarities",
    )
    wide = checks.with_kwargs(sample, sigma=1e9)
    bound = 2.0 * (math.exp(2.0 / 1e9) - 1.0) / tau + F64.atol_for(tau)
    checks.assert_close(
        checks.as_numpy(checks.per_anchor(loss, wide)),
        ref.dcl(*_np((z1, z2)), tau),
        rtol=1e-10,
        atol=bound,
        what="DCLW as sigma -> inf",
    )


def check_view_swap(loss, sample) -> None:
    """Both views act as anchors and the weight is symmetric: L(z1, z2) = L(z2, z1)."""
    checks.check_view_swap_symmetry(loss, sample, F64)


BATTERIES = {
    "dcl": {
        "value": check_value,
        "decoupled_nt_xent": check_is_decoupled_nt_xent,
        "decoupled_gradient": check_decoupled_gradient,
        "view_swap": check_view_swap,
    },
    "dclw": {
        "value": check_value,
        "uniform_weights": check_uniform_weights_give_dcl,
        "decoupled_gradient": check_decoupled_gradient,
        "view_swap": check_view_swap,
    },
}


# --- the statements ---------------------------------------------------------------------------


@given(ams.dcl_samples())
def test_dcl_is_nt_xent_with_the_positive_removed_from_the_denominator(sample):
    """Yeh et al. Eq. (6) with w = 1 (DCL) equals amcl_lab's nt_xent(decoupled=True), anchor by
    anchor, and the NumPy transcription of that decoupled NT-Xent."""
    check_is_decoupled_nt_xent(dcl, sample)
    tau = sample.kwargs["temperature"]
    checks.assert_close(
        checks.as_numpy(dcl(*sample.args, tau, reduction="none")),
        checks.as_numpy(nt_xent(*sample.args, tau, decoupled=True, reduction="none")),
        rtol=1e-12,
        atol=F64.atol_for(tau),
        what="dcl vs nt_xent(decoupled=True)",
    )


@given(st.sampled_from(("dcl", "dclw")), st.data())
def test_positive_gradient_is_free_of_the_negative_positive_coupling(name, data):
    """DCL's statement (Section 3): removing the positive from the denominator removes the
    coupling multiplier q_B = 1 - P_pos from the positive gradient, which becomes -w_i / tau
    (w_i = 1 for DCL); the negatives keep their softmax weights, now over negatives only."""
    sample = data.draw(STRATEGIES[name](**GRADIENT_DOMAIN))
    check_decoupled_gradient(dcl, sample)


@given(STRATEGIES["dclw"]())
def test_dclw_reduces_to_dcl_at_uniform_weights_and_as_sigma_goes_to_infinity(sample):
    """Eq. (6) with the negative von Mises-Fisher weight: uniform positive similarities give
    w = 1 exactly, and sigma -> inf gives w -> 1, so DCLW -> DCL."""
    check_uniform_weights_give_dcl(dcl, sample)


@given(st.integers(2, 16), st.floats(0.05, 10.0), st.data())
def test_vmf_weights_average_to_one_and_favour_hard_positives(n, sigma, data):
    """w_i = 2 - N softmax(s_i / sigma): sum_i w_i = N (mean 1), and the weight decreases with
    the positive similarity (an easy positive pair is down-weighted)."""
    s = torch.tensor(data.draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n)))
    w = vmf_weights(s.double(), sigma)
    assert math.isclose(float(w.mean()), 1.0, rel_tol=0.0, abs_tol=1e-12)
    order = torch.argsort(s)
    assert bool((w[order].diff() <= 1e-12).all()), (s, w)


@given(st.sampled_from(("dcl", "dclw")), st.data())
def test_dcl_is_symmetric_in_the_views(name, data):
    """L(z1, z2) = L(z2, z1) for both forms."""
    check_view_swap(dcl, data.draw(STRATEGIES[name]()))


def test_decoupling_is_claimed_by_dcl_and_dclw():
    assert set(registry.names("decoupling")) == {"dcl", "dclw"}


# --- mutation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BATTERIES))
def test_reference_passes_every_dcl_property(name):
    strategy = STRATEGIES[name](**GRADIENT_DOMAIN)  # dclw samples carry weight="vmf"
    for prop, check in BATTERIES[name].items():
        assert not checks.violates(check, dcl, strategy, max_examples=30), (name, prop)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target in ("dcl", "dclw")], ids=lambda m: m.name
)
def test_every_dcl_mutant_violates_a_property(mutant):
    strategy = STRATEGIES[mutant.target](**GRADIENT_DOMAIN)
    caught = [
        name
        for name, check in BATTERIES[mutant.target].items()
        if checks.violates(check, mutant.fn, strategy, max_examples=30)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"
