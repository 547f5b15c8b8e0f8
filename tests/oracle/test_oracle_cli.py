"""``amcl-lab oracle``: prints the report; exit status 0 agree, 1 mismatch, 2 usage error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from amcl_lab import cli, oracle


def test_agreeing_candidate_exits_zero_and_writes_the_json_report(capsys, tmp_path):
    out = tmp_path / "report.json"
    argv = ["oracle", "amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--max-examples", "10"]
    assert cli.main([*argv, "--json", str(out)]) == 0
    assert "oracle PASS: amcl_lab.fast:nt_xent vs reference 'nt_xent'" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["passed"] is True and saved["examples"] == 10 and saved["dtype"] == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left


def test_mismatch_exits_one_and_prints_the_minimal_input(capsys):
    argv = ["oracle", "mutants:mean_over_n", "--reference", "nt_xent", "--dtype", "float64"]
    assert cli.main(argv) == 1
    printed = capsys.readouterr().out
    assert "oracle MISMATCH" in printed and "minimal failing input" in printed


def test_adapters_compose_on_the_command_line(capsys):
    argv = ["oracle", "amcl_lab.losses:NTXentLoss", "--reference", "nt_xent"]
    assert cli.main([*argv, "--adapter", "module", "--max-examples", "10"]) == 0
    assert "(adapter module)" in capsys.readouterr().out
    argv = ["oracle", "amcl_lab.fast:supcon", "--reference", "supcon", "--max-examples", "10"]
    assert cli.main([*argv, "--adapter", "identity,identity", "--no-grad", "--no-shrink"]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_module:f", "--reference", "nt_xent"], "cannot import module 'no_such_module'"),
        (["amcl_lab.fast", "--reference", "nt_xent"], "must look like package.module:function"),
        (["amcl_lab.fast:nope", "--reference", "nt_xent"], "has no attribute path 'nope'"),
        (["amcl_lab.fast:BLOCK_ELEMENTS", "--reference", "nt_xent"], "not a callable"),
        (["amcl_lab.fast:nt_xent", "--reference", "nt_xnet"], "unknown reference loss 'nt_xnet'"),
        (["amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--adapter", "flip"], "'flip'"),
        (["amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--device", "cuda:7"], "cuda"),
    ],
    ids=["module", "format", "attribute", "callable", "reference", "adapter", "device"],
)
def test_usage_errors_exit_two_with_a_message(capsys, argv, message, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert cli.main(["oracle", *argv]) == 2
    assert message in capsys.readouterr().err


def test_console_entry_point_runs_the_oracle():
    """``python -m amcl_lab oracle`` (what the ``amcl-lab`` script calls) in a fresh process."""
    argv = [sys.executable, "-m", "amcl_lab", "oracle", "amcl_lab.fast:supcon"]
    argv += ["--reference", "supcon", "--max-examples", "5"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "oracle PASS" in done.stdout


def test_load_candidate_follows_attribute_paths():
    assert oracle.load_candidate("amcl_lab.losses:NTXentLoss.forward").__name__ == "forward"


def test_json_pointing_at_a_folder_is_a_usage_error(capsys, tmp_path):
    """Before: IsADirectoryError traceback after the whole check had run."""
    argv = ["oracle", "amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--max-examples", "2"]
    assert cli.main([*argv, "--json", str(tmp_path)]) == 2
    assert f"--json {tmp_path} is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_json_that_cannot_be_written_is_a_usage_error(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "report.json"  # a path below a file
    argv = ["oracle", "amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--max-examples", "2"]
    assert cli.main([*argv, "--json", str(target)]) == 2
    assert "cannot write --json" in capsys.readouterr().err


def test_check_on_cuda_without_cuda_is_a_value_error(monkeypatch):
    """Before: torch's AssertionError 'Torch not compiled with CUDA enabled'."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="check: device 'cuda' was asked for, but CUDA is not"):
        oracle.check(lambda *a, **k: None, "nt_xent", device="cuda", max_examples=1)
    with pytest.raises(ValueError, match="check: device must be a torch device"):
        oracle.check(lambda *a, **k: None, "nt_xent", device="gpu0", max_examples=1)
    with pytest.raises(TypeError, match=r"check: grad must be a bool"):
        oracle.check(lambda *a, **k: None, "nt_xent", grad="no", max_examples=1)


def test_console_script_imports_a_candidate_from_the_current_folder_and_writes_nothing_there(
    tmp_path,
):
    """Before: "No module named 'my_losses'" from the amcl-lab script (python -m found it),
    and Hypothesis left .hypothesis/ in the folder; --hypothesis-dir puts its files there."""
    script = Path(sys.executable).with_name("amcl-lab")
    if not script.exists():
        pytest.skip("the amcl-lab console script is not installed next to this interpreter")
    (tmp_path / "my_losses.py").write_text(
        "from amcl_lab import fast\n\n\ndef my_nt_xent(z1, z2, temperature):\n"
        "    return fast.nt_xent(z1, z2, temperature)\n"
    )
    argv = [str(script), "oracle", "my_losses:my_nt_xent", "--reference", "nt_xent"]
    env = {k: v for k, v in os.environ.items() if k != "HYPOTHESIS_STORAGE_DIRECTORY"}
    for extra, left in (([], set()), (["--hypothesis-dir", "hyp"], {"hyp"})):
        done = subprocess.run(
            [*argv, "--max-examples", "5", *extra], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "oracle PASS: my_losses:my_nt_xent" in done.stdout
        assert {p.name for p in tmp_path.iterdir()} - {"__pycache__"} == {"my_losses.py", *left}
