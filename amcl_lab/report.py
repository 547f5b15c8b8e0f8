"""One self-contained HTML page for a folder of runs: figures, claims tables, run metadata.

:func:`build_report` walks ``<runs>/<experiment>/<run-id>/`` folders (any folder holding a
``config.json``), and for each experiment and run writes a section with

* the run metadata of ``config.json`` (preset, overrides, seeds, device, git revision,
  package versions, creation time) and the wall time of ``results.json``;
* the claims table of ``results.json`` (claim, source, measured effect, 95 % confidence
  interval, seeds, verdict) or a note that the run has not finished;
* every PNG figure of the run folder, embedded as base64 data (the page has no external
  references, so it can be mailed or archived as one file), with a relative link to the
  PDF next to it when there is one.

The page is written atomically.  :func:`claims_markdown` gives the claims of every finished
run as one Markdown table (``amcl-lab report --markdown``), the form the README's Results
section is pasted from.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .io import atomic_path

__all__ = ["build_report", "claims_markdown", "find_runs", "render_report"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.reproduced { background: #d8f3dc; } .not-reproduced { background: #ffd6d6; }
.inconclusive { background: #fff3cd; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.meta td:first-child { font-weight: 600; white-space: nowrap; }
"""


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every run folder under ``runs_dir`` (folders holding a ``config.json``), sorted."""
    return sorted(p.parent for p in Path(runs_dir).rglob("config.json"))


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _table(rows: Iterable[Iterable[Any]], header: Iterable[str], css: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_esc(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _claims_table(claims: list[dict[str, Any]]) -> str:
    header = ("claim", "source", "effect", "mean", "95 % CI", "seeds", "verdict")
    rows = []
    for c in claims:
        ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
        css = c["verdict"].replace(" ", "-")
        cells = [c["statement"], c["source"], c["effect"], _fmt(c["mean"]), ci, c["n_seeds"]]
        rows.append(
            "<tr>"
            + "".join(f"<td>{_esc(x)}</td>" for x in cells)
            + f'<td class="{css}" title="{_esc(c["reason"])}">{_esc(c["verdict"])}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in header)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _figures(run: Path, page_dir: Path) -> str:
    parts = []
    for png in sorted(run.rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        pdf = png.with_suffix(".pdf")
        link = ""
        if pdf.exists():
            try:
                rel = pdf.resolve().relative_to(page_dir.resolve())
                link = f' (<a href="{_esc(rel.as_posix())}">PDF</a>)'
            except ValueError:
                link = f" (PDF: {_esc(pdf)})"
        parts.append(
            f'<figure><img alt="{_esc(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(png.relative_to(run))}{link}</figcaption></figure>"
        )
    return "".join(parts) or "<p>No figures.</p>"


def _run_section(run: Path, page_dir: Path) -> str:
    config = json.loads((run / "config.json").read_text())
    results_path = run / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else None
    meta = [
        ("run folder", run),
        ("preset", config.get("preset")),
        ("overrides", " ".join(config.get("overrides", [])) or "none"),
        ("seeds", ", ".join(map(str, config.get("seeds", [])))),
        ("device", config.get("device")),
        ("git revision", config.get("git_revision") or "unknown"),
        ("created", config.get("created")),
        ("wall time (s)", results["wall_seconds"] if results else "unfinished"),
        (
            "versions",
            ", ".join(f"{k} {val}" for k, val in config.get("versions", {}).items() if val),
        ),
    ]
    parts = [f"<h3>{_esc(config.get('run_id', run.name))}</h3>", _table(meta, ("", ""), "meta")]
    if results is None:
        parts.append("<p><em>No results.json: the run has not finished (resume it).</em></p>")
    elif results["claims"]:
        parts.append(_claims_table(results["claims"]))
    parts.append(_figures(run, page_dir))
    cfg = json.dumps(config.get("config", {}), indent=1)
    parts.append(f"<details><summary>resolved config</summary><pre>{_esc(cfg)}</pre></details>")
    return "\n".join(parts)


def render_report(runs_dir: str | Path, page_dir: str | Path | None = None) -> str:
    """The HTML of the report of ``runs_dir`` (``page_dir``: where links are relative to)."""
    runs_dir = Path(runs_dir)
    page_dir = Path(page_dir) if page_dir is not None else runs_dir
    runs = find_runs(runs_dir)
    by_experiment: dict[str, list[Path]] = {}
    for run in runs:
        name = json.loads((run / "config.json").read_text()).get("experiment", run.parent.name)
        by_experiment.setdefault(name, []).append(run)
    body = [f"<h1>amcl_lab report: {_esc(runs_dir)}</h1>"]
    if not runs:
        body.append("<p>No runs found.</p>")
    summary = [(name, len(rs)) for name, rs in sorted(by_experiment.items())]
    if summary:
        body.append(_table(summary, ("experiment", "runs")))
    for name, rs in sorted(by_experiment.items()):
        body.append(f"<h2>{_esc(name)}</h2>")
        body.extend(_run_section(run, page_dir) for run in rs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>amcl_lab report</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def claims_markdown(runs_dir: str | Path) -> str:
    """One Markdown table of the claims of every finished run under ``runs_dir``.

    Columns: experiment, preset, claim id, measured effect, mean, 95 % confidence interval,
    number of seeds, verdict; runs in :func:`find_runs` order, claims in their module's
    order.  Unfinished runs (no ``results.json``) are left out.

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
    """
    if not Path(runs_dir).is_dir():
        raise FileNotFoundError(f"claims_markdown: runs folder {runs_dir} does not exist")
    lines = [
        "| experiment | preset | claim | effect | mean | 95 % CI | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in find_runs(runs_dir):
        path = run / "results.json"
        if not path.exists():
            continue
        config = json.loads((run / "config.json").read_text())
        for c in json.loads(path.read_text())["claims"]:
            ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
            cells = (config["experiment"], config["preset"], f"`{c['id']}`", c["effect"])
            numbers = (_fmt(c["mean"]), ci, c["n_seeds"], c["verdict"])
            escaped = (str(x).replace("|", "\\|") for x in (*cells, *numbers))  # keep columns
            lines.append("| " + " | ".join(escaped) + " |")
    return "\n".join(lines) + "\n"


def build_report(runs_dir: str | Path = "runs", output: str | Path | None = None) -> Path:
    """Write the report of ``runs_dir`` to ``output`` (default ``runs_dir/report.html``).

    Raises:
        FileNotFoundError: ``runs_dir`` does not exist.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"build_report: runs folder {runs_dir} does not exist")
    output = Path(output) if output is not None else runs_dir / "report.html"
    page = render_report(runs_dir, output.parent)
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return output
