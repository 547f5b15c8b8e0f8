"""Render a report page with headless Chromium: every image loaded, no console errors, a screenshot.

Usage: ``python scripts/render_report.py RUNS/report.html [--screenshot PATH]``
(``nox -s report`` runs it).  Standard library only; no DevTools protocol: a copy of the page
gets a small script that records errors (uncaught exceptions, ``console.error``, resources
that fail to load) from the first line on, and after the load event writes, into the DOM,
the images whose ``naturalWidth`` is 0 and the errors; ``chromium --dump-dom`` prints that
DOM.  ``--screenshot`` is Chromium's own.  Exits 0 when the page is clean, 1 with the
problems listed otherwise, and 0 with a message saying the check was skipped when no
Chromium binary is found (set ``CHROMIUM`` to point at one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WINDOW = (1280, 2400)  # CSS pixels of the screenshot
TIMEOUT_S = 120

# Installed first in <head>: collects errors before any other script or image runs.
PROBE_HEAD = """<script>
window.__problems = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) {
    var url = String(t.src || t.href).slice(0, 80);
    window.__problems.push("failed to load " + (t.tagName || "") + " " + url);
  } else {
    window.__problems.push("error: " + (e.message || e));
  }
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__problems.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
</script>"""
# Installed last in <body>: after the load event, writes the verdict into the DOM.
PROBE_TAIL = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({
    images: images.length,
    broken: broken.map(function (i) { return i.alt || i.src.slice(0, 60); }),
    problems: window.__problems
  });
  document.body.appendChild(out);
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` or the first of ``BINARIES`` on the PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((found for name in BINARIES if (found := shutil.which(name))), None)


def _run(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ("--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars")
    flags += ("--no-first-run", "--allow-file-access-from-files", "--virtual-time-budget=10000")
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )


def probe_page(page: str) -> str:
    """``page`` with the error recorder first in ``<head>`` and the verdict writer last."""
    if "<head>" not in page or "</body>" not in page:
        raise ValueError("page: needs a <head> and a </body> to place the probe")
    page = page.replace("<head>", "<head>" + PROBE_HEAD, 1)
    at = page.rindex("</body>")
    return page[:at] + PROBE_TAIL + page[at:]


def verdict(dom: str) -> dict[str, object]:
    """The probe's JSON from a dumped DOM (``ValueError`` if the probe never ran)."""
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom, re.DOTALL)
    if not found:
        raise ValueError("the page's load event never fired (no render-check in the DOM)")
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(text.replace("&amp;", "&"))


def check(report: Path, screenshot: Path | None) -> list[str]:
    """The problems of ``report`` rendered by Chromium; writes ``screenshot`` if given."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium binary")
    # the probed copy sits next to the page, so its relative links resolve the same way
    with tempfile.NamedTemporaryFile(
        "w", suffix=".html", dir=report.parent, delete=False, encoding="utf-8"
    ) as tmp:
        tmp.write(probe_page(report.read_text(encoding="utf-8")))
    probed = Path(tmp.name)
    try:
        dumped = _run(binary, "--dump-dom", probed.resolve().as_uri())
        if dumped.returncode != 0:
            return [f"chromium --dump-dom exited {dumped.returncode}: {dumped.stderr[-500:]}"]
        result = verdict(dumped.stdout)
    finally:
        probed.unlink()
    problems = [f"image not loaded: {name}" for name in result["broken"]]
    problems += [str(p) for p in result["problems"]]
    if not result["images"]:
        problems.append("the page has no images")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        shot = _run(
            binary,
            f"--screenshot={screenshot.resolve()}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            report.resolve().as_uri(),
        )
        if shot.returncode != 0 or not screenshot.exists():
            problems.append(f"no screenshot (chromium exited {shot.returncode})")
    print(f"render check: {result['images']} images, {len(problems)} problems")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the report.html to render")
    parser.add_argument("--screenshot", type=Path, help="PNG of the top of the page")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        parser.error(f"report: {args.report} is not a file")
    try:
        problems = check(args.report, args.screenshot)
    except FileNotFoundError:
        print(
            "render check skipped: no Chromium found (install chromium or set CHROMIUM=/path)",
            file=sys.stderr,
        )
        return 0
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    if args.screenshot is not None and not problems:
        print(f"screenshot: {args.screenshot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
