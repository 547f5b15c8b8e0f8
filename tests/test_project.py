"""Project-level checks: public API documented, README table and commands in sync, CLI works."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import amcl_lab
from amcl_lab import cli, registry

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("name", [n for n in amcl_lab.__all__ if n != "__version__"])
def test_every_public_name_has_a_docstring(name):
    obj = getattr(amcl_lab, name)
    assert inspect.getdoc(obj), f"amcl_lab.{name} has no docstring"


def test_readme_loss_and_metric_tables_are_generated_from_the_registry():
    assert registry.markdown_table() in README, (
        "README loss table is stale: paste amcl_lab.registry.markdown_table()"
    )
    assert registry.markdown_table(registry.METRICS) in README, (
        "README metric table is stale: paste amcl_lab.registry.markdown_table(registry.METRICS)"
    )


def _table_names(heading: str) -> list[str]:
    """The names in the first column of the first name table after ``heading``."""
    section = README.split(heading, 1)[1]
    table = section.split("| name (`--reference`) |", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^\| `([^`]+)`", table, flags=re.M)


def test_readme_tables_list_the_names_the_oracle_takes():
    """Before: the table showed nt_xent(decoupled=True) where the oracle takes
    nt_xent_decoupled."""
    assert _table_names("## Reference losses") == list(registry.REGISTRY)
    assert _table_names("## Checking an optimizer") == list(registry.METRICS)


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "nox -s tests" in c).strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_smoke_command_prints_every_loss(capsys):
    assert cli.main(["smoke"]) == 0
    out = capsys.readouterr().out
    for name in registry.REGISTRY:
        assert name in out
