"""The claims vocabulary (experiments/_claims.py) on small tables computed by hand."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil

import numpy as np
import pandas as pd
import pytest

from amcl_lab import experiments
from amcl_lab.experiments import _claims as claims


def _row(seed, step, metric, value, **condition):
    return {"seed": seed, "step": step, "metric": metric, "value": value, **condition}


@pytest.fixture
def arms() -> pd.DataFrame:
    """Two seeds x two optimizers; SGD's second seed stopped early (step 5, not 10)."""
    return pd.DataFrame(
        [
            _row(0, 0, "acc", 0.10, optimizer="sgd"),
            _row(0, 10, "acc", 0.80, optimizer="sgd"),
            _row(0, 0, "acc", 0.10, optimizer="sam"),
            _row(0, 10, "acc", 0.90, optimizer="sam"),
            _row(1, 0, "acc", 0.20, optimizer="sgd"),
            _row(1, 5, "acc", 0.50, optimizer="sgd"),
            _row(1, 0, "acc", 0.20, optimizer="sam"),
            _row(1, 10, "acc", 0.60, optimizer="sam"),
            _row(0, 10, "loss", 7.0, optimizer="sgd"),  # another metric: never mixed in
        ]
    )


def test_the_module_doctests_pass():
    result = doctest.testmod(claims, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


@pytest.mark.parametrize(
    "name", [*sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)), "__init__"]
)
def test_every_experiments_module_passes_its_doctests(name):
    """``nox -s tests`` collects doctests under amcl_lab/ only; experiments/ lives beside it."""
    module = (
        experiments
        if name == "__init__"
        else importlib.import_module(f"{experiments.__name__}.{name}")
    )
    assert doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0


def test_final_and_initial_are_per_run_not_per_table(arms):
    last = claims.final(arms, "acc", ["optimizer"])
    assert last.to_dict() == {(0, "sgd"): 0.8, (0, "sam"): 0.9, (1, "sgd"): 0.5, (1, "sam"): 0.6}
    first = claims.initial(arms, "acc", ["optimizer"])
    assert first.to_dict() == {(0, "sgd"): 0.1, (0, "sam"): 0.1, (1, "sgd"): 0.2, (1, "sam"): 0.2}
    # the wrong variant, the table's last step, loses the run that stopped at step 5
    acc = arms[arms["metric"] == "acc"]
    wrong = acc[acc["step"] == acc["step"].max()].set_index(["seed", "optimizer"])["value"]
    assert len(wrong) == 3 and len(last) == 4


def test_at_selects_a_condition_and_resolves_min_and_max():
    values = pd.Series(
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        name="value",
        index=pd.MultiIndex.from_tuples(
            [
                (s, d, beta)
                for s in (0, 1)
                for d, beta in ((32, 3 / 32), (32, 3 / 256), (256, 3 / 256))
            ],
            names=["seed", "d", "beta"],
        ),
    )
    assert claims.at(values, {"d": 32, "beta": 0.09375000001}).to_dict() == {0: 1.0, 1: 4.0}
    assert claims.at(values, {"d": max, "beta": min}).to_dict() == {0: 3.0, 1: 6.0}
    rest = claims.at(values, {"d": 32})  # beta stays an index level
    assert list(rest.index.names) == ["seed", "beta"] and len(rest) == 4


def test_paired_difference_and_relative_change(arms):
    last = claims.final(arms, "acc", ["optimizer"])
    sam, sgd = {"optimizer": "sam"}, {"optimizer": "sgd"}
    diff = claims.paired_difference(last, sam, sgd, scale=100.0)
    assert diff == pytest.approx({0: 10.0, 1: 10.0})  # 90 - 80 and 60 - 50 points
    relative = claims.relative_change(last, sam, sgd)
    assert relative == pytest.approx({0: 12.5, 1: 20.0})  # 0.1 / 0.8 and 0.1 / 0.5
    # dividing by the arm instead of the control would give 11.1 and 16.7
    assert relative[0] != pytest.approx(100.0 * 0.1 / 0.9)
    assert claims.paired_difference(last, sam, sam) == {}  # a condition against itself


def test_paired_leaves_out_or_keeps_seeds_without_both_conditions(arms):
    last = claims.final(
        arms[~((arms["seed"] == 1) & (arms["optimizer"] == "sam"))], "acc", ["optimizer"]
    )
    sam, sgd = {"optimizer": "sam"}, {"optimizer": "sgd"}
    assert claims.paired_difference(last, sam, sgd) == pytest.approx({0: 0.1})
    kept = claims.paired_difference(last, sam, sgd, drop_nan=False)
    assert kept[0] == pytest.approx(0.1) and math.isnan(kept[1])
    assert claims.paired(last, sam, sgd, lambda x, _: x - 2.0) == pytest.approx({0: -1.1})
    assert claims.paired_difference(last.iloc[:0], sam, sgd) == {}


def test_matched_difference_needs_a_reference_that_learned():
    table = pd.DataFrame(
        [
            _row(s, step, "acc", v, arm=arm)
            for s, ref_end in ((0, 0.60), (1, 0.11))
            for arm, end in (("candidate", 0.55), ("reference", ref_end))
            for step, v in ((0, 0.10), (9, end))
        ]
    )
    effect = claims.matched_difference(
        table, "acc", ["arm"], {"arm": "candidate"}, {"arm": "reference"}, margin=2.0
    )
    # seed 0: 55 - 60 = -5 points, the reference gained 50; seed 1: it gained 1 <= 2
    assert effect[0] == pytest.approx(-5.0) and math.isnan(effect[1])


def test_over_training_takes_the_first_and_last_step_in_step_order():
    table = pd.DataFrame(
        [
            _row(0, 20, "nc1", 0.1, loss="ce"),
            _row(0, 0, "nc1", 1.0, loss="ce"),
            _row(0, 10, "nc1", math.nan, loss="ce"),
            _row(0, 0, "nc1", 9.0, loss="supcon"),
            _row(1, 0, "nc1", 2.0, loss="ce"),
            _row(1, 30, "nc1", 0.02, loss="ce"),
        ]
    )
    ratio = claims.over_training(table, "nc1", lambda a, b: math.log10(b / a), {"loss": "ce"})
    assert ratio == pytest.approx({0: -1.0, 1: -2.0})
    # in row order instead of step order, seed 0 would read 0.1 first: +1 instead of -1


def _grid(values: dict[int, list[float]], grid=(0.1, 0.3, 1.0)) -> pd.Series:
    index = pd.MultiIndex.from_tuples([(s, x) for s in values for x in grid], names=["seed", "tau"])
    return pd.Series([v for vs in values.values() for v in vs], index=index, name="value")


def test_rank_correlation_and_log_slope():
    values = _grid({0: [1.0, 2.0, 4.0], 1: [3.0, 3.0, 3.0], 2: [2.0, 1.0, 1.5]})
    rho = claims.rank_correlation(values, "tau")
    assert rho[0] == pytest.approx(1.0) and math.isnan(rho[1]) and rho[2] == pytest.approx(-0.5)
    slope = claims.log_slope(values, "tau")
    # seed 0 by hand: x = log10 tau = (-1, -0.523, 0), y = (1, 2, 4)
    x, y = np.log10([0.1, 0.3, 1.0]), np.array([1.0, 2.0, 4.0])
    by_hand = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    assert slope[0] == pytest.approx(by_hand) and slope[1] == pytest.approx(0.0, abs=1e-12)
    # a slope against ln tau would be smaller by log(10)
    assert slope[0] != pytest.approx(by_hand / math.log(10))
    one = values[values.index.get_level_values("tau") == 0.3]
    assert all(math.isnan(s) for s in claims.log_slope(one, "tau").values())
    with_nan = _grid({0: [1.0, math.nan, 4.0]})
    assert claims.log_slope(with_nan, "tau")[0] == pytest.approx(3.0)  # (4 - 1) / 1 decade


def test_held_out_peak_chooses_the_interior_on_the_other_seeds():
    grid = (0.1, 0.2, 0.4, 1.6)
    values = _grid({0: [0.90, 0.95, 0.80, 0.90], 1: [0.90, 0.80, 0.95, 0.90]}, grid)
    # seed 0: the other seed's best interior is 0.4, where seed 0 has 0.80: 0.80 - 0.90
    assert claims.held_out_peak(values, "tau", scale=100.0) == pytest.approx({0: -10.0, 1: -10.0})
    # choosing on the seed's own values would call both a +5 point peak
    lone = _grid({0: [0.9, 0.95, 0.9]})
    assert math.isnan(claims.held_out_peak(lone, "tau")[0])  # no other seed to choose on


def test_combine_and_per_seed():
    assert claims.combine(min, {2: 1.0, 0: 5.0}, {0: 3.0, 2: 4.0, 7: 0.0}) == {0: 3.0, 2: 1.0}
    assert list(claims.combine(min, {2: 1.0, 0: 5.0}, {0: 3.0, 2: 4.0})) == [0, 2]
    series = pd.Series([1.0, math.nan], index=pd.Index([np.int64(4), np.int64(5)], name="seed"))
    kept = claims.per_seed(series)
    assert list(kept) == [4, 5] and math.isnan(kept[5]) and type(next(iter(kept))) is int
    assert claims.per_seed(series, drop_nan=True) == {4: 1.0}


def test_power_law_recovers_the_exponent_and_refuses_what_it_cannot_fit():
    # y = 25 + 400 p^2 at p = 0.2, 0.4, 0.8: y - y0 = 16, 64, 256, a slope of 2 on log-log axes
    grid = (0.0, 0.2, 0.4, 0.8)
    values = _grid({0: [25.0, 41.0, 89.0, 281.0], 1: [25.0, 20.0, 89.0, 281.0]}, grid)
    fits = claims.power_law(values, "tau")
    k, c, y0 = fits[0]
    assert (k, c, y0) == pytest.approx((2.0, 400.0, 25.0))
    # a linear fit of y on p (the wrong model) would give a slope near 320, not 2
    assert k != pytest.approx(np.polyfit(grid, [25.0, 41.0, 89.0, 281.0], 1)[0])
    assert math.isnan(fits[1][0]) and fits[1][2] == 25.0  # 20 < y0: no power law
    no_zero = values[values.index.get_level_values("tau") > 0]
    assert claims.power_law(no_zero, "tau") == {}
