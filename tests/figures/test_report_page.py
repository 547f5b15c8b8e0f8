"""The report page, parsed with ``html.parser``: images resolve, anchors exist, layout rules.

The light half of ``nox -s report`` (which renders the page in headless Chromium): every
``<img>`` is a PNG of the runs folder (embedded) or a file next to the page, every in-page
link has its target, the summary and contents come first, the main job leads, claims show
their id, direction and threshold, figures are sized and captioned, smoke runs are badged.
"""

from __future__ import annotations

import base64
from html.parser import HTMLParser
from pathlib import Path

import pytest

from amcl_lab import figures
from amcl_lab.io import write_json
from amcl_lab.report import MAIN_EXPERIMENT, SMOKE_NOTE, build_report


class Page(HTMLParser):
    """The elements of a page the checks read."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.links: list[str] = []
        self.images: list[dict[str, str]] = []
        self.headers: list[str] = []
        self.order: list[str] = []  # h2 texts
        self.captions: list[str] = []
        self._open: str | None = None
        self._text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a)
        if tag in ("th", "h2", "figcaption"):
            self._open, self._text = tag, []

    def handle_data(self, data):
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == self._open:
            text = "".join(self._text).strip()
            {"th": self.headers, "h2": self.order, "figcaption": self.captions}[tag].append(text)
            self._open = None


def page_problems(page_path: Path, runs: Path) -> list[str]:
    """Images that are no PNG of ``runs`` (nor a file next to the page) and dead anchors."""
    page = Page(page_path.read_text(encoding="utf-8"))
    pngs = {p.read_bytes() for p in runs.rglob("*.png")}
    problems = []
    for img in page.images:
        src = img.get("src", "")
        if src.startswith("data:image/png;base64,"):
            if base64.b64decode(src.split(",", 1)[1]) not in pngs:
                problems.append(f"image {img.get('alt')!r} is no PNG of the runs")
        elif not (page_path.parent / src).is_file():
            problems.append(f"image {src!r} does not resolve to a file")
    for href in page.links:
        if href.startswith("#") and href[1:] not in page.ids:
            problems.append(f"anchor {href} has no target")
        elif href.startswith("./") and not (page_path.parent / href).exists():
            problems.append(f"link {href} has no file")
    return problems


def _run(root: Path, experiment: str, preset: str, verdict: str, width: str) -> Path:
    folder = root / experiment / f"{preset}-1"
    config = {"experiment": experiment, "run_id": f"{preset}-1", "preset": preset}
    config |= {"seeds": [0, 1, 2], "config": {}, "device": "cpu", "versions": {}}
    write_json(folder / "config.json", config | {"overrides": [], "created": "2026-01-01"})
    with figures.house_style():
        fig, _ = figures.new_figure(2 if width == "double" else 1, width=width)
    fig.suptitle(f"{experiment} ({preset} preset)\nprobe accuracy over seeds")
    figures.save(fig, folder / "figures" / "curves")
    claim = {"id": "probe-gain", "statement": "Training helps", "source": "Paper 2020"}
    claim |= {"effect": "gain (pp)", "direction": "greater", "threshold": 1.5, "margin": 0.0}
    claim |= {"per_seed": {}, "n_seeds": 3, "mean": 2.0, "ci_low": 1.6, "ci_high": 2.4}
    claim |= {"verdict": verdict, "reason": "r"}
    write_json(folder / "results.json", {"rows": [], "claims": [claim], "wall_seconds": 1.0})
    return folder


@pytest.fixture
def report(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, "amcl", "cpu", "reproduced", "double")  # sorts before the main job
    _run(runs, MAIN_EXPERIMENT, "smoke", "not reproduced", "single")
    return build_report(runs), runs


def test_every_image_resolves_and_every_anchor_exists(report):
    path, runs = report
    assert page_problems(path, runs) == []
    page = Page(path.read_text())
    assert len(page.images) == 2 and sum(h.startswith("#") for h in page.links) >= 6


def test_the_link_check_finds_dead_anchors_and_foreign_images(report, tmp_path):
    path, runs = report
    text = path.read_text().replace('id="contents"', 'id="elsewhere"', 1)
    text = text.replace("<body>", '<body><a href="#contents">x</a><img src="missing.png">', 1)
    bad = tmp_path / "bad.html"
    bad.write_text(text)
    problems = page_problems(bad, runs)
    assert "anchor #contents has no target" in problems
    assert "image 'missing.png' does not resolve to a file" in problems


def test_summary_and_contents_come_first_and_the_main_job_leads(report):
    page = Page(report[0].read_text())
    assert page.order[:2] == ["Summary", "Contents"]
    assert page.order[2:] == [MAIN_EXPERIMENT, "amcl"]
    for verdict in ("reproduced", "not reproduced", "inconclusive", "setup failed (collapsed)"):
        assert verdict in page.headers
    assert "" not in page.headers  # no empty header cells (the old metadata tables)


def test_claims_show_id_and_threshold_and_smoke_runs_are_badged(report):
    text = report[0].read_text()
    assert "<td>probe-gain</td>" in text and "<td>&gt; 1.5</td>" in text
    assert text.count(SMOKE_NOTE) == 2  # the summary row and the run heading of the smoke run
    assert '<table class="claims smoke">' in text and '<table class="claims">' in text
    assert 'class="verdict reproduced"' in text  # the cpu run's verdict keeps its colour


def test_figures_are_sized_to_the_page_and_captioned_with_their_title(report):
    page = Page(report[0].read_text())
    widths = [int(img["style"].removeprefix("width: ").removesuffix("%")) for img in page.images]
    assert all(0 < w <= 100 for w in widths) and widths[0] < widths[1]  # single < double
    assert all("probe accuracy over seeds" in caption for caption in page.captions)
    assert all(not caption.startswith("figures/") for caption in page.captions)
