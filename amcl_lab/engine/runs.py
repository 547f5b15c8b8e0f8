"""Where a run writes: run folders, ``config.json``, ``metrics.jsonl`` and checkpoints.

Runs write to ``<out>/<experiment>/<run-id>/`` (:class:`Run`, created or reopened by
:func:`open_run`): ``config.json`` (resolved config, seeds, package versions, device, git
revision), ``metrics.jsonl`` (one line per evaluation), ``results.json`` (the tidy results
table and claims), ``figures/`` and ``checkpoints/``, plus ``.lock`` (the pid of the last
process that ran in the folder) and, for a run that failed, ``failed.json``.  Every file is
written atomically (:func:`amcl_lab.io.atomic_path`); a checkpoint also holds the global RNG
states (:func:`rng_state`), so a resumed run continues bit for bit.

Safety rules (``docs/reliability.md``): a run id is one path component of at most 128
letters, digits, ``.``, ``_`` and ``-``, starting with a letter or a digit
(:data:`RUN_ID_PATTERN`); the run folder must lie inside ``out`` with no symbolic link on
the way or inside it; the process that opens a run holds an exclusive lock on the folder
(:class:`RunLock`) until :meth:`Run.close` or its exit, and a second process fails at once,
naming the holder's pid; resuming removes the temporaries a killed write left behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
import re
import shlex
import shutil
import socket
import sys
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

import numpy as np
import torch

from .. import distributed
from ..io import atomic_path, git_revision, json_safe, package_versions, write_json
from .config import config_dict, resolve_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "RUN_ID_PATTERN",
    "Run",
    "RunLock",
    "check_checkpoint",
    "check_run_id",
    "command_line",
    "corrupt_checkpoint",
    "load_checkpoint",
    "open_run",
    "open_runs",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = 2  # 2: the gradient-norm peak since the last evaluation

#: A run id (and an experiment name): one path component, 1-128 characters.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LOCK_NAME = ".lock"
FAILED_NAME = "failed.json"
#: What :func:`amcl_lab.io.atomic_path` writes next to a file before renaming it.
TEMPORARY_PATTERN = re.compile(r"\..+\.\d+-[0-9a-f]{8}\.tmp")


def check_run_id(run_id: object, what: str = "--run-id") -> str:
    """Raise ``ValueError`` unless ``run_id`` is one safe path component (see the module)."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        shown = run_id if not isinstance(run_id, str) or len(run_id) <= 60 else run_id[:57] + "..."
        length = f" ({len(run_id)} characters)" if isinstance(run_id, str) else ""
        raise ValueError(
            f"{what} must be 1-128 characters from letters, digits, '.', '_' and '-', starting "
            f"with a letter or a digit (one folder name, no path), got {shown!r}{length}"
        )
    return run_id


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``<run folder>/.lock``, held while it lives.

    The holder writes its pid, host and start time into the file; a second process (or a
    second open file in this process) fails at once with a ``ValueError`` naming them.  The
    lock is released by :meth:`release`, by garbage collection or by the process's exit (a
    killed process holds nothing).  The file itself stays (removing it would let two
    processes lock two different files).  Without ``fcntl`` (not POSIX) nothing is locked.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            raise ValueError(f"cannot lock run folder {folder}: {error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ValueError(
                f"run folder {folder} is in use by {holder}; wait for it to finish (or stop "
                "it), or choose another --run-id"
            ) from None
        started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"process {os.getpid()} on {socket.gethostname()} since {started}\n".encode(), 0
        )
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the flock

    def __del__(self) -> None:
        self.release()


#: Locks held by this process, by resolved folder: reopening a run here shares its lock.
_LOCKS: weakref.WeakValueDictionary[str, RunLock] = weakref.WeakValueDictionary()
#: Runs opened by this process (rank 0), for the command line's failure handling.
_OPENED: list[weakref.ref[Run]] = []


def _lock(folder: Path) -> RunLock:
    key = str(folder.resolve())
    lock = _LOCKS.get(key)
    if lock is None or not lock.held:
        lock = RunLock(folder)
        _LOCKS[key] = lock
    return lock


def open_runs() -> list[Run]:
    """The runs this process opened and has not closed (most recent last)."""
    alive = [r for r in (ref() for ref in _OPENED) if r is not None and r.lock is not None]
    _OPENED[:] = [weakref.ref(r) for r in alive]
    return alive


@dataclass
class Run:
    """One run folder ``<out>/<experiment>/<run_id>/`` and what a run writes into it.

    Under a process group (``torchrun``) every rank holds the same ``Run``; only rank 0
    writes into the folder, and every rank reads its checkpoints on resume (one node, or a
    filesystem shared by all nodes).
    """

    experiment: str
    run_id: str
    dir: Path
    seeds: tuple[int, ...]
    device: torch.device
    resume: bool = False
    quiet: bool = False
    lock: RunLock | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        # the lock stays with the process that took it (other ranks get the folder only)
        return {**self.__dict__, "lock": None}

    def close(self, error: BaseException | None = None) -> str | None:
        """Release the folder's lock; after ``error``, mark the run as failed.

        A fresh run that failed before writing anything but ``config.json`` is removed (it
        holds nothing to resume); any other failed run gets ``failed.json`` with the error,
        which the report shows and a ``--resume`` clears.  An interruption
        (``KeyboardInterrupt``) is not a failure.  Returns a sentence saying what was done,
        or ``None``.  Idempotent; rank 0 only writes.
        """
        lock, self.lock = self.lock, None
        if lock is None:
            return None
        note = None
        if error is not None and not isinstance(error, KeyboardInterrupt):
            written = {p.name for p in self.dir.iterdir()} - {LOCK_NAME}
            if not self.resume and written <= {"config.json"}:
                lock.release()
                shutil.rmtree(self.dir, ignore_errors=True)
                with contextlib.suppress(OSError):  # the experiment folder, if now empty
                    self.dir.parent.rmdir()
                return f"removed the run folder {self.dir} (nothing had been written)"
            write_json(
                self.dir / FAILED_NAME,
                {
                    "error": f"{type(error).__name__}: {error}",
                    "failed": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                },
            )
            note = f"marked {self.dir} as failed ({FAILED_NAME})"
        lock.release()
        return note

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    @property
    def figures_dir(self) -> Path:
        return self.dir / "figures"

    @property
    def checkpoints_dir(self) -> Path:
        return self.dir / "checkpoints"

    def checkpoint(self, tag: str) -> Path:
        """Checkpoint file of the training run ``tag`` (e.g. ``"seed0"``)."""
        return self.checkpoints_dir / f"{tag}.pt"

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed and synced; rank 0 only)."""
        if not distributed.is_main():
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, tag: str, step: int) -> None:
        """Drop the lines of ``tag`` after ``step`` (and any partial line) before resuming."""
        if not distributed.is_main() or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if not isinstance(record, dict):
                continue  # not a line this run wrote
            at = record.get("step", 0)
            if record.get("run") == tag and (not isinstance(at, int) or at > step):
                continue
            kept.append(line)
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))


def _timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def open_run(
    out: str | Path,
    experiment: str,
    config: Any,
    *,
    preset: str,
    overrides: Sequence[str] = (),
    seeds: Sequence[int],
    run_id: str | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Run:
    """Create (or, with ``resume``, reopen) the run folder and write ``config.json``.

    A fresh run gets ``run_id`` or ``<preset>-<UTC timestamp>`` and refuses an existing
    folder.  With ``resume``, ``run_id`` names the run to continue; without it the most
    recent run of ``experiment`` whose resolved config equals ``config`` is continued.

    Under a process group, rank 0 creates (or finds) the folder and every rank gets the
    same :class:`Run`, or the same error.

    Raises:
        ValueError: an existing folder for a fresh run, no run to resume, or a resumed run
            whose stored config differs from ``config`` (the differing keys are listed).
    """
    return distributed.on_main(
        _open_run,
        out,
        experiment,
        config,
        preset=preset,
        overrides=overrides,
        seeds=seeds,
        run_id=run_id,
        resume=resume,
        quiet=quiet,
    )


def _open_run(
    out: str | Path,
    experiment: str,
    config: Any,
    *,
    preset: str,
    overrides: Sequence[str],
    seeds: Sequence[int],
    run_id: str | None,
    resume: bool,
    quiet: bool,
) -> Run:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a folder (it is a file); pass a folder for the runs")
    check_run_id(experiment, "the experiment name")
    if run_id is not None:
        check_run_id(run_id)
    root = out / experiment
    resolved = config_dict(config)
    device = resolve_device(config.device)
    if resume:
        folder = _resume_folder(out, root, resolved, run_id)
        lock = _lock(folder)
        try:
            _check_no_links(folder)
            _clean_temporaries(folder)
            stored = _read_config(folder / "config.json")["config"]
            diff = sorted(
                k for k in set(stored) | set(resolved) if stored.get(k) != resolved.get(k)
            )
            if diff:
                raise ValueError(
                    f"--resume: {folder} was run with a different config; differing keys: "
                    + ", ".join(
                        f"{k} (stored {stored.get(k)!r}, now {resolved.get(k)!r})" for k in diff
                    )
                )
            (folder / FAILED_NAME).unlink(missing_ok=True)  # trying again
        except BaseException:
            lock.release()
            raise
        return _opened(
            Run(experiment, folder.name, folder, tuple(seeds), device, True, quiet, lock)
        )
    run_id = run_id or f"{preset}-{_timestamp()}"
    folder = root / run_id
    _check_inside(out, folder)
    if folder.exists() and any(p.name != LOCK_NAME for p in folder.iterdir()):
        raise ValueError(
            f"run folder {folder} already exists; pass --resume to continue it or choose "
            "another --run-id"
        )
    folder.mkdir(parents=True, exist_ok=True)
    _check_inside(out, folder)  # nothing was swapped for a link meanwhile
    lock = _lock(folder)
    try:
        if any(p.name != LOCK_NAME for p in folder.iterdir()):  # another process was faster
            raise ValueError(
                f"run folder {folder} was just created by another process; pass --resume to "
                "continue it or choose another --run-id"
            )
        write_json(
            folder / "config.json",
            {
                "experiment": experiment,
                "run_id": run_id,
                "preset": preset,
                "overrides": list(overrides),
                "seeds": list(seeds),
                "config": resolved,
                "device": str(device),
                "versions": package_versions(),
                "git_revision": git_revision(),
                "command": command_line(),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            },
        )
    except BaseException:
        lock.release()
        raise
    return _opened(Run(experiment, run_id, folder, tuple(seeds), device, False, quiet, lock))


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as the user typed it, from ``argv`` (default ``sys.argv``): a module run
    with ``python -m`` (``argv[0]`` is its ``__main__.py``) as ``python -m <package> ...``,
    a console script by its name (``amcl-lab run ...``).

    Example:
        >>> command_line(["/venv/lib/amcl_lab/__main__.py", "run", "simclr_digits"])
        'python -m amcl_lab run simclr_digits'
        >>> command_line(["/venv/bin/amcl-lab", "run", "x", "--set", "loss_options=a=1;b=2"])
        "amcl-lab run x --set 'loss_options=a=1;b=2'"
    """
    program, *rest = sys.argv if argv is None else argv
    path = Path(program)
    typed = f"python -m {path.parent.name}" if path.name == "__main__.py" else path.name
    return " ".join([typed, *map(shlex.quote, rest)])


def _opened(run: Run) -> Run:
    _OPENED.append(weakref.ref(run))
    return run


def _check_inside(out: Path, folder: Path) -> None:
    """Raise unless ``folder`` lies inside ``out`` with no symbolic link between them."""
    base = out.resolve()
    step = out
    for part in folder.relative_to(out).parts:
        step = step / part
        if step.is_symlink():
            raise ValueError(
                f"{step} is a symbolic link; run folders and the folders above them (inside "
                "--out) must be plain folders"
            )
    if not folder.resolve().is_relative_to(base):
        raise ValueError(f"run folder {folder} is not inside --out {out}")


def _check_no_links(folder: Path) -> None:
    """Raise if anything inside the run folder is a symbolic link (resume never follows one)."""
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(top, name)):
                raise ValueError(
                    f"--resume: {Path(top) / name} is a symbolic link; a run folder holds only "
                    "plain files and folders, so it is not resumed (start a new --run-id)"
                )


def _clean_temporaries(folder: Path) -> None:
    """Remove the ``.<name>.<pid>-<hex>.tmp`` files of writes a kill interrupted."""
    for top, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            if TEMPORARY_PATTERN.fullmatch(name):
                (Path(top) / name).unlink(missing_ok=True)


def _read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a run, or a ``ValueError`` naming the file and what is wrong."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not a readable run config ({error}); the run cannot be resumed: start "
            "a new run with another --run-id"
        ) from None
    if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
        raise ValueError(
            f"{path} is not a run config (no 'config' object); the run cannot be resumed: start "
            "a new run with another --run-id"
        )
    return stored


def _existing_runs(root: Path) -> str:
    """The run folders under an experiment's folder, for an error message: every folder
    whose name is a run id, those without a ``config.json`` marked."""
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    runs = [
        p.name if (p / "config.json").is_file() else f"{p.name} (no config.json)"
        for p in folders
        if RUN_ID_PATTERN.fullmatch(p.name)
    ]
    return f"runs there: {', '.join(runs)}" if runs else f"there are no runs in {root}"


def _resume_folder(out: Path, root: Path, resolved: dict[str, Any], run_id: str | None) -> Path:
    if run_id is not None:
        folder = root / run_id
        _check_inside(out, folder)
        if not (folder / "config.json").is_file():
            raise ValueError(f"--resume: no run {run_id!r} under {root}; {_existing_runs(root)}")
        return folder
    candidates = []
    for path in sorted(root.glob("*/config.json")) if root.is_dir() else []:
        try:
            check_run_id(path.parent.name)
            _check_inside(out, path.parent)
            stored = _read_config(path)
        except ValueError:
            continue  # not a run folder this command could have written
        if stored.get("config") == resolved:
            candidates.append((str(stored.get("created", "")), path.parent))
    if not candidates:
        raise ValueError(
            f"--resume: no run under {root} has this resolved config; pass --run-id to name "
            f"the run to continue (its config must match); {_existing_runs(root)}"
        )
    return max(candidates)[1]


# --- checkpoints -------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global torch, CUDA, NumPy and Python RNG states (what a checkpoint restores)."""
    # the legacy global NumPy state is what third-party code draws from; save it as is
    np_state = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint ``payload`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


#: The entries of a checkpoint and the types :func:`check_checkpoint` requires of them.
CHECKPOINT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int,
    "config": dict,
    "step": int,
    "done": bool,
    "network": dict,
    "objective": dict,
    "optimizer": dict,
    "scheduler": dict,
    "extras": dict,
    "rng": dict,
    "history": list,
    "loss_sum": torch.Tensor,
    "loss_count": int,
    "grad_peak": (int, float),
}


def corrupt_checkpoint(path: Path, what: str) -> ValueError:
    """The error for a checkpoint that cannot be used: names the file and how to start over."""
    return ValueError(
        f"checkpoint {path} is corrupt ({what}); delete it to retrain that seed from step 0 "
        "with --resume, or start the run again with a new --run-id"
    )


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` onto ``device`` (tensors only, no code).

    Raises:
        ValueError: a file that is not a readable checkpoint (truncated, empty, garbage: the
            message names it, says it is corrupt and how to start over), or a checkpoint of
            another format (an older amcl_lab).
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # truncated, empty, garbage, or a pickle of arbitrary code
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise corrupt_checkpoint(path, f"{type(error).__name__}: {first[:200]}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path}: checkpoint format {found!r}, this amcl_lab writes format "
            f"{CHECKPOINT_FORMAT}; start the run again (a new --run-id) instead of resuming it"
        )
    return state


def check_checkpoint(path: Path, state: Mapping[str, Any], steps: int) -> None:
    """Raise :func:`corrupt_checkpoint` unless ``state`` is a consistent checkpoint of a run of
    ``steps`` steps: every entry present with its type, ``0 <= step <= steps``, ``done``
    exactly when ``step == steps``, a history of records at steps up to ``step``, finite
    counters.  (A tampered ``step > steps`` used to load and produce NaN claims.)"""
    for key, kind in CHECKPOINT_FIELDS.items():
        if key not in state:
            raise corrupt_checkpoint(path, f"no {key!r} entry")
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise corrupt_checkpoint(path, f"{key!r} is a {type(value).__name__}")
    step = state["step"]
    if not 0 <= step <= steps:
        raise corrupt_checkpoint(path, f"step {step} outside [0, {steps}] of this config")
    if state["done"] != (step == steps):
        raise corrupt_checkpoint(path, f"done={state['done']} at step {step} of {steps}")
    history = state["history"]
    if not all(isinstance(r, dict) and isinstance(r.get("step"), int) for r in history):
        raise corrupt_checkpoint(path, "a history record without an integer step")
    if any(not 0 <= r["step"] <= step for r in history):
        raise corrupt_checkpoint(path, f"a history record after step {step}")
    if state["loss_count"] < 0 or not float(state["grad_peak"]) >= 0.0:
        raise corrupt_checkpoint(path, "negative loss_count or grad_peak")
    if state["loss_sum"].numel() != 1:
        raise corrupt_checkpoint(path, f"loss_sum of shape {tuple(state['loss_sum'].shape)}")
