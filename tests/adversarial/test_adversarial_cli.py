"""The command line under attack, as subprocesses (``python -m amcl_lab ...``) with the tiny
``smoke`` preset and a temporary ``--out``.

Every case ends in exit status 0, 2 (a one-line message, never a traceback) or 130 (SIGINT),
and the sandbox fixture checks that nothing was written outside ``--out``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from amcl_lab import cli

SMOKE = ["run", "simclr_digits", "--preset", "smoke", "--quiet", "--seeds", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: The interrupted run: long enough that a signal sent after its first checkpoint lands
#: mid-run, with evaluations only at the start and the end.
LONG = ["--set", "steps=400", "--set", "checkpoint_every=2", "--set", "eval_every=0"]


def amcl(*argv: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "amcl_lab", *argv]
    return subprocess.run(
        command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout
    )


def _default_sigint() -> None:
    """In the child: SIGINT's default action, whatever the test runner inherited.

    A runner started in the background by a non-interactive shell (``cmd &``, ``nohup``)
    ignores SIGINT, its children inherit that, and Python then leaves SIGINT ignored: the
    interrupted run would finish instead of stopping.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*argv: str, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "amcl_lab", *argv]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def usage_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 with a short message holding ``fragments``, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr
    assert 1 <= len(done.stderr.strip().splitlines()) <= 2, done.stderr
    for fragment in fragments:
        assert fragment in done.stderr, (fragment, done.stderr)


class Sandbox:
    """A working folder with ``out/`` inside; at the end nothing may exist outside ``out/``
    except what the test itself put there (:meth:`own`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.out = self.cwd / "out"
        self._own: set[Path] = set()

    def own(self, path: Path) -> Path:
        self._own.add(path)
        return path

    def outside(self) -> list[Path]:
        stray = []
        for path in self.root.rglob("*"):
            if path == self.cwd or path.is_relative_to(self.out):
                continue
            if any(path == p or path.is_relative_to(p) for p in self._own):
                continue
            if any(p.is_relative_to(path) for p in (self.out, *self._own)):
                continue  # a folder above an allowed path
            stray.append(path)
        return stray


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(tmp_path)
    yield box
    assert box.outside() == [], "written outside --out"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A finished one-seed smoke run (in-process: it only provides files to attack)."""
    out = tmp_path_factory.mktemp("template") / "out"
    assert cli.main([*SMOKE, "--out", str(out), "--run-id", "t", "--set", "eval_every=0"]) == 0
    return out / "simclr_digits" / "t"


def _copy_run(run: Path, box: Sandbox, run_id: str) -> Path:
    target = box.out / "simclr_digits" / run_id
    shutil.copytree(run, target)
    config = json.loads((target / "config.json").read_text())
    config["run_id"] = run_id
    (target / "config.json").write_text(json.dumps(config))
    return target


# --- run ids and --out -------------------------------------------------------------------


@pytest.mark.parametrize(
    "run_id",
    ["../../X", "ABS", "a" * 300, "javascript:alert(1)", "a/b"],
    ids=["parent", "absolute", "300_chars", "scheme", "two_parts"],
)
def test_a_run_id_that_is_not_one_safe_component_is_refused(sandbox, run_id):
    """Before: ../../X and /abs/X wrote whole run folders outside --out; 300 chars crashed."""
    if run_id == "ABS":
        run_id = str(sandbox.root / "abs" / "X")
    done = amcl(*SMOKE, "--out", "out", "--run-id", run_id, cwd=sandbox.cwd)
    usage_error(done, "--run-id must be 1-128 characters")
    assert not sandbox.out.exists()


def test_resume_with_a_path_as_run_id_is_refused(sandbox, template):
    outside = sandbox.own(sandbox.root / "elsewhere")
    shutil.copytree(template, outside / "simclr_digits" / "x")
    done = amcl(*SMOKE, "--out", "out", "--run-id", "../../elsewhere/simclr_digits/x",
                "--resume", "--set", "eval_every=0", cwd=sandbox.cwd)  # fmt: skip
    usage_error(done, "--run-id must be")


def test_out_pointing_at_a_file_is_a_usage_error(sandbox):
    sandbox.own(sandbox.cwd / "afile").write_text("")
    usage_error(amcl(*SMOKE, "--out", "afile", cwd=sandbox.cwd), "--out afile is not a folder")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=1e308", "lr must be at most 3.403e+38"),
        ("loss_options=decoupled=maybe", "decoupled='maybe' must be true or false"),
    ],
)
def test_bad_overrides_are_usage_errors_before_any_folder(sandbox, override, message):
    """Before: --set lr=1e308 ended in an overflow traceback inside the optimiser."""
    usage_error(amcl(*SMOKE, "--out", "out", "--set", override, cwd=sandbox.cwd), message)
    assert not sandbox.out.exists()


def test_a_run_that_fails_before_training_leaves_no_folder(sandbox):
    """Before: a folder with only config.json, which the report called 'not finished'."""
    data = sandbox.own(sandbox.cwd / "data")
    data.mkdir()
    argv = [*SMOKE, "--out", "out", "--run-id", "c", "--set", "dataset=cifar10"]
    done = amcl(*argv, "--data-dir", "data", cwd=sandbox.cwd)
    usage_error(done, "missing data_batch_1", "removed the run folder")
    assert not (sandbox.out / "simclr_digits" / "c").exists()


# --- resume: links, corrupt files, stale temporaries ----------------------------------------


def test_resume_refuses_a_symbolic_link_inside_the_run_folder(sandbox, template):
    run = _copy_run(template, sandbox, "linked")
    victim = sandbox.own(sandbox.root / "victim.jsonl")
    victim.write_text("")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    done = amcl(*SMOKE, "--out", "out", "--run-id", "linked", "--resume",
                "--set", "eval_every=0", cwd=sandbox.cwd)  # fmt: skip
    usage_error(done, "metrics.jsonl is a symbolic link")
    assert victim.read_text() == ""


def test_resume_refuses_a_run_folder_that_is_a_link_to_elsewhere(sandbox, template):
    elsewhere = sandbox.own(sandbox.root / "elsewhere")
    shutil.copytree(template, elsewhere)
    (sandbox.out / "simclr_digits").mkdir(parents=True)
    (sandbox.out / "simclr_digits" / "t").symlink_to(elsewhere, target_is_directory=True)
    done = amcl(*SMOKE, "--out", "out", "--run-id", "t", "--resume", "--set", "eval_every=0",
                cwd=sandbox.cwd)  # fmt: skip
    usage_error(done, "is a symbolic link")


def _edit(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _narrow(network):
    key = next(k for k, t in network.items() if t.ndim == 2)
    network[key] = network[key][:, :1]


CORRUPTIONS = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:1000]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(bytes(range(256)) * 4),
    "missing_key": lambda p: _edit(p, lambda s: s.pop("network")),
    "wrong_shape": lambda p: _edit(p, lambda s: _narrow(s["network"])),
    "step_past_steps": lambda p: _edit(p, lambda s: s.update(step=60, done=False)),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_checkpoint_names_the_file_and_how_to_start_over(sandbox, template, kind):
    """Before: tracebacks, or (step > steps) NaN claims from a tampered checkpoint."""
    run = _copy_run(template, sandbox, "bad")
    checkpoint = run / "checkpoints" / "seed0.pt"
    CORRUPTIONS[kind](checkpoint)
    done = amcl(*SMOKE, "--out", "out", "--run-id", "bad", "--resume", "--set", "eval_every=0",
                cwd=sandbox.cwd)  # fmt: skip
    usage_error(
        done, "checkpoint out/simclr_digits/bad/checkpoints/seed0.pt is corrupt", "--run-id"
    )


def test_an_invalid_config_json_is_named(sandbox, template):
    run = _copy_run(template, sandbox, "cfg")
    (run / "config.json").write_text("{ not json")
    done = amcl(*SMOKE, "--out", "out", "--run-id", "cfg", "--resume", "--set", "eval_every=0",
                cwd=sandbox.cwd)  # fmt: skip
    usage_error(done, "out/simclr_digits/cfg/config.json is not a readable run config")


def test_resume_removes_the_temporaries_of_a_killed_write(sandbox, template):
    """Before: a kill during a checkpoint write left .seedN.pt.<pid>-<hex>.tmp forever."""
    run = _copy_run(template, sandbox, "tmp")
    stale = run / "checkpoints" / ".seed0.pt.4242-deadbeef.tmp"
    stale.write_bytes(b"half")
    done = amcl(*SMOKE, "--out", "out", "--run-id", "tmp", "--resume", "--set", "eval_every=0",
                cwd=sandbox.cwd)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not stale.exists()
    assert not list(run.rglob("*.tmp"))


# --- report and oracle -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: r.write_text("{"), "results.json is not valid JSON"),
        (
            lambda r: r.write_text(json.dumps({"claims": [{"id": "x", "verdict": "reproduced"}]})),
            "results.json: claim 'x' lacks statement",
        ),
    ],
    ids=["invalid_json", "missing_keys"],
)
def test_report_on_a_broken_results_json_is_a_usage_error(sandbox, template, damage, message):
    run = _copy_run(template, sandbox, "r")
    damage(run / "results.json")
    usage_error(amcl("report", "out", cwd=sandbox.cwd), message)


def test_report_escapes_a_tampered_verdict(sandbox, template):
    """Before: a verdict went unescaped into class="..." (a live <script>)."""
    run = _copy_run(template, sandbox, "r")
    results = json.loads((run / "results.json").read_text())
    results["claims"][0]["verdict"] = '"><script>alert(1)</script>'
    (run / "results.json").write_text(json.dumps(results))
    done = amcl("report", "out", cwd=sandbox.cwd)
    assert done.returncode == 0, done.stderr
    page = (sandbox.out / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_oracle_json_pointing_at_a_folder_is_a_usage_error(sandbox):
    folder = sandbox.own(sandbox.cwd / "reports")
    folder.mkdir()
    argv = ["oracle", "amcl_lab.losses:nt_xent", "--reference", "nt_xent", "--max-examples", "2"]
    usage_error(amcl(*argv, "--json", "reports", cwd=sandbox.cwd), "--json reports is a folder")


# --- concurrency and SIGINT ------------------------------------------------------------------


def _lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines()


def test_two_runs_started_at_once_with_one_run_id(sandbox):
    """Before: both exited 0 and metrics.jsonl held every line twice."""
    argv = [*SMOKE, "--out", "out", "--run-id", "same", "--set", "eval_every=0"]
    first, second = start(*argv, cwd=sandbox.cwd), start(*argv, cwd=sandbox.cwd)
    results = [p.communicate(timeout=300) for p in (first, second)]
    codes = sorted(p.returncode for p in (first, second))
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip((first, second), results, strict=True) if p.returncode)
    assert "Traceback" not in loser
    assert "is in use by process" in loser or "already exists" in loser or "just created" in loser
    lines = _lines(sandbox.out / "simclr_digits" / "same")
    assert len(lines) == len(set(lines)) == 2  # steps 0 and 6, once each


def test_a_run_folder_another_process_holds_is_refused_even_while_empty(sandbox):
    """The race of two runs started at once: the first has created and locked the folder but
    not yet written config.json; the second must not run too (before: both ran)."""
    from amcl_lab.engine.runs import RunLock

    folder = sandbox.out / "simclr_digits" / "race"
    folder.mkdir(parents=True)
    lock = RunLock(folder)  # this test process plays the first run
    try:
        done = amcl(*SMOKE, "--out", "out", "--run-id", "race", cwd=sandbox.cwd)
    finally:
        lock.release()
    usage_error(done, f"is in use by process {os.getpid()} ")
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A long run stopped by SIGINT after its first checkpoint: (cwd, stderr, return code)."""
    cwd = tmp_path_factory.mktemp("sigint")
    process = start(*SMOKE, *LONG, "--out", "out", "--run-id", "cut", cwd=cwd)
    checkpoint = cwd / "out" / "simclr_digits" / "cut" / "checkpoints" / "seed0.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no checkpoint before the run ended: {process.communicate()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return cwd, err, process.returncode


def test_sigint_prints_one_line_and_the_run_resumes_to_the_same_numbers(interrupted, sandbox):
    """Before: a KeyboardInterrupt traceback.  Now: exit 130, one line with the step, the
    seed and the resume command, which finishes the run like an uninterrupted one."""
    cwd, err, code = interrupted
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "interrupted at step " in err and " of seed 0 " in err, err
    command = shlex.split(err.split("resume with: ", 1)[1])
    assert command[:2] == ["amcl-lab", "run"] and "--resume" in command
    work = sandbox.own(sandbox.root / "resumed")
    shutil.copytree(cwd / "out", work / "out")
    resumed = amcl(*command[1:], cwd=work)
    assert resumed.returncode == 0, resumed.stderr
    clean = [*SMOKE, *LONG, "--out", str(work / "out"), "--run-id", "clean"]
    assert cli.main(clean) == 0
    runs = [work / "out" / "simclr_digits" / r for r in ("cut", "clean")]
    rows = [json.loads((r / "results.json").read_text())["rows"] for r in runs]
    assert rows[0] == rows[1]
    assert _lines(runs[0]) == _lines(runs[1])


def test_two_resumes_at_once(interrupted, sandbox):
    """Before: both ran and wrote 17 duplicate lines; now the second fails at once."""
    cwd, _, _ = interrupted
    shutil.copytree(cwd / "out", sandbox.out)
    argv = [*SMOKE, *LONG, "--out", "out", "--run-id", "cut", "--resume"]
    first = start(*argv, cwd=sandbox.cwd)
    lock = sandbox.out / "simclr_digits" / "cut" / ".lock"
    deadline = time.monotonic() + 240
    while f"process {first.pid} " not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.02)
    second = amcl(*argv, cwd=sandbox.cwd)
    usage_error(second, f"is in use by process {first.pid} ")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    lines = _lines(sandbox.out / "simclr_digits" / "cut")
    assert len(lines) == len(set(lines))
