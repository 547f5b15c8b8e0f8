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
import urllib.parse
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
.inconclusive { background: #fff3cd; } .setup-failed { background: #e2e3e5; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.meta td:first-child { font-weight: 600; white-space: nowrap; }
"""


def find_runs(runs_dir: str | Path) -> list[Path]:
    """Every run folder under ``runs_dir`` (folders holding a ``config.json``), sorted."""
    return sorted(p.parent for p in Path(runs_dir).rglob("config.json"))


def _esc(x: Any) -> str:
    return html.escape(str(x))  # quotes too: safe in text and in quoted attributes


#: The CSS classes of the verdicts; anything else (a tampered results.json) gets none.
_VERDICT_CLASSES = {
    **{v: v.replace(" ", "-") for v in ("reproduced", "not reproduced", "inconclusive")},
    "setup failed (collapsed)": "setup-failed",
}
#: The claim keys the report reads.
_CLAIM_KEYS = (
    *("statement", "source", "effect", "mean", "ci_low", "ci_high", "n_seeds"),
    *("verdict", "reason"),
)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file of a run, or a ``ValueError`` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or remove the file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; fix or remove the file")
    return data


def _claims(path: Path, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The claims of a ``results.json``, or a ``ValueError`` naming the file and the key."""
    claims = results.get("claims")
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise ValueError(f"{path}: 'claims' must be a list of objects; fix or remove the file")
    for c in claims:
        missing = [k for k in _CLAIM_KEYS if k not in c]
        if missing:
            raise ValueError(
                f"{path}: claim {c.get('id', '?')!r} lacks {', '.join(missing)}; fix or remove "
                "the file"
            )
    return claims


def _href(target: Path, page_dir: Path) -> str | None:
    """A relative link to ``target`` below ``page_dir``, percent-encoded, or ``None``.

    Only plain relative paths become links: every segment is quoted (``:`` included, so no
    segment reads as a scheme such as ``javascript:``) and the link starts with ``./``.
    """
    try:
        rel = target.resolve().relative_to(page_dir.resolve())
    except ValueError:
        return None
    if not rel.parts or any(part in ("", ".", "..") for part in rel.parts):
        return None
    return "./" + "/".join(urllib.parse.quote(part, safe="") for part in rel.parts)


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
    return f'<table class="{_esc(css)}"><tr>{head}</tr>{body}</table>'


def _claims_table(claims: list[dict[str, Any]]) -> str:
    header = ("claim", "source", "effect", "mean", "95 % CI", "seeds", "verdict")
    rows = []
    for c in claims:
        ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
        css = _VERDICT_CLASSES.get(str(c["verdict"]), "")
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
            href = _href(pdf, page_dir)
            link = f' (<a href="{_esc(href)}">PDF</a>)' if href else f" (PDF: {_esc(pdf)})"
        parts.append(
            f'<figure><img alt="{_esc(png.stem)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(png.relative_to(run))}{link}</figcaption></figure>"
        )
    return "".join(parts) or "<p>No figures.</p>"


def _run_section(run: Path, page_dir: Path) -> str:
    config = _read_json(run / "config.json")
    results_path = run / "results.json"
    results = _read_json(results_path) if results_path.exists() else None
    claims = _claims(results_path, results) if results is not None else []
    failed_path = run / "failed.json"
    failed = _read_json(failed_path) if failed_path.exists() else None
    meta = [
        ("run folder", run),
        ("preset", config.get("preset")),
        ("overrides", " ".join(config.get("overrides", [])) or "none"),
        ("seeds", ", ".join(map(str, config.get("seeds", [])))),
        ("device", config.get("device")),
        ("git revision", config.get("git_revision") or "unknown"),
        ("created", config.get("created")),
        ("wall time (s)", results.get("wall_seconds") if results else "unfinished"),
        (
            "versions",
            ", ".join(f"{k} {val}" for k, val in config.get("versions", {}).items() if val),
        ),
    ]
    parts = [f"<h3>{_esc(config.get('run_id', run.name))}</h3>", _table(meta, ("", ""), "meta")]
    if results is None and failed is not None:
        parts.append(f"<p><em>The run failed: {_esc(failed.get('error'))}</em></p>")
    elif results is None:
        parts.append("<p><em>No results.json: the run has not finished (resume it).</em></p>")
    elif claims:
        parts.append(_claims_table(claims))
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
        name = _read_json(run / "config.json").get("experiment", run.parent.name)
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
        config = _read_json(run / "config.json")
        for c in _claims(path, _read_json(path)):
            ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
            cells = (
                config.get("experiment"),
                config.get("preset"),
                f"`{c.get('id')}`",
                c["effect"],
            )
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
