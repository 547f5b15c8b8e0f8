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
import peer_oracles as po

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


def run_distributed_case(case: po.DistributedCase, dtype: torch.dtype, max_examples: int) -> dict:
    start = time.perf_counter()
    report = oracle.check(
        case.candidate,
        case.reference,
        adapter=case.adapter,
        world_size=2,
        dtype=dtype,
        max_examples=max_examples,
    )
    result = report.to_dict()
    result["seconds"] = time.perf_counter() - start
    result["grad_rel"] = max((g["rel"] for g in result["gradients"].values()), default=0.0)
    if report.worst is not None and not report.passed:
        sample = report.worst.sample
        result["minimal_input"] = {
            "summary": sample.summary(),
            "args": [a.tolist() for a in sample.args if isinstance(a, torch.Tensor)],
            "reference": float(report.worst.expected_value),
            "by_rank": None
            if report.worst.candidate_value is None
            else report.worst.candidate_value.tolist(),
        }
    return result


def run_optimizer_case(case: po.OptimizerCase, max_examples: int) -> dict:
    if case.needs_vendored and po.davda54_sam() is None:
        return {"passed": None, "failure": f"not run ({po.VENDORED.name} absent)"}
    start = time.perf_counter()
    report = oracle.check_optimizer(
        case.factory,
        case.reference,
        adapter=case.adapter,
        strategy=case.strategy() if case.strategy is not None else None,
        tolerance=case.tolerance,
        max_examples=max_examples,
    )
    result = report.to_dict()
    result["seconds"] = time.perf_counter() - start
    return result


def _first(failure: str) -> str:
    return failure.split("; shards:")[0].split("; rank")[0]


def oracle_markdown(distributed: list[dict], optimizers: list[dict]) -> str:
    lines = [
        "| peer call (2 gloo ranks) | reference | float32 | float64 | result |",
        "|---|---|---|---|---|",
    ]
    for row in distributed:
        verdict = "agrees" if not row["difference"] else "differs: " + ", ".join(row["difference"])
        cells = [_errors(row[d]) for d in ("float32", "float64")]
        lines.append(
            f"| {row['call']} | `{row['reference']}` | {cells[0]} | {cells[1]} | {verdict} |"
        )
    lines += ["", "| peer optimizer | reference (adapter) | cases | result |", "|---|---|---|---|"]
    for row in optimizers:
        r = row["result"]
        if r["passed"] is None:
            verdict = r["failure"]
        elif r["passed"]:
            verdict = f"agrees ({r['steps']} steps, largest error {r['largest_error']:.1e})"
        else:
            verdict = "differs: " + ", ".join(row["difference"])
        lines.append(
            f"| {row['call']} | `{row['reference']}` ({row['adapter']}) | {row['domain']} | "
            f"{verdict} |"
        )
    lines += [
        "",
        "| difference | minimal reproduction (shrunk by the oracle) | what the oracle printed |",
    ]
    lines.append("|---|---|---|")
    for row in distributed:
        m = row["float64"].get("minimal_input")
        for key in row["difference"]:
            if m is None:
                continue
            ranks = ", ".join(f"{v:.10g}" for v in m["by_rank"] or [])
            lines.append(
                f"| {key}: {po.DIFFERENCES[key]} | {m['summary']}: args = {m['args']}; "
                f"reference {m['reference']:.10g}, ranks [{ranks}] | "
                f"{_first(row['float64']['failure'])} |"
            )
    for row in optimizers:
        r = row["result"]
        if r["passed"] is not False:
            continue
        for key in row["difference"]:
            lines.append(
                f"| {key}: {po.DIFFERENCES[key]} | {'; '.join(r['worst_case'])} | {r['failure']} |"
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
    distributed = []
    for case in po.DISTRIBUTED_CASES:
        row = {"name": case.name, "call": case.call, "reference": case.reference,
               "difference": list(case.difference)}  # fmt: skip
        for label, dtype in DTYPES.items():
            row[label] = run_distributed_case(case, dtype, args.max_examples)
            print(f"{case.name:<36} {label}: {_errors(row[label])}", file=sys.stderr)
        distributed.append(row)
    optimizers = []
    for case in po.OPTIMIZER_CASES:
        result = run_optimizer_case(case, args.max_examples)
        print(f"{case.name:<36} {result['passed']}", file=sys.stderr)
        optimizers.append(
            {"name": case.name, "call": case.call, "reference": case.reference,
             "adapter": case.adapter, "domain": case.domain_note,
             "difference": list(case.difference), "result": result}
        )  # fmt: skip
    print()
    print(oracle_markdown(distributed, optimizers))
    environment = {
        **package_versions(),
        "torch": torch.__version__,
        "lightly": version("lightly"),
        "pytorch-metric-learning": version("pytorch-metric-learning"),
        "pytorch-optimizer": version("pytorch-optimizer"),
        "davda54/sam": "vendored" if po.davda54_sam() is not None else "absent",
        "max_examples": args.max_examples,
    }
    write_json(
        args.out / "peers.json",
        {
            "environment": environment,
            "cases": rows,
            "reproductions": reproductions,
            "distributed": distributed,
            "optimizers": optimizers,
        },
    )
    flagged = {case.name: case.flagged_in for case in pc.CASES}
    ok = all(r[flagged[r["name"]]]["passed"] != bool(r["difference"]) for r in rows)
    ok = ok and all(r["float64"]["passed"] != bool(r["difference"]) for r in distributed)
    ok = ok and all(
        r["result"]["passed"] is None or r["result"]["passed"] != bool(r["difference"])
        for r in optimizers
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
