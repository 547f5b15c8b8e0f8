"""The ``projector`` experiment: smoke run, claims computed from the data, config errors."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from experiment_runs import assert_saved_claims_recompute, doctored_probe, smoke_rows

from amcl_lab.experiments import (
    VERDICTS,
    Results,
    _graph,
    evaluate_claim,
    evaluate_claims,
    resolve_config,
    run_experiment,
)
from amcl_lab.experiments import projector as experiment

CLAIMS = {c.id: c for c in experiment.CLAIMS}
MATCH = "small-projector-matches-large"
RESCUE = "orthogonality-rescues-small-projector"
FIXED = "fixed-beta-favours-large-projector"
# the two grid cells each claim compares, (d, beta) as "min"/"max" of the grid: first - second
CELLS = {
    MATCH: (("min", "max"), ("max", "min")),
    RESCUE: (("min", "max"), ("min", "min")),
    FIXED: (("max", "min"), ("min", "min")),
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("projector", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_writes_the_grid_claims_and_figures(smoke):
    run, results = smoke
    config = experiment.smoke()
    table = results.table
    assert results.seeds == (0, 1, 2)
    cells = table[["seed", "proj_dim", "beta"]].drop_duplicates()
    assert len(cells) == len(config.seed_list) * len(config.dims) * len(config.betas)
    assert sorted(table["proj_dim"].unique()) == sorted(config.dims)
    assert np.allclose(sorted(table["beta"].unique()), config.betas)
    # the grid's diagonal follows the rule beta = beta_times_dim / d
    rule = np.isclose(table["beta_times_dim"], config.beta_times_dim)
    assert set(table.loc[rule, "proj_dim"]) == set(config.dims)
    assert {"linear_probe", "knn", "embedding_rank"} <= set(table["metric"])
    assert sorted(table["step"].unique()) == [0, 5, 10]  # init, eval_every, last
    saved = json.loads((run.dir / "results.json").read_text())
    assert [c["id"] for c in saved["claims"]] == list(CLAIMS)
    for claim in saved["claims"]:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for suffix in (".png", ".pdf"):
        assert (run.figures_dir / f"projector_heatmap{suffix}").stat().st_size > 0


def test_saved_claims_are_recomputed_from_the_saved_table(smoke):
    assert_saved_claims_recompute(smoke[1], CLAIMS)


def test_plot_redraws_from_the_saved_results(smoke, tmp_path):
    run, _ = smoke
    paths = experiment.plot(Results.load(run.dir), tmp_path)
    assert {p.name for p in paths} == {"projector_heatmap.png", "projector_heatmap.pdf"}
    assert all(p.stat().st_size > 0 for p in paths)


def _cell(table: pd.DataFrame, corner: tuple[str, str]) -> pd.Series:
    """Rows of ``table`` in the grid cell ``corner`` (each coordinate "min" or "max")."""
    dim = getattr(table["proj_dim"], corner[0])()
    beta = getattr(table["beta"], corner[1])()
    return (table["proj_dim"] == dim) & np.isclose(table["beta"], beta)


def _doctored(
    table: pd.DataFrame, final: dict[tuple[str, str], float], other: float, init: float = 0.1
) -> pd.DataFrame:
    """Probe accuracies: ``final[cell]`` (or ``other``) at the end, ``init`` before."""
    return doctored_probe(table, final, _cell, other, init)


@pytest.mark.parametrize("claim_id", list(CLAIMS))
def test_each_verdict_follows_the_cells_it_compares(smoke, claim_id):
    """First cell better: reproduced; the two cells swapped: not reproduced."""
    table = smoke[1].table
    claim = CLAIMS[claim_id]
    first, second = CELLS[claim_id]
    better = evaluate_claim(claim, _doctored(table, {first: 0.9, second: 0.6}, other=0.75))
    assert better.verdict == "reproduced"
    assert better.mean == pytest.approx(30.0, abs=2.0)
    swapped = evaluate_claim(claim, _doctored(table, {first: 0.6, second: 0.9}, other=0.75))
    assert swapped.verdict == "not reproduced"
    assert swapped.mean == pytest.approx(-30.0, abs=2.0)


def test_the_papers_picture_reproduces_every_claim_and_its_reverse_none(smoke):
    """Small d collapses at weak beta and recovers at strong beta: every claim.  Reversed
    (strong beta hurts the small projector), none."""
    table = smoke[1].table
    paper = {("min", "min"): 0.5, ("min", "max"): 0.9, ("max", "min"): 0.9}
    results = evaluate_claims(experiment.CLAIMS, _doctored(table, paper, 0.85))
    assert {r.id: r.verdict for r in results} == dict.fromkeys(CLAIMS, "reproduced")
    reverse = {("min", "min"): 0.9, ("min", "max"): 0.5, ("max", "min"): 0.9}
    for result in evaluate_claims(experiment.CLAIMS, _doctored(table, reverse, 0.85)):
        assert result.verdict != "reproduced", result.id


def test_probes_at_chance_reproduce_nothing(smoke):
    """Every condition at chance: two probes at chance "match" only trivially."""
    chance = _doctored(smoke[1].table, {}, other=0.1, init=0.1)
    results = {r.id: r for r in evaluate_claims(experiment.CLAIMS, chance)}
    assert all(r.verdict != "reproduced" for r in results.values())
    match = results[MATCH]
    assert match.verdict == "inconclusive" and all(map(math.isnan, match.per_seed.values()))


def test_matching_a_reference_that_did_not_learn_is_inconclusive(smoke):
    """The large projector stays at its initial accuracy: the match is undefined."""
    table = smoke[1].table
    small, large = CELLS[MATCH]
    flat = _doctored(table, {small: 0.3, large: 0.3}, other=0.3, init=0.3)
    assert evaluate_claim(CLAIMS[MATCH], flat).verdict == "inconclusive"
    learned = _doctored(table, {small: 0.3, large: 0.3}, other=0.3, init=0.1)
    assert evaluate_claim(CLAIMS[MATCH], learned).verdict == "reproduced"


def test_claims_on_a_grid_with_one_dimension_are_inconclusive(smoke):
    """No second d (or beta) to compare with: no effect, not a comparison of a cell with itself."""
    table = smoke[1].table
    for column in ("proj_dim", "beta"):
        one = table[np.isclose(table[column], table[column].min())]
        for result in evaluate_claims(experiment.CLAIMS, one):
            assert result.verdict == "inconclusive" and result.n_seeds == 0, result.id


def test_graph_split_probes_the_points_of_unseen_images_with_their_class():
    config = experiment.smoke()
    graph, split = _graph.graph_split(config, seed=0)
    m, per_image = graph.num_augmentations, config.graph_augmentations_per_image

    def points(data):  # the one-hot code of each probe "image"
        return data.images.reshape(len(data), m).argmax(dim=1)

    train, test = points(split.train), points(split.test)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(m))  # each point once
    for part, pts, parity in ((split.train, train, 0), (split.test, test, 1)):
        owner = pts // per_image
        assert ((owner % config.graph_images_per_class) % 2 == parity).all()
        assert torch.equal(part.labels, graph.labels[owner])


def test_a_data_fraction_that_misses_augmented_points_is_a_clear_error():
    """With no class overlap, a small subset of one class never reaches its class's points."""
    config = dataclasses.replace(
        experiment.smoke(), graph_overlap=0.0, train_fraction=0.25, seed=2, steps=1
    )
    with pytest.raises(ValueError, match="graph_overlap"):
        _graph.train_on_graph(config)
    _graph.train_on_graph(dataclasses.replace(config, train_fraction=1.0))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dims": (32,)}, "dims"),
        ({"dims": (32, 32)}, "dims"),
        ({"dims": (0, 32)}, "dims"),
        ({"beta_times_dim": 0.0}, "beta_times_dim"),
        ({"beta_times_dim": -1.0}, "beta_times_dim"),
        ({"loss": "info_nce"}, "loss"),
        ({"graph_images_per_class": 1}, "graph_images_per_class"),
        ({"graph_classes": 0}, "graph_classes"),
        ({"graph_overlap": -0.1}, "graph_overlap"),
        ({"seeds": 0}, "seeds"),
    ],
)
def test_config_errors_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(experiment.smoke(), **changes)


def test_a_grid_condition_refuses_a_fixed_orthogonality_weight():
    config = dataclasses.replace(experiment.smoke(), loss_options=("lambda_offdiag=0.01",))
    with pytest.raises(ValueError, match="loss_options"):
        experiment.condition(config, 8, 0.1, seed=0)


def test_presets_sweep_beta_as_one_over_d():
    for name, preset in experiment.PRESETS.items():
        config = preset()
        assert len(config.dims) >= 2 and len(config.betas) == len(set(config.dims)), name
        assert config.seeds >= 3, name
        small, large = min(config.dims), max(config.dims)
        assert config.beta_times_dim / small == max(config.betas), name
        assert config.beta_times_dim / large == min(config.betas), name


@pytest.mark.parametrize("framework", ["vicreg", "kernel"])
def test_other_frameworks_sweep_their_own_orthogonality_weight(tmp_path, framework):
    config = resolve_config(experiment, "projector", "smoke", [f"framework={framework}"])
    cell = experiment.condition(config, 8, 0.25, seed=1)
    expected = {
        "vicreg": ("multiview_vicreg", ("lambda_invariance=4.0", "mu_variance=4.0")),
        "kernel": ("invariance_orthogonality", ("beta=0.25",)),
    }[framework]
    assert (cell.loss, cell.loss_options) == expected
    table = smoke_rows("projector", [f"framework={framework}"], tmp_path)
    assert {"linear_probe", "embedding_rank", "collapsed"} <= set(table["metric"])
    for claim in experiment.CLAIMS:
        assert evaluate_claim(claim, table).n_seeds in (0, 3)
