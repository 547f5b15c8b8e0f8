"""``scripts/gpu_check.sh`` parses, and every experiment, preset, option and benchmark it names
exists, so the script cannot rot while no GPU runs it (the tests have none)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from amcl_lab.experiments import load, names, resolve_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
BUDGET_SECONDS = 11 * 60  # the header's worst case


def _calls(function: str) -> list[list[str]]:
    """The arguments of every call of the script's ``function`` (continuations joined)."""
    lines = SCRIPT.read_text().replace("\\\n", " ").splitlines()
    return [shlex.split(line)[1:] for line in lines if line.startswith(f"{function} ")]


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_the_script_parses_and_is_strict():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_every_experiment_runs_its_gpu_preset_with_valid_overrides():
    runs = _calls("preset")
    assert sorted(name for name, *_ in runs) == names()
    for name, _seconds, *args in runs:
        assert args[0::2] == ["--set"] * len(args[0::2]), name
        overrides = ("seeds=1", *args[1::2])  # the preset function sets seeds=1
        config = resolve_config(load(name), name, "gpu", overrides)
        assert config.steps <= 300, name


def test_the_benchmarks_it_runs_exist_and_the_steps_fit_the_budget():
    steps = _calls("step")
    benchmarks = [word for _, _, *command in steps for word in command if "benchmarks/" in word]
    assert benchmarks and all((ROOT / b).is_file() for b in benchmarks)
    seconds = [int(s) for _, s, *_ in steps] + [int(s) for _, s, *_ in _calls("preset")]
    assert sum(seconds) <= BUDGET_SECONDS
    assert re.search(r"worst case ~11 min", SCRIPT.read_text())
