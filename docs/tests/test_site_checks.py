"""``docs/check_site.py`` reports broken internal links and network resources."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import check_site


def test_broken_links_and_remote_resources_are_reported(tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "page.html").write_text('<p id="here">x</p>', encoding="utf-8")
    (tmp_path / "index.html").write_text(
        '<a href="api/page.html#here">ok</a> <a href="https://example.org">external</a>'
        '<a href="api/page.html#gone">bad anchor</a> <a href="missing.html">bad file</a>'
        '<script src="https://cdn.example.org/mathjax.js"></script>',
        encoding="utf-8",
    )
    problems, checked = check_site.check_links(tmp_path)
    assert checked == 3
    assert len(problems) == 3
    assert any("no id 'gone'" in p for p in problems)
    assert any("missing.html -> missing file" in p for p in problems)
    assert any("from the network" in p for p in problems)


def test_a_relative_site_path_resolves_anchors(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text('<p id="x"></p>', encoding="utf-8")
    (tmp_path / "site" / "index.html").write_text('<a href="a.html#x">a</a>', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert check_site.check_links(Path("site")) == ([], 1)


def test_a_clean_site_has_no_problems(tmp_path):
    (tmp_path / "index.html").write_text('<a href="#top" id="top">top</a>', encoding="utf-8")
    assert check_site.check_links(tmp_path) == ([], 1)
