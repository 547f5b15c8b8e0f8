"""The temperature experiment: smoke run, the shuffled-label control, claims computed from data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from experiment_runs import smoke_rows

from amcl_lab.experiments import VERDICTS, _claims, evaluate_claim, load, run_experiment

temperature = load("temperature")
CLAIMS = {c.id: c for c in temperature.CLAIMS}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run, results = run_experiment("temperature", preset="smoke", out=out, run_id="s", quiet=True)
    return run, results


def test_smoke_run_writes_rows_claims_and_figures(smoke):
    run, results = smoke
    table = results.table
    grid = temperature.smoke().grid
    assert sorted(table["temperature"].unique()) == list(grid)
    assert set(table["seed"]) == {0, 1, 2}
    wanted = {"uniformity", "tolerance", "tolerance_chance", "linear_probe", "knn"}
    assert wanted <= set(table["metric"])
    assert {c["id"] for c in results.claims} == set(CLAIMS)
    for claim in results.claims:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for stem in ("geometry_vs_tau", "accuracy_vs_tau"):
        assert (run.figures_dir / f"{stem}.png").stat().st_size > 0


def test_shuffled_labels_change_only_the_tolerance_and_never_reproduce_its_claim(smoke, tmp_path):
    """The negative control: same training, permuted held-out labels for the tolerance."""
    table = smoke[1].table
    control = smoke_rows("temperature", ("shuffle_labels=true",), tmp_path)
    keys = ["seed", "temperature", "step", "metric"]

    def values(t: pd.DataFrame, metric: str) -> pd.Series:
        return t[t["metric"] == metric].set_index(keys)["value"].sort_index()

    for metric in ("uniformity", "linear_probe", "tolerance_chance"):
        pd.testing.assert_series_equal(values(control, metric), values(table, metric))
    assert not values(control, "tolerance").equals(values(table, "tolerance"))
    # shuffled labels: same-class pairs are random pairs, so the excess over chance vanishes
    final = control[control["step"] == control["step"].max()]
    excess = values(final, "tolerance").to_numpy() - values(final, "tolerance_chance").to_numpy()
    real = table[table["step"] == table["step"].max()]
    real_excess = values(real, "tolerance").to_numpy() - values(real, "tolerance_chance").to_numpy()
    assert abs(excess).mean() < abs(real_excess).mean()
    verdict = evaluate_claim(CLAIMS["tolerance-falls-as-tau-falls"], control).verdict
    assert verdict != "reproduced"


def _table(metric: str, values: dict[int, list[float]], grid=(0.1, 0.3, 1.0)) -> pd.DataFrame:
    return pd.DataFrame(
        {"seed": s, "temperature": t, "step": 10, "metric": metric, "value": x}
        for s, xs in values.items()
        for t, x in zip(grid, xs, strict=True)
    )


def test_uniformity_claim_is_the_rank_correlation_of_the_data():
    claim = CLAIMS["uniformity-rises-as-tau-falls"]
    rising = {0: [-3.2, -2.9, -2.1], 1: [-3.0, -2.8, -2.5], 2: [-3.1, -2.0, -1.9]}
    result = evaluate_claim(claim, _table("uniformity", rising))
    assert result.per_seed == {"0": 1.0, "1": 1.0, "2": 1.0}
    assert result.verdict == "reproduced"
    falling = {s: xs[::-1] for s, xs in rising.items()}
    assert evaluate_claim(claim, _table("uniformity", falling)).verdict == "not reproduced"
    flat = {s: [-3.0, -3.0, -3.0] for s in rising}
    assert evaluate_claim(claim, _table("uniformity", flat)).verdict == "inconclusive"


def test_trend_statistics_per_seed():
    """Spearman needs a varying value; a flat curve has slope exactly 0, not NaN."""
    table = _table("v", {0: [1.0, 2.0, 4.0], 1: [3.0, 3.0, 3.0], 2: [2.0, 1.0, 1.5]})
    values = _claims.final(table, "v", ["temperature"])
    rho = _claims.rank_correlation(values, "temperature")
    assert rho[0] == pytest.approx(1.0) and math.isnan(rho[1]) and rho[2] == pytest.approx(-0.5)
    slope = _claims.log_slope(values, "temperature")
    assert slope[1] == pytest.approx(0.0, abs=1e-12)
    assert slope[0] == pytest.approx(np.polyfit(np.log10([0.1, 0.3, 1.0]), [1.0, 2.0, 4.0], 1)[0])
    one_tau = values[values.index.get_level_values("temperature") == 0.3]
    assert all(math.isnan(x) for x in _claims.log_slope(one_tau, "temperature").values())


def test_tolerance_claim_uses_the_excess_over_the_all_pairs_similarity():
    """Raw tolerance that rises only because every pair gets closer is not the claim."""
    claim = CLAIMS["tolerance-falls-as-tau-falls"]
    chance = {s: [0.0, 0.25, 0.5] for s in range(3)}
    global_only = {s: [0.25, 0.5, 0.75] for s in range(3)}  # the same excess at every tau
    table = pd.concat([_table("tolerance", global_only), _table("tolerance_chance", chance)])
    result = evaluate_claim(claim, table)
    assert result.per_seed == pytest.approx({"0": 0.0, "1": 0.0, "2": 0.0}, abs=1e-12)
    assert result.verdict == "not reproduced"
    labelled = {s: [0.25, 0.625, 1.0] for s in range(3)}  # excess 0.25, 0.375, 0.5
    table = pd.concat([_table("tolerance", labelled), _table("tolerance_chance", chance)])
    result = evaluate_claim(claim, table)
    slope = np.polyfit(np.log10([0.1, 0.3, 1.0]), [0.25, 0.375, 0.5], 1)[0]
    assert result.per_seed == pytest.approx({"0": slope, "1": slope, "2": slope})
    assert result.verdict == "reproduced"


def test_a_faint_copy_of_the_trend_is_not_a_tolerance_trend():
    """What shuffled labels give: the real excess scaled by a tiny factor of random sign.

    Its ranking is the real one, so a rank correlation would call it reproduced when the
    tiny factors happen to share a sign; the slope threshold does not.
    """
    claim = CLAIMS["tolerance-falls-as-tau-falls"]
    grid = (0.07, 0.15, 0.3, 0.6, 1.2)
    real = [0.336, 0.325, 0.462, 0.532, 0.495]  # the cpu preset's excess, seed 0
    zeros = {s: [0.0] * 5 for s in range(3)}
    faint = {s: [f * x for x in real] for s, f in enumerate((0.01, 0.004, 0.007))}
    table = pd.concat([_table("tolerance", faint, grid), _table("tolerance_chance", zeros, grid)])
    faint_values = _claims.final(_table("v", faint, grid), "v", ["temperature"])
    assert _claims.rank_correlation(faint_values, "temperature") == pytest.approx(
        {0: 0.8, 1: 0.8, 2: 0.8}
    )
    result = evaluate_claim(claim, table)
    assert 0 < result.mean < claim.threshold / 10
    assert result.verdict == "not reproduced"
    full = dict.fromkeys(range(3), real)
    table = pd.concat([_table("tolerance", full, grid), _table("tolerance_chance", zeros, grid)])
    assert evaluate_claim(claim, table).verdict == "reproduced"


def test_intermediate_optimum_is_chosen_on_the_other_seeds():
    """Each seed's own noisy peak does not count: the interior tau comes from the others."""
    claim = CLAIMS["accuracy-peaks-at-intermediate-tau"]
    grid = (0.1, 0.2, 0.4, 0.8, 1.6)
    noise = {  # every seed peaks at a different interior tau; elsewhere interior < ends
        0: [0.90, 0.95, 0.85, 0.85, 0.90],
        1: [0.90, 0.85, 0.95, 0.85, 0.90],
        2: [0.90, 0.85, 0.85, 0.95, 0.90],
    }
    result = evaluate_claim(claim, _table("linear_probe", noise, grid))
    assert result.verdict == "not reproduced"
    assert result.per_seed == pytest.approx({"0": -5.0, "1": -5.0, "2": -5.0})
    peak = {s: [0.90, 0.93, 0.96, 0.94, 0.91] for s in range(3)}
    peak[1] = [0.89, 0.94, 0.95, 0.93, 0.92]
    result = evaluate_claim(claim, _table("linear_probe", peak, grid))
    assert result.verdict == "reproduced"
    assert result.per_seed["1"] == pytest.approx(3.0)


def test_config_needs_three_temperatures_and_the_uniformity_metric():
    with pytest.raises(ValueError, match="at least three distinct"):
        temperature.Config(temperatures=(0.1, 0.1, 1.0))
    with pytest.raises(ValueError, match="must include 'uniformity'"):
        temperature.Config(geometry=("tolerance",))
    for preset in temperature.PRESETS.values():
        assert len(preset().grid) >= 3
