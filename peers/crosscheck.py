"""Cross-check table of the peer libraries against amcl_lab's references (``nox -s peers``).

Runs the oracle for every case of ``peer_cases.CASES`` in float32 and float64, evaluates the
minimal reproduction of each documented difference, prints both as Markdown tables (for the
README) and writes everything to ``OUT/peers.json`` atomically.

    python peers/crosscheck.py --out bench_results [--max-examples 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

from amcl_lab import oracle
from amcl_lab.io import package_versions, write_json

import peer_cases as pc

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def run_case(case: pc.PeerCase, dtype: torch.dtype, max_examples: int) -> dict:
    start = time.perf_counter()
    report = oracle.check(
        case.candidate,
        case.reference,
        adapter=case.adapter,
        dtype=dtype,
        strategy=case.domain() if case.domain is not None else None,
        max_examples=max_examples,
        shrink=not case.difference,
    )
    result = report.to_dict()
    result["seconds"] = time.perf_counter() - start
    result["grad_rel"] = max((g["rel"] for g in result["gradients"].values()), default=0.0)
    return result


def _errors(result: dict) -> str:
    if not result["passed"]:
        return "flagged"
    return f"{result['value']['abs']:.1e} / {result['grad_rel']:.1e} / {result['ratio']:.2g}"


def markdown(rows: list[dict], reproductions: list[dict]) -> str:
    lines = [
        "| peer call | reference (adapter) | inputs | float32: value abs. error / grad rel. "
        "error / share of tolerance | float64 | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        adapter = row["adapter"] or "identity"
        verdict = (
            "agrees"
            if row["float32"]["passed"] and row["float64"]["passed"]
            else "differs: " + ", ".join(row["difference"])
        )
        lines.append(
            f"| {row['call']} | `{row['reference']}` ({adapter}) | {row['domain']} | "
            f"{_errors(row['float32'])} | {_errors(row['float64'])} | {verdict} |"
        )
    lines += ["", "| difference | minimal input | reference | peer (float32) | peer (float64) |"]
    lines.append("|---|---|---|---|---|")
    for r in reproductions:
        lines.append(
            f"| {r['key']}: {r['what']} | {r['inputs']} | {r['reference']:.10g} | "
            f"{r['peer_float32']:.10g} | {r['peer_float64']:.10g} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--max-examples", type=int, default=200)
    args = parser.parse_args(argv)

    rows = []
    for case in pc.CASES:
        row = {
            "name": case.name,
            "call": case.call,
            "reference": case.reference_name,
            "adapter": case.adapter,
            "domain": case.domain_note,
            "difference": list(case.difference),
        }
        for label, dtype in DTYPES.items():
            row[label] = run_case(case, dtype, args.max_examples)
            print(f"{case.name:<28} {label}: {_errors(row[label])}", file=sys.stderr)
        rows.append(row)
    reproductions = []
    for key, reproduce in pc.REPRODUCTIONS.items():
        r32, r64 = reproduce(torch.float32), reproduce(torch.float64)
        reproductions.append(
            {
                "key": key,
                "what": r32.what,
                "inputs": r32.inputs,
                "reference": r32.reference,
                "peer_float32": r32.peer,
                "peer_float64": r64.peer,
            }
        )
    table = markdown(rows, reproductions)
    print(table)
    environment = {
        **package_versions(),
        "torch": torch.__version__,
        "lightly": version("lightly"),
        "pytorch-metric-learning": version("pytorch-metric-learning"),
        "max_examples": args.max_examples,
    }
    write_json(
        args.out / "peers.json",
        {"environment": environment, "cases": rows, "reproductions": reproductions},
    )
    flagged = {case.name: case.flagged_in for case in pc.CASES}
    ok = all(r[flagged[r["name"]]]["passed"] != bool(r["difference"]) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
