"""The ``views`` experiment: smoke run, claims computed from the data, config errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from experiment_runs import assert_saved_claims_recompute, doctored_probe, smoke_rows

from amcl_lab.experiments import (
    VERDICTS,
    Results,
    evaluate_claim,
    evaluate_claims,
    resolve_config,
    run_experiment,
)
from amcl_lab.experiments import views as experiment

CLAIMS = {c.id: c for c in experiment.CLAIMS}
MATCHES = [i for i in CLAIMS if i.endswith("match-two-views-full")]
# the two (views, fraction) conditions each claim compares: first - second
CELLS = {
    "more-views-at-fixed-compute": ((8, 1.0), (2, 1.0)),
    "two-views-lose-with-half-data": ((2, 1.0), (2, 0.5)),
    "two-views-lose-with-quarter-data": ((2, 1.0), (2, 0.25)),
    "four-views-half-data-match-two-views-full": ((4, 0.5), (2, 1.0)),
    "eight-views-quarter-data-match-two-views-full": ((8, 0.25), (2, 1.0)),
}


# the paper's picture, probe accuracy per (views, fraction); other conditions get 75 %
PAPER = {
    (2, 1.0): 0.80,
    (2, 0.5): 0.70,
    (2, 0.25): 0.60,
    (4, 0.5): 0.80,
    (8, 0.25): 0.80,
    (8, 0.5): 0.85,
    (8, 1.0): 0.90,
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("views", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_writes_every_condition_claims_and_figures(smoke):
    run, results = smoke
    config = experiment.smoke()
    table = results.table
    assert results.seeds == (0, 1, 2)
    cells = table[["seed", "views", "fraction"]].drop_duplicates()
    assert len(cells) == len(config.seed_list) * len(config.view_counts) * len(config.fractions)
    assert sorted(table["step"].unique()) == [0, config.steps]  # initialisation, last step
    assert {"linear_probe", "knn"} <= set(table["metric"])
    assert (table["rows"] == config.rows).all()  # the fixed compute of every condition
    assert set(CELLS) == set(CLAIMS)
    saved = json.loads((run.dir / "results.json").read_text())
    assert [c["id"] for c in saved["claims"]] == list(CLAIMS)
    for claim in saved["claims"]:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for stem in ("accuracy_vs_views", "accuracy_vs_fraction"):
        for suffix in (".png", ".pdf"):
            assert (run.figures_dir / f"{stem}{suffix}").stat().st_size > 0


def test_every_condition_keeps_the_compute_fixed():
    config = experiment.smoke()
    for m in config.view_counts:
        cell = experiment.condition(config, m, 0.5, seed=7)
        assert cell.views * cell.batch_size == config.rows
        assert (cell.train_fraction, cell.seed) == (0.5, 7)


def test_saved_claims_are_recomputed_from_the_saved_table(smoke):
    assert_saved_claims_recompute(smoke[1], CLAIMS)


def test_plot_redraws_from_the_saved_results(smoke, tmp_path):
    run, _ = smoke
    paths = experiment.plot(Results.load(run.dir), tmp_path)
    stems = {"accuracy_vs_views", "accuracy_vs_fraction"}
    assert {p.name for p in paths} == {f"{s}{x}" for s in stems for x in (".png", ".pdf")}
    assert all(p.stat().st_size > 0 for p in paths)


def _cell(table: pd.DataFrame, key: tuple[int, float]) -> pd.Series:
    """Rows of ``table`` with ``key = (views, fraction)``."""
    return (table["views"] == key[0]) & np.isclose(table["fraction"], key[1])


def _doctored(
    table: pd.DataFrame, final: dict[tuple[int, float], float], other: float, init: float = 0.1
) -> pd.DataFrame:
    """Probe accuracies: ``final[(views, fraction)]`` (or ``other``) at the end, ``init`` before."""
    return doctored_probe(table, final, _cell, other, init)


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_each_verdict_follows_the_conditions_it_compares(smoke, claim_id):
    """First condition better: reproduced; the two conditions swapped: not reproduced."""
    table = smoke[1].table
    claim = CLAIMS[claim_id]
    first, second = CELLS[claim_id]
    better = evaluate_claim(claim, _doctored(table, {first: 0.9, second: 0.6}, other=0.75))
    assert better.verdict == "reproduced"
    assert better.mean == pytest.approx(30.0, abs=1.0)
    swapped = evaluate_claim(claim, _doctored(table, {first: 0.6, second: 0.9}, other=0.75))
    assert swapped.verdict == "not reproduced"
    assert swapped.mean == pytest.approx(-30.0, abs=1.0)


def test_the_papers_picture_reproduces_every_claim(smoke):
    """Fractions hurt two views, more views make up for them and help on all the data."""
    results = evaluate_claims(experiment.CLAIMS, _doctored(smoke[1].table, PAPER, 0.75))
    assert {r.id: r.verdict for r in results} == dict.fromkeys(CLAIMS, "reproduced")


def test_data_that_cost_nothing_make_the_premises_fail_but_not_the_matches(smoke):
    """Every condition equal (and learned): the fractions cost nothing, so the premises are
    not reproduced; the matches hold, trivially, which the premises make visible."""
    flat = _doctored(smoke[1].table, {}, other=0.8)
    verdicts = {r.id: r.verdict for r in evaluate_claims(experiment.CLAIMS, flat)}
    for claim_id in ("two-views-lose-with-half-data", "two-views-lose-with-quarter-data"):
        assert verdicts[claim_id] != "reproduced"
    assert verdicts["more-views-at-fixed-compute"] != "reproduced"
    assert all(verdicts[m] == "reproduced" for m in MATCHES)


def test_probes_at_chance_reproduce_nothing(smoke):
    chance = _doctored(smoke[1].table, {}, other=0.1, init=0.1)
    results = {r.id: r for r in evaluate_claims(experiment.CLAIMS, chance)}
    assert all(r.verdict != "reproduced" for r in results.values())
    for claim_id in MATCHES:  # the two-view reference did not learn: no match to speak of
        assert results[claim_id].verdict == "inconclusive"
        assert all(map(math.isnan, results[claim_id].per_seed.values()))


def test_relabelled_conditions_change_the_verdicts(smoke):
    """The paper's picture with both axes reversed (2 <-> 8 views, 25 <-> 100 % of the data)."""
    table = _doctored(smoke[1].table, PAPER, 0.75)
    reverse = table.assign(
        views=table["views"].map({2: 8, 4: 4, 8: 2}),
        fraction=table["fraction"].map({0.25: 1.0, 0.5: 0.5, 1.0: 0.25}),
    )
    before = {r.id: r.verdict for r in evaluate_claims(experiment.CLAIMS, table)}
    after = {r.id: r for r in evaluate_claims(experiment.CLAIMS, reverse)}
    assert before == dict.fromkeys(CLAIMS, "reproduced")
    # two views now do better on 25 % (90) than on 50 % (85) and all (80) of the data, and
    # eight views on all of it (60) lose to them
    for claim_id in CELLS:
        if claim_id not in MATCHES:
            assert after[claim_id].verdict == "not reproduced", claim_id
    # the matches compare 80 with 80 either way
    for claim_id in MATCHES:
        assert after[claim_id].verdict == "reproduced"
        assert after[claim_id].mean == pytest.approx(0.0, abs=1.0)


def test_claims_without_their_conditions_are_inconclusive(smoke):
    table = smoke[1].table
    two_views = table[table["views"] == 2]
    by_id = {r.id: r for r in evaluate_claims(experiment.CLAIMS, two_views)}
    for claim_id in ("more-views-at-fixed-compute", *MATCHES):
        assert by_id[claim_id].verdict == "inconclusive" and by_id[claim_id].n_seeds == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"view_counts": (4, 8)}, "view_counts"),
        ({"view_counts": (1, 2)}, "view_counts"),
        ({"view_counts": (2, 3)}, "rows"),
        ({"rows": 8, "view_counts": (2, 8)}, "rows"),
        ({"fractions": (0.25, 0.5)}, "fractions"),
        ({"fractions": (0.0, 1.0)}, "fractions"),
        ({"fractions": (1.5, 1.0)}, "fractions"),
        ({"graph_images_per_class": 1}, "graph_images_per_class"),
        ({"seeds": 0}, "seeds"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(experiment.smoke(), **changes)


def test_presets_compare_the_papers_conditions():
    for name, preset in experiment.PRESETS.items():
        config = preset()
        assert {2, 4, 8} <= set(config.view_counts), name
        assert {0.25, 0.5, 1.0} <= set(config.fractions), name
        assert config.seeds >= 3, name


def test_views_trains_vicreg_with_the_same_beta_reading(tmp_path):
    config = resolve_config(experiment, "views", "smoke", ["framework=vicreg"])
    cell = experiment.condition(config, 4, 0.5, seed=0)
    inverse = 1 / config.beta
    assert cell.loss == "multiview_vicreg"
    assert cell.loss_options == (f"lambda_invariance={inverse!r}", f"mu_variance={inverse!r}")
    barlow = experiment.condition(experiment.smoke(), 4, 0.5, seed=0)
    assert barlow.loss_options == ("standardize=joint", "normalize=True", "lambda_offdiag=0.09375")
    table = smoke_rows("views", ["framework=vicreg"], tmp_path)
    assert {"linear_probe", "collapsed"} <= set(table["metric"])
