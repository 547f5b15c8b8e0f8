"""The ``amcl-lab oracle`` sub-command (also ``python -m amcl_lab oracle``).

:func:`add_subcommand` adds ``oracle`` to the ``amcl-lab`` parser of :mod:`amcl_lab.cli`;
the command loads the candidate by name (:func:`~amcl_lab.oracle.candidate.load_candidate`),
runs :func:`~amcl_lab.oracle.losses.check` (or, with ``--optimizer``,
:func:`~amcl_lab.oracle.optimizers.check_optimizer`), prints the report and exits 0 on agreement, 1
on a mismatch and 2 on a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hypothesis.configuration import set_hypothesis_home_dir, storage_directory

from .. import registry
from .adapters import ADAPTERS
from .candidate import load_candidate
from .losses import check
from .optimizers import OPTIMIZER_ADAPTERS, OPTIMIZERS, check_optimizer

DTYPES = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}


def _optimizer_report(args: argparse.Namespace) -> Any:
    if args.reference is not None or args.world_size != 1:
        raise ValueError("--optimizer takes no --reference and no --world-size")
    adapters = [a for spec in args.adapter for a in spec.split(",") if a]
    if len(adapters) > 1:
        raise ValueError("--optimizer takes one --adapter (two_step or closure)")
    return check_optimizer(
        load_candidate(args.candidate),
        args.optimizer,
        adapter=adapters[0] if adapters else "two_step",
        max_examples=args.max_examples,
        seed=args.seed,
        shrink=not args.no_shrink,
    )


def _loss_report(args: argparse.Namespace) -> Any:
    if args.reference is None:
        raise ValueError("one of --reference (a loss or a metric) or --optimizer is required")
    candidate = load_candidate(args.candidate)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch.cuda.is_available() is False")
    return check(
        candidate,
        args.reference,
        dtype=DTYPES[args.dtype],
        device=device,
        grad=not args.no_grad,
        max_examples=args.max_examples,
        adapter=args.adapter or None,
        seed=args.seed,
        shrink=not args.no_shrink,
        world_size=args.world_size,
    )


def _import_from_cwd() -> None:
    """Put the current folder first on the import path, as ``python -m`` does, so that a
    candidate module in it imports under the console script too."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


@contextlib.contextmanager
def _hypothesis_home(folder: str | None) -> Iterator[None]:
    """Hypothesis writes its files (caches) into ``folder``; by default into
    ``$HYPOTHESIS_STORAGE_DIRECTORY`` if set, else a temporary folder removed afterwards,
    never into the current folder."""
    previous = storage_directory(intent_to_write=False).home_directory
    with tempfile.TemporaryDirectory(prefix="amcl-lab-oracle-") as scratch:
        set_hypothesis_home_dir(folder or os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") or scratch)
        try:
            yield
        finally:
            set_hypothesis_home_dir(previous)


def _run_cli(args: argparse.Namespace) -> int:
    _import_from_cwd()
    try:
        if args.json is not None and Path(args.json).is_dir():
            raise ValueError(f"--json {args.json} is a folder; give the path of a file to write")
        with _hypothesis_home(args.hypothesis_dir):
            report = _optimizer_report(args) if args.optimizer is not None else _loss_report(args)
    except (ValueError, RuntimeError) as error:
        print(f"amcl-lab oracle: error: {error}", file=sys.stderr)
        return 2
    print(report)
    if args.json is not None:
        from ..io import write_json

        try:
            write_json(args.json, report.to_dict())
        except OSError as error:
            print(
                f"amcl-lab oracle: error: cannot write --json {args.json}: {error}", file=sys.stderr
            )
            return 2
    return 0 if report.passed else 1


def add_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``oracle`` to an ``argparse`` sub-command set (the ``amcl-lab`` command line).

    ``amcl-lab oracle package.module:function (--reference NAME | --optimizer NAME)
    [--adapter A[,B]] [--device DEV] [--dtype DTYPE] [--max-examples K] [--seed S]
    [--world-size W] [--no-grad] [--no-shrink] [--json PATH] [--hypothesis-dir DIR]``
    prints the report and exits 0 on agreement, 1 on a mismatch and 2 on a usage error.
    """
    parser = subparsers.add_parser(
        "oracle",
        help="check a loss implementation against a reference loss",
        description=(
            "Drive a candidate loss and a registered reference with the same Hypothesis "
            "inputs; compare values and gradients; print the report. Exit status: 0 agree, "
            "1 mismatch, 2 usage error."
        ),
    )
    parser.add_argument(
        "candidate",
        help="the implementation, as package.module:function; modules in the current folder "
        "are found (it is put on the import path first, as python -m does)",
    )
    parser.add_argument(
        "--reference",
        help=(
            f"registered reference loss ({', '.join(registry.names())}) or metric "
            f"({', '.join(registry.METRICS)})"
        ),
    )
    parser.add_argument(
        "--optimizer",
        choices=sorted(OPTIMIZERS),
        help=(
            "check an optimizer instead: the candidate is a factory such as a SAM class, "
            "driven by --adapter " + " or ".join(OPTIMIZER_ADAPTERS)
        ),
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        help=(
            "calling-convention adapter, repeatable or comma-separated, outermost first: "
            + ", ".join(sorted(ADAPTERS))
        ),
    )
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="candidate input dtype"
    )
    parser.add_argument("--max-examples", type=int, default=100, help="inputs to draw")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed")
    parser.add_argument(
        "--world-size",
        type=int,
        default=1,
        metavar="W",
        help=(
            "W > 1: run the candidate on W local gloo processes, each on its shard of the "
            "global batch, against the single-process reference (default 1)"
        ),
    )
    parser.add_argument("--no-grad", action="store_true", help="compare values only")
    parser.add_argument(
        "--no-shrink", action="store_true", help="report the first failing input as found"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument(
        "--hypothesis-dir",
        metavar="DIR",
        help="folder for Hypothesis's own files (default: $HYPOTHESIS_STORAGE_DIRECTORY if set, "
        "else a temporary folder removed at the end; nothing is written to the current folder)",
    )
    parser.set_defaults(func=_run_cli)
    return parser
