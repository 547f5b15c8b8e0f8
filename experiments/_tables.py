"""The claims of finished runs as one Markdown table with the statistics columns.

``python -m amcl_lab.experiments._tables RUNS_DIR`` prints the table the README's ``long``
section is pasted from: the columns of ``amcl-lab report --markdown`` plus the Holm-adjusted
verdict, the bootstrap interval and its verdict (claims with non-normal effects, 8 or more
seeds), and the seeds that 80 % power would need at the paper's effect and at the measured
mean (:mod:`amcl_lab.experiments._stats`).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["claims_table"]

HEADER = (
    "| experiment | preset | claim | mean | 95 % CI | seeds | verdict | Holm | bootstrap CI "
    "(verdict) | seeds for 80 % power: paper's effect / measured mean |"
)


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def claims_table(runs_dir: str | Path) -> str:
    """One row per claim of every finished run under ``runs_dir`` (sorted by run folder)."""
    lines = [HEADER, "|" + "---|" * 10]
    for results in sorted(Path(runs_dir).rglob("results.json")):
        data = json.loads(results.read_text())
        for c in data["claims"]:
            ci = f"[{_num(c['ci_low'])}, {_num(c['ci_high'])}]"
            boot = (
                f"[{_num(c['boot_low'])}, {_num(c['boot_high'])}] ({c['boot_verdict']})"
                if c.get("boot_verdict")
                else "-"
            )
            power = f"{_num(c.get('seeds_for_expected'))} / {_num(c.get('seeds_for_observed'))}"
            cells = (
                data["experiment"],
                data["preset"],
                f"`{c['id']}`",
                _num(c["mean"]),
                ci,
                str(c["n_seeds"]),
                c["verdict"],
                c.get("holm_verdict") or "-",
                boot,
                power,
            )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - a command-line convenience
    print(claims_table(sys.argv[1] if len(sys.argv) > 1 else "runs"), end="")
