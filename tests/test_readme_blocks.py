"""Every Python block of the README runs on its own, as a script in a fresh interpreter, and
prints what the README shows after it.

A block the README follows with ``prints`` and a plain code block must print exactly those
lines; after ``prints (abridged)`` the shown lines must appear in order, other printed lines
may be left out.  In a shown line, ``...`` stands for any text (an abridged part).  Each
block is one test (they run in parallel under ``pytest -n``); bash blocks are not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()

#: A Python block, optionally followed by ``prints [(abridged)]`` and the shown output.
BLOCK = re.compile(
    r"```python\n(?P<code>.*?)\n```\n"
    r"(?:\n(?P<how>prints(?: \(abridged\))?)\n\n```\n(?P<shown>.*?)\n```\n)?",
    flags=re.S,
)


def _blocks() -> list[re.Match[str]]:
    return list(BLOCK.finditer(README))


def _line_matches(shown: str, printed: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.rstrip().split("..."))
    return re.fullmatch(pattern, printed.rstrip()) is not None


def output_matches(shown: list[str], printed: list[str], *, abridged: bool) -> bool:
    """Whether ``printed`` is what the README ``shown`` (see the module docstring)."""
    if not abridged:
        return len(shown) == len(printed) and all(map(_line_matches, shown, printed))
    lines = iter(printed)
    return all(any(_line_matches(line, p) for p in lines) for line in shown)


def test_output_matching_rules():
    assert output_matches(["a 1", "b ..."], ["a 1", "b 2 3"], abridged=False)
    assert not output_matches(["a 1"], ["a 1", "b 2"], abridged=False)
    assert output_matches(["a ...(...)", "c"], ["a x (y)", "b", "c"], abridged=True)
    assert not output_matches(["c", "a ..."], ["a x", "c"], abridged=True)
    assert not output_matches(["a 2"], ["a 1"], abridged=True)


def test_the_readme_has_its_blocks():
    """The pattern finds every block (a block it skipped would go untested)."""
    assert len(_blocks()) == README.count("```python\n") >= 10


@pytest.mark.parametrize(
    "block", _blocks(), ids=lambda m: f"line{README.count(chr(10), 0, m.start()) + 1}"
)
def test_readme_block_runs_alone_and_prints_what_the_readme_shows(block, tmp_path):
    script = tmp_path / "readme_block.py"
    script.write_text(block["code"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMCL_")}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    if block["how"] is None:
        assert not done.stdout, f"the block prints; show it after the block:\n{done.stdout}"
        return
    shown, printed = block["shown"].splitlines(), done.stdout.splitlines()
    assert output_matches(shown, printed, abridged=block["how"] != "prints"), (
        f"README shows\n{block['shown']}\nthe block printed\n{done.stdout}"
    )
