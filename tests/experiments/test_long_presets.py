"""The ``long`` presets exist where the ``cpu`` scale left claims open, and say what they change.

Which experiments need one comes from docs/results.md: ``temperature`` (the accuracy peak),
``sharpness`` (SAF flatness and cost, SAM accuracy), ``views`` (the data-efficiency claims),
``simplex`` (the simplex distance, the fitting exponents), ``projector`` (the small
projector's "match"), ``amcl`` (the probe and k-NN claims, tenths of a point at 5 seeds) and
``amcl_phase`` (the release cell's trained forms against the baseline, at 3 seeds).
"""

from __future__ import annotations

import json

import pytest

from amcl_lab.experiments import load, names, resolve_config
from amcl_lab.experiments._tables import HEADER, claims_table

LONG = ("amcl", "amcl_phase", "projector", "sharpness", "simplex", "temperature", "views")


def test_the_experiments_with_open_claims_have_a_long_preset():
    assert {n for n in names() if "long" in load(n).PRESETS} == set(LONG)


@pytest.mark.parametrize("name", LONG)
def test_long_presets_validate_and_keep_more_seeds_than_cpu(name):
    module = load(name)
    long, cpu = module.PRESETS["long"](), module.PRESETS["cpu"]()
    assert isinstance(long, module.Config)
    assert long.seeds >= cpu.seeds and long.threads == 1
    assert resolve_config(module, name, "long", ["seed=5"]).seed == 5


def test_long_designs_follow_the_diagnosis():
    temperature = load("temperature").PRESETS["long"]()
    assert temperature.loss == "moco" and temperature.queue_size >= 4096
    assert temperature.steps > load("temperature").cpu().steps
    simplex = load("simplex").PRESETS["long"]()
    assert simplex.geometry_steps >= 10 * load("simplex").cpu().steps
    assert simplex.geometry_schedule == "cosine" and simplex.schedule == "constant"


def test_claims_table_has_the_statistics_columns(tmp_path):
    claim = {
        "id": "c",
        "mean": 1.5,
        "ci_low": 1.0,
        "ci_high": 2.0,
        "n_seeds": 9,
        "verdict": "reproduced",
        "holm_verdict": "inconclusive",
        "boot_low": 1.1,
        "boot_high": 1.9,
        "boot_verdict": "reproduced",
        "seeds_for_expected": None,
        "seeds_for_observed": 7,
    }
    run = tmp_path / "x" / "r"
    run.mkdir(parents=True)
    (run / "results.json").write_text(
        json.dumps({"experiment": "x", "preset": "long", "claims": [claim]})
    )
    table = claims_table(tmp_path).splitlines()
    assert table[0] == HEADER
    assert table[2] == (
        "| x | long | `c` | 1.5 | [1, 2] | 9 | reproduced | inconclusive | "
        "[1.1, 1.9] (reproduced) | n/a / 7 |"
    )
