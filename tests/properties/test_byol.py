"""Properties of the symmetric negative-cosine loss of BYOL (Grill et al., NeurIPS 2020,
arXiv:2006.07733) and SimSiam (Chen & He, CVPR 2021, arXiv:2011.10566).

Each test is named after the statement it checks; the docstring cites it.  The checks take
the implementation as an argument; the mutation test runs them on ``tests/mutants.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import negative_cosine
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import SSL_MUTANTS

pytestmark = pytest.mark.props

RANGES = {"simsiam": (-1.0, 1.0), "byol": (0.0, 8.0)}
MINIMUM = {"simsiam": -1.0, "byol": 0.0}


def _np(args):
    return [a.detach().double().numpy() for a in args]


def check_value(loss, sample) -> None:
    """Per sample, SimSiam's Eq. (2) or BYOL's L + L~ (NumPy transcription)."""
    expected = ref.negative_cosine(*_np(sample.args), sample.kwargs["convention"])
    actual = checks.as_numpy(loss(*sample.args, **sample.kwargs, reduction="none"))
    checks.assert_close(actual, expected, rtol=1e-10, atol=1e-12, what="negative cosine")


def check_range(loss, sample) -> None:
    """SimSiam: each -cos/2 - cos/2 lies in [-1, 1]; BYOL: (2 - 2cos) + (2 - 2cos) in [0, 8]."""
    low, high = RANGES[sample.kwargs["convention"]]
    values = checks.as_numpy(loss(*sample.args, **sample.kwargs, reduction="none"))
    assert np.all(values >= low - 1e-12) and np.all(values <= high + 1e-12), (values, low, high)


def check_minimum_at_aligned_predictions(loss, sample) -> None:
    """The loss attains its minimum (-1, resp. 0) when each prediction is a positive multiple
    of the other view's target, and is above it for any other input (SimSiam Section 3)."""
    p1, _, z1, z2 = sample.args
    convention = sample.kwargs["convention"]
    factors = torch.linspace(0.5, 3.0, p1.shape[0], dtype=p1.dtype)[:, None]
    aligned = loss(factors * z2, 2.0 * z1, z1, z2, convention=convention)
    checks.assert_close(
        float(aligned), MINIMUM[convention], rtol=0.0, atol=1e-12, what="aligned minimum"
    )
    assert float(sample.call(loss)) >= MINIMUM[convention] - 1e-12


def check_stop_gradient(loss, sample) -> None:
    """sg(z): no gradient reaches the targets; the predictions get one (SimSiam Eq. 3, the
    BYOL target network trained only by the moving average)."""
    leaves = sample.to(requires_grad=True)
    value = leaves.call(loss)
    p1, p2, z1, z2 = leaves.args
    if not value.requires_grad:
        raise AssertionError("no gradient reaches the predictions")
    g = torch.autograd.grad(value, [p1, p2, z1, z2], allow_unused=True)
    for name, grad in zip(("z1", "z2"), g[2:], strict=True):
        assert grad is None or not bool(grad.any()), f"gradient reaches the target {name}"


def check_view_swap(loss, sample) -> None:
    """Both directions enter alike: swapping the views (p1 <-> p2, z1 <-> z2) changes nothing."""
    p1, p2, z1, z2 = sample.args
    checks.assert_close(
        float(loss(p2, p1, z2, z1, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=1e-12,
        atol=1e-12,
        what="view swap",
    )


def check_scale_invariance(loss, sample) -> None:
    """Cosines of normalised vectors: rescaling any row by c > 0 leaves the loss unchanged."""
    p1, p2, z1, z2 = sample.args
    c = torch.linspace(1e-2, 1e2, p1.shape[0], dtype=p1.dtype)[:, None]
    checks.assert_close(
        float(loss(c * p1, p2, z1, c.flip(0) * z2, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=1e-10,
        atol=1e-12,
        what="row rescaling",
    )


BATTERY = {
    "value": check_value,
    "range": check_range,
    "aligned_minimum": check_minimum_at_aligned_predictions,
    "stop_gradient": check_stop_gradient,
    "view_swap": check_view_swap,
    "scale": check_scale_invariance,
}


@given(ams.negative_cosine_samples())
def test_simsiam_loss_lies_in_minus_one_one_and_byol_loss_in_zero_eight(sample):
    """SimSiam Eq. (2): L = D(p1, z2)/2 + D(p2, z1)/2 with D = -cos, so L in [-1, 1] ("the
    minimum possible value is -1"); BYOL Eq. (2) per direction is 2 - 2cos in [0, 4], the
    symmetrised L + L~ in [0, 8]."""
    check_range(negative_cosine, sample)


@given(ams.negative_cosine_samples())
def test_minimum_is_attained_exactly_at_aligned_predictions(sample):
    """The minimum (-1 for SimSiam, 0 for BYOL) is reached when every prediction points along
    the other view's target, whatever the norms."""
    check_minimum_at_aligned_predictions(negative_cosine, sample)


@given(ams.negative_cosine_samples())
def test_byol_convention_is_four_plus_four_times_simsiam(sample):
    """|p/|p| - z/|z||^2 = 2 - 2cos (BYOL Eq. 2), so BYOL's L + L~ = 4 + 4 x SimSiam's L."""
    args = sample.args
    simsiam = checks.as_numpy(negative_cosine(*args, reduction="none"))
    byol = checks.as_numpy(negative_cosine(*args, convention="byol", reduction="none"))
    checks.assert_close(byol, 4.0 + 4.0 * simsiam, rtol=1e-12, atol=1e-12, what="byol = 4 + 4L")
    p1, p2, z1, z2 = (checks.unit(checks.as_numpy(t)) for t in args)
    squared = ((p1 - z2) ** 2).sum(1) + ((p2 - z1) ** 2).sum(1)
    nonzero = (np.abs(p1).sum(1) > 0) & (np.abs(z2).sum(1) > 0)
    nonzero &= (np.abs(p2).sum(1) > 0) & (np.abs(z1).sum(1) > 0)
    checks.assert_close(
        byol[nonzero], squared[nonzero], rtol=1e-10, atol=1e-12, what="squared distance"
    )


@given(ams.negative_cosine_samples())
def test_stop_gradient_keeps_the_targets_out_of_the_gradient(sample):
    """SimSiam Eq. (3) / BYOL: the target branch is treated as a constant (sg)."""
    check_stop_gradient(negative_cosine, sample)


@given(ams.negative_cosine_samples())
def test_without_stop_gradient_the_value_is_the_same(sample):
    """The stop-gradient changes the gradient only (the registry entry uses this form)."""
    a = float(negative_cosine(*sample.args, **sample.kwargs))
    b = float(negative_cosine(*sample.args, **sample.kwargs, stop_gradient=False))
    assert a == b


@given(ams.negative_cosine_samples())
def test_negative_cosine_is_symmetric_in_the_views_and_scale_free(sample):
    """Both directions enter alike, and only directions matter (cosine similarity)."""
    check_view_swap(negative_cosine, sample)
    check_scale_invariance(negative_cosine, sample)


def test_every_bounded_loss_is_tested_here():
    assert set(registry.names("bounded")) == {"negative_cosine"}


# --- mutation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_negative_cosine_property(prop):
    strategy = ams.negative_cosine_samples()
    assert not checks.violates(BATTERY[prop], negative_cosine, strategy, max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target == "negative_cosine"], ids=lambda m: m.name
)
def test_every_negative_cosine_mutant_violates_a_property(mutant):
    strategy = ams.negative_cosine_samples()
    caught = [
        name
        for name, check in BATTERY.items()
        if checks.violates(check, mutant.fn, strategy, max_examples=40)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"


@given(st.sampled_from(("simsiam", "byol")))
def test_a_zero_prediction_has_cosine_zero(convention):
    """Documented choice: a zero row is the zero vector, cosine 0 (SimSiam 0, BYOL 4)."""
    z = torch.ones(1, 3, dtype=torch.float64)
    zero = torch.zeros(1, 3, dtype=torch.float64)
    value = float(negative_cosine(zero, zero, z, z, convention=convention))
    assert value == {"simsiam": 0.0, "byol": 4.0}[convention]
