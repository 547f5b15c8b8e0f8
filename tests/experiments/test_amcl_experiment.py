"""The AMCL experiment: smoke runs of every framework, the identical-arms control, overlap,
the controls, collapse verdicts and claims from data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from experiment_runs import assert_saved_claims_recompute, smoke_rows
from scipy import stats

from amcl_lab.experiments import VERDICTS, evaluate_claim, load, resolve_config, run_experiment
from amcl_lab.experiments._amcl import arm_config

amcl = load("amcl")
CLAIMS = {c.id: c for c in amcl.CLAIMS}
ADVANTAGE = ("amcl-separates-better", "advantage-grows-with-augmentation", "amcl-probe-gain")
CONTROLS = (
    "amcl-beats-temperature-matched",
    "amcl-beats-scalar-temperature",
    "amcl-beats-temperature-matched-knn",
    "amcl-beats-scalar-temperature-knn",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return run_experiment("amcl", preset="smoke", out=out, run_id="s", quiet=True)


def test_smoke_run_writes_histograms_claims_and_figures(smoke):
    run, results = smoke
    table = results.table
    config = amcl.smoke()
    assert set(table["method"]) == {"baseline", "amcl", "matched", "scalar"}
    controls = table[table["method"].isin(["matched", "scalar"])]
    assert set(controls["families"]) == {max(config.family_counts)}  # the richest set only
    assert sorted(table["augment"].unique()) == sorted(config.augment_sets)
    wanted = {"overlap", "auc", "linear_probe", "positive_fraction", "collapsed", "tau_median"}
    assert wanted <= set(table["metric"])
    for kind in ("positive", "negative"):  # every histogram is a distribution over the bins
        hist = table[table["metric"] == f"{kind}_fraction"]
        sums = hist.groupby(["method", "families", "seed"])["value"].sum()
        assert len(sums) == (2 * len(config.augment_sets) + 2) * 3
        np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-9)
        assert hist.groupby(["method", "families", "seed"]).size().eq(config.hist_bins).all()
    assert {c["id"] for c in results.claims} == set(CLAIMS)
    for claim in results.claims:
        assert claim["n_seeds"] == 3 and claim["verdict"] in VERDICTS
    assert_saved_claims_recompute(results, CLAIMS)
    for stem in ("similarity_histograms", "separation_vs_augmentation", "controls"):
        assert (run.figures_dir / f"{stem}.png").stat().st_size > 0


def test_the_matched_control_trains_at_the_amcl_arms_median_temperature(smoke):
    run, results = smoke
    table = results.table
    last = table[(table["step"] == table["step"].max()) & (table["metric"] == "tau_median")]
    learned = last[last["method"] == "amcl"].set_index(["families", "seed"])["value"]
    richest = max(amcl.smoke().family_counts)
    for seed in results.seeds:
        state = torch.load(run.checkpoint(f"matched-abcde-seed{seed}"), weights_only=True)
        config = state["config"]
        assert config["temperature"] == learned[(richest, seed)]
        assert (config["heads"], config["adaptive_temperature"]) == (1, False)


@pytest.mark.parametrize("framework", ["moco", "barlow_twins"])
def test_other_frameworks_run_their_losses(tmp_path, framework):
    table = smoke_rows("amcl", [f"framework={framework}"], tmp_path)
    losses = {"moco": {"moco", "amcl_moco"}, "barlow_twins": {"barlow_twins"}}[framework]
    assert set(table["framework"]) == {framework}
    methods = set(table["method"])
    # Barlow Twins' temperatures are over channel vectors: no median pair temperature
    assert methods == (
        {"baseline", "amcl", "scalar"} | ({"matched"} if framework == "moco" else set())
    )
    assert losses  # the arms' losses are the framework's (checked in the config test)
    for claim in amcl.CLAIMS:
        assert evaluate_claim(claim, table).verdict in VERDICTS


def test_identical_arms_show_no_advantage(smoke):
    """The control: an "AMCL" arm whose numbers are the baseline's must not be reported
    better (the smoke table with the AMCL rows replaced by relabelled baseline rows)."""
    table = smoke[1].table
    base = table[table["method"] == "baseline"]
    twin = base.assign(method="amcl")
    table = pd.concat([table[table["method"] != "amcl"], twin], ignore_index=True)
    table.loc[table["metric"] == "collapsed", "value"] = 0.0  # judge the effect, not the setup
    for claim_id in ADVANTAGE:
        result = evaluate_claim(CLAIMS[claim_id], table)
        assert result.per_seed == {"0": 0.0, "1": 0.0, "2": 0.0}, claim_id
        assert result.verdict == "not reproduced", claim_id


def test_a_collapsed_arm_is_a_failed_setup_not_a_refutation(smoke):
    table = smoke[1].table.copy()
    flags = table["metric"] == "collapsed"
    table.loc[flags, "value"] = 0.0
    healthy = {c.id: evaluate_claim(c, table).verdict for c in amcl.CLAIMS}
    assert "setup failed (collapsed)" not in healthy.values()
    last = flags & (table["step"] == table["step"].max())
    table.loc[last & (table["method"] == "amcl") & (table["seed"] == 1), "value"] = 1.0
    verdicts = {c.id: evaluate_claim(c, table).verdict for c in amcl.CLAIMS}
    for claim_id in (*ADVANTAGE, *CONTROLS):
        assert verdicts[claim_id] == "setup failed (collapsed)", claim_id
    assert verdicts["baseline-overlap-grows"] == healthy["baseline-overlap-grows"]


def test_overlap_and_auc_of_known_distributions():
    g = torch.Generator().manual_seed(0)
    same = torch.rand(4000, generator=g) * 2 - 1
    s = amcl.separation(same[:2000], same[2000:], 40)
    assert s["overlap"] > 0.9 and abs(s["auc"] - 0.5) < 0.03
    disjoint = amcl.separation(
        0.6 + 0.3 * torch.rand(500, generator=g), -torch.rand(900, generator=g), 40
    )
    assert disjoint["overlap"] == 0.0 and disjoint["auc"] == 1.0
    # unit normals d apart (scaled into [-1, 1]): overlap 2 Phi(-d/2), AUC Phi(d / sqrt 2)
    d, scale = 1.0, 0.1
    pos = scale * (torch.randn(200_000, generator=g, dtype=torch.float64) + d)
    neg = scale * torch.randn(200_000, generator=g, dtype=torch.float64)
    s = amcl.separation(pos, neg, 200)
    assert s["overlap"] == pytest.approx(2 * stats.norm.cdf(-d / 2), abs=0.01)
    assert s["auc"] == pytest.approx(stats.norm.cdf(d / math.sqrt(2)), abs=0.005)
    np.testing.assert_allclose([s["positive"].sum(), s["negative"].sum()], 1.0)
    # ties count one half; values outside [-1, 1] are clipped into the end bins
    tied = amcl.separation(torch.tensor([0.5, 1.5]), torch.tensor([0.5, -2.0]), 4)
    assert tied["auc"] == pytest.approx((0.5 + 1.0 + 1.0 + 1.0) / 4)


def _table(overlap: dict[str, dict[int, list[float]]], probe=None, families=(1, 3, 5)):
    """Final rows: ``overlap[method][seed]`` lists the overlap per number of families."""
    rows = []
    for method, seeds in overlap.items():
        for seed, values in seeds.items():
            for n, value in zip(families, values, strict=True):
                base = {"method": method, "families": n, "seed": seed, "step": 100}
                rows.append({**base, "metric": "overlap", "value": value})
                accuracy = (probe or {}).get(method, 0.9)
                rows.append({**base, "metric": "linear_probe", "value": accuracy})
                rows.append({**base, "metric": "knn", "value": accuracy - 0.05})
    return pd.DataFrame(rows)


def _verdicts(table: pd.DataFrame) -> dict[str, str]:
    return {c.id: evaluate_claim(c, table).verdict for c in amcl.CLAIMS}


def test_claims_are_computed_from_the_overlaps():
    paper_like = _table(
        {
            "baseline": {0: [0.20, 0.30, 0.45], 1: [0.22, 0.31, 0.44], 2: [0.21, 0.29, 0.46]},
            "amcl": {0: [0.15, 0.18, 0.20], 1: [0.16, 0.17, 0.21], 2: [0.14, 0.19, 0.19]},
        },
        probe={"baseline": 0.90, "amcl": 0.92},
    )
    verdicts = _verdicts(paper_like)
    assert {verdicts[c] for c in CONTROLS} == {"inconclusive"}  # no control arms trained
    assert {v for c, v in verdicts.items() if c not in CONTROLS} == {"reproduced"}
    result = evaluate_claim(CLAIMS["amcl-separates-better"], paper_like)
    assert result.per_seed == pytest.approx({"0": 25.0, "1": 23.0, "2": 27.0})
    # the same numbers with the arms swapped reverse every comparison
    swapped = paper_like.replace({"method": {"baseline": "amcl", "amcl": "baseline"}})
    verdicts = _verdicts(swapped)
    assert all(verdicts[c] == "not reproduced" for c in ADVANTAGE)
    assert verdicts["baseline-overlap-grows"] == "reproduced"  # AMCL's numbers also grow


def test_a_collapsed_amcl_is_not_a_growing_advantage():
    """Overlap 1 everywhere: the gap to the baseline shrinks, but there is no advantage."""
    collapsed = _table(
        {
            "baseline": {0: [0.20, 0.30, 0.45], 1: [0.22, 0.31, 0.44], 2: [0.21, 0.29, 0.46]},
            "amcl": {s: [1.0, 1.0, 1.0] for s in range(3)},
        }
    )
    verdicts = _verdicts(collapsed)
    assert verdicts["amcl-separates-better"] == "not reproduced"
    assert verdicts["advantage-grows-with-augmentation"] == "not reproduced"
    assert verdicts["baseline-overlap-grows"] == "reproduced"


def test_the_controls_compare_amcl_with_each_control_arm():
    overlaps = {s: [0.2, 0.3, 0.4] for s in range(3)}
    arms = {"baseline": overlaps, "amcl": overlaps, "matched": overlaps, "scalar": overlaps}
    probe = {"baseline": 0.90, "amcl": 0.93, "matched": 0.95, "scalar": 0.91}
    table = _table(arms, probe=probe)
    matched = evaluate_claim(CLAIMS["amcl-beats-temperature-matched"], table)
    assert matched.per_seed == pytest.approx({"0": -2.0, "1": -2.0, "2": -2.0})
    assert matched.verdict == "not reproduced"  # the temperature level explains the gain
    scalar = evaluate_claim(CLAIMS["amcl-beats-scalar-temperature"], table)
    assert scalar.per_seed == pytest.approx({"0": 2.0, "1": 2.0, "2": 2.0})


def test_an_advantage_that_does_not_grow_is_not_a_growing_advantage():
    """a, abc, abcde: AMCL better everywhere by a constant or shrinking margin."""
    baseline = {s: [0.25, 0.375, 0.5] for s in range(3)}
    constant = _table({"baseline": baseline, "amcl": {s: [0.125, 0.25, 0.375] for s in range(3)}})
    verdicts = _verdicts(constant)
    assert verdicts["amcl-separates-better"] == "reproduced"
    assert verdicts["advantage-grows-with-augmentation"] == "not reproduced"
    result = evaluate_claim(CLAIMS["advantage-grows-with-augmentation"], constant)
    assert result.per_seed == {"0": 0.0, "1": 0.0, "2": 0.0}
    shrinking = _table({"baseline": baseline, "amcl": {s: [0.0, 0.25, 0.4375] for s in range(3)}})
    result = evaluate_claim(CLAIMS["advantage-grows-with-augmentation"], shrinking)
    assert result.per_seed == pytest.approx({"0": -18.75, "1": -18.75, "2": -18.75})
    assert result.verdict == "not reproduced"
    assert _verdicts(shrinking)["amcl-separates-better"] == "reproduced"


def test_claims_react_to_doctored_smoke_results(smoke):
    """The measures read the real results table: swapping the arms negates the effects, and
    overlaps written into its rows give the verdicts their pattern implies."""
    table = smoke[1].table
    swapped = table.replace({"method": {"baseline": "amcl", "amcl": "baseline"}})
    for claim_id in ("amcl-separates-better", "amcl-probe-gain"):
        effect = evaluate_claim(CLAIMS[claim_id], table).per_seed
        assert len(effect) == 3
        doctored = evaluate_claim(CLAIMS[claim_id], swapped).per_seed
        assert doctored == pytest.approx({s: -x for s, x in effect.items()}), claim_id

    def with_overlaps(amcl_gap: float, gap_growth: float) -> pd.DataFrame:
        """Baseline overlap 0.25 + n / 16; AMCL's is lower by ``amcl_gap + growth * n``
        (and no run collapsed: three smoke steps leave every network at its random cone)."""
        t = table.copy()
        t.loc[t["metric"] == "collapsed", "value"] = 0.0
        n = t["families"]
        baseline = 0.25 + n / 16
        for method, value in (
            ("baseline", baseline),
            ("amcl", baseline - amcl_gap - gap_growth * n),
        ):
            rows = (t["metric"] == "overlap") & (t["method"] == method)
            t.loc[rows, "value"] = value[rows]
        return t

    growing = _verdicts(with_overlaps(0.0, 1 / 32))
    for claim_id in ("amcl-separates-better", "advantage-grows-with-augmentation"):
        assert growing[claim_id] == "reproduced", claim_id
    assert growing["baseline-overlap-grows"] == "reproduced"
    constant = _verdicts(with_overlaps(0.125, 0.0))
    assert constant["amcl-separates-better"] == "reproduced"
    assert constant["advantage-grows-with-augmentation"] == "not reproduced"
    worse = _verdicts(with_overlaps(-0.125, 0.0))
    assert worse["amcl-separates-better"] == "not reproduced"
    assert worse["advantage-grows-with-augmentation"] == "not reproduced"


def test_missing_arms_or_sets_give_no_effect():
    one_arm = _table({"baseline": {s: [0.2, 0.3, 0.4] for s in range(3)}})
    for claim_id in ADVANTAGE:
        assert evaluate_claim(CLAIMS[claim_id], one_arm).verdict == "inconclusive"
    one_set = _table({"baseline": {s: [0.2] for s in range(3)}}, families=(5,))
    assert evaluate_claim(CLAIMS["baseline-overlap-grows"], one_set).n_seeds == 0


def test_config_rejects_bad_sets_and_builds_every_arm():
    config = amcl.cpu()
    assert config.augment_sets == ("a", "abc", "abcde")
    base = arm_config(config, "baseline", augment="ab", seed=7)
    arm = arm_config(config, "amcl", augment="ab", seed=7)
    assert (base.loss, base.heads, base.loss_options, base.augment, base.seed) == (
        "nt_xent",
        1,
        (),
        "ab",
        7,
    )
    assert (arm.loss, arm.heads, arm.adaptive_temperature) == ("amcl_nt_xent", 3, True)
    assert arm.loss_options == ("mode='softmax'", "beta=0.0001") and arm.grad_clip == 1.0
    assert base.grad_clip == 1.0  # every arm shares the recipe
    scalar = arm_config(config, "scalar", augment="ab", seed=7)
    assert (scalar.temperature_model, scalar.heads) == ("scalar", 3)
    matched = arm_config(config, "matched", augment="ab", seed=7, temperature=0.123)
    assert (matched.temperature, matched.heads, matched.adaptive_temperature) == (0.123, 1, False)
    moco = resolve_config(amcl, "amcl", "cpu", ["framework=moco"])
    assert arm_config(moco, "baseline", augment="a", seed=0).loss == "moco"
    assert arm_config(moco, "amcl", augment="a", seed=0).loss == "amcl_moco"
    barlow = resolve_config(amcl, "amcl", "cpu", ["framework=barlow_twins"])
    assert arm_config(barlow, "amcl", augment="a", seed=0).loss_options == ("beta=0.0001",)
    with pytest.raises(ValueError, match="loss is derived from framework"):
        resolve_config(amcl, "amcl", "cpu", ["loss=amcl_info_nce"])
    with pytest.raises(ValueError, match=r"amcl_k \(> 0\) goes with amcl_mode='topk' only"):
        resolve_config(amcl, "amcl", "cpu", ["amcl_mode=topk"])
    with pytest.raises(ValueError, match="family_counts must be prefix lengths"):
        resolve_config(amcl, "amcl", "cpu", ["family_counts=1,6"])
    with pytest.raises(ValueError, match="pair_draws must be >= 1"):
        resolve_config(amcl, "amcl", "cpu", ["pair_draws=0"])
    with pytest.raises(ValueError, match="framework must be one of"):
        resolve_config(amcl, "amcl", "cpu", ["framework=nope"])
