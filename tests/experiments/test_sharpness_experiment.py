"""The ``sharpness`` experiment: smoke run, claims computed from the data, broken conditions."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from experiment_runs import assert_saved_claims_recompute, smoke_rows

from amcl_lab import engine
from amcl_lab.data import load_dataset
from amcl_lab.experiments import VERDICTS, evaluate_claim, evaluate_claims, run_experiment
from amcl_lab.experiments import sharpness as experiment

CLAIMS = {c.id: c for c in experiment.CLAIMS}
SHARPNESS_CLAIMS = [i for i in CLAIMS if "flatter" in i or "ascent" in i]
MEASURES = {"lambda_max", "lambda_ratio", "trace", "ascent_sharpness", "test_accuracy"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run, results = run_experiment("sharpness", preset="smoke", out=out, run_id="s", quiet=True)
    return run, results


def test_smoke_run_writes_rows_claims_and_figures(smoke):
    run, results = smoke
    table = results.table
    assert results.seeds == (0, 1, 2)
    for name in experiment.CONDITIONS:
        for seed in results.seeds:
            rows = table[(table["optimizer"] == name) & (table["seed"] == seed)]
            assert MEASURES | {"step_cost_ratio", "density_node"} <= set(rows["metric"])
    sgd_cost = table[(table["metric"] == "step_cost_ratio") & (table["optimizer"] == "sgd")]
    assert (sgd_cost["value"] == 1.0).all()  # SGD against itself, round by round
    saved = json.loads((run.dir / "results.json").read_text())
    assert [c["id"] for c in saved["claims"]] == list(CLAIMS)
    for claim in saved["claims"]:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for stem in ("sharpness_bars", "spectral_density", "cost_vs_accuracy"):
        for suffix in (".png", ".pdf"):
            assert (run.figures_dir / f"{stem}{suffix}").stat().st_size > 0


def test_claims_are_recomputed_from_the_saved_table(smoke):
    assert_saved_claims_recompute(smoke[1], CLAIMS)


def _scaled(table: pd.DataFrame, optimizer: str, metric: str, factor: float) -> pd.DataFrame:
    """``table`` with ``optimizer``'s final ``metric`` set to ``factor`` times SGD's."""
    out = table.copy()
    final = out["step"] == out.loc[out["metric"] == metric, "step"].max()
    sgd = out[final & (out["metric"] == metric) & (out["optimizer"] == "sgd")]
    target = final & (out["metric"] == metric) & (out["optimizer"] == optimizer)
    out.loc[target, "value"] = out.loc[target, "seed"].map(sgd.set_index("seed")["value"]) * factor
    return out


@pytest.mark.parametrize("optimizer", ["sam", "saf"])
@pytest.mark.parametrize(
    ("metric", "claim"),
    [
        ("lambda_max", "flatter-lambda-max"),
        ("trace", "flatter-trace"),
        ("ascent_sharpness", "lower-ascent-sharpness"),
    ],
)
def test_sharpness_verdicts_follow_the_data(smoke, optimizer, metric, claim):
    table = smoke[1].table
    claim = CLAIMS[f"{optimizer}-{claim}"]
    flatter = evaluate_claim(claim, _scaled(table, optimizer, metric, 0.5))
    sharper = evaluate_claim(claim, _scaled(table, optimizer, metric, 2.0))
    assert flatter.verdict == "reproduced" and flatter.mean == pytest.approx(-50.0)
    assert sharper.verdict == "not reproduced" and sharper.mean == pytest.approx(100.0)


def test_cost_verdicts_follow_the_data(smoke):
    table = smoke[1].table
    sam, saf = CLAIMS["sam-costs-about-2x"], CLAIMS["saf-costs-about-1x"]
    assert evaluate_claim(sam, _scaled(table, "sam", "step_cost_ratio", 2.0)).verdict == (
        "reproduced"
    )
    assert evaluate_claim(sam, _scaled(table, "sam", "step_cost_ratio", 3.0)).verdict == (
        "not reproduced"
    )
    assert evaluate_claim(saf, _scaled(table, "saf", "step_cost_ratio", 1.02)).verdict == (
        "reproduced"
    )
    assert evaluate_claim(saf, _scaled(table, "saf", "step_cost_ratio", 1.5)).verdict == (
        "not reproduced"
    )


def test_claims_without_their_conditions_are_inconclusive(smoke):
    table = smoke[1].table
    without = table[~table["optimizer"].isin(["sam", "saf"])]
    for result in evaluate_claims(experiment.CLAIMS, without):
        assert result.verdict == "inconclusive" and result.n_seeds == 0


def test_sam_at_rho_zero_and_saf_at_weight_zero_are_sgd_and_reproduce_nothing(tmp_path):
    """Broken conditions: SAM with rho = 0 and SAF with lambda = 0 train exactly as SGD."""
    overrides = ("rho=0.0", "saf_weight=0.0", "optimizers=sgd,sam,saf")
    table = smoke_rows("sharpness", overrides, tmp_path)
    by_claim = {r.id: r for r in evaluate_claims(experiment.CLAIMS, table)}
    for claim in [*SHARPNESS_CLAIMS, "sam-more-accurate", "saf-more-accurate"]:
        result = by_claim[claim]
        assert result.n_seeds == 3
        assert set(result.per_seed.values()) == {0.0}, claim  # identical final models
        assert result.verdict == "not reproduced", claim


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizers": ("sam", "saf")}, "must include 'sgd'"),
        ({"optimizers": ("sgd", "adamw")}, "optimizers entry must be one of"),
        ({"optimizers": ("sgd", "sgd")}, "duplicates"),
        ({"optimizer": "sam"}, "set per condition"),
        ({"saf_lag": 0}, "saf_lag"),
    ],
)
def test_config_rejects_inconsistent_conditions(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(experiment.smoke(), **changes)


def test_presets_train_long_enough_for_saf_and_mesa_to_act():
    for name, preset in experiment.PRESETS.items():
        config = preset()
        size = 50_000  # CIFAR-10's training set (the gpu preset needs --data-dir)
        if config.dataset == "digits":
            size = len(engine.training_set(load_dataset("digits"), config)[0])
        epochs = config.steps // (size // config.batch_size)
        assert epochs > config.saf_start_epoch + config.saf_lag, name
        assert epochs > config.mesa_start_epoch, name
