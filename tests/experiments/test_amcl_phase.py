"""The AMCL phase map: every cell trains, claims come from the table, collapse is a failed
setup, and clipping's effect is measured from the collapse flags."""

from __future__ import annotations

import pandas as pd
import pytest
from experiment_runs import assert_saved_claims_recompute

from amcl_lab.experiments import VERDICTS, evaluate_claim, load, resolve_config, run_experiment

phase = load("amcl_phase")
CLAIMS = {c.id: c for c in phase.CLAIMS}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("amcl_phase", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_trains_every_cell_and_both_baselines(smoke):
    run, results = smoke
    table = results.table
    config = phase.smoke()
    cells = table[table["method"] == "amcl"].groupby(["mode", "beta", "clip", "heads"]).ngroups
    assert cells == len(config.cells) == 4
    baselines = table[table["method"] == "baseline"]
    assert sorted(baselines["clip"].unique()) == [0.0, 1.0]
    assert {"collapsed", "tau_at_bound", "grad_norm_peak", "linear_probe"} <= set(table["metric"])
    assert {c["id"] for c in results.claims} == set(CLAIMS)
    for claim in results.claims:
        assert claim["verdict"] in VERDICTS
    assert_saved_claims_recompute(results, CLAIMS)
    assert (run.figures_dir / "phase_map.png").stat().st_size > 0


def test_cells_carry_their_form_beta_clip_and_heads():
    config = phase.cpu()
    assert len(config.cells) == 4 * 3 * 2 * 2
    cell = phase.cell_config(config, "topk", 1e-2, 1.0, 3, seed=4)
    assert cell.loss == "amcl_nt_xent" and cell.heads == 3 and cell.grad_clip == 1.0
    assert cell.loss_options == ("mode='topk'", "k=25", "beta=0.01") and cell.seed == 4
    soft = phase.cell_config(config, "softmax", 1e-4, 0.0, 1)
    assert soft.loss_options == ("mode='softmax'", "beta=0.0001") and soft.grad_clip == 0.0
    with pytest.raises(ValueError, match="betas must not be empty"):
        resolve_config(phase, "amcl_phase", "cpu", ["betas="])


def _table(gains: dict[str, float], collapsed: dict[tuple[str, float], float]) -> pd.DataFrame:
    """Final rows of a map with 3 seeds: probe = 0.9 + gain of the mode (points / 100);
    ``collapsed[(mode, clip)]`` is the flag of every cell of that mode and clip."""
    rows = []
    for seed in range(3):
        for clip in (0.0, 1.0):
            cell = {"seed": seed, "step": 10, "method": "baseline", "mode": "none", "beta": 0.0}
            cell |= {"clip": clip, "heads": 1}
            rows += [{**cell, "metric": "linear_probe", "value": 0.9}]
            rows += [{**cell, "metric": "collapsed", "value": 0.0}]
            for mode, gain in gains.items():
                for beta in (1e-4, 1e-2):
                    arm = {**cell, "method": "amcl", "mode": mode, "beta": beta, "heads": 3}
                    probe = 0.9 + (gain + 0.1 * seed) / 100
                    rows += [{**arm, "metric": "linear_probe", "value": probe}]
                    rows += [{**arm, "metric": "collapsed", "value": collapsed[(mode, clip)]}]
    return pd.DataFrame(rows)


def test_form_claims_compare_the_release_cell_with_the_clipped_baseline():
    forms = {"max": 2.0, "topk": -3.0, "softmax": 1.5, "nt_xent": 0.5}
    healthy = {(m, c): 0.0 for m in forms for c in (0.0, 1.0)}
    table = _table(forms, healthy)
    result = evaluate_claim(CLAIMS["max-form-beats-baseline"], table)
    assert result.per_seed == pytest.approx({"0": 2.0, "1": 2.1, "2": 2.2})
    assert result.verdict == "reproduced"
    assert evaluate_claim(CLAIMS["topk-form-beats-baseline"], table).verdict == "not reproduced"
    # the max cells collapse: their gain is no evidence about the paper
    failed = _table(forms, {**healthy, ("max", 1.0): 1.0})
    max_claim = evaluate_claim(CLAIMS["max-form-beats-baseline"], failed)
    assert max_claim.verdict == "setup failed (collapsed)"
    soft = evaluate_claim(CLAIMS["softmax-form-beats-baseline"], failed)
    assert soft.verdict == "reproduced"  # another form's collapse is not this one's


def test_clipping_claim_counts_collapsed_cells_without_and_with_clipping():
    forms = {"max": 0.0, "topk": 0.0, "softmax": 0.0, "nt_xent": 0.0}
    flags = {(m, 0.0): 1.0 for m in forms} | {(m, 1.0): 0.0 for m in forms}
    flags[("max", 1.0)] = 1.0  # max collapses with clipping too
    result = evaluate_claim(CLAIMS["clipping-prevents-collapse"], _table(forms, flags))
    assert result.per_seed == pytest.approx({"0": 75.0, "1": 75.0, "2": 75.0})
    assert result.verdict == "reproduced"
    same = {(m, c): 1.0 for m in forms for c in (0.0, 1.0)}
    assert evaluate_claim(CLAIMS["clipping-prevents-collapse"], _table(forms, same)).verdict == (
        "not reproduced"
    )
