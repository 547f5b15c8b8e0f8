"""Claim evaluation: effect measured from the table, Student-t CI, the verdict rules."""

from __future__ import annotations

import types

import pandas as pd
import pytest
from scipy import stats

from amcl_lab.experiments import Claim, evaluate_claim, load, names
from amcl_lab.experiments._protocol import check_module
from amcl_lab.figures import mean_ci


def _table(effects):
    return pd.DataFrame([{"seed": s, "metric": "gain", "value": e} for s, e in enumerate(effects)])


def _claim(**kw):
    def measure(table):
        t = table[table["metric"] == "gain"]
        return dict(zip(t["seed"], t["value"], strict=True))

    return Claim(id="c", statement="s", source="src", effect="e", measure=measure, **kw)


def test_mean_ci_is_the_student_t_interval():
    values = [0.3, 1.1, 0.7, 0.2]
    mean, low, high = mean_ci(values)
    ref = stats.t.interval(0.95, 3, loc=sum(values) / 4, scale=stats.sem(values))
    assert mean == pytest.approx(0.575)
    assert (low, high) == pytest.approx(ref)
    assert mean_ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    one = mean_ci([1.0])
    assert one[0] == 1.0 and one[1] != one[1]  # NaN interval for one value


@pytest.mark.parametrize(
    ("effects", "kwargs", "verdict"),
    [
        ([1.0, 1.2, 0.9], {}, "reproduced"),
        ([-1.0, -1.2, -0.9], {}, "not reproduced"),
        ([0.0, 0.0, 0.0], {}, "not reproduced"),  # no effect at all
        ([1.0, -1.0, 0.5], {}, "inconclusive"),
        ([1.0, 1.2, 0.9], {"direction": "greater", "threshold": 2.0}, "not reproduced"),
        ([-1.0, -1.2, -0.9], {"direction": "less"}, "reproduced"),
        ([0.01, -0.02, 0.0], {"direction": "within", "margin": 0.5}, "reproduced"),
        ([2.0, 2.1, 1.9], {"direction": "within", "margin": 0.5}, "not reproduced"),
        ([0.0, 0.9, -0.8], {"direction": "within", "margin": 0.5}, "inconclusive"),
        ([1.0, 1.2], {}, "inconclusive"),  # fewer than three seeds
        ([1.0, float("nan"), 1.1], {}, "inconclusive"),
    ],
)
def test_verdict_follows_the_confidence_interval(effects, kwargs, verdict):
    result = evaluate_claim(_claim(**kwargs), _table(effects))
    assert result.verdict == verdict, result.reason
    assert result.n_seeds == len(effects)
    assert list(result.per_seed) == [str(s) for s in range(len(effects))]


def test_the_verdict_changes_with_the_data():
    """Not hard-coded: the same claim flips when the measurements do."""
    claim = _claim()
    assert evaluate_claim(claim, _table([3.0, 2.5, 2.8])).verdict == "reproduced"
    assert evaluate_claim(claim, _table([-3.0, -2.5, -2.8])).verdict == "not reproduced"


def _with_collapse(flags: dict[tuple[str, int], float]) -> pd.DataFrame:
    """A gain of 1 per seed plus each (arm, seed) run's collapse flag at steps 0 and 10."""
    rows = [{"seed": s, "metric": "gain", "value": 1.0 + 0.1 * s} for s in range(3)]
    for (arm, seed), last in flags.items():
        for step, flag in ((0, 1.0), (10, last)):  # step 0 always looks collapsed
            rows.append({"seed": seed, "arm": arm, "step": step, "metric": "collapsed"})
            rows[-1]["value"] = flag
    return pd.DataFrame(rows)


def test_a_collapsed_arm_makes_the_setup_fail_not_the_paper():
    healthy = {(arm, s): 0.0 for arm in ("a", "b") for s in range(3)}
    claim = _claim(arms=({"arm": "a"},))
    assert evaluate_claim(claim, _with_collapse(healthy)).verdict == "reproduced"
    one_seed = evaluate_claim(claim, _with_collapse({**healthy, ("a", 2): 1.0}))
    assert one_seed.verdict == "setup failed (collapsed)"
    assert "arm=a (seeds 2)" in one_seed.reason and one_seed.n_seeds == 3  # still measured
    other_arm = _with_collapse({**healthy, ("b", 0): 1.0})
    assert evaluate_claim(claim, other_arm).verdict == "reproduced"  # not an arm it rests on
    assert evaluate_claim(_claim(), _with_collapse({**healthy, ("a", 2): 1.0})).verdict == (
        "reproduced"  # a claim that names no arms is judged on its effect alone
    )


def test_claim_needs_a_margin_for_equivalence():
    with pytest.raises(ValueError, match="needs a margin > 0"):
        _claim(direction="within")
    with pytest.raises(ValueError, match="direction must be one of"):
        _claim(direction="bigger")


def test_experiment_modules_follow_the_protocol():
    assert "simclr_digits" in names()
    for name in names():
        module = load(name)
        assert set(module.PRESETS) >= {"smoke", "cpu", "gpu"}
        for preset in module.PRESETS.values():
            assert isinstance(preset(), module.Config)
    broken = types.ModuleType("broken", "doc")
    broken.PRESETS = {"smoke": None}
    with pytest.raises(ValueError, match="lacks Config, run, plot, CLAIMS"):
        check_module("broken", broken)
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; available: .*simclr_digits"):
        load("nope")
