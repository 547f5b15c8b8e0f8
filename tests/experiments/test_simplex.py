"""The simplex experiment: smoke run, the shuffled-label control, claims computed from data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from experiment_runs import smoke_rows

from amcl_lab.experiments import VERDICTS, evaluate_claim, load, resolve_config, run_experiment

simplex = load("simplex")
CLAIMS = {c.id: c for c in simplex.CLAIMS}
GEOMETRY = ("supcon-simplex", "supcon-collapse", "ce-simplex", "ce-collapse")
FIT = ("supcon-fit-superlinear", "ce-fit-about-linear", "supcon-fits-slower-with-noise")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("simplex", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_writes_geometry_fit_steps_claims_and_figures(smoke):
    run, results = smoke
    table = results.table
    config = simplex.smoke()
    assert set(table["loss"]) == {"supcon", "ce"}
    assert sorted(table["label_noise"].unique()) == list(config.noise_levels)
    wanted = {"simplex_distance", "nc1", "sample_cosine", "train_accuracy", "fit_step"}
    assert wanted <= set(table["metric"])
    fits = table[table["metric"] == "fit_step"]
    assert len(fits) == 2 * len(config.noise_levels) * 3
    geometry = table[table["geometry"].astype(bool)]
    assert set(geometry["label_noise"]) == {0.0}
    # SupCon has no classifier: its training accuracy is the nearest-class-mean head's
    accuracy = table[(table["metric"] == "train_accuracy") & (table["loss"] == "supcon")]
    assert accuracy["value"].between(0.0, 1.0).all() and len(accuracy) > 0
    assert {c["id"] for c in results.claims} == set(CLAIMS)
    for claim in results.claims:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for stem in ("geometry_over_training", "fit_vs_noise"):
        assert (run.figures_dir / f"{stem}.png").stat().st_size > 0


def test_shuffled_labels_never_reproduce_the_geometry_claims(smoke, tmp_path):
    """The control: labels independent of the images (90 % of ten classes flipped).

    Same seeds and steps as the clean smoke run, which collapses the classes measurably
    (CE's collapse is reproduced there): the control must not, and every geometry effect
    must be worse (larger) than with the clean labels.
    """
    overrides = ("label_noise=0.9", "noise_levels=0,0.5,0.9")
    table = smoke_rows("simplex", overrides, tmp_path)
    assert set(table[table["geometry"].astype(bool)]["label_noise"]) == {0.9}
    clean = smoke[1].table
    assert evaluate_claim(CLAIMS["ce-collapse"], clean).verdict == "reproduced"
    for claim_id in GEOMETRY:
        result = evaluate_claim(CLAIMS[claim_id], table)
        assert result.n_seeds == 3 and result.verdict != "reproduced", (claim_id, result)
        assert result.mean > evaluate_claim(CLAIMS[claim_id], clean).mean, claim_id


def test_fit_step_is_the_first_evaluation_at_the_accuracy():
    history = [{"step": 0, "train_accuracy": 0.1}, {"step": 25}, {"step": 50}]
    history[1]["train_accuracy"], history[2]["train_accuracy"] = 0.995, 1.0
    assert simplex.fit_step(history, 0.99) == 25.0
    assert simplex.fit_step(history, 1.0) == 50.0
    assert math.isnan(simplex.fit_step(history[:1], 0.99))


def _sweep(exponents: dict[str, float], levels=(0.0, 0.2, 0.4, 0.6, 0.8), jitter=0.03):
    """Fit steps T(p) = 40 + 900 p^k per loss, with seed-dependent multiplicative jitter."""
    rows = []
    for loss, k in exponents.items():
        for seed in range(3):
            for p in levels:
                t = 40.0 + 900.0 * p**k * (1.0 + jitter * (seed - 1) * (p - 0.5))
                rows.append(
                    {
                        "loss": loss,
                        "label_noise": p,
                        "sweep": True,
                        "geometry": p == 0.0,
                        "seed": seed,
                        "step": 1000,
                        "metric": "fit_step",
                        "value": t,
                    }
                )
    return pd.DataFrame(rows)


def test_fit_exponents_recover_the_power_law():
    table = _sweep({"supcon": 1.7, "ce": 1.0}, jitter=0.0)
    for loss, k in (("supcon", 1.7), ("ce", 1.0)):
        for fitted, c, t0 in simplex.fit_exponents(table, loss).values():
            assert (fitted, c, t0) == pytest.approx((k, 900.0, 40.0))


def test_fit_claims_follow_the_sweep():
    paper_like = _sweep({"supcon": 1.7, "ce": 1.0})
    verdicts = {c: evaluate_claim(CLAIMS[c], paper_like).verdict for c in FIT}
    assert set(verdicts.values()) == {"reproduced"}
    # CE superlinear, SupCon sublinear: nothing holds
    reversed_ = _sweep({"supcon": 0.5, "ce": 1.7})
    verdicts = {c: evaluate_claim(CLAIMS[c], reversed_).verdict for c in FIT}
    assert verdicts == dict.fromkeys(FIT, "not reproduced")
    # a level that never fitted leaves that seed without an exponent
    censored = paper_like.copy()
    censored.loc[(censored["seed"] == 0) & (censored["label_noise"] == 0.8), "value"] = np.nan
    result = evaluate_claim(CLAIMS["supcon-fit-superlinear"], censored)
    assert result.verdict == "inconclusive" and math.isnan(result.per_seed["0"])


def _geometry(distance: dict[str, tuple[float, float]], nc1: dict[str, tuple[float, float]]):
    """Geometry rows at the first and last step: metric values (initial, final) per loss."""
    rows = []
    for metric, values in (("simplex_distance", distance), ("nc1", nc1)):
        for loss, (first, last) in values.items():
            for seed in range(3):
                wobble = 1.0 + 0.02 * (seed - 1)
                for step, value in ((0, first), (500, last * wobble)):
                    rows.append(
                        {
                            "loss": loss,
                            "geometry": True,
                            "sweep": True,
                            "label_noise": 0.0,
                            "seed": seed,
                            "step": step,
                            "metric": metric,
                            "value": value,
                        }
                    )
    return pd.DataFrame(rows)


def test_geometry_claims_need_a_simplex_and_a_collapse():
    converged = _geometry(
        {"supcon": (0.6, 0.08), "ce": (0.6, 0.12)}, {"supcon": (1.4, 0.05), "ce": (0.9, 0.1)}
    )
    assert {evaluate_claim(CLAIMS[c], converged).verdict for c in GEOMETRY} == {"reproduced"}
    # what shuffled labels do: the distance drifts down to that of random means, nc1 grows
    shuffled = _geometry(
        {"supcon": (0.6, 0.75), "ce": (0.6, 0.41)}, {"supcon": (1.4, 18.0), "ce": (0.9, 1.1)}
    )
    assert {evaluate_claim(CLAIMS[c], shuffled).verdict for c in GEOMETRY} == {"not reproduced"}
    result = evaluate_claim(CLAIMS["ce-collapse"], converged)
    assert result.per_seed["1"] == pytest.approx(math.log10(0.1 / 0.9))


def test_config_validates_the_sweep():
    assert simplex.cpu().levels == (0.0, 0.2, 0.4, 0.6, 0.8)
    assert resolve_config(simplex, "simplex", "cpu", ["label_noise=0.9"]).levels[-1] == 0.9
    for bad in ("noise_levels=0.2,0.4,0.6", "noise_levels=0,0.5", "noise_levels=0,0.6,0.4"):
        with pytest.raises(ValueError, match="noise_levels must be increasing"):
            resolve_config(simplex, "simplex", "cpu", [bad])
    with pytest.raises(ValueError, match="needs supervised=true and a SupCon loss"):
        resolve_config(simplex, "simplex", "cpu", ["loss=ce", "proj_dim=0"])
    with pytest.raises(ValueError, match="fit_accuracy must be in"):
        resolve_config(simplex, "simplex", "cpu", ["fit_accuracy=0"])
    ce = simplex.condition(simplex.cpu(), "ce", 0.4, 3)
    assert (ce.loss, ce.proj_dim, ce.views, ce.label_noise, ce.seed) == ("ce", 0, 1, 0.4, 3)
