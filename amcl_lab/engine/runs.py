"""Where a run writes: run folders, ``config.json``, ``metrics.jsonl`` and checkpoints.

Runs write to ``<out>/<experiment>/<run-id>/`` (:class:`Run`, created or reopened by
:func:`open_run`): ``config.json`` (resolved config, seeds, package versions, device, git
revision), ``metrics.jsonl`` (one line per evaluation), ``results.json`` (the tidy results
table and claims), ``figures/`` and ``checkpoints/``.  Every file is written atomically
(:func:`amcl_lab.io.atomic_path`); a checkpoint also holds the global RNG states
(:func:`rng_state`), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..io import atomic_path, git_revision, json_safe, package_versions, write_json
from .config import config_dict, resolve_device

__all__ = [
    "CHECKPOINT_FORMAT",
    "Run",
    "load_checkpoint",
    "open_run",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_FORMAT = 2  # 2: the gradient-norm peak since the last evaluation


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

    def checkpoint(self, tag: str) -> Path:
        """Checkpoint file of the training run ``tag`` (e.g. ``"seed0"``)."""
        return self.dir / "checkpoints" / f"{tag}.pt"

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
            if record.get("run") == tag and record.get("step", 0) > step:
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
    root = Path(out) / experiment
    resolved = config_dict(config)
    if resume:
        folder = _resume_folder(root, resolved, run_id)
        stored = json.loads((folder / "config.json").read_text())["config"]
        diff = sorted(k for k in set(stored) | set(resolved) if stored.get(k) != resolved.get(k))
        if diff:
            raise ValueError(
                f"--resume: {folder} was run with a different config; differing keys: "
                + ", ".join(
                    f"{k} (stored {stored.get(k)!r}, now {resolved.get(k)!r})" for k in diff
                )
            )
        device = resolve_device(config.device)
        return Run(experiment, folder.name, folder, tuple(seeds), device, True, quiet)
    run_id = run_id or f"{preset}-{_timestamp()}"
    folder = root / run_id
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(
            f"run folder {folder} already exists; pass --resume to continue it or choose "
            "another --run-id"
        )
    device = resolve_device(config.device)
    folder.mkdir(parents=True, exist_ok=True)
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
            "command": sys.argv,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return Run(experiment, run_id, folder, tuple(seeds), device, False, quiet)


def _resume_folder(root: Path, resolved: dict[str, Any], run_id: str | None) -> Path:
    if run_id is not None:
        folder = root / run_id
        if not (folder / "config.json").is_file():
            existing = sorted(p.name for p in root.glob("*/config.json")) if root.is_dir() else []
            raise ValueError(
                f"--resume: no run {run_id!r} under {root}; existing runs: "
                f"{', '.join(p.parent.name for p in map(Path, existing)) or 'none'}"
            )
        return folder
    candidates = []
    for path in sorted(root.glob("*/config.json")) if root.is_dir() else []:
        stored = json.loads(path.read_text())
        if stored.get("config") == resolved:
            candidates.append((stored.get("created", ""), path.parent))
    if not candidates:
        raise ValueError(
            f"--resume: no run under {root} has this resolved config; pass --run-id to name "
            "the run to continue (its config must match)"
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


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """Read a checkpoint of :func:`save_checkpoint` onto ``device`` (tensors only, no code).

    Raises:
        ValueError: a checkpoint of another format (an older amcl_lab), naming the file.
    """
    state = torch.load(path, map_location=device, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path}: checkpoint format {found!r}, this amcl_lab writes format "
            f"{CHECKPOINT_FORMAT}; start the run again (a new --run-id) instead of resuming it"
        )
    return state
