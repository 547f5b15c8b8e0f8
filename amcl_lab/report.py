"""One self-contained HTML page for a folder of runs: summary, figures, claims, run metadata.

:func:`build_report` walks ``<runs>/<experiment>/<run-id>/`` folders (any folder holding a
``config.json``) and writes

* a summary table: per run, the experiment, the preset and how many claims were
  reproduced, not reproduced, inconclusive or had a failed setup (collapsed), linked to the
  run's section; then a table of contents;
* a section per experiment, the main job (``simclr_digits``) first, the others sorted,
  and in it per run: the run metadata of ``config.json`` (preset, overrides, seeds,
  device, git revision, package versions, creation time) and the wall time of
  ``results.json``; the claims table (id, claim, source, effect, the claim's direction and
  threshold, mean, 95 % confidence interval, seeds, verdict) or a note that the run has
  not finished; every PNG figure of the run, embedded as base64 data (the page has no
  external references, so it can be mailed or archived as one file), sized to its print
  width on the page, captioned with its title, with a relative link to the PDF;
* a smoke run is badged "smoke: a code-path check, not evidence" and its verdicts greyed:
  a few steps on a few seeds test the code, not the paper.

The page is written atomically.  :func:`claims_markdown` gives the claims of every finished
run as one Markdown table (``amcl-lab report --markdown``), the form the README's Results
section is pasted from.
"""

from __future__ import annotations

import base64
import html
import json
import re
import struct
import urllib.parse
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .io import atomic_path

__all__ = ["MAIN_EXPERIMENT", "build_report", "claims_markdown", "find_runs", "render_report"]

#: The experiment the report shows first (the main job).
MAIN_EXPERIMENT = "simclr_digits"
#: The badge of a smoke run.
SMOKE_NOTE = "smoke: a code-path check, not evidence"
#: The width of the page's text column the figures are sized against, in inches of print.
_PAGE_INCHES = 7.2

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
.reproduced { background: #d8f3dc; } .not-reproduced { background: #ffd6d6; }
.inconclusive { background: #fff3cd; } .setup-failed { background: #e2e3e5; }
.smoke .verdict, .smoke td.count { color: #777; background: #f6f6f6; font-style: italic; }
.badge { display: inline-block; font-size: 0.75em; padding: 0.1em 0.5em; margin-left: 0.5em;
         border-radius: 0.6em; background: #eee; color: #555; border: 1px solid #ccc;
         font-weight: normal; vertical-align: middle; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.meta th { font-weight: 600; white-space: nowrap; background: #f7f7f7; }
nav ul { margin: 0.3em 0; }
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


def _meta_table(rows: Iterable[tuple[str, Any]]) -> str:
    """A key-value table: the keys are row headers (no empty header row)."""
    body = "".join(
        f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(_fmt(v))}</td></tr>' for k, v in rows
    )
    return f'<table class="meta">{body}</table>'


def _condition(c: dict[str, Any]) -> str:
    """What the claim needs of the effect: ``"> 0"``, ``"< 1.5"`` or ``"|effect| <= 0.5"``."""
    direction = c.get("direction")
    if direction == "within":
        return f"|effect| \u2264 {_fmt(c.get('margin'))}"
    sign = {"greater": ">", "less": "<"}.get(str(direction))
    return f"{sign} {_fmt(c.get('threshold'))}" if sign else "n/a"


def _claims_table(claims: list[dict[str, Any]], smoke: bool) -> str:
    header = ("id", "claim", "source", "effect", "needs", "mean", "95 % CI", "seeds", "verdict")
    rows = []
    for c in claims:
        ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
        css = _VERDICT_CLASSES.get(str(c["verdict"]), "")
        cells = [c.get("id", "?"), c["statement"], c["source"], c["effect"], _condition(c)]
        cells += [_fmt(c["mean"]), ci, c["n_seeds"]]
        rows.append(
            "<tr>"
            + "".join(f"<td>{_esc(x)}</td>" for x in cells)
            + f'<td class="{f"verdict {css}".strip()}" title="{_esc(c["reason"])}">'
            + f"{_esc(c['verdict'])}</td>"
            + "</tr>"
        )
    head = "".join(f"<th>{h}</th>" for h in header)
    smoke_css = " smoke" if smoke else ""
    return f'<table class="claims{smoke_css}"><tr>{head}</tr>{"".join(rows)}</table>'


def _png_info(data: bytes) -> tuple[float | None, str]:
    """The print width in inches (``None`` without a ``pHYs`` chunk) and the ``Title``."""
    width_inches, title = None, ""
    pixels = struct.unpack(">I", data[16:20])[0] if data[12:16] == b"IHDR" else 0
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        chunk = data[at + 8 : at + 8 + length]
        if kind == b"pHYs" and len(chunk) == 9 and chunk[8] == 1:  # unit: metre
            per_metre = struct.unpack(">I", chunk[:4])[0]
            width_inches = pixels / per_metre / 0.0254 if per_metre else None
        elif kind in (b"tEXt", b"zTXt", b"iTXt") and chunk.startswith(b"Title\0"):
            title = _png_text(kind, chunk[6:])
        elif kind == b"IDAT":
            break  # metadata comes before the image data
        at += 12 + length
    return width_inches, title


def _png_text(kind: bytes, rest: bytes) -> str:
    try:
        if kind == b"tEXt":
            return rest.decode("latin-1")
        if kind == b"zTXt":
            return zlib.decompress(rest[1:]).decode("latin-1")
        compressed, text = rest[0], rest[2:].split(b"\0", 2)[-1]  # language, keyword
        return (zlib.decompress(text) if compressed else text).decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError):
        return ""


def _figures(run: Path, page_dir: Path, label: str) -> str:
    parts = []
    for number, png in enumerate(sorted(run.rglob("*.png")), start=1):
        raw = png.read_bytes()
        inches, title = _png_info(raw)
        data = base64.b64encode(raw).decode("ascii")
        pdf = png.with_suffix(".pdf")
        link = ""
        if pdf.exists():
            href = _href(pdf, page_dir)
            link = f' (<a href="{_esc(href)}">PDF</a>)' if href else f" (PDF: {_esc(pdf)})"
        width = min(100, round(100 * inches / _PAGE_INCHES)) if inches else 100
        name = png.stem.replace("_", " ")
        caption = f"Figure {number} of {label}: {title or name}"
        parts.append(
            f'<figure><img alt="{_esc(name)}" style="width: {width}%" '
            f'src="data:image/png;base64,{data}">'
            f"<figcaption>{_esc(caption)} [{_esc(png.name)}]{link}</figcaption></figure>"
        )
    return "".join(parts) or "<p>No figures.</p>"


def _anchor(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(parts)).strip("-") or "section"


def _is_smoke(config: dict[str, Any]) -> bool:
    return config.get("preset") == "smoke"


def _run_section(run: Path, page_dir: Path, anchor: str) -> str:
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
    run_id = str(config.get("run_id", run.name))
    smoke = _is_smoke(config)
    badge = f' <span class="badge">{_esc(SMOKE_NOTE)}</span>' if smoke else ""
    parts = [f'<h3 id="{_esc(anchor)}">{_esc(run_id)}{badge}</h3>', _meta_table(meta)]
    if results is None and failed is not None:
        parts.append(f"<p><em>The run failed: {_esc(failed.get('error'))}</em></p>")
    elif results is None:
        parts.append("<p><em>No results.json: the run has not finished (resume it).</em></p>")
    elif claims:
        parts.append(_claims_table(claims, smoke))
    label = f"{config.get('experiment', run.parent.name)} {run_id}"
    parts.append(_figures(run, page_dir, label))
    cfg = json.dumps(config.get("config", {}), indent=1)
    parts.append(f"<details><summary>resolved config</summary><pre>{_esc(cfg)}</pre></details>")
    return "\n".join(parts)


def _summary_row(run: Path, anchor: str) -> str:
    """Experiment, preset, the claims per verdict and the link of one run."""
    config = _read_json(run / "config.json")
    results_path = run / "results.json"
    counts = dict.fromkeys(_VERDICT_CLASSES, 0)
    if results_path.exists():
        for c in _claims(results_path, _read_json(results_path)):
            if c["verdict"] in counts:
                counts[c["verdict"]] += 1
        status = ""
    else:
        status = " (failed)" if (run / "failed.json").exists() else " (unfinished)"
    smoke = _is_smoke(config)
    badge = f' <span class="badge">{_esc(SMOKE_NOTE)}</span>' if smoke else ""
    css = ' class="smoke"' if smoke else ""
    cells = "".join(
        f'<td class="count {_VERDICT_CLASSES[v] if n and not smoke else ""}">{n}</td>'
        for v, n in counts.items()
    )
    name = _esc(config.get("experiment", run.parent.name))
    link = f'<a href="#{_esc(anchor)}">{_esc(config.get("run_id", run.name))}</a>{status}'
    return (
        f"<tr{css}><td>{name}</td><td>{_esc(config.get('preset'))}{badge}</td>{cells}"
        f"<td>{link}</td></tr>"
    )


def _experiment_order(name: str) -> tuple[bool, str]:
    return name != MAIN_EXPERIMENT, name


def render_report(runs_dir: str | Path, page_dir: str | Path | None = None) -> str:
    """The HTML of the report of ``runs_dir`` (``page_dir``: where links are relative to)."""
    runs_dir = Path(runs_dir)
    page_dir = Path(page_dir) if page_dir is not None else runs_dir
    runs = find_runs(runs_dir)
    by_experiment: dict[str, list[Path]] = {}
    for run in runs:
        name = str(_read_json(run / "config.json").get("experiment", run.parent.name))
        by_experiment.setdefault(name, []).append(run)
    order = sorted(by_experiment, key=_experiment_order)
    sections = {name: _anchor("experiment", str(i), name) for i, name in enumerate(order)}
    anchors = {
        run: _anchor("run", sections[name], str(i), run.name)
        for name in order
        for i, run in enumerate(by_experiment[name])
    }
    body = [f"<h1>amcl_lab report: {_esc(runs_dir)}</h1>"]
    if not runs:
        body.append("<p>No runs found.</p>")
    else:
        head = "".join(f"<th>{_esc(v)}</th>" for v in ("experiment", "preset", *_VERDICT_CLASSES))
        rows = "".join(
            _summary_row(run, anchors[run]) for name in order for run in by_experiment[name]
        )
        body.append('<h2 id="summary">Summary</h2>')
        body.append(
            "<p>Claims per verdict of every run. A smoke run is a code-path check, not "
            "evidence: its verdicts are greyed.</p>"
        )
        body.append(f'<table class="summary"><tr>{head}<th>run</th></tr>{rows}</table>')
        toc = []
        for name in order:
            items = "".join(
                f'<li><a href="#{_esc(anchors[run])}">{_esc(run.name)}</a></li>'
                for run in by_experiment[name]
            )
            toc.append(
                f'<li><a href="#{_esc(sections[name])}">{_esc(name)}</a><ul>{items}</ul></li>'
            )
        body.append(f'<nav id="contents"><h2>Contents</h2><ul>{"".join(toc)}</ul></nav>')
    for name in order:
        body.append(f'<h2 id="{_esc(sections[name])}">{_esc(name)}</h2>')
        body.extend(_run_section(run, page_dir, anchors[run]) for run in by_experiment[name])
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
