"""Sphinx extension: the API reference pages, generated from the package, and re-export links.

Every object is documented once, under the module that defines it (a function or class under
its ``__module__``, a constant under the module whose top level assigns it), so autodoc's
reference context inside a docstring is the namespace the docstring was written in.  The
pages group those modules by topic (``PAGES``); each page lists the modules of its topic,
with their docstrings and the objects they define that are public (in ``__all__`` or, for a
module without one, not starting with ``_``).

Users and docstrings also name objects by the place they are re-exported from
(``amcl_lab.nt_xent``, ``amcl_lab.losses.nt_xent``).  ``resolve_alias`` (a
``missing-reference`` handler) imports such a target, finds the Python object it names and,
when that object is documented under its defining name, links there.  A target that names
no importable object, or an object the reference does not document, stays unresolved and
fails the build (``nitpicky`` with ``-W``).
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path

from sphinx.errors import PycodeError
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docstrings import prepare_docstring

ROOT = "amcl_lab"

# (page file, title, intro, module prefixes).  A module goes to the first page with a
# matching prefix; "" matches everything left.
PAGES = [
    (
        "amcl",
        "AMCL: adaptive multi-head contrastive learning",
        "The AMCL model (multi-head projector, pair temperatures) and the AMCL losses "
        "(Wang et al., ECCV 2024).",
        [
            "amcl_lab.amcl",
            "amcl_lab.losses.amcl",
            "amcl_lab.losses.amcl_siamese",
            "amcl_lab.losses._amcl_common",
        ],
    ),
    (
        "kernel",
        "Kernel losses (small projectors, multiple views)",
        "The idealized and reformulated kernel losses of Agrawal et al. 2024 and their "
        "multi-view forms.",
        ["amcl_lab.losses.kernel"],
    ),
    (
        "losses",
        "Reference losses",
        "The reference contrastive and self-supervised losses and their ``nn.Module`` wrappers.",
        ["amcl_lab.losses"],
    ),
    ("metrics", "Representation geometry metrics", "", ["amcl_lab.metrics"]),
    ("optim", "Sharpness-aware optimizers", "", ["amcl_lab.optim"]),
    ("sharpness", "Hessian toolkit and sharpness", "", ["amcl_lab.sharpness"]),
    ("oracle", "Reference oracle", "", ["amcl_lab.oracle"]),
    ("fast", "Memory-efficient fast path", "", ["amcl_lab.fast"]),
    ("distributed", "Distributed losses", "", ["amcl_lab.distributed"]),
    ("engine", "Training engine", "", ["amcl_lab.engine"]),
    ("experiments", "Experiments", "", ["amcl_lab.experiments"]),
    (
        "support",
        "Registry, data, models, testing strategies and tooling",
        "The loss registry, bundled data, models, Hypothesis strategies, run-folder I/O, "
        "figures, the report and the command line.",
        [""],
    ),
]

SKIP_MODULES = {"amcl_lab.__main__"}
# modules a page opens with (the rest follow by name, private modules last)
FIRST = {"losses": ["amcl_lab.losses", "amcl_lab.losses.contrastive"]}


def modules() -> list[types.ModuleType]:
    """Every module of the package (``amcl_lab.experiments`` included), imported."""
    found = {}
    # amcl_lab.experiments lives in experiments/ (package-dir), outside amcl_lab.__path__
    for root in (ROOT, f"{ROOT}.experiments"):
        pkg = importlib.import_module(root)
        found[root] = pkg
        for info in pkgutil.walk_packages(pkg.__path__, prefix=root + "."):
            if info.name not in SKIP_MODULES:
                found[info.name] = importlib.import_module(info.name)
    return sorted(found.values(), key=lambda m: m.__name__)


def _assigned(module: types.ModuleType) -> set[str]:
    """Names the module's top level binds by assignment (its constants)."""
    try:
        tree = ast.parse(Path(inspect.getfile(module)).read_text(encoding="utf-8"))
    except (OSError, TypeError):
        return set()
    names = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if isinstance(sub, ast.Name):
                    names.add(sub.id)
    return names


def public_names(module: types.ModuleType) -> list[str]:
    """``__all__`` (or else the attributes not starting with ``_``), then the constants
    outside it that carry a ``#:`` doc comment (docstrings refer to those too)."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    names = list(names)
    try:
        commented = ModuleAnalyzer.for_module(module.__name__).find_attr_docs()
    except PycodeError:
        commented = {}
    for scope, name in commented:
        if scope == "" and not name.startswith("_") and name not in names:
            names.append(name)
    return names


def defines(module: types.ModuleType, name: str) -> bool:
    """Whether ``name`` is defined by ``module`` (not imported into it)."""
    obj = getattr(module, name)
    if isinstance(obj, types.ModuleType):
        return False
    if inspect.isclass(obj) or inspect.isroutine(obj):
        return getattr(obj, "__module__", None) == module.__name__
    return name in _assigned(module)


def directive(obj: object) -> str:
    if inspect.isclass(obj):
        return "autoexception" if issubclass(obj, BaseException) else "autoclass"
    if inspect.isroutine(obj):
        return "autofunction"
    return "autodata"


def page_of(name: str) -> str:
    for page, _title, _intro, prefixes in PAGES:
        for prefix in prefixes:
            if prefix == "" or name == prefix or name.startswith(prefix + "."):
                return page
    raise AssertionError(name)


def module_rst(module: types.ModuleType) -> str:
    name = module.__name__
    lines = [name, "-" * len(name), "", f".. automodule:: {name}", "   :no-members:", ""]
    for member in public_names(module):
        if not hasattr(module, member) or not defines(module, member):
            continue
        obj = getattr(module, member)
        lines.append(f".. {directive(obj)}:: {name}.{member}")
        if inspect.isclass(obj):
            lines.append("   :members:")
            if dataclasses.is_dataclass(obj) and "Attributes:" not in (obj.__doc__ or ""):
                lines.append("   :undoc-members:")  # the fields
            if issubclass(obj, BaseException):
                lines.append("   :no-inherited-members:")
        lines.append("")
    return "\n".join(lines)


def facade_rst() -> str:
    """The ``amcl_lab`` namespace: every name of ``amcl_lab.__all__``, linked."""
    pkg = importlib.import_module(ROOT)
    lines = [
        "The ``amcl_lab`` namespace",
        "==========================",
        "",
        "``import amcl_lab`` re-exports the names below; each links to the page of the module "
        "that defines it.",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - name",
        "     - defined in",
    ]
    for member in pkg.__all__:
        obj = getattr(pkg, member)
        if isinstance(obj, types.ModuleType):
            target, where, role = obj.__name__, obj.__name__, "mod"
        elif member in _assigned(pkg):
            target, where, role = f"{ROOT}.{member}", ROOT, "data"
        else:
            where = obj.__module__
            target, role = f"{where}.{obj.__qualname__}", "obj"
        lines += [f"   * - :py:{role}:`{member} <{target}>`", f"     - ``{where}``"]
    lines.append("")
    return "\n".join(lines)


def generate(out: Path) -> None:
    """Write ``out/index.rst``, the facade page and one page per topic."""
    out.mkdir(parents=True, exist_ok=True)
    by_page: dict[str, list[types.ModuleType]] = {page: [] for page, *_ in PAGES}
    for module in modules():
        by_page[page_of(module.__name__)].append(module)
    for page, found in by_page.items():  # the package, public modules, then private ones
        first = FIRST.get(page, [])

        def key(m: types.ModuleType, first=first) -> tuple:
            private = any(part.startswith("_") for part in m.__name__.split("."))
            return (
                private,
                m.__name__ not in first,
                first.index(m.__name__) if m.__name__ in first else 0,
                m.__name__,
            )

        found.sort(key=key)
    files = {"namespace": facade_rst()}
    for page, title, intro, _prefixes in PAGES:
        text = [title, "=" * len(title), ""]
        if intro:
            text += [intro, ""]
        text += [module_rst(m) for m in by_page[page]]
        files[page] = "\n".join(text)
    toc = ["namespace"] + [page for page, *_ in PAGES]
    files["index"] = "\n".join(
        ["API reference", "=============", "", ".. toctree::", "   :maxdepth: 2", ""]
        + [f"   {page}" for page in toc]
        + [""]
    )
    for page, text in files.items():
        path = out / f"{page}.rst"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")


# ---- re-exported names ------------------------------------------------------------------


def import_object(dotted: str) -> object | None:
    """The object a dotted name denotes (longest importable module, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        except Exception:
            return None
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _candidates(target: str, module: str | None, cls: str | None) -> list[str]:
    target = target.lstrip(".~")
    out = []
    if module:
        parts = module.split(".")
        # a plain name is looked up in the module, then in the packages above it (a
        # docstring's ``HessianOperator`` names the object its package exports)
        scopes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        for scope in scopes:
            if cls:
                out.append(f"{scope}.{cls}.{target}")
            out.append(f"{scope}.{target}")
    out.append(target)
    return out


def _documented_data(domain) -> dict[int, str]:
    """``id(object) -> documented name`` of the module constants the reference documents."""
    found = {}
    for name, entry in domain.objects.items():
        if entry.objtype == "data":
            obj = import_object(name)
            if obj is not None:
                found.setdefault(id(obj), name)
    return found


def resolve_alias(app, env, node, contnode):
    """Link a Python reference that names a re-export to the object's documented name."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    objects = domain.objects
    for dotted in _candidates(node["reftarget"], node.get("py:module"), node.get("py:class")):
        if not dotted.startswith(ROOT):
            continue
        obj = import_object(dotted)
        owner, _, attr = dotted.rpartition(".")
        cls = import_object(owner)
        if obj is None and not inspect.isclass(cls):
            continue
        if obj is None:  # a dataclass field without a default: no class attribute
            name = f"{cls.__module__}.{cls.__qualname__}.{attr}"
        elif isinstance(obj, types.ModuleType):
            name = obj.__name__
        elif inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
            name = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
        else:
            if inspect.isclass(cls):  # an attribute or property of a class
                name = f"{cls.__module__}.{cls.__qualname__}.{attr}"
            else:
                name = _documented_data(domain).get(id(obj), "")
        if name == dotted or (name not in objects and name not in domain.modules):
            continue
        return domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], name, node, contnode
        )
    return None


# ---- docstring fixes that are the renderer's, not the docstring's --------------------------

CITATION = re.compile(r"^(?P<indent>\s*)\.\. \[(?P<label>[A-Za-z][\w-]*)\](?P<rest>.*)$")
CITE_REF = re.compile(r"\[(?P<label>[A-Za-z][\w-]*)\]_")


def _anchor(obj_name: str, label: str) -> str:
    return f"cite-{obj_name}-{label}".lower().replace(".", "-").replace("_", "-")


def local_citations(app, what, name, obj, options, lines):
    """Make each docstring's citations its own: ``[Chen2020]_`` links to the entry below it.

    Docstrings are written for ``help()``, so each one cites its papers in full under
    "References"; the same label in two docstrings would be a duplicate citation once both
    are on a page.  The entries become labelled paragraphs and the references links to
    them, both keeping the ``[Label]`` text.
    """
    labels = set()
    out = []
    i = 0
    while i < len(lines):
        m = CITATION.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, label = m["indent"], m["label"]
        labels.add(label)
        body = [m["rest"].strip()]
        i += 1
        while i < len(lines) and (
            (not lines[i].strip() and i + 1 < len(lines) and lines[i + 1].startswith(indent + " "))
            or lines[i].startswith(indent + " ")
        ):
            if not CITATION.match(lines[i]) and lines[i].strip():
                body.append(lines[i].strip())
            elif CITATION.match(lines[i]):
                break
            i += 1
        out += [f"{indent}.. _{_anchor(name, label)}:", "", f"{indent}[{label}] " + body[0]]
        out += [indent + line for line in body[1:]]
        out.append("")
    defined = app.env.__dict__.setdefault("amcl_citations", {})
    for label in labels:
        defined.setdefault(label, _anchor(name, label))

    def link(m: re.Match) -> str:
        label = m["label"]
        # a paper cited here but listed in full by another docstring links there
        target = _anchor(name, label) if label in labels else f"cite-any-{label.lower()}"
        return f":ref:`[{label}] <{target}>`"

    lines[:] = [CITE_REF.sub(link, line) for line in out]


def resolve_citation(app, env, node, contnode):
    """``cite-any-LABEL``: the first docstring that lists the paper in full."""
    target = node.get("reftarget", "")
    if node.get("reftype") != "ref" or not target.startswith("cite-any-"):
        return None
    for label, anchor in env.__dict__.get("amcl_citations", {}).items():
        if f"cite-any-{label.lower()}" == target:
            std = env.get_domain("std")
            return std.resolve_xref(env, node["refdoc"], app.builder, "ref", anchor, node, contnode)
    return None


_STASH: dict[str, list[str]] = {}


def stash_constant_doc(app, what, name, obj, options, lines):
    if what in {"data", "attribute", "property"}:
        _STASH[name] = list(lines)


def constant_doc(app, what, name, obj, options, lines):
    """Keep a constant's docstring as written.

    Napoleon reads ``Text: more`` in an attribute docstring as ``type: description``; a
    constant's comment such as ``#: Default tolerance: ...`` is prose, so when the "type" is a
    phrase (whitespace outside brackets) the docstring is restored.  A constant without a
    comment of its own would show its type's docstring (``dict``'s); it shows none.
    """
    if what not in {"data", "attribute", "property"}:
        return
    original = _STASH.pop(name, None)
    doc = type(obj).__doc__
    if (
        isinstance(doc, str)
        and original
        and prepare_docstring(doc) == [*original[: len(prepare_docstring(doc))]]
    ):
        lines[:] = []
        return
    types_ = [line[len(":type: ") :] for line in lines if line.startswith(":type: ")]
    if original is None or len(types_) != 1:
        return
    if re.search(r"\s", re.sub(r"\[[^\]]*\]|\([^)]*\)", "", types_[0])):
        lines[:] = original


def setup(app):
    def on_builder_inited(app):
        generate(Path(app.srcdir) / "api")

    app.connect("builder-inited", on_builder_inited)
    app.connect("missing-reference", resolve_alias)
    app.connect("missing-reference", resolve_citation)
    app.setup_extension("sphinx.ext.napoleon")  # its docstring handler has priority 500
    app.connect("autodoc-process-docstring", stash_constant_doc, priority=400)
    app.connect("autodoc-process-docstring", constant_doc, priority=600)
    app.connect("autodoc-process-docstring", local_citations, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
