"""Properties of SwAV's Sinkhorn-Knopp codes and swapped prediction loss (Caron et al.,
NeurIPS 2020, arXiv:2006.09882).

The codes are checked against an independent solution of the transport problem of Eq. (3)
(its smooth dual maximised with SciPy, never iterating Sinkhorn) and against a NumPy
transcription of the official code's iteration.  Each test is named after the statement it
checks; the checks take the implementation as an argument for the mutation tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import optimize

from amcl_lab import registry
from amcl_lab.losses import sinkhorn_knopp, swav
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import HELPER_MISTAKES, SSL_MUTANTS

pytestmark = pytest.mark.props

TOL = 1e-10
#: Entropy weights at which a few thousand Sinkhorn iterations converge to 1e-10 for scores
#: in [-1, 1] (SwAV's 0.05 needs far more: the rate degrades like exp(-range / epsilon)).
CONVERGENT_EPSILON = (0.25, 0.5, 1.0)
CONVERGED = 3000


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


@st.composite
def sinkhorn_samples(draw, epsilons=(0.05, 0.1, 0.5, 1.0), iterations=(1, 3, 10)):
    n, k = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    scores = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-1.0, 1.0)))
    kwargs = {
        "epsilon": draw(st.sampled_from(epsilons)),
        "iterations": draw(st.sampled_from(iterations)),
    }
    return SampleInput((torch.as_tensor(scores),), kwargs, name="sinkhorn")


def exact_transport(scores: np.ndarray, epsilon: float) -> np.ndarray:
    """argmax_Q <Q, S> + eps H(Q) with rows summing to 1/N and columns to 1/K, from the
    concave dual max_{a, b} sum a/N + sum b/K - eps sum exp((S + a_i + b_k)/eps - 1) (L-BFGS),
    times N: an independent solution of Eq. (3)."""
    n, k = scores.shape

    def negative_dual(x):
        a, b = x[:n], x[n:]
        q = np.exp((scores + a[:, None] + b[None, :]) / epsilon - 1.0)
        value = a.sum() / n + b.sum() / k - epsilon * q.sum()
        grad = np.concatenate([1.0 / n - q.sum(1), 1.0 / k - q.sum(0)])
        return -value, -grad

    start = np.zeros(n + k)
    result = optimize.minimize(
        negative_dual, start, jac=True, method="L-BFGS-B", options={"gtol": 1e-14, "ftol": 0}
    )
    a, b = result.x[:n], result.x[n:]
    return n * np.exp((scores + a[:, None] + b[None, :]) / epsilon - 1.0)


# --- Sinkhorn-Knopp ------------------------------------------------------------------------------


def check_rows_are_distributions(fn, sample) -> None:
    """After the final sample rescaling every code is a distribution over the prototypes."""
    codes = checks.as_numpy(sample.call(fn))
    assert np.all(codes >= 0.0)
    checks.assert_close(codes.sum(1), np.ones(codes.shape[0]), rtol=0, atol=1e-12, what="rows")


def check_matches_the_official_iteration(fn, sample) -> None:
    """The log-domain iteration equals the multiplicative one of the official code (NumPy)."""
    (scores,) = sample.args
    expected = ref.sinkhorn(_np(scores), sample.kwargs["epsilon"], sample.kwargs["iterations"])
    checks.assert_close(
        checks.as_numpy(sample.call(fn)), expected, rtol=1e-9, atol=1e-12, what="codes"
    )


def check_converges_to_the_prescribed_marginals(fn, sample) -> None:
    """At convergence each prototype holds N/K of the batch (equipartition, Eq. 3)."""
    (scores,) = sample.args
    eps = max(sample.kwargs["epsilon"], CONVERGENT_EPSILON[0])
    codes = checks.as_numpy(fn(scores, epsilon=eps, iterations=CONVERGED))
    n, k = codes.shape
    checks.assert_close(codes.sum(0), np.full(k, n / k), rtol=0, atol=1e-9, what="prototypes")
    checks.assert_close(codes.sum(1), np.ones(n), rtol=0, atol=1e-9, what="samples")


SINKHORN_BATTERY = {
    "rows": check_rows_are_distributions,
    "official_iteration": check_matches_the_official_iteration,
    "marginals": check_converges_to_the_prescribed_marginals,
}


@given(sinkhorn_samples())
def test_every_code_is_a_distribution_over_the_prototypes(sample):
    """The last step of every Sinkhorn iteration rescales each sample to mass 1/N; times N
    each code sums to 1 after any number of iterations."""
    check_rows_are_distributions(sinkhorn_knopp, sample)


@given(sinkhorn_samples(epsilons=CONVERGENT_EPSILON))
def test_sinkhorn_codes_converge_to_the_prescribed_marginals(sample):
    """Section 3.1: the iterations converge to Q in the transport polytope, every prototype
    selected N/K times on average over the batch and every sample once."""
    check_converges_to_the_prescribed_marginals(sinkhorn_knopp, sample)


@given(sinkhorn_samples())
def test_sinkhorn_matches_the_official_multiplicative_iteration(sample):
    """distributed_sinkhorn: Q = exp(S/eps) / sum, then per iteration prototypes to 1/K and
    samples to 1/B, times B at the end (transcribed in NumPy)."""
    check_matches_the_official_iteration(sinkhorn_knopp, sample)


@settings(max_examples=15)
@given(sinkhorn_samples(epsilons=CONVERGENT_EPSILON))
def test_converged_codes_solve_the_entropic_transport_problem_exactly(sample):
    """Eq. (3): max_Q Tr(Q^T S) + eps H(Q) over the transport polytope; its solution (from
    the dual, solved by L-BFGS without Sinkhorn) equals the converged codes, and those have
    the form diag(u) exp(S/eps) diag(v) of Eq. (5)."""
    (scores,) = sample.args
    eps = sample.kwargs["epsilon"]
    codes = checks.as_numpy(sinkhorn_knopp(scores, epsilon=eps, iterations=CONVERGED))
    exact = exact_transport(_np(scores), eps)
    checks.assert_close(codes, exact, rtol=1e-6, atol=1e-8, what="codes vs exact transport")
    residual = np.log(codes) - _np(scores) / eps
    rank_one = residual.mean(1, keepdims=True) + residual.mean(0, keepdims=True) - residual.mean()
    checks.assert_close(residual, rank_one, rtol=0, atol=1e-8, what="diag(u) K diag(v) form")


@given(sinkhorn_samples(), st.randoms(use_true_random=False))
def test_sinkhorn_is_equivariant_to_permuting_samples_and_prototypes(sample, random):
    """Eq. (3) has no preferred sample or prototype: permuting either permutes the codes."""
    (scores,) = sample.args
    rows = list(range(scores.shape[0]))
    cols = list(range(scores.shape[1]))
    random.shuffle(rows)
    random.shuffle(cols)
    moved = sinkhorn_knopp(scores[rows][:, cols], **sample.kwargs)
    checks.assert_close(
        checks.as_numpy(moved),
        checks.as_numpy(sample.call(sinkhorn_knopp))[rows][:, cols],
        rtol=1e-10,
        atol=1e-12,
        what="permuted codes",
    )


def test_sinkhorn_stays_finite_where_exponentiating_scores_overflows():
    """Documented choice: the log-domain iteration handles S/eps far beyond exp's range."""
    scores = torch.tensor([[40.0, -40.0], [-40.0, 40.0], [0.0, 0.0]])
    codes = sinkhorn_knopp(scores, epsilon=0.01)  # S / eps = 4000: exp overflows float32
    assert torch.isfinite(codes).all()
    assert torch.allclose(codes.sum(1), torch.ones(3))


# --- the swapped prediction loss -----------------------------------------------------------------


def check_value(loss, sample) -> None:
    """Eqs. (1)-(2) with the official code's means over crops (NumPy transcription)."""
    (scores,) = sample.args
    kw = sample.kwargs
    expected = ref.swav(
        _np(scores), kw["assigned"], kw["temperature"], kw["epsilon"], kw["iterations"]
    )
    checks.assert_close(float(sample.call(loss)), expected, rtol=TOL, atol=TOL, what="swav")


def _codes(sample) -> list[np.ndarray]:
    (scores,) = sample.args
    kw = sample.kwargs
    return [
        ref.sinkhorn(_np(scores[:, a]), kw["epsilon"], kw["iterations"])
        for a in range(kw["assigned"])
    ]


def check_at_least_the_code_entropy(loss, sample) -> None:
    """Each term is a cross-entropy -sum_k q log p >= H(q) (Gibbs), so L >= the mean entropy of
    the codes of the assigned crops."""
    entropy = np.mean(
        [(-(q * np.log(np.maximum(q, 1e-300))).sum(1)).mean() for q in _codes(sample)]
    )
    assert float(sample.call(loss)) >= entropy - 1e-9, (float(sample.call(loss)), entropy)


def check_gradient_treats_the_codes_as_constants(loss, sample) -> None:
    """The codes are computed without gradient (Section 3.1), so with p = softmax(S/tau)
    dL/dS_{i,v} = sum_{a != v} (p_{i,v} - q_{i,a}) / (A (V - 1) N tau): the prediction error."""
    (scores,) = sample.args
    kw = sample.kwargs
    leaf = scores.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(leaf, **kw), leaf)
    s = _np(scores) / kw["temperature"]
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    n, crops, _ = s.shape
    assigned = kw["assigned"]
    expected = np.zeros_like(s)
    for a, q in enumerate(_codes(sample)):
        for v in range(crops):
            if v != a:
                expected[:, v] += p[:, v] - q
    expected /= assigned * (crops - 1) * n * kw["temperature"]
    checks.assert_close(checks.as_numpy(grad), expected, rtol=1e-8, atol=1e-10, what="dL/dS")


def check_prototype_permutation(loss, sample) -> None:
    """Prototypes are unordered: permuting them (the K axis of every score) changes nothing."""
    (scores,) = sample.args
    perm = torch.arange(scores.shape[2]).flip(0)
    checks.assert_close(
        float(loss(scores[..., perm], **sample.kwargs)),
        float(sample.call(loss)),
        rtol=1e-10,
        atol=1e-12,
        what="prototype permutation",
    )


BATTERY = {
    "value": check_value,
    "code_entropy": check_at_least_the_code_entropy,
    "constant_codes": check_gradient_treats_the_codes_as_constants,
    "prototype_permutation": check_prototype_permutation,
}


@given(ams.swav_samples())
def test_swav_is_at_least_the_entropy_of_the_codes(sample):
    """Eq. (2): l(z, q) = -sum_k q_k log p_k is a cross-entropy, bounded below by H(q)."""
    check_at_least_the_code_entropy(swav, sample)


@given(ams.swav_samples())
def test_codes_are_targets_without_gradient(sample):
    """Section 3.1: Q is computed without backpropagating through Sinkhorn, so the gradient is
    the prediction error p - q of every swapped pair."""
    check_gradient_treats_the_codes_as_constants(swav, sample)


@given(ams.swav_samples())
def test_two_crops_swap_their_codes(sample):
    """Eq. (1) for two crops: the code of crop 1 is predicted from crop 2 and vice versa,
    L = (l(z_2, q_1) + l(z_1, q_2)) / 2."""
    (scores,) = sample.args
    kw = {**sample.kwargs, "assigned": 2}
    two = scores[:, :2]
    q1, q2 = (ref.sinkhorn(_np(two[:, a]), kw["epsilon"], kw["iterations"]) for a in (0, 1))
    s = _np(two) / kw["temperature"]
    log_p = s - s.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    expected = 0.5 * (-(q1 * log_p[:, 1]).sum(1).mean() - (q2 * log_p[:, 0]).sum(1).mean())
    checks.assert_close(float(swav(two, **kw)), expected, rtol=TOL, atol=TOL, what="swapped")


@given(ams.swav_samples())
def test_swav_does_not_depend_on_the_order_of_prototypes(sample):
    check_prototype_permutation(swav, sample)


def test_marginals_are_claimed_by_swav():
    assert set(registry.names("marginals")) == {"swav"}


# --- mutation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_swav_property(prop):
    assert not checks.violates(BATTERY[prop], swav, ams.swav_samples(), max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target == "swav"], ids=lambda m: m.name
)
def test_every_swav_mutant_violates_a_property(mutant):
    caught = [
        name
        for name, check in BATTERY.items()
        if checks.violates(check, mutant.fn, ams.swav_samples(), max_examples=40)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"


@pytest.mark.parametrize("prop", sorted(SINKHORN_BATTERY))
def test_reference_sinkhorn_passes_its_properties(prop):
    check = SINKHORN_BATTERY[prop]
    assert not checks.violates(check, sinkhorn_knopp, sinkhorn_samples(), max_examples=30)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in HELPER_MISTAKES if m.target == "sinkhorn_knopp"], ids=lambda m: m.name
)
def test_every_sinkhorn_mutant_violates_a_property(mutant):
    assert any(
        checks.violates(check, mutant.fn, sinkhorn_samples(), max_examples=30)
        for check in SINKHORN_BATTERY.values()
    ), mutant.name
