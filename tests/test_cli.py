"""The ``amcl-lab`` command line: list, run, report, errors, kill-and-resume, packaging."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from amcl_lab import cli, experiments

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["run", "simclr_digits", "--preset", "smoke", "--quiet"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert cli.main([*SMOKE, "--out", str(out), "--run-id", "smoke"]) == 0
    return out / "simclr_digits" / "smoke"


def test_run_writes_config_metrics_results_and_a_figure(smoke_run, capsys):
    config = json.loads((smoke_run / "config.json").read_text())
    assert config["experiment"] == "simclr_digits" and config["preset"] == "smoke"
    assert config["seeds"] == [0, 1, 2] and config["config"]["steps"] == 6
    assert {"torch", "numpy", "python"} <= set(config["versions"])
    lines = (smoke_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 3  # three seeds, evaluations at steps 0, 3, 6
    results = json.loads((smoke_run / "results.json").read_text())
    assert {c["id"] for c in results["claims"]} == {"probe-gain", "knn-gain"}
    for claim in results["claims"]:
        assert claim["n_seeds"] == 3
        assert claim["verdict"] in experiments.VERDICTS
    assert {r["metric"] for r in results["rows"]} >= {"linear_probe", "knn", "train_loss"}
    assert (smoke_run / "figures" / "training_curves.png").stat().st_size > 0
    assert (smoke_run / "figures" / "training_curves.pdf").stat().st_size > 0


def test_report_contains_every_figure_of_the_runs_folder(smoke_run, capsys):
    runs = smoke_run.parent.parent
    assert cli.main(["report", str(runs)]) == 0
    assert "report:" in capsys.readouterr().out
    page = (runs / "report.html").read_text()
    pngs = list(runs.rglob("*.png"))
    assert pngs
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page
    assert "probe-gain" not in page or "Contrastive pretraining" in page


def test_list_shows_every_experiment_with_its_presets_and_description(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert set(lines) == set(experiments.names())
    assert lines["simclr_digits"] == "smoke,cpu,gpu"
    assert lines["temperature"] == "smoke,cpu,gpu,long"
    assert "SimCLR on the bundled 8x8 digits" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "nope"],
            f"unknown experiment 'nope'; available: {', '.join(experiments.names())}",
        ),
        (["run", "simclr_digits", "--preset", "huge"], "valid presets: smoke, cpu, gpu"),
        (["run", "simclr_digits", "--set", "stepz=3"], "unknown key 'stepz'"),
        (["run", "simclr_digits", "--set", "steps=many"], "steps expects an int"),
        (["run", "simclr_digits", "--set", "dataset=cifar10"], "data_dir is required"),
        (["report", "/nonexistent/runs"], "does not exist"),
    ],
)
def test_usage_errors_exit_2_with_the_valid_choices(argv, message, tmp_path, capsys):
    assert cli.main([*argv, *(["--out", str(tmp_path)] if argv[0] == "run" else [])]) == 2
    assert message in capsys.readouterr().err


def _run_dir(out: Path, run_id: str) -> Path:
    return out / "simclr_digits" / run_id


def test_a_killed_run_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path):
    """SIGKILL a run after its first checkpoint, resume it, compare with a clean run."""
    out = tmp_path / "runs"
    args = [*SMOKE, "--seeds", "1", "--out", str(out), "--set", "steps=60"]
    args += ["--set", "checkpoint_every=4", "--set", "eval_every=8"]
    command = [sys.executable, "-m", "amcl_lab", *args, "--run-id", "killed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    checkpoint = _run_dir(out, "killed") / "checkpoints" / "seed0.pt"
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before its first checkpoint: {proc.stderr.read()!r}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 240 s")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(checkpoint, weights_only=True)
    assert not state["done"] and 0 < state["step"] < 60, "the kill must land mid-run"
    assert not (_run_dir(out, "killed") / "results.json").exists()
    config = json.loads((_run_dir(out, "killed") / "config.json").read_text())
    assert config["command"] == "python -m amcl_lab " + " ".join([*args, "--run-id", "killed"])

    resumed = subprocess.run(
        [*command, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert cli.main([*args, "--run-id", "clean"]) == 0

    killed, clean = _run_dir(out, "killed"), _run_dir(out, "clean")
    results = [json.loads((d / "results.json").read_text()) for d in (killed, clean)]
    assert results[0]["rows"] == results[1]["rows"]
    assert results[0]["claims"] == results[1]["claims"]
    metrics = [(d / "metrics.jsonl").read_text() for d in (killed, clean)]
    assert metrics[0] == metrics[1]  # no duplicated or missing evaluation lines
    final = [torch.load(d / "checkpoints" / "seed0.pt", weights_only=True) for d in (killed, clean)]
    for key, tensor in final[1]["network"].items():
        assert torch.equal(final[0]["network"][key], tensor), key


def test_resuming_a_finished_run_keeps_the_total_time_and_each_session(tmp_path, capsys):
    """Before: the resume's own time replaced wall_seconds; the printed file list left out
    checkpoints/; --resume --run-id nope said "existing runs: none"."""
    argv = [*SMOKE, "--seeds", "1", "--out", str(tmp_path), "--run-id", "done"]
    assert cli.main(argv) == 0
    first = json.loads((_run_dir(tmp_path, "done") / "results.json").read_text())
    assert first["session_seconds"] == [first["wall_seconds"]]
    capsys.readouterr()
    assert cli.main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((_run_dir(tmp_path, "done") / "results.json").read_text())
    sessions = results["session_seconds"]
    assert len(sessions) == 2 and sessions[0] == first["wall_seconds"]
    assert results["wall_seconds"] == pytest.approx(sum(sessions))
    assert "over 2 sessions" in printed
    assert "  checkpoints/ (1 file)\n" in printed and "  results.json\n" in printed
    (tmp_path / "simclr_digits" / "half").mkdir()  # a folder without config.json
    assert cli.main([*argv[:-1], "nope", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "no run 'nope'" in err and "runs there: done, half (no config.json)" in err


def test_claims_table_columns_fit_their_longest_entry():
    """Before: ids longer than 28 characters pushed their row's columns right."""
    claims = [
        {"id": "short", "mean": 1.0, "ci_low": 0.5, "ci_high": 1.5, "verdict": "reproduced"},
        {"id": "eight-views-quarter-data-match-two-views-full", "mean": -3.867, "ci_low": -7.9,
         "ci_high": 0.16, "verdict": "inconclusive", "holm_verdict": "inconclusive"},
    ]  # fmt: skip
    lines = cli._claim_lines(claims)
    assert lines[0].index("]") == lines[1].index("]")  # intervals right-aligned
    assert lines[0].index(" 1 ") + 2 == lines[1].index("-3.87") + 5  # means right-aligned
    assert lines[0].index("reproduced") == lines[1].index("inconclusive")
    assert lines[0].endswith("(Holm: reproduced)")


def _parsers(parser):
    yield parser
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        for sub in action.choices.values():
            yield from _parsers(sub)


def test_help_is_plain_text():
    """Before: the description showed reST markup (``amcl-lab``)."""
    for parser in _parsers(cli.build_parser()):
        text = parser.format_help()
        assert "`" not in text and ":func:" not in text, text
    oracle_help = cli.build_parser()._subparsers._group_actions[0].choices["oracle"].format_help()
    assert "current folder" in oracle_help and "--hypothesis-dir" in oracle_help


def test_oracle_subcommand_is_wired_when_present():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"smoke", "list", "run", "report"} <= set(choices)
    has_oracle = (ROOT / "amcl_lab" / "oracle" / "__init__.py").exists()
    assert ("oracle" in choices) == has_oracle


def test_installed_package_list_covers_every_subpackage():
    """pyproject lists packages explicitly (for the experiments mapping): keep it complete."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "amcl_lab").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == on_disk | {"amcl_lab.experiments"}
    assert setuptools["package-dir"] == {"amcl_lab.experiments": "experiments"}
