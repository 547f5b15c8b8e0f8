"""Helpers of the experiment tests: smoke runs with overrides, saved claims, doctored tables."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from amcl_lab import engine
from amcl_lab.experiments import Claim, Results, evaluate_claim, load, resolve_config


def smoke_rows(name: str, overrides: Sequence[str], out: Path) -> pd.DataFrame:
    """The results table of ``name``'s smoke preset with ``overrides`` (no claims, no figures).

    ``overrides`` are ``key=value`` strings, as ``amcl-lab run --set`` takes them; the run
    folder goes under ``out``.
    """
    module = load(name)
    config = resolve_config(module, name, "smoke", tuple(overrides))
    run = engine.open_run(out, name, config, preset="smoke", seeds=config.seed_list, quiet=True)
    return pd.DataFrame(module.run(config, run))


def assert_saved_claims_recompute(results: Results, claims: Mapping[str, Claim]) -> None:
    """Every claim saved in ``results`` is what its measure gives on the saved table."""

    def number(x: float | None) -> float:
        return math.nan if x is None else x  # nan is saved as null

    for saved in results.claims:
        again = evaluate_claim(claims[saved["id"]], results.table)
        assert again.verdict == saved["verdict"], saved["id"]
        stored = {k: number(x) for k, x in saved["per_seed"].items()}
        assert again.per_seed == pytest.approx(stored, nan_ok=True)
        summary = [number(saved[k]) for k in ("mean", "ci_low", "ci_high")]
        assert [again.mean, again.ci_low, again.ci_high] == pytest.approx(summary, nan_ok=True)


def doctored_probe(
    table: pd.DataFrame,
    final: Mapping[Hashable, float],
    cell: Callable[[pd.DataFrame, Hashable], pd.Series],
    other: float,
    init: float = 0.1,
) -> pd.DataFrame:
    """``table`` with its linear-probe accuracies replaced: ``init`` at every step but the
    last, ``final[key]`` at the last step of the rows ``cell(table, key)`` selects and
    ``other`` at the last step elsewhere, plus a little fixed noise so CIs are not points."""
    out = table.copy()
    probe = out["metric"] == "linear_probe"
    noise = np.random.default_rng(0).normal(0.0, 0.002, len(out))
    out.loc[probe, "value"] = init + noise[probe]
    last = probe & (out["step"] == out["step"].max())
    out.loc[last, "value"] = other + noise[last]
    for key, value in final.items():
        rows = last & cell(out, key)
        out.loc[rows, "value"] = value + noise[rows]
    return out
