"""The layering of ``docs/architecture.md``, enforced by reading every module's imports.

The layer table and the engine's order are parsed from the document itself, so the page a
newcomer reads and the rules this test enforces cannot drift apart.  Imports are read with
``ast`` (module level, inside functions and under ``if TYPE_CHECKING:``), nothing is imported.
Each rule has a negative control below: a doctored import graph that the checker must flag.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 900  # a file of amcl_lab/ above this must say in its docstring why
MAX_EXPERIMENT_LINES = 400
ONE_FILE_REASON = "stays one file"  # the phrase a long module's docstring must contain
SCRIPTS = ("benchmarks", "peers", "proofs_checks")

Graph = Mapping[str, Iterable[str]]


# --- reading the document and the code ---------------------------------------------------------


def _table_rows(heading_cells: str) -> list[list[str]]:
    """The body rows of the Markdown table of ``DOC`` whose header starts with the cells."""
    lines = DOC.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading_cells))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def layers() -> dict[str, int]:
    """Unit (``amcl_lab.X``) -> layer number, from the document's layer table."""
    out = {}
    for number, _name, modules in _table_rows("| layer | name | modules |"):
        for unit in re.findall(r"`([\w.]+)`", modules):
            out[unit] = int(number)
    return out


def engine_order() -> dict[str, int]:
    """Engine module -> its place in the engine's order, from the document."""
    rows = _table_rows("| order | module |")
    return {re.findall(r"`([\w.]+)`", row[1])[0]: int(row[0]) for row in rows}


def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``), experiments as installed."""
    out = {}
    for path in sorted([*(ROOT / "amcl_lab").rglob("*.py"), *(ROOT / "experiments").rglob("*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "experiments":
            parts = ["amcl_lab", *parts]
        package = parts[-1] == "__init__"
        if package:
            parts = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def imports_of(path: Path, module: str, package: bool, known: Iterable[str]) -> set[str]:
    """The ``amcl_lab`` modules ``path`` imports (``from pkg import mod`` resolves to ``mod``)."""
    known = set(known)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "amcl_lab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "amcl_lab":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in known else target)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {m: imports_of(p, m, pkg, files) for m, (p, pkg) in files.items()}


# --- the rules -----------------------------------------------------------------------------


def unit(module: str) -> str:
    """``amcl_lab.X`` for a module of ``amcl_lab`` (``amcl_lab`` itself for the facade)."""
    return ".".join(module.split(".")[:2])


def layer_violations(graph: Graph, table: Mapping[str, int]) -> list[str]:
    """Rules 1 and 2: imports of a higher layer, or of another package of the same layer."""
    found = []
    for module, targets in graph.items():
        for target in targets:
            a, b = unit(module), unit(target)
            if a == b:
                continue
            if table[a] < table[b]:
                found.append(f"{module} (layer {table[a]}) imports {target} (layer {table[b]})")
            elif table[a] == table[b]:
                found.append(f"{module} imports {target} of the same layer {table[a]}")
    return found


def order_violations(graph: Graph, order: Mapping[str, int]) -> list[str]:
    """Rule 3: inside the engine, an import of a module later in the engine's order."""
    return [
        f"{module} imports {target}, which comes later in the engine's order"
        for module, targets in graph.items()
        if module in order
        for target in targets
        if target in order and order[target] > order[module]
    ]


def cycles(graph: Graph) -> list[list[str]]:
    """Rule 4: the import cycles of ``graph`` (one per strongly connected component > 1)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# --- the tests on the real code --------------------------------------------------------------


def test_every_module_is_in_a_layer():
    table = layers()
    missing = sorted({unit(m) for m in module_files()} - set(table))
    assert not missing, f"place these in the layer table of docs/architecture.md: {missing}"
    engine = sorted(m for m in module_files() if m.startswith("amcl_lab.engine."))
    assert sorted(engine_order()) == engine, "the engine's order table must list its modules"


def test_no_module_imports_a_higher_layer():
    assert layer_violations(import_graph(), layers()) == []


def test_engine_modules_import_only_earlier_ones():
    assert order_violations(import_graph(), engine_order()) == []


def test_every_internal_import_names_a_module_of_the_package():
    """A relative import one level off (``from ..data`` for ``from ...data``) fails only when
    the function holding it runs; reading the imports catches it."""
    known = set(module_files())
    missing = sorted(
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in targets
        if target not in known
    )
    assert missing == []


def test_no_import_cycle():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("folder", SCRIPTS)
def test_scripts_do_not_import_the_engine(folder):
    offenders = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        imported = imports_of(path, f"{folder}.{path.stem}", False, module_files())
        offenders += [f"{path.name} imports {m}" for m in imported if unit(m) == "amcl_lab.engine"]
    assert offenders == []


def test_files_are_short_or_say_why():
    long = []
    for module, (path, _package) in module_files().items():
        lines = len(path.read_text().splitlines())
        experiment = unit(module) == "amcl_lab.experiments" and not path.stem.startswith("_")
        limit = MAX_EXPERIMENT_LINES if experiment else MAX_LINES
        reason = ONE_FILE_REASON in (ast.get_docstring(ast.parse(path.read_text())) or "")
        if lines > limit and (experiment or not reason):
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert long == []


# --- negative controls: the checker flags doctored graphs ------------------------------------

TABLE = {"amcl_lab.losses": 2, "amcl_lab.optim": 2, "amcl_lab.engine": 8, "amcl_lab.oracle": 7}


def test_an_upward_import_is_flagged():
    graph = {"amcl_lab.oracle": {"amcl_lab.engine.runs"}, "amcl_lab.engine.runs": set()}
    assert layer_violations(graph, TABLE) == [
        "amcl_lab.oracle (layer 7) imports amcl_lab.engine.runs (layer 8)"
    ]


def test_a_same_layer_import_across_packages_is_flagged():
    graph = {"amcl_lab.losses.hard": {"amcl_lab.optim"}, "amcl_lab.optim": set()}
    assert len(layer_violations(graph, TABLE)) == 1
    inside = {"amcl_lab.losses.hard": {"amcl_lab.losses._common"}}
    assert layer_violations(inside, TABLE) == []


def test_a_late_engine_import_is_flagged():
    order = {"amcl_lab.engine.config": 2, "amcl_lab.engine.loop": 8}
    graph = {"amcl_lab.engine.config": {"amcl_lab.engine.loop"}}
    assert len(order_violations(graph, order)) == 1
    assert order_violations({"amcl_lab.engine.loop": {"amcl_lab.engine.config"}}, order) == []


def test_a_cycle_is_found_even_through_a_third_module():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_and_function_level_imports_are_read(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .config import TrainConfig\n"
        "def f():\n    from .. import io\n"
    )
    known = {"amcl_lab.engine.config", "amcl_lab.io"}
    found = imports_of(source, "amcl_lab.engine.loop", False, known)
    assert found == {"amcl_lab.engine.config", "amcl_lab.io"}
