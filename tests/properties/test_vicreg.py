"""Properties of VICReg (Bardes, Ponce, LeCun, ICLR 2022, arXiv:2105.04906) and its multi-view
form (Ghosh, Agrawal et al., NeurIPS 2024, arXiv:2312.10725, the authors' fastssl code).

Each test is named after the statement it checks; the docstring cites it.  The checks take
the implementation as an argument, so the mutation test at the end runs the same battery on
the broken versions of ``tests/mutants.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import multiview_vicreg, vicreg, vicreg_terms
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import SSL_MUTANTS

pytestmark = pytest.mark.props

#: Standard deviations this close to gamma are treated as on the hinge's kink.
KINK = 1e-9


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _coefficients(sample) -> tuple[float, float, float]:
    kw = sample.kwargs
    return kw["lambda_invariance"], kw["mu_variance"], kw["nu_covariance"]


def _scale(sample) -> float:
    z1, z2 = sample.args
    return 1.0 + float(max(z1.abs().max(), z2.abs().max())) ** 4


def _regularised_std(z: torch.Tensor, eps: float) -> np.ndarray:
    return np.sqrt(_np(z).var(axis=0, ddof=1) + eps)


# --- the checks (implementation under test first) ------------------------------------------


def check_value(loss, sample) -> None:
    """The value equals the NumPy transcription of Eqs. (1)-(6) in the code's scaling."""
    z1, z2 = sample.args
    expected = ref.vicreg(_np(z1), _np(z2), *_coefficients(sample), sample.kwargs["gamma"])
    checks.assert_close(
        float(sample.call(loss)),
        expected,
        rtol=1e-9,
        atol=1e-12 * _scale(sample),
        what="vicreg vs NumPy",
    )


def check_variance_hinge(loss, sample) -> None:
    """v = 0 iff every dimension of both views has sqrt(Var + eps) >= gamma (Eq. 1)."""
    z1, z2 = sample.args
    gamma = sample.kwargs["gamma"]
    stds = np.concatenate([_regularised_std(z1, 1e-4), _regularised_std(z2, 1e-4)])
    if np.any(np.abs(stds - gamma) < KINK):
        return  # on the kink the sign of a rounding error decides
    variance = float(loss(z1, z2, 0.0, 1.0, 0.0, gamma=gamma))
    expected = np.mean(np.maximum(gamma - stds, 0.0))  # (v(Z1) + v(Z2)) / 2
    if np.all(stds >= gamma):
        assert variance == 0.0, f"variance term {variance} although every std >= gamma"
    else:
        assert variance > 0.0, f"variance term {variance} although a std < gamma: {stds}"
    checks.assert_close(variance, expected, rtol=1e-10, atol=1e-12, what="variance hinge")


def check_paper_identity(loss, sample) -> None:
    """Eq. (6) as printed (sum over dimensions, mu [v(Z) + v(Z')]) is the code's form with
    lambda * D and 2 mu."""
    z1, z2 = sample.args
    lam, mu, nu = _coefficients(sample)
    gamma = sample.kwargs["gamma"]
    d = z1.shape[1]
    paper = ref.vicreg_paper(_np(z1), _np(z2), lam, mu, nu, gamma)
    checks.assert_close(
        float(loss(z1, z2, lam * d, 2 * mu, nu, gamma=gamma)),
        paper,
        rtol=1e-9,
        atol=1e-12 * _scale(sample),
        what="paper's Eq. (6)",
    )


def check_view_symmetry(loss, sample) -> None:
    """Every term is symmetric in the two branches (Eq. 6)."""
    z1, z2 = sample.args
    a = float(loss(z1, z2, **sample.kwargs))
    b = float(loss(z2, z1, **sample.kwargs))
    checks.assert_close(a, b, rtol=1e-12, atol=1e-12 * _scale(sample), what="view swap")


def check_translation_invariance(loss, sample) -> None:
    """A common shift of every embedding changes no difference, variance or covariance."""
    z1, z2 = sample.args
    shift = torch.linspace(-2.0, 3.0, z1.shape[1], dtype=z1.dtype)
    checks.assert_close(
        float(loss(z1 + shift, z2 + shift, *_coefficients(sample), gamma=sample.kwargs["gamma"])),
        float(sample.call(loss)),
        rtol=1e-9,
        atol=1e-9 * _scale(sample),
        what="common translation",
    )


BATTERY = {
    "value": check_value,
    "variance_hinge": check_variance_hinge,
    "paper_identity": check_paper_identity,
    "view_symmetry": check_view_symmetry,
    "translation": check_translation_invariance,
}


# --- the statements ----------------------------------------------------------------------------


@given(ams.vicreg_samples())
def test_variance_term_is_zero_iff_every_dimension_has_std_at_least_gamma(sample):
    """Bardes et al. Eq. (1): v(Z) = mean_j max(0, gamma - S(z^j, eps)) is zero exactly when
    every dimension's regularised standard deviation S = sqrt(Var + eps) reaches gamma."""
    check_variance_hinge(vicreg, sample)


@given(st.integers(2, 12), st.integers(1, 6), st.floats(0.1, 3.0), st.data())
def test_variance_term_vanishes_once_the_batch_is_spread_beyond_gamma(n, d, gamma, data):
    """Eq. (1): scaling a batch until every std exceeds gamma switches the hinge off, and
    a collapsed batch (one point) pays gamma - sqrt(eps) per dimension, the maximum."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    z = torch.as_tensor(rng.standard_normal((n, d)))
    assume(bool((z.std(dim=0) > 1e-3).all()))
    spread = z * (2.0 * gamma / float(z.std(dim=0).min()))
    assert float(vicreg_terms(spread, spread, gamma=gamma).variance) == 0.0
    point = torch.zeros(n, d, dtype=torch.float64)
    collapsed = float(vicreg_terms(point, point, gamma=gamma).variance)
    assert math.isclose(collapsed, max(gamma - math.sqrt(1e-4), 0.0), rel_tol=1e-12)


@given(ams.vicreg_samples())
def test_the_papers_eq_6_is_the_codes_loss_with_lambda_times_d_and_twice_mu(sample):
    """Eq. (5)-(6) as printed (s = (1/n) sum_i |z_i - z'_i|^2, mu [v(Z) + v(Z')]) equals the
    authors' code's scaling (mean squared error, the hinges averaged) with lambda D and 2 mu."""
    check_paper_identity(vicreg, sample)


@given(st.integers(1, 7), st.data())
def test_covariance_term_is_zero_for_decorrelated_dimensions(dim, data):
    """Eq. (3)-(4): c(Z) sums the squared off-diagonal covariances, so mutually uncorrelated
    dimensions (centred orthogonal columns, here of a Hadamard matrix) cost nothing, and
    the term is positive once two dimensions are correlated."""
    hadamard = np.array([[1.0]])
    while hadamard.shape[0] < 8:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    scale = np.array(data.draw(st.lists(st.floats(0.1, 10.0), min_size=dim, max_size=dim)))
    z = torch.as_tensor(hadamard[:, 1 : dim + 1] * scale)
    assert abs(float(vicreg_terms(z, z).covariance)) < 1e-24 * float(scale.max()) ** 4 + 1e-28
    if dim >= 2:
        mixed = z.clone()
        mixed[:, 1] = mixed[:, 1] + 0.5 * mixed[:, 0]
        cov01 = 0.5 * float(z[:, 0].var())  # the only non-zero off-diagonal entry, twice
        expected = 2 * (2 * cov01**2) / dim  # two views, entries (0, 1) and (1, 0), over D
        checks.assert_close(
            float(vicreg_terms(mixed, mixed).covariance),
            expected,
            rtol=1e-9,
            atol=0.0,
            what="one correlated pair",
        )


@given(ams.vicreg_samples())
def test_invariance_term_is_zero_exactly_for_identical_views(sample):
    """Eq. (5): s(Z, Z') = 0 iff Z = Z'; it is the mean squared distance of the pairs."""
    z1, z2 = sample.args
    assert float(vicreg_terms(z1, z1).invariance) == 0.0
    expected = float(((_np(z1) - _np(z2)) ** 2).mean())
    checks.assert_close(
        float(vicreg_terms(z1, z2).invariance), expected, rtol=1e-12, atol=1e-300, what="MSE"
    )


@given(ams.vicreg_samples())
def test_vicreg_is_symmetric_and_translation_invariant(sample):
    """Eq. (6) is symmetric in the two branches; every term sees only differences of
    embeddings, so a common translation leaves it unchanged."""
    check_view_symmetry(vicreg, sample)
    check_translation_invariance(vicreg, sample)


@given(ams.multiview_vicreg_samples())
def test_multiview_vicreg_matches_the_leave_one_out_transcription(sample):
    """fastssl's multi-view VICReg: the mean over views a of VICReg(z_a, mean_{b != a} z_b)."""
    (views,) = sample.args
    kw = sample.kwargs
    expected = ref.multiview_vicreg(
        _np(views), kw["lambda_invariance"], kw["mu_variance"], kw["nu_covariance"]
    )
    checks.assert_close(
        float(sample.call(multiview_vicreg)),
        expected,
        rtol=1e-9,
        atol=1e-12 * (1.0 + float(views.abs().max()) ** 4),
        what="multiview_vicreg vs NumPy",
    )


@given(ams.vicreg_samples())
def test_multiview_vicreg_with_two_views_is_vicreg(sample):
    """For m = 2 the leave-one-out mean is the other view and both comparisons equal VICReg of
    the pair (the code's single ordering)."""
    z1, z2 = sample.args
    stacked = torch.stack([z1, z2], dim=1)
    checks.assert_close(
        float(multiview_vicreg(stacked, *_coefficients(sample), gamma=sample.kwargs["gamma"])),
        float(sample.call(vicreg)),
        rtol=1e-12,
        atol=1e-12 * _scale(sample),
        what="m = 2",
    )


def test_every_vicreg_property_id_has_its_test():
    """Registry coverage: the entries claiming the VICReg-specific ids are the ones tested here."""
    assert set(registry.names("hinge")) == {"vicreg"}
    assert {"vicreg", "moco_v3"} <= set(registry.names("identity"))


# --- mutation: the battery must be able to fail -------------------------------------------------


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_vicreg_property(prop):
    assert not checks.violates(BATTERY[prop], vicreg, ams.vicreg_samples(), max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target == "vicreg"], ids=lambda m: m.name
)
def test_every_vicreg_mutant_violates_a_property(mutant):
    caught = [
        name
        for name, check in BATTERY.items()
        if checks.violates(check, mutant.fn, ams.vicreg_samples(), max_examples=40)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"
