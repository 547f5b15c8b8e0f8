"""The statistics layer: known answers, simulated error rates and power, and mutants.

Every function of :mod:`amcl_lab.experiments._stats` is checked against a value known from
elsewhere (a published sample-size table, scipy's BCa bootstrap, Holm's worked example) and
by simulation against what it promises (power at the stated target, a null effect
reproduced at most at the stated rate).  Each has a deliberately wrong variant ("mutant")
that the same check rejects, which shows the check can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from amcl_lab.experiments import Claim, evaluate_claim, evaluate_claims
from amcl_lab.experiments import _stats as st
from amcl_lab.experiments._protocol import _verdict
from amcl_lab.figures import mean_ci

# --- vectorised interval rule (what evaluate_claim does, for many simulated runs at once) ---


def _interval_verdicts(x: np.ndarray, direction: str, threshold=0.0, margin=0.0, alpha=0.05):
    """Verdict codes (1 reproduced, -1 not reproduced, 0 inconclusive) of each row of x."""
    n = x.shape[1]
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / math.sqrt(n)
    q = stats.t.ppf(1 - alpha / 2, n - 1)
    low, high = mean - q * se, mean + q * se
    if direction == "greater":
        return np.where(low > threshold, 1, np.where(high <= threshold, -1, 0))
    if direction == "less":
        return np.where(high < threshold, 1, np.where(low >= threshold, -1, 0))
    inside = (low >= -margin) & (high <= margin)
    return np.where(inside, 1, np.where((low > margin) | (high < -margin), -1, 0))


def _claim(**kw) -> Claim:
    def measure(table):
        t = table[table["metric"] == "gain"]
        return dict(zip(t["seed"], t["value"], strict=True))

    return Claim(
        id=kw.pop("id", "c"), statement="s", source="src", effect="e", measure=measure, **kw
    )


def _table(effects) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "metric": "gain", "value": e} for s, e in enumerate(effects)])


# --- decision p-values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "threshold", "margin"),
    [("greater", 0.0, 0.0), ("greater", 1.0, 0.0), ("less", -0.5, 0.0), ("within", 0.0, 0.8)],
)
def test_decision_p_values_give_the_verdict_of_the_interval(direction, threshold, margin):
    """p_reproduced < 0.05 exactly when the 95 % interval is on the claimed side, etc."""
    rng = np.random.default_rng(1)
    claim = _claim(direction=direction, threshold=threshold, margin=max(margin, 1e-9))
    for _ in range(400):
        n = int(rng.integers(3, 12))
        x = rng.normal(rng.normal(0, 1), rng.uniform(0.1, 2), n)
        _, low, high = mean_ci(x)
        assert (
            st.verdict_from_p(*st.decision_p_values(x, direction, threshold, margin))
            == (_verdict(claim, low, high)[0])
        )


def test_decision_p_values_of_identical_values_are_those_of_the_point_interval():
    assert st.decision_p_values([2.0, 2.0, 2.0]) == (0.0, 1.0)
    assert st.decision_p_values([0.0, 0.0, 0.0]) == (1.0, 0.0)  # at the threshold: not reproduced
    assert st.decision_p_values([0.3] * 4, "within", margin=0.5) == (0.0, 1.0)
    assert all(math.isnan(p) for p in st.decision_p_values([1.0]))
    assert all(math.isnan(p) for p in st.decision_p_values([1.0, math.nan, 2.0]))


# --- power and seeds: published sample sizes, simulation, mutant -----------------------------


def _normal_approximation_seeds(d: float, target: float = 0.8, alpha: float = 0.05) -> int:
    """Mutant: the z-test sample size, which ignores that the SD is estimated."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(target)
    return max(3, math.ceil((z / d) ** 2))


# one-sample t-test, two-sided alpha 0.05, power 0.8 (G*Power 3.1; Cohen 1988, Table 2.4.1
# gives the same n for d = 0.5, 0.8)
PUBLISHED = {0.5: (34, 0.8078), 0.8: (15, 0.8213), 1.0: (10, 0.8031)}


@pytest.mark.parametrize("d", sorted(PUBLISHED))
def test_seeds_for_power_match_the_published_sample_sizes(d):
    n, achieved = PUBLISHED[d]
    assert st.seeds_for_power(d, 1.0) == n
    assert st.power(n, d, 1.0) == pytest.approx(achieved, abs=5e-4)
    assert st.power(n - 1, d, 1.0) < 0.8 <= st.power(n, d, 1.0)
    # scale and threshold invariance: only (mean - threshold) / sd matters
    assert st.seeds_for_power(3.0 + 2 * d, 2.0, threshold=3.0) == n
    assert st.seeds_for_power(-d, 1.0, "less") == n


def test_the_normal_approximation_mutant_is_caught():
    assert any(_normal_approximation_seeds(d) != n for d, (n, _) in PUBLISHED.items())


@pytest.mark.parametrize(
    ("mean", "sd", "direction", "threshold", "margin"),
    [
        (0.8, 1.0, "greater", 0.0, 0.0),
        (1.5, 2.0, "greater", 0.5, 0.0),
        (0.1, 1.0, "within", 0, 1.2),
    ],
)
def test_a_simulated_effect_of_known_size_is_detected_at_the_stated_power(
    mean, sd, direction, threshold, margin
):
    n = st.seeds_for_power(mean, sd, direction, threshold, margin)
    assert n is not None and n >= 3
    rng = np.random.default_rng(7)
    runs = 20_000
    x = rng.normal(mean, sd, (runs, n))
    rate = float(np.mean(_interval_verdicts(x, direction, threshold, margin) == 1))
    se = math.sqrt(0.8 * 0.2 / runs)
    predicted = st.power(n, mean, sd, direction, threshold, margin)
    assert rate >= 0.8 - 4 * se  # the stated power target is met
    assert rate == pytest.approx(predicted, abs=4 * se)  # and the power is what was computed
    if n > 3:  # one seed fewer misses the target
        assert st.power(n - 1, mean, sd, direction, threshold, margin) < 0.8


@pytest.mark.parametrize("n", [3, 5, 12])
def test_a_null_effect_is_reproduced_at_most_at_the_stated_rate(n):
    """True effect exactly at the threshold: 'reproduced' at most 2.5 % (one side of 5 %)."""
    rng = np.random.default_rng(n)
    runs = 40_000
    x = rng.normal(1.0, 3.0, (runs, n))
    rate = float(np.mean(_interval_verdicts(x, "greater", threshold=1.0) == 1))
    assert rate <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / runs)
    assert st.power(n, 1.0, 3.0, threshold=1.0) == pytest.approx(0.025, abs=1e-9)
    # equivalence claim whose true effect sits on the margin: reproduced at most 2.5 % too
    eq = float(np.mean(_interval_verdicts(x - 1.0 + 0.5, "within", margin=0.5) == 1))
    assert eq <= 0.025 + 4 * math.sqrt(0.025 * 0.975 / runs)


def test_seeds_for_power_is_none_when_no_number_of_seeds_would_do():
    assert st.seeds_for_power(-0.2, 1.0) is None
    assert st.seeds_for_power(0.6, 1.0, "within", margin=0.5) is None
    assert st.seeds_for_power(math.nan, 1.0) is None


# --- pairing -----------------------------------------------------------------------------------


def test_pairing_gain_is_one_over_one_minus_the_correlation():
    rng = np.random.default_rng(3)
    rho = 0.75
    common = rng.normal(size=200_000)
    arm = math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.normal(size=common.size)
    control = math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.normal(size=common.size)
    assert st.pairing_gain(arm, control) == pytest.approx(1 / (1 - rho), rel=0.02)
    assert st.pairing_gain(arm, rng.permutation(control)) == pytest.approx(1.0, rel=0.02)
    with pytest.raises(ValueError, match="same number"):
        st.pairing_gain([1.0, 2.0], [1.0])


# --- Holm ----------------------------------------------------------------------------------------


def _holm_without_running_max(p):
    """Mutant: each adjusted value on its own, so a smaller p can get a larger adjustment."""
    order = np.argsort(p)
    out = np.empty(len(p))
    for rank, i in enumerate(order):
        out[i] = min(1.0, (len(p) - rank) * p[i])
    return out.tolist()


def _holm_off_by_one(p):
    """Mutant: multiplies by m - i instead of m - i + 1 (the smallest p by m - 1)."""
    order = np.argsort(p)
    out, running = np.empty(len(p)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, max(len(p) - rank - 1, 1) * p[i]))
        out[i] = running
    return out.tolist()


HOLM_CASES = [
    # Holm (1979)'s logic by hand: sorted 0.005 x 4, 0.01 x 3, 0.03 x 2 (0.06), 0.04 x 1 -> 0.06
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
    ([0.001, 0.2, 0.02, 0.9, 0.011], [0.005, 0.4, 0.06, 0.9, 0.044]),
    ([0.3, 0.6], [0.6, 0.6]),
]


@pytest.mark.parametrize(("p", "adjusted"), HOLM_CASES)
def test_holm_known_answers(p, adjusted):
    assert st.holm(p) == pytest.approx(adjusted)


def test_holm_mutants_are_caught():
    for mutant in (_holm_without_running_max, _holm_off_by_one):
        assert any(mutant(p) != pytest.approx(a) for p, a in HOLM_CASES), mutant.__name__


def test_holm_leaves_nan_out_of_the_family():
    out = st.holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_holm_verdicts_control_the_family_wise_rate_of_false_verdicts():
    """Six claims whose effects are all exactly at the threshold (every verdict is false).

    Unadjusted, some claim gets a verdict in about 1 - 0.95^6 = 26 % of runs; after Holm at
    most 5 %."""
    rng = np.random.default_rng(11)
    runs, m, n = 4_000, 6, 5
    x = rng.normal(0.0, 1.0, (runs, m, n))
    q = stats.t.ppf(0.975, n - 1)
    t = x.mean(axis=2) / (x.std(axis=2, ddof=1) / math.sqrt(n))
    p = 2 * stats.t.sf(np.abs(t), n - 1)  # min(p_reproduced, p_not_reproduced)
    naive = np.mean((np.abs(t) > q).any(axis=1))
    holm_rate = np.mean([(np.asarray(st.holm(row)) < 0.05).any() for row in p])
    assert naive > 0.2
    assert holm_rate <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / runs)
    mutant_rate = np.mean([(np.asarray(_holm_off_by_one(row)) < 0.05).any() for row in p])
    assert mutant_rate > holm_rate  # the off-by-one mutant rejects more often


def test_evaluate_claims_reports_holm_next_to_the_unadjusted_verdict():
    """Two claims that each pass at 5 % (p = 0.028) but not both after Holm (2 x 0.028)."""
    strong = _claim(id="strong")
    weak = [_claim(id=f"weak{i}", threshold=1.08) for i in (1, 2)]
    table = _table([1.2, 1.1, 1.3, 1.25, 1.15])
    alone = evaluate_claim(weak[0], table)
    family = evaluate_claims([strong, *weak], table)
    assert [r.verdict for r in family] == ["reproduced"] * 3  # unadjusted: unchanged
    assert 0.025 < alone.p_reproduced < 0.05
    assert [r.holm_verdict for r in family] == ["reproduced", "inconclusive", "inconclusive"]
    assert family[1].holm_p == pytest.approx(2 * alone.p_reproduced)


# --- bootstrap -------------------------------------------------------------------------------


def _percentile_90(values, level=0.95, *, resamples=2000, seed=0):
    """Mutant: a percentile interval at the wrong level (5 % / 95 % quantiles)."""
    x = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (resamples, len(x)))].mean(axis=1)
    return tuple(np.quantile(means, [0.05, 0.95]))


def _without_replacement(values, level=0.95, *, resamples=2000, seed=0):
    """Mutant: 'resampling' by permutation, so every resample has the same mean."""
    x = np.asarray(values)
    rng = np.random.default_rng(seed)
    means = np.array([rng.permutation(x).mean() for _ in range(resamples)])
    return tuple(np.quantile(means, [0.025, 0.975]))


def test_bootstrap_ci_agrees_with_scipy_bca():
    x = np.random.default_rng(5).exponential(1.0, 15)
    ours = st.bootstrap_ci(x, resamples=200_000)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=200_000, method="BCa", random_state=np.random.default_rng(9)
    ).confidence_interval
    width = ref.high - ref.low
    assert ours == pytest.approx((ref.low, ref.high), abs=0.02 * width)


def _coverage(interval, runs=1_500, n=20):
    rng = np.random.default_rng(21)
    hits = 0
    for _ in range(runs):
        low, high = interval(rng.exponential(1.0, n), resamples=2_000)
        hits += low <= 1.0 <= high
    return hits / runs


def test_bootstrap_ci_covers_a_skewed_mean_at_about_the_stated_level():
    """Exponential effects, 20 seeds: BCa covers the mean 1 in 91.7 % of 1,500 samples.

    (BCa under-covers a skewed mean a little at 20 seeds; the t interval covers 92-93 %.)"""
    assert 0.905 <= _coverage(st.bootstrap_ci) <= 0.975
    assert _coverage(_percentile_90) < 0.89  # a 90 % interval (86 %) is caught
    assert _coverage(_without_replacement, runs=50) < 0.5  # a zero-width interval is caught


def test_bootstrap_ci_needs_enough_seeds_and_handles_ties():
    assert all(math.isnan(v) for v in st.bootstrap_ci([1.0, 2.0, 3.0]))
    assert st.bootstrap_ci([0.9] * 10) == (0.9, 0.9)
    x = [0.5, 0.9, 1.0, 0.7, 0.9, 1.0, 0.6, 0.9, 0.8, 1.0]
    assert st.bootstrap_ci(x) == st.bootstrap_ci(x)  # seeded: reproducible


def test_a_bootstrap_claim_carries_its_interval_and_verdict():
    claim = _claim(bootstrap=True)
    result = evaluate_claim(claim, _table([0.9, 1.0, 0.8, 1.0, 0.7, 1.0, 0.9, 1.0, 0.6, 1.0]))
    assert result.boot_low < result.mean < result.boot_high
    assert result.boot_verdict == "reproduced"
    few = evaluate_claim(claim, _table([0.9, 1.0, 0.8]))
    assert math.isnan(few.boot_low) and few.boot_verdict == ""


# --- sequential seeds ------------------------------------------------------------------------


def test_seed_plan_and_parse():
    assert st.SeedPlan(3, 12).looks == (3, 6, 12)
    assert st.SeedPlan(5, 5).looks == (5,) and st.SeedPlan(5, 5).alpha == 0.05
    assert st.plan_for(15, None).looks == (15, 30, 60)
    assert st.plan_for(2, 8).start == 3
    with pytest.raises(ValueError, match="start <= cap"):
        st.SeedPlan(6, 4)
    with pytest.raises(ValueError, match="expected a number"):
        st.parse_seeds("many")


def _simulate(plan: st.SeedPlan, mean: float, runs: int, level=None, seed=0) -> np.ndarray:
    """Verdict codes of ``runs`` sequential runs of one greater-than-0 claim, effects N(mean, 1).

    ``level`` None is the plan's corrected level; anything else is a mutant that judges every
    look at that level (no correction for the repeated looks)."""
    rng = np.random.default_rng(seed)
    codes = {"reproduced": 1, "not reproduced": -1, "inconclusive": 0}
    out = []
    for _ in range(runs):
        draws = rng.normal(mean, 1.0, plan.cap)

        def rows_for(seeds, draws=draws):
            return [{"seed": s, "metric": "gain", "value": float(draws[s])} for s in seeds]

        def evaluate(rows, lvl):
            x = [r["value"] for r in rows]
            p_r, p_n = st.decision_p_values(x)
            verdict = st.verdict_from_p(p_r, p_n, 1.0 - (lvl if level is None else level))
            return [{"verdict": verdict, "p_reproduced": p_r}]

        _, results, _ = st.run_sequential(plan, rows_for, evaluate)
        out.append(codes[results[0]["verdict"]])
    return np.array(out)


def test_seeds_auto_keeps_a_null_effect_reproduced_at_most_at_the_stated_rate():
    """Optional stopping: adding seeds until decided inflates an uncorrected 5 % rule."""
    plan = st.SeedPlan(3, 24)  # looks at 3, 6, 12, 24
    runs = 6_000
    bound = 0.025 + 4 * math.sqrt(0.025 * 0.975 / runs)
    corrected = np.mean(_simulate(plan, 0.0, runs) == 1)
    naive = np.mean(_simulate(plan, 0.0, runs, level=0.95) == 1)
    assert corrected <= bound
    assert naive > bound  # the uncorrected mutant is caught


def test_seeds_auto_stops_once_decided_and_detects_a_real_effect():
    plan = st.SeedPlan(3, 24)
    codes = _simulate(plan, 1.0, 400, seed=1)  # d = 1: most runs decide before the cap
    assert np.mean(codes == 1) > 0.9
    seen = []

    def rows_for(seeds):
        seen.append(tuple(seeds))
        return [{"seed": s, "metric": "gain", "value": 5.0 + 0.1 * s} for s in seeds]

    rows, results, looks = st.run_sequential(
        plan, rows_for, lambda r, lvl: evaluate_claims([_claim()], pd.DataFrame(r), lvl)
    )
    assert looks == [3] and seen == [(0, 1, 2)] and len(rows) == 3
    assert results[0].verdict == "reproduced" and results[0].level == pytest.approx(plan.level)


def test_seeds_auto_ignores_claims_more_seeds_cannot_decide():
    """A non-finite effect (a seed that never fitted) would never be decided: no more looks."""
    plan = st.SeedPlan(3, 12)

    def rows_for(seeds):
        return [{"seed": s, "metric": "gain", "value": math.nan if s == 0 else 1.0} for s in seeds]

    _, results, looks = st.run_sequential(
        plan, rows_for, lambda r, lvl: evaluate_claims([_claim()], pd.DataFrame(r), lvl)
    )
    assert looks == [3] and results[0].verdict == "inconclusive"
