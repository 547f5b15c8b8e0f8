"""The ``amcl-lab`` command line (also ``python -m amcl_lab``)."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from . import distributed, registry

__all__ = ["main"]


def _smoke(args: argparse.Namespace) -> int:
    """Evaluate every registered loss on its first sample input, in float64 and float32."""
    print(f"{'loss':<22} {'float64':>14} {'float32':>14} {'grad norm':>12}")
    for name, spec in registry.REGISTRY.items():
        sample = next(iter(spec.sample_inputs(torch.float64, torch.device(args.device))))
        leaves = sample.to(requires_grad=True)
        value = leaves.call(spec)
        grads = torch.autograd.grad(value, [leaves.args[i] for i in leaves.floating_indices()])
        grad_norm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
        value32 = float(sample.to(torch.float32).call(spec))
        print(f"{name:<22} {value.item():>14.8f} {value32:>14.8f} {grad_norm:>12.4e}")
    return 0


def _list(args: argparse.Namespace) -> int:
    """Print every experiment with its presets and its one-line description."""
    from . import experiments

    for name in experiments.names():
        presets = ",".join(experiments.load(name).PRESETS)
        print(f"{name:<14} {presets:<19} {experiments.describe(name)}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run an experiment preset; print where the outputs went and the claims table.

    Under ``torchrun`` every process trains (:func:`amcl_lab.engine.train` shards the
    batches); rank 0 alone writes the run folder, results, figures and prints.
    """
    from .experiments._stats import parse_seeds

    seeds, args.seeds_cap = parse_seeds(args.seeds) if args.seeds is not None else (None, None)
    args.auto_seeds = args.seeds is not None and seeds is None
    overrides = list(args.set)
    for key, value in (("seeds", seeds), ("device", args.device), ("data_dir", args.data_dir)):
        if value is not None:
            overrides.append(f"{key}={value}")
    with distributed.process_group_from_env():
        if distributed.is_active() and (args.auto_seeds or args.workers > 1):
            raise ValueError("--seeds auto and --workers need a single process (no torchrun)")
        return _run_main(args, overrides) if distributed.is_main() else _run_rank(args, overrides)


def _run_rank(args: argparse.Namespace, overrides: list[str]) -> int:
    """A rank other than 0: the training half of ``run_experiment``, writing nothing."""
    from . import engine, experiments

    module = experiments.load(args.experiment)
    config = experiments.resolve_config(module, args.experiment, args.preset, overrides)
    run = engine.open_run(
        args.out,
        args.experiment,
        config,
        preset=args.preset,
        overrides=overrides,
        seeds=config.seed_list,
        run_id=args.run_id,
        resume=args.resume,
        quiet=True,
    )
    if config.threads:
        torch.set_num_threads(config.threads)
    module.run(config, run)  # the rows, claims and figures are rank 0's
    return 0


#: Errors of a run the command line reports in one line (exit status 2), not as a traceback.
RUN_ERRORS = (ValueError, FileNotFoundError, OSError, FloatingPointError)


def _resume_command(args: argparse.Namespace, run_id: str) -> str:
    """The command that continues this run."""
    argv = ["amcl-lab", "run", args.experiment, "--preset", args.preset, "--out", args.out]
    argv += ["--run-id", run_id, "--resume"]
    for item in args.set:
        argv += ["--set", item]
    for flag, value in (("--seeds", args.seeds), ("--device", args.device)):
        if value is not None:
            argv += [flag, str(value)]
    if args.workers != 1:
        argv += ["--workers", str(args.workers)]
    if args.data_dir is not None:
        argv += ["--data-dir", args.data_dir]
    return shlex.join(argv + (["--quiet"] if args.quiet else []))


def _interrupted(args: argparse.Namespace, interrupt: KeyboardInterrupt) -> str:
    """One line: where the interrupt landed and how to resume (the runs are closed here)."""
    from . import engine

    runs = engine.open_runs()
    for run in runs:
        run.close(interrupt)
    if isinstance(interrupt, engine.TrainingInterrupted):
        where = f"interrupted at step {interrupt.step} of seed {interrupt.seed}"
        where += f" ({interrupt.tag!r}, {interrupt.steps} steps)"
    else:
        where = "interrupted outside a training step"
    if not runs:
        return f"{where}; no run folder was created, nothing to resume"
    return f"{where}; resume with: {_resume_command(args, runs[-1].run_id)}"


def _run_main(args: argparse.Namespace, overrides: list[str]) -> int:
    """Rank 0, or a single process: run the experiment, print the outputs and claims.

    The run folder's lock is released at the end; a run that fails is marked failed (or
    removed when nothing but its config was written) and the error printed in one line
    (exit status 2); an interrupt (SIGINT) prints where it landed and the resume command
    (exit status 130).
    """
    from . import engine, experiments

    try:
        run, results = experiments.run_experiment(
            args.experiment,
            preset=args.preset,
            overrides=overrides,
            out=args.out,
            run_id=args.run_id,
            resume=args.resume,
            quiet=args.quiet,
            auto_seeds=args.auto_seeds,
            seeds_cap=args.seeds_cap,
            workers=args.workers,
        )
    except KeyboardInterrupt as interrupt:
        print(f"amcl-lab run: {_interrupted(args, interrupt)}", file=sys.stderr)
        return 130
    except BaseException as error:
        notes = [note for r in engine.open_runs() if (note := r.close(error)) is not None]
        if not isinstance(error, RUN_ERRORS):
            raise
        print(f"amcl-lab run: error: {error}", file=sys.stderr)
        for note in notes:
            print(f"amcl-lab run: {note}", file=sys.stderr)
        return 2
    for opened in engine.open_runs():
        opened.close()
    print(f"run folder: {run.dir}")
    for line in _file_lines(run.dir, run.checkpoints_dir):
        print(f"  {line}")
    print(f"wall time: {_wall_time(results.session_seconds)} on {run.device}")
    for line in _claim_lines(results.claims):
        print(f"  {line}")
    return 0


def _file_lines(folder: Path, checkpoints: Path) -> list[str]:
    """The files of a run folder, one a line; the ``checkpoints`` folder as one line with its
    number of files."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    kept = [p for p in files if not p.is_relative_to(checkpoints)]
    lines = [str(p.relative_to(folder)) for p in kept]
    if len(kept) < len(files):
        count = len(files) - len(kept)
        lines.append(f"{checkpoints.relative_to(folder)}/ ({count} file{'s' * (count != 1)})")
    return sorted(lines)


def _wall_time(sessions: Sequence[float]) -> str:
    """The total wall time, and each session's when the run was resumed."""
    total = f"{sum(sessions):.1f} s"
    if len(sessions) < 2:
        return total
    return f"{total} over {len(sessions)} sessions ({', '.join(f'{s:.1f}' for s in sessions)} s)"


def _claim_lines(claims: Sequence[Mapping[str, Any]]) -> list[str]:
    """The claims table: id, mean, 95 % interval, verdict, Holm verdict; columns as wide as
    their longest entry."""
    rows = [
        (
            str(c["id"]),
            _num(c["mean"]),
            f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]",
            str(c["verdict"]),
            f"(Holm: {c.get('holm_verdict') or c['verdict']})",
        )
        for c in claims
    ]
    widths = [max((len(r[i]) for r in rows), default=0) for i in range(5)]
    return [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(r, "<>><<", widths, strict=True)).rstrip()
        for r in rows
    ]


def _num(x: float | None) -> str:
    return "nan" if x is None else f"{x:.3g}"


def _report(args: argparse.Namespace) -> int:
    """Build the HTML report of a runs folder (or print its claims as Markdown)."""
    from .report import build_report, claims_markdown

    if args.markdown:
        print(claims_markdown(args.runs_dir), end="")
        return 0
    path = build_report(args.runs_dir, args.output)
    print(f"report: {path}")
    return 0


def _add_oracle(sub: argparse._SubParsersAction) -> None:
    """The oracle's subcommand, when ``amcl_lab.oracle`` is part of this installation."""
    if importlib.util.find_spec(f"{__package__}.oracle") is not None:
        from . import oracle

        oracle.add_subcommand(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amcl-lab",
        description="The amcl-lab command line (also python -m amcl_lab): reference losses, "
        "experiments, their report and the reference oracle.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke", help="evaluate every reference loss once and print a table")
    smoke.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    smoke.set_defaults(func=_smoke)

    listing = sub.add_parser("list", help="list the experiments with one-line descriptions")
    listing.set_defaults(func=_list)

    run = sub.add_parser(
        "run",
        help="run an experiment preset into runs/<experiment>/<run-id>/",
        description=(
            "Run an experiment: config.json, metrics.jsonl, results.json (results table and "
            "claims) and figures/ go to OUT/EXPERIMENT/RUN_ID/. Kill it any time and rerun "
            "with --resume to continue from the last checkpoint."
        ),
    )
    run.add_argument("experiment", help="experiment name (see amcl-lab list)")
    run.add_argument(
        "--preset",
        default="cpu",
        help="smoke | cpu | gpu | long (where there is one: amcl-lab list) (default: cpu)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable); unknown keys and type changes are errors",
    )
    run.add_argument(
        "--seeds",
        help="number of seeds (claims need at least 3), or auto[:CAP]: add seeds until every "
        "claim is decided, up to CAP (default 4x the preset's)",
    )
    run.add_argument(
        "--workers", type=int, default=1, help="processes training seeds in parallel (default 1)"
    )
    run.add_argument("--out", default="runs", help="folder holding the runs (default: runs)")
    run.add_argument(
        "--run-id",
        help="run folder name: 1-128 letters, digits, '.', '_', '-', starting with a letter or "
        "a digit (default: <preset>-<UTC timestamp>)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue a run (--run-id, or the latest run with the same config)",
    )
    run.add_argument("--device", help="auto (default: CUDA if available), cpu, cuda, cuda:N")
    run.add_argument("--data-dir", help="folder with CIFAR-10/100 or STL-10 files")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_run)

    report = sub.add_parser("report", help="build one HTML page from a runs folder")
    report.add_argument("runs_dir", nargs="?", default="runs", help="default: runs")
    report.add_argument("--output", help="HTML file (default: RUNS_DIR/report.html)")
    report.add_argument(
        "--markdown", action="store_true", help="print every run's claims as one Markdown table"
    )
    report.set_defaults(func=_report)

    _add_oracle(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status.

    Usage errors (unknown experiment, preset or config key, bad values, missing data
    files, unreadable run files, a run folder in use) print one line to stderr and return
    2; an interrupt (SIGINT) prints one line and returns 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print(f"amcl-lab {args.command}: interrupted", file=sys.stderr)
        return 130
    except RUN_ERRORS as error:
        if args.command not in ("run", "report", "list"):
            raise
        print(f"amcl-lab {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
