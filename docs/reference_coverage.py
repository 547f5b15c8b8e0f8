"""Every public name of amcl_lab is in the built API reference.

``python docs/reference_coverage.py [docs/_build/html/objects.inv]`` exits non-zero and lists
the missing names.  The public names are ``amcl_lab.__all__`` and the ``__all__`` of every
module whose dotted path has no component starting with ``_`` (``amcl_lab.experiments``
included).  The reference documents each object once, under the module that defines it, so
a name counts as present when the inventory (Sphinx's ``objects.inv``) has a Python entry of
the same name that imports to the *same object* (``amcl_lab.nt_xent`` is covered by the entry
``amcl_lab.losses.contrastive.nt_xent``; the name is compared too, so a constant is not
covered by another constant of equal value), or, for a module, an entry of that module.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import types
import zlib
from pathlib import Path

ROOT = "amcl_lab"
EXPERIMENTS = "amcl_lab.experiments"
DEFAULT_INVENTORY = Path(__file__).resolve().parent / "_build" / "html" / "objects.inv"


def read_inventory(path: Path) -> dict[str, set[str]]:
    """``{object type: names}`` of a Sphinx version-2 ``objects.inv``."""
    lines = Path(path).read_bytes().split(b"\n", 4)
    if len(lines) < 5 or not lines[0].startswith(b"# Sphinx inventory version 2"):
        raise ValueError(f"{path}: not a Sphinx version-2 inventory")
    entries: dict[str, set[str]] = {}
    for line in zlib.decompress(lines[4]).decode("utf-8").splitlines():
        if not line.strip():
            continue
        name, rest = line.split(" ", 1)
        objtype = rest.split(" ", 1)[0]
        entries.setdefault(objtype, set()).add(name)
    return entries


def write_inventory(path: Path, entries: dict[str, set[str]]) -> None:
    """Write ``entries`` as a version-2 inventory (tests use it to doctor one)."""
    body = "".join(
        f"{name} {objtype} 1 api.html#{name} -\n"
        for objtype, names in sorted(entries.items())
        for name in sorted(names)
    )
    head = (
        "# Sphinx inventory version 2\n# Project: amcl_lab\n# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    Path(path).write_bytes(head.encode() + zlib.compress(body.encode()))


def import_object(dotted: str) -> object | None:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def public_modules() -> list[types.ModuleType]:
    found = []
    # amcl_lab.experiments lives in experiments/ (package-dir), outside amcl_lab.__path__
    for root in (ROOT, EXPERIMENTS):
        pkg = importlib.import_module(root)
        found.append(pkg)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=root + "."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            if info.name not in {m.__name__ for m in found}:
                found.append(importlib.import_module(info.name))
    return found


def public_names() -> list[tuple[str, object]]:
    """``(qualified name, object)`` for every name of a public module's ``__all__``."""
    names = []
    for module in public_modules():
        for name in getattr(module, "__all__", ()):
            names.append((f"{module.__name__}.{name}", getattr(module, name)))
    return names


def missing(inventory: Path = DEFAULT_INVENTORY) -> list[str]:
    """The public names the inventory does not document, sorted."""
    entries = read_inventory(inventory)
    documented_modules = entries.get("py:module", set())
    documented = set()
    for objtype, names in entries.items():
        if objtype.startswith("py:") and objtype != "py:module":
            for name in names:
                obj = import_object(name)
                if obj is not None:
                    documented.add((id(obj), name.rpartition(".")[2]))
    absent = []
    for qualified, obj in public_names():
        if isinstance(obj, types.ModuleType):
            if obj.__name__ not in documented_modules:
                absent.append(qualified)
        elif (id(obj), qualified.rpartition(".")[2]) not in documented:
            absent.append(qualified)
    return sorted(absent)


def main(argv: list[str]) -> int:
    inventory = Path(argv[0]) if argv else DEFAULT_INVENTORY
    absent = missing(inventory)
    total = len(public_names())
    if absent:
        print(f"reference coverage: {len(absent)} of {total} public names not in {inventory}:")
        for name in absent:
            print(f"  {name}")
        return 1
    print(f"reference coverage: all {total} public names are in {inventory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
