"""``figures.bounded_ci``: intervals inside the quantity's range, around the plain mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from amcl_lab import figures


@pytest.mark.parametrize(
    ("values", "bounds"),
    [
        ([90.0, 99.0, 99.5], figures.PERCENT),  # the plain CI passes 100 %
        ([0.98, 0.99, 1.0], figures.COSINE),  # the plain CI passes 1
        ([0.4, 1.0, 5.0], figures.POSITIVE),  # a time ratio: the plain CI goes below 0
        ([1.0, 1.0, 1.0], figures.PROPORTION),  # every seed collapsed
        ([0.0, 0.0, 1.0], figures.PROPORTION),
        ([-3.0, -1.0, -0.5], (-math.inf, 0.0)),
    ],
)
def test_the_interval_stays_in_range_and_holds_the_plain_mean(values, bounds):
    mean, low, high = figures.bounded_ci(values, bounds)
    assert mean == pytest.approx(np.mean(values))
    assert bounds[0] <= low <= mean <= high <= bounds[1]
    _, plain_low, plain_high = figures.mean_ci(values)
    if plain_low < plain_high:
        assert (low, high) != (plain_low, plain_high)


def test_without_bounds_it_is_mean_ci_and_one_seed_has_no_interval():
    assert figures.bounded_ci([1.0, 2.0, 4.0]) == figures.mean_ci([1.0, 2.0, 4.0])
    mean, low, high = figures.bounded_ci([50.0], figures.PERCENT)
    assert mean == 50.0 and math.isnan(low) and math.isnan(high)
    assert figures.ci_text([50.0], figures.PERCENT) == "50.00 (one seed)"


def test_a_rounding_error_past_a_bound_is_on_it():
    log_m = math.log(708.0)
    high = figures.bounded_ci([log_m * (1 + 1e-12), log_m - 0.01], (0.0, log_m))[2]
    assert high <= log_m


@pytest.mark.parametrize(
    ("values", "bounds", "error", "match"),
    [
        ([1.2, 0.5], figures.PROPORTION, ValueError, "values must lie in bounds"),
        ([0.5, 0.6], (1.0, 0.0), ValueError, "bounds must be .low, high. with low < high"),
        ([0.5, 0.6], "ab", TypeError, "bounds must be a pair of numbers"),
    ],
)
def test_bad_input_names_the_argument(values, bounds, error, match):
    with pytest.raises(error, match=match):
        figures.bounded_ci(values, bounds)
