"""Every property must be able to fail: each mutant of NT-Xent violates at least one of them.

The battery below is the set of NT-Xent properties from ``test_contrastive.py`` (same check
functions).  The real ``nt_xent`` must pass all of them, and every deliberately broken
version in ``tests/mutants.py`` must fail at least one.
"""

from __future__ import annotations

import pytest
import torch

from amcl_lab import registry
from amcl_lab.losses import nt_xent
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import MUTANTS

pytestmark = [pytest.mark.props, pytest.mark.mutation]

TOL = registry.get("nt_xent").tolerance(torch.float64)


def _value(loss, sample):
    tau = sample.kwargs["temperature"]
    expected = ref.nt_xent(*(a.numpy() for a in sample.args), tau).mean()
    checks.assert_close(
        float(sample.call(loss)),
        expected,
        rtol=1e-10,
        atol=TOL.atol_for(tau),
        what="value vs NumPy",
    )


def _hardness(loss, sample):
    anchors = checks.two_view_gradients(loss, sample)
    checks.check_negative_gradient_is_boltzmann_weight(anchors, sample.kwargs["temperature"])
    checks.check_positive_gradient(anchors, sample.kwargs["temperature"])


def _rescaling(loss, sample):
    checks.check_rescaling_invariance(loss, sample, 1, 0, 7.5, TOL)


BATTERY = {
    "value": (_value, ams.two_view_samples()),
    "hardness": (_hardness, ams.two_view_samples(min_temperature=1e-2, max_temperature=1e2)),
    "zero_temperature_limit": (checks.check_zero_temperature_hinge, ams.two_view_samples()),
    "view_swap": (lambda f, s: checks.check_view_swap_symmetry(f, s, TOL), ams.two_view_samples()),
    "rescaling": (_rescaling, ams.two_view_samples()),
    "stability": (checks.check_finite_value_and_gradient, ams.two_view_samples()),
}


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_property_of_the_battery(prop):
    check, strategy = BATTERY[prop]
    assert not checks.violates(check, nt_xent, strategy, max_examples=60), (
        f"the reference nt_xent fails {prop}"
    )


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.name)
def test_every_mutant_violates_at_least_one_property(mutant):
    caught = any(
        checks.violates(check, mutant.fn, strategy, max_examples=60)
        for check, strategy in BATTERY.values()
    )
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"


def test_mutants_cover_each_mistake_listed_in_the_foundation_issue():
    """Wrong temperature scaling, positive dropped/duplicated, missing normalisation, wrong
    diagonal mask, wrong reduction: each has a mutant."""
    names = {m.name for m in MUTANTS}
    assert {
        "tau_twice",
        "positive_dropped",
        "positive_doubled",
        "missing_normalization",
        "self_not_masked",
        "mean_over_n",
    } <= names
