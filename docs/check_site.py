"""Checks of the built site (``nox -s docs`` runs it after ``sphinx-build``).

``python docs/check_site.py [docs/_build/html]``:

1. every internal link resolves: each relative ``href``/``src`` of every page names a file
   of the build, and its ``#fragment`` an ``id`` on that page;
2. the site is offline: no page loads a script, style sheet or image from the network (the
   equations are typeset by the MathJax copy in ``_static/mathjax``);
3. in headless Chromium (``/usr/bin/chromium``, or ``$CHROMIUM``), after the page's scripts
   ran, the equation of ``nt_xent`` is drawn: its entry holds MathJax output
   (``mjx-container``) and no raw TeX (``\\frac``, ``\\(``) is left in the page's visible
   text; a screenshot goes to ``docs/_build/screenshot-nt_xent.png``.  Without Chromium this
   step is skipped with a message (the exit status stays 0).

Exits non-zero, listing the problems, when a check fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

PAGE = "api/losses.html"
ANCHOR = "amcl_lab.losses.contrastive.nt_xent"


class _Page(HTMLParser):
    """Ids, links and resource URLs of one page, and the text a reader sees."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.resources: list[str] = []
        self.text: list[str] = []
        self._hidden = 0  # depth inside <script>/<style>/<template>

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag in {"script", "img", "iframe"} and a.get("src"):
            self.resources.append(a["src"])
        if tag == "link" and a.get("href") and "stylesheet" in (a.get("rel") or ""):
            self.resources.append(a["href"])
        if tag in {"script", "style", "template"}:
            self._hidden += 1

    def handle_endtag(self, tag):
        if tag in {"script", "style", "template"} and self._hidden:
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def check_links(site: Path) -> tuple[list[str], int]:
    """Broken internal links and offline violations; and how many links were checked."""
    site = site.resolve()  # pages are keyed by resolved paths, as link targets are
    pages = {p: _parse(p.read_text(encoding="utf-8")) for p in site.rglob("*.html")}
    problems, checked = [], 0
    for path, page in pages.items():
        where = path.relative_to(site)
        for url in page.resources:
            if urlsplit(url).scheme in {"http", "https"} or url.startswith("//"):
                problems.append(f"{where}: loads {url} from the network")
        for url in page.links + page.resources:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue  # an external link (http, mailto): not part of the site
            checked += 1
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: link {url} -> missing file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else set()
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: link {url} -> no id {parts.fragment!r}")
    return problems, checked


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def check_browser(site: Path, screenshot: Path) -> list[str]:
    """Render the nt_xent entry in headless Chromium; problems, or [] when drawn."""
    chromium = _chromium()
    if chromium is None:
        print("check_site: SKIPPED the browser check: no Chromium (/usr/bin/chromium, $CHROMIUM)")
        return []
    url = (site / PAGE).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        common = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
        ]
        dom = subprocess.run(
            [*common, "--dump-dom", url], capture_output=True, text=True, timeout=180, check=False
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = subprocess.run(
            [*common, "--window-size=1280,3200", f"--screenshot={screenshot}", url],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    problems = []
    if dom.returncode != 0 or not dom.stdout.strip():
        return [f"chromium --dump-dom failed ({dom.returncode}): {dom.stderr[-500:]}"]
    page = _parse(dom.stdout)
    text = "".join(page.text)
    # the entry: from its <dt id=ANCHOR> to the end of its description (the next entry)
    start = dom.stdout.find(f'id="{ANCHOR}"')
    end = dom.stdout.find('<dt class="sig', start + 1)
    entry_math = dom.stdout[start:end].count("<mjx-container") if start >= 0 else 0
    if ANCHOR not in page.ids:
        problems.append(f"{PAGE}: no entry {ANCHOR} in the rendered page")
    elif entry_math == 0:
        problems.append(f"{PAGE}: the nt_xent entry holds no MathJax output (mjx-container)")
    for raw in ("\\frac", "\\(", "\\[", "\\sum", "\\tau"):
        if raw in text:
            at = text.index(raw)
            problems.append(f"{PAGE}: raw TeX {raw!r} visible: ...{text[at - 60 : at + 60]!r}...")
    if shot.returncode != 0 or not screenshot.is_file() or screenshot.stat().st_size < 20_000:
        problems.append(f"chromium --screenshot failed ({shot.returncode}): {shot.stderr[-500:]}")
    if not problems:
        print(
            f"check_site: {PAGE}: {entry_math} typeset equations in the nt_xent entry, "
            f"no raw TeX in the text; screenshot {screenshot}"
        )
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[0]) if argv else Path(__file__).resolve().parent / "_build" / "html"
    if not (site / "index.html").is_file():
        print(f"check_site: no built site at {site} (run nox -s docs)")
        return 1
    problems, checked = check_links(site)
    print(f"check_site: {checked} internal links checked, {len(problems)} problems")
    problems += check_browser(site, site.parent / "screenshot-nt_xent.png")
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
