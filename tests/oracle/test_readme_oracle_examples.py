"""The README's worked examples of the distributed and optimizer oracles run on their own and
print what the README shows (lines ending in "..." are abridged: their start must match)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _example(heading: str) -> tuple[str, list[str]]:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)\n```", section, flags=re.S)[0]
    after = section.split(code, 1)[1].split("```", 1)[1]  # past the python block's fence
    shown = re.findall(r"```\n(.*?)\n```", after, flags=re.S)[0]
    return code, shown.splitlines()


@pytest.mark.parametrize("heading", ["Checking a distributed loss", "Checking an optimizer"])
def test_readme_example_prints_what_it_shows(heading):
    code, shown = _example(heading)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    printed = out.getvalue()
    for line in shown:
        text = line.strip().removesuffix("...").rstrip("; ,")
        assert text in printed, f"README shows {line!r}, not printed:\n{printed}"
