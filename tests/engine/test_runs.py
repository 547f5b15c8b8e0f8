"""Run folders: safe run ids, --out and resume stay inside --out, locking, stale
temporaries, failed runs, and corrupt checkpoints named instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from amcl_lab.engine import TrainConfig, open_run, open_runs, train
from amcl_lab.engine.runs import RunLock, check_run_id

TINY = TrainConfig(
    encoder="mlp",
    width=8,
    proj_hidden=8,
    proj_dim=4,
    batch_size=16,
    steps=4,
    eval_every=0,
    checkpoint_every=2,
    probe_steps=2,
    knn_k=5,
    augment="ab",
    crop_min_scale=0.5,
    device="cpu",
)


def _open(out, run_id="r", **kw):
    return open_run(out, "exp", TINY, preset="p", seeds=(0,), run_id=run_id, **kw)


@pytest.mark.parametrize(
    "run_id",
    ["../../X", "/abs/X", "a/b", "..", ".", ".hidden", "-flag", "", "a" * 129, "a b", "x:y", "é"],
)
def test_run_ids_must_be_one_safe_path_component(tmp_path, run_id):
    """Before: --run-id ../../X or /abs/X wrote a whole run folder outside --out."""
    with pytest.raises(ValueError, match=r"--run-id must be 1-128 characters from letters"):
        _open(tmp_path / "out", run_id)
    with pytest.raises(ValueError, match=r"--run-id must be"):
        _open(tmp_path / "out", run_id, resume=True)
    assert not any(p for p in tmp_path.rglob("*") if p.name != "out")


@pytest.mark.parametrize("run_id", ["a", "A9", "smoke-20260101-000000", "x.y_z-1", "a" * 128])
def test_valid_run_ids(run_id):
    assert check_run_id(run_id) == run_id


def test_out_must_be_a_folder(tmp_path):
    """Before: NotADirectoryError traceback."""
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out .*file is not a folder"):
        _open(tmp_path / "file")


def test_resume_refuses_folders_reached_through_a_link(tmp_path):
    """Before: --resume accepted any outside folder with a config.json."""
    outside = _open(tmp_path / "elsewhere").dir
    out = tmp_path / "out"
    (out / "exp").mkdir(parents=True)
    (out / "exp" / "r").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match=r"exp/r is a symbolic link"):
        _open(out, resume=True)
    (out / "exp" / "r").unlink()
    (out / "exp").rmdir()
    out.rmdir()
    out.mkdir()
    (out / "exp").symlink_to(outside.parent, target_is_directory=True)
    with pytest.raises(ValueError, match=r"exp is a symbolic link"):
        _open(out, resume=True)
    with pytest.raises(ValueError, match=r"exp is a symbolic link"):
        _open(out, "fresh")


def test_resume_refuses_links_inside_the_run_folder(tmp_path):
    """Before: resume followed symlinks inside a run folder (writes went through them)."""
    run = _open(tmp_path)
    target = tmp_path / "victim.jsonl"
    target.write_text("")
    run.metrics_path.symlink_to(target)
    run.close()
    with pytest.raises(ValueError, match=r"metrics.jsonl is a symbolic link"):
        _open(tmp_path, resume=True)
    assert target.read_text() == ""


def test_the_lock_names_the_holders_pid_and_is_released_on_close(tmp_path):
    """Before: no lock; two runs with one --run-id both exited 0 (see tests/adversarial)."""
    run = _open(tmp_path)
    holder = (run.dir / ".lock").read_text()
    assert f"process {os.getpid()} on " in holder
    with pytest.raises(ValueError, match=rf"is in use by process {os.getpid()} on "):
        RunLock(run.dir)  # a second open file: what another process would do
    again = _open(tmp_path, resume=True)  # this process may reopen its own run
    assert again.lock is run.lock
    run.close()
    RunLock(run.dir).release()  # free again


def test_another_process_is_refused_while_this_one_holds_the_run(tmp_path):
    run = _open(tmp_path)
    code = textwrap.dedent(
        f"""
        from amcl_lab.engine.runs import RunLock
        from pathlib import Path
        try:
            RunLock(Path({str(run.dir)!r}))
        except ValueError as error:
            print(error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert f"is in use by process {os.getpid()}" in done.stdout, done.stderr
    run.close()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout == "", done.stdout


def test_resume_removes_the_temporaries_of_an_interrupted_write(tmp_path):
    """Before: a kill during a checkpoint write left .seedN.pt.<pid>-<hex>.tmp forever."""
    run = _open(tmp_path)
    (run.dir / "checkpoints").mkdir()
    stale = run.dir / "checkpoints" / ".seed0.pt.12345-0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    kept = run.dir / "checkpoints" / "notes.tmp"
    kept.write_text("not ours")
    run.close()
    _open(tmp_path, resume=True).close()
    assert not stale.exists() and kept.exists()


def test_a_run_that_failed_before_writing_anything_is_removed(tmp_path):
    """Before: a folder with only config.json that the report called 'not finished'."""
    run = _open(tmp_path)
    note = run.close(FileNotFoundError("missing data_batch_1"))
    assert "removed the run folder" in note and not run.dir.exists()
    assert open_runs() == [] or run not in open_runs()


def test_a_run_that_failed_later_is_marked_failed_and_cleared_by_resume(tmp_path):
    run = _open(tmp_path)
    run.log({"run": "s", "step": 0})
    assert "marked" in run.close(FloatingPointError("the loss is nan"))
    failed = json.loads((run.dir / "failed.json").read_text())
    assert failed["error"] == "FloatingPointError: the loss is nan"
    _open(tmp_path, resume=True).close()
    assert not (run.dir / "failed.json").exists()
    interrupted = _open(tmp_path, "i")
    assert interrupted.close(KeyboardInterrupt()) is None and interrupted.config_path.exists()


def test_an_unreadable_config_json_is_named_on_resume(tmp_path):
    run = _open(tmp_path)
    run.close()
    for content in ("{broken", '{"no config": 1}', "[]"):
        run.config_path.write_text(content)
        with pytest.raises(ValueError, match=r"config.json is not a (readable )?run config"):
            _open(tmp_path, resume=True)


def _checkpointed(tmp_path):
    run = _open(tmp_path)
    train(TINY, run, tag="seed0")
    run.close()
    return run.checkpoint("seed0")


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(os.urandom(512)),
    "missing_key": lambda p: _edit(p, lambda s: s.pop("optimizer")),
    "wrong_shape": lambda p: _edit(p, lambda s: s["network"].update(_reshaped(s["network"]))),
    "step_past_steps": lambda p: _edit(p, lambda s: s.update(step=40, done=False)),
    "done_mid_run": lambda p: _edit(p, lambda s: s.update(step=2, done=True)),
    "not_a_dict": lambda p: torch.save([1, 2], p),
}


def _edit(path, change):
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _reshaped(network):
    key = next(k for k, v in network.items() if v.ndim == 2)
    return {key: network[key][:, :1]}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_named_with_how_to_start_over(tmp_path, kind):
    """Before: tracebacks (truncated/empty/garbage/missing key/wrong shape), or a tampered
    step > steps that loaded and produced NaN claims."""
    path = _checkpointed(tmp_path)
    CORRUPTIONS[kind](path)
    resumed = _open(tmp_path, resume=True)
    pattern = rf"checkpoint {path} is corrupt|{path}: checkpoint format"
    with pytest.raises(ValueError, match=pattern) as caught:
        train(TINY, resumed, tag="seed0")
    assert "--run-id" in str(caught.value)
    resumed.close()


def test_truncating_tampered_metrics_lines_does_not_crash(tmp_path):
    run = _open(tmp_path)
    run.metrics_path.write_text('[1]\n{"run": "s", "step": "x"}\n{"run": "s", "step": 1}\n7\n')
    run.truncate_metrics("s", 0)
    assert run.metrics_path.read_text() == ""
    run.close()
