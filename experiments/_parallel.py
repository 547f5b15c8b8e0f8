"""Training the seeds of one run in several processes (``amcl-lab run --workers N``).

The seeds of an experiment are independent trainings: every random choice of a training run
is a function of its seed and step (:func:`amcl_lab.engine.derive_seed`), and each run
checkpoints under its own tag.  :func:`run_seeds` therefore hands the seeds round-robin to
``workers`` spawned processes, each calling the module's ``run`` on its share with the
run's thread count, and joins their rows sorted by seed (stable, so the module's order
within a seed is kept).  The claims are computed from the joined table exactly as from a
single process's, and a run resumed with any number of workers continues each training
from its own checkpoint bit for bit.

The processes write into one run folder.  ``metrics.jsonl`` gets whole lines only: every
append and every truncation (``--resume``) takes an exclusive ``fcntl`` lock on
``<run>/metrics.lock`` first (:class:`LockedRun`), so a truncation never drops a line
another process is appending and no line is written twice.  Checkpoints are per training
run and written atomically, so they need no lock.
"""

from __future__ import annotations

import dataclasses
import fcntl
import importlib
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from amcl_lab import engine

__all__ = ["LockedRun", "metrics_lock", "run_seeds", "share"]

LOCK_NAME = "metrics.lock"


@contextmanager
def metrics_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``folder/metrics.lock`` (blocking until it is free)."""
    with (folder / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class LockedRun(engine.Run):
    """A :class:`amcl_lab.engine.Run` whose ``metrics.jsonl`` writes hold :func:`metrics_lock`."""

    def log(self, record: Mapping[str, Any]) -> None:
        with metrics_lock(self.dir):
            super().log(record)

    def truncate_metrics(self, tag: str, step: int) -> None:
        with metrics_lock(self.dir):
            super().truncate_metrics(tag, step)


def share(seeds: Sequence[int], workers: int) -> list[tuple[int, ...]]:
    """The seeds of each worker: round-robin, empty shares left out.

    Example:
        >>> share((0, 1, 2, 3, 4), 2)
        [(0, 2, 4), (1, 3)]
    """
    return [s for s in (tuple(seeds[i::workers]) for i in range(workers)) if s]


def _worker(name: str, config: Any, run: engine.Run) -> list[dict[str, Any]]:
    if config.threads:
        torch.set_num_threads(config.threads)
    module = importlib.import_module(f"{__package__}.{name}")  # imported again when spawned
    return module.run(config, run)


def run_seeds(
    name: str, module: Any, config: Any, run: engine.Run, seeds: Sequence[int], workers: int
) -> list[dict[str, Any]]:
    """The rows of ``module.run`` for ``seeds``, in ``workers`` processes when more than one.

    One worker (or one seed) runs in this process with ``run`` as it is, so the rows are
    exactly the module's.  Several workers are spawned (not forked: the parent's thread pools
    do not survive a fork), each gets a :class:`LockedRun` restricted to its seeds, and the
    rows come back sorted by seed.
    """
    if workers <= 1 or len(seeds) < 2:
        return module.run(config, dataclasses.replace(run, seeds=tuple(seeds)))
    locked = LockedRun(**{f.name: getattr(run, f.name) for f in dataclasses.fields(run)})
    jobs = [(name, config, dataclasses.replace(locked, seeds=s)) for s in share(seeds, workers)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(jobs)) as pool:
        parts = pool.starmap(_worker, jobs)
    rows = [row for part in parts for row in part]
    return sorted(rows, key=lambda row: row["seed"])
