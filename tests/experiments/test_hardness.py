"""The hardness experiment: smoke run, the all-negatives control, claims computed from data."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from experiment_runs import smoke_rows

from amcl_lab import engine, metrics
from amcl_lab.experiments import VERDICTS, evaluate_claim, load, run_experiment

hardness = load("hardness")
CLAIMS = {c.id: c for c in hardness.CLAIMS}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("hardness", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_writes_rows_claims_and_figures(smoke):
    run, results = smoke
    table = results.table
    config = hardness.smoke()
    assert set(table["loss"]) == {"nt_xent", "hard_contrastive"}
    assert sorted(table["temperature"].unique()) == list(config.grid)
    hard = table[table["loss"] == "hard_contrastive"]
    assert set(hard["hard_k"]) == {hardness.hard_k(config)}
    shares = table[table["metric"] == "weight_share"]
    assert set(shares["loss"]) == {"nt_xent"}  # weights are measured on the ordinary loss
    assert set(shares["rank"]) == set(config.weight_ranks)
    assert {c["id"] for c in results.claims} == set(CLAIMS)
    for claim in results.claims:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    for stem in ("negative_weights", "uniformity_vs_tau"):
        assert (run.figures_dir / f"{stem}.png").stat().st_size > 0


def test_all_negatives_make_the_hard_loss_nt_xent_and_break_the_hard_claims(tmp_path):
    """The broken condition: alpha = 1 keeps every negative, so both losses train alike."""
    table = smoke_rows("hardness", ("hard_fraction=1.0", "steps=3"), tmp_path)
    unif = table[table["metric"] == "uniformity"].set_index(["seed", "temperature", "step"])
    by_loss = {loss: t["value"].sort_index() for loss, t in unif.groupby("loss")}
    assert by_loss["hard_contrastive"].equals(by_loss["nt_xent"])  # bit for bit
    for claim_id in ("hard-loss-flattens-uniformity", "hard-loss-uniform-at-large-tau"):
        result = evaluate_claim(CLAIMS[claim_id], table)
        assert result.per_seed == {"0": 0.0, "1": 0.0, "2": 0.0}
        assert result.verdict == "not reproduced"


def test_claims_react_to_doctored_smoke_results(smoke):
    """Each measure reads the table: reversing tau or swapping the losses negates the effect."""
    table = smoke[1].table
    effects = {c.id: evaluate_claim(c, table).per_seed for c in hardness.CLAIMS}
    for values in effects.values():
        assert len(values) == 3 and all(math.isfinite(x) for x in values.values())
    grid = sorted(table["temperature"].unique())
    reversed_tau = table.assign(
        temperature=table["temperature"].map(dict(zip(grid, grid[::-1], strict=True)))
    )
    doctored = evaluate_claim(CLAIMS["weights-concentrate-as-tau-falls"], reversed_tau)
    assert doctored.per_seed == pytest.approx(
        {s: -x for s, x in effects["weights-concentrate-as-tau-falls"].items()}
    )
    swapped = table.replace(
        {"loss": {"nt_xent": "hard_contrastive", "hard_contrastive": "nt_xent"}}
    )
    for claim_id in ("hard-loss-flattens-uniformity", "hard-loss-uniform-at-large-tau"):
        doctored = evaluate_claim(CLAIMS[claim_id], swapped)
        assert doctored.per_seed == pytest.approx({s: -x for s, x in effects[claim_id].items()})
    # the paper's pattern written into the real table's uniformity rows is reproduced
    unif = table["metric"] == "uniformity"
    final = unif & (table["step"] == table["step"].max())
    paper = table.copy()
    tau = paper.loc[final, "temperature"]
    hard = paper["loss"] == "hard_contrastive"
    paper.loc[final & ~hard, "value"] = -3.9 + 0.9 * (tau - tau.min()) + 0.01 * paper["seed"]
    paper.loc[final & hard, "value"] = -3.9 + 0.01 * paper["seed"]
    for claim_id in ("hard-loss-flattens-uniformity", "hard-loss-uniform-at-large-tau"):
        assert evaluate_claim(CLAIMS[claim_id], paper).verdict == "reproduced", claim_id


def _rows(metric: str, loss: str, values: dict[int, list[float]], grid=(0.1, 0.3, 1.0)):
    return [
        {"seed": s, "temperature": t, "step": 5, "loss": loss, "metric": metric, "value": x}
        for s, xs in values.items()
        for t, x in zip(grid, xs, strict=True)
    ]


def test_entropy_claim_follows_the_measured_entropies():
    claim = CLAIMS["weights-concentrate-as-tau-falls"]
    rising = {0: [4.1, 5.9, 7.2], 1: [4.3, 5.5, 7.0], 2: [3.9, 6.1, 7.3]}
    table = pd.DataFrame(_rows("weight_entropy", "nt_xent", rising))
    assert evaluate_claim(claim, table).verdict == "reproduced"
    falling = {s: xs[::-1] for s, xs in rising.items()}
    table = pd.DataFrame(_rows("weight_entropy", "nt_xent", falling))
    assert evaluate_claim(claim, table).verdict == "not reproduced"
    # the hard loss's rows are not the ordinary loss's: they alone give no verdict
    table = pd.DataFrame(_rows("weight_entropy", "hard_contrastive", rising))
    assert evaluate_claim(claim, table).verdict == "inconclusive"


def test_uniformity_claims_compare_the_hard_loss_with_the_ordinary_one():
    """Table 1's pattern reproduces; swapping the losses' roles does not."""
    ordinary = {0: [-3.8, -3.3, -2.9], 1: [-3.7, -3.2, -3.0], 2: [-3.9, -3.4, -2.8]}
    hard = {0: [-3.8, -3.8, -3.7], 1: [-3.9, -3.8, -3.8], 2: [-3.8, -3.9, -3.8]}
    table = pd.DataFrame(
        _rows("uniformity", "nt_xent", ordinary) + _rows("uniformity", "hard_contrastive", hard)
    )
    gap = evaluate_claim(CLAIMS["hard-loss-uniform-at-large-tau"], table)
    assert gap.per_seed == pytest.approx({"0": 0.8, "1": 0.8, "2": 1.0})
    assert gap.verdict == "reproduced"
    assert evaluate_claim(CLAIMS["hard-loss-flattens-uniformity"], table).verdict == "reproduced"
    swapped = pd.DataFrame(
        _rows("uniformity", "hard_contrastive", ordinary) + _rows("uniformity", "nt_xent", hard)
    )
    for claim in CLAIMS.values():
        if claim.id.startswith("hard-loss"):
            assert evaluate_claim(claim, swapped).verdict == "not reproduced"


def test_hard_k_is_alpha_times_the_in_batch_negatives():
    assert hardness.hard_k(hardness.cpu()) == round(0.0819 * (2 * 512 - 2)) == 84
    assert hardness.hard_k(hardness.Config(batch_size=8, hard_fraction=0.01)) == 1
    assert hardness.hard_k(hardness.Config(hard_fraction=1.0)) is None
    with pytest.raises(ValueError, match=r"hard_fraction must be in \(0, 1\]"):
        hardness.Config(hard_fraction=0.0)


def test_weights_hook_summarises_metrics_negative_weights():
    gen = torch.Generator().manual_seed(0)
    pair = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64)
    held = engine.HeldOut(pair[0], pair[0], torch.zeros(6, dtype=torch.int64), lambda: pair)
    out = hardness.weights_hook(0.2, (1, 4, 10, 64))(held)
    w = metrics.negative_weights(pair[0], pair[1], 0.2)
    assert out["weight_negatives"] == 10.0
    assert out["weight_entropy"] == pytest.approx(float(w.entropy.mean()))
    assert out["weight_effective_number"] == pytest.approx(float(w.effective_number.mean()))
    assert out["weight_share@1"] == pytest.approx(float(w.weights.max(dim=1).values.mean()))
    assert out["weight_share@1"] <= out["weight_share@4"] <= out["weight_share@10"]
    assert out["weight_share@10"] == pytest.approx(1.0)
    assert "weight_share@64" not in out  # more than the 10 negatives there are
    assert out["weight_entropy"] <= math.log(10)
