"""Experiment modules (installed as ``amcl_lab.experiments``) and the protocol they follow.

Run one with ``amcl-lab run NAME --preset smoke|cpu|gpu``; list them with ``amcl-lab list``.

The protocol
------------
An experiment is a module ``experiments/<name>.py`` (a name not starting with ``_``) that
defines:

``__doc__``
    The module docstring; its first line is the one-line description ``amcl-lab list``
    prints.  The rest says which data the presets use and why.
``Config``
    A frozen dataclass subclassing :class:`ExperimentConfig` (itself
    :class:`amcl_lab.engine.TrainConfig` plus ``seeds``): flat, commented fields, so every
    knob can be overridden with ``--set key=value`` (unknown keys and type changes are
    rejected).
``PRESETS``
    ``{"smoke": smoke, "cpu": cpu, "gpu": gpu}``: functions returning a ``Config``.
    ``smoke`` runs in seconds (tests and ``nox -s experiments`` run it); ``cpu`` gives a
    meaningful verdict on bundled data within minutes on two CPU cores; ``gpu`` is the
    paper-scale setting (CIFAR/STL from ``--data-dir``).  An experiment with claims that the
    ``cpu`` scale leaves open adds ``long``: designed from the ``cpu`` diagnosis, within 30
    minutes on two idle cores (``--workers 2``).
``run(config, run) -> list[dict]``
    Trains and evaluates once per seed of ``run.seeds`` (``amcl_lab.engine.train``
    with ``tag`` unique per training run, so ``--resume`` continues each one from its
    checkpoint) and returns the tidy results table: one measurement per row, with at least
    ``seed``, ``metric`` and ``value`` columns plus the experiment's conditions.
``plot(results, out_dir) -> list[Path]``
    Draws figures from :class:`Results` (the saved ``results.json``) only, with
    :mod:`amcl_lab.figures` (house style, seeds as confidence bands), and saves them under
    ``out_dir`` with :func:`amcl_lab.figures.save`.
``CLAIMS``
    A tuple of :class:`Claim`: each names the paper statement and a ``measure`` computing
    one effect per seed from the results table, built from the shared vocabulary of
    :mod:`amcl_lab.experiments._claims` (final values, paired differences, relative changes,
    trends against a condition, non-inferiority); :func:`evaluate_claim` turns the seeds
    into mean, 95 % confidence interval and a verdict (reproduced / not reproduced /
    inconclusive; fewer than 3 seeds is inconclusive). Verdicts are never hard-coded.
    :func:`evaluate_claims` adds the statistics of :mod:`._stats` next to each verdict
    (p-values, the Holm-adjusted verdict over the run's claims, seeds for 80 % power, a
    bootstrap interval for non-normal effects).

:func:`run_experiment` does the rest: run folder and ``config.json``, ``results.json``
(rows, claims, timing), figures.

Modules whose name starts with ``_`` are not experiments but what they share: the protocol
(``_protocol``, also the fields the ``gpu`` presets share), the claims vocabulary
(``_claims``), the statistics of the verdicts (``_stats``: tests, power, Holm, bootstrap,
``--seeds auto``), seeds in parallel processes (``_parallel``: ``--workers``), training on a
synthetic augmentation graph (``_graph``: ``projector``, ``views``) and measures of trained
networks (``_measures``: ``sharpness``; ``_pairs``: ``amcl``; ``_labelnoise``: ``simplex``).
"""

from __future__ import annotations

from ._protocol import (
    VERDICTS,
    Claim,
    ClaimResult,
    ExperimentConfig,
    Results,
    describe,
    evaluate_claim,
    evaluate_claims,
    load,
    names,
    resolve_config,
    run_experiment,
)

__all__ = [
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ExperimentConfig",
    "Results",
    "describe",
    "evaluate_claim",
    "evaluate_claims",
    "load",
    "names",
    "resolve_config",
    "run_experiment",
]
