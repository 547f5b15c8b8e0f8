"""Figures (house style, deterministic files) and the HTML report of a runs folder."""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest

from amcl_lab import cli, figures
from amcl_lab.io import write_json
from amcl_lab.report import build_report, claims_markdown, find_runs


def _curve_figure():
    table = pd.DataFrame(
        [{"seed": s, "step": t, "acc": 50 + 10 * t + s} for s in range(3) for t in range(4)]
    )
    with figures.house_style():
        fig, axes = figures.new_figure(2, width="double")
        figures.seed_band(axes[0, 0], table, "step", "acc")
        axes[0, 0].set_xlabel("training step")
        axes[0, 0].set_ylabel("accuracy (%)")
    return fig, axes


def test_save_writes_identical_png_and_pdf_for_identical_figures(tmp_path):
    paths = figures.save(_curve_figure()[0], tmp_path / "a" / "curve")
    assert [p.name for p in paths] == ["curve.png", "curve.pdf"]
    again = figures.save(_curve_figure()[0], tmp_path / "b" / "curve")
    for p, q in zip(paths, again, strict=True):
        assert p.read_bytes() == q.read_bytes()
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Matplotlib" not in paths[1].read_bytes()  # no software / date metadata


def test_seed_band_draws_the_mean_and_the_t_interval():
    fig, axes = _curve_figure()
    ax = axes[0, 0]
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([51.0, 61.0, 71.0, 81.0])
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    _, low, high = figures.mean_ci([50.0, 51.0, 52.0])
    assert band.min() == pytest.approx(low) and band.max() == pytest.approx(high + 30.0)
    assert ax.get_xlabel() == "training step" and ax.get_ylabel() == "accuracy (%)"
    assert fig.get_size_inches()[0] == figures.WIDTHS["double"]


def _fake_run(root, experiment, run_id, finished=True, figure_names=("f",)):
    folder = root / experiment / run_id
    write_json(
        folder / "config.json",
        {
            "experiment": experiment,
            "run_id": run_id,
            "preset": "smoke",
            "seeds": [0, 1, 2],
            "config": {"lr": 0.1},
            "device": "cpu",
            "versions": {"torch": "x"},
            "git_revision": None,
            "created": "2026-01-01T00:00:00+00:00",
            "overrides": [],
        },
    )
    for i, name in enumerate(figure_names):
        fig, _ = _curve_figure()
        fig.suptitle(f"{run_id} {i}")  # different bytes per figure
        figures.save(fig, folder / "figures" / name)
    if finished:
        claim = {
            "id": "c",
            "statement": "Pretraining helps <a lot>",
            "source": "Paper 2020",
            "effect": "gain (pp)",
            "direction": "greater",
            "threshold": 0.0,
            "margin": 0.0,
            "per_seed": {"0": 1.0},
            "n_seeds": 3,
            "mean": 1.5,
            "ci_low": 0.5,
            "ci_high": 2.5,
            "verdict": "reproduced",
            "reason": "whole CI above 0",
        }
        write_json(folder / "results.json", {"rows": [], "claims": [claim], "wall_seconds": 1.0})
    return folder


def test_report_embeds_every_figure_claims_and_metadata(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "alpha", "r1", figure_names=("curves", "bars"))
    _fake_run(runs, "beta", "r2", finished=False, figure_names=("partial",))
    path = build_report(runs)
    assert path == runs / "report.html"
    page = path.read_text()
    pngs = sorted(runs.rglob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert base64.b64encode(png.read_bytes()).decode() in page, png
    assert "Pretraining helps &lt;a lot&gt;" in page  # escaped
    assert 'class="verdict reproduced"' in page and "[0.5, 2.5]" in page
    assert "has not finished" in page
    assert "alpha" in page and "beta" in page and "2026-01-01" in page
    assert 'href="./alpha/r1/figures/curves.pdf"' in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    assert [p.name for p in find_runs(runs)] == ["r1", "r2"]


def test_report_of_a_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nothing")
    out = build_report(tmp_path, tmp_path / "out" / "page.html")
    assert "No runs found" in out.read_text()


def test_claims_markdown_lists_the_claims_of_finished_runs(tmp_path, capsys):
    _fake_run(tmp_path, "alpha", "r1")
    _fake_run(tmp_path, "beta", "r2", finished=False)
    table = claims_markdown(tmp_path)
    lines = table.splitlines()
    assert lines[0].startswith("| experiment | preset | claim |") and len(lines) == 3
    assert lines[2] == "| alpha | smoke | `c` | gain (pp) | 1.5 | [0.5, 2.5] | 3 | reproduced |"
    piped = _fake_run(tmp_path, "gamma", "r3") / "results.json"
    results = json.loads(piped.read_text())
    results["claims"][0]["effect"] = "L(w + rho g/|g|) - L(w)"
    write_json(piped, results)
    table = claims_markdown(tmp_path)
    assert r"L(w + rho g/\|g\|) - L(w)" in table  # a pipe in a cell would split the column
    assert all(line.count(" | ") == 7 for line in table.splitlines()[2:])
    assert cli.main(["report", str(tmp_path), "--markdown"]) == 0
    assert capsys.readouterr().out == table
    with pytest.raises(FileNotFoundError, match="does not exist"):
        claims_markdown(tmp_path / "nothing")


def test_a_tampered_results_json_cannot_inject_markup(tmp_path):
    """Before: the verdict went unescaped into class="..." (a live <script>)."""
    folder = _fake_run(tmp_path, "alpha", "r1")
    results = json.loads((folder / "results.json").read_text())
    evil = '"><script>alert(1)</script><td class="'
    results["claims"][0].update(verdict=evil, reason=evil, statement=evil, source=evil)
    write_json(folder / "results.json", results)
    page = build_report(tmp_path).read_text()
    assert "<script>" not in page and 'class=""><script' not in page
    assert '<td class="verdict" title="&quot;&gt;&lt;script&gt;' in page  # unknown: no colour


def test_links_are_relative_percent_encoded_paths_never_a_scheme(tmp_path):
    """Before: hrefs were built from run folder names (a 'javascript:' folder made a live link)."""
    runs = tmp_path / "runs"
    _fake_run(runs, "javascript:alert(1)", "r1", figure_names=("curves",))
    page = build_report(runs, runs / "javascript:alert(1)" / "page.html").read_text()
    assert 'href="./r1/figures/curves.pdf"' in page
    page = build_report(runs).read_text()
    assert 'href="./javascript%3Aalert%281%29/r1/figures/curves.pdf"' in page
    assert 'href="javascript' not in page
    outside = build_report(runs, tmp_path / "elsewhere" / "page.html").read_text()
    assert '<a href="./' not in outside and "(PDF: " in outside  # not below the page: no link
    assert 'href="#run-experiment-0-javascript-alert-1-0-r1"' in outside  # in-page anchors only


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("config.json", "{not json", r"config.json is not valid JSON"),
        ("config.json", "[1, 2]", r"config.json is not a JSON object"),
        ("results.json", "", r"results.json is not valid JSON"),
        ("results.json", '{"claims": 3}', r"results.json: 'claims' must be a list of objects"),
        (
            "results.json",
            '{"claims": [{"id": "c", "mean": 1}]}',
            r"results.json: claim 'c' lacks statement, source, effect, ci_low",
        ),
    ],
)
def test_invalid_run_files_are_named_in_a_usage_error(tmp_path, capsys, name, content, match):
    """Before: JSONDecodeError without the file name, or a KeyError traceback."""
    folder = _fake_run(tmp_path, "alpha", "r1")
    (folder / name).write_text(content)
    with pytest.raises(ValueError, match=match):
        build_report(tmp_path)
    for argv in (["report", str(tmp_path)], ["report", str(tmp_path), "--markdown"]):
        assert cli.main(argv) == 2
        assert name in capsys.readouterr().err


def test_a_failed_run_is_reported_as_failed_with_its_error(tmp_path):
    folder = _fake_run(tmp_path, "alpha", "r1", finished=False)
    write_json(folder / "failed.json", {"error": "FileNotFoundError: missing <data>"})
    page = build_report(tmp_path).read_text()
    assert "The run failed: FileNotFoundError: missing &lt;data&gt;" in page
    assert "has not finished" not in page
