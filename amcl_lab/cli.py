"""The ``amcl-lab`` command line (also ``python -m amcl_lab``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from . import registry

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="amcl-lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    smoke = sub.add_parser("smoke", help="evaluate every reference loss once and print a table")
    smoke.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    smoke.set_defaults(func=_smoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
