"""Sphinx configuration of the amcl_lab site (``nox -s docs`` builds it into ``docs/_build``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "amcl_lab"
author = "amcl_lab developers"
copyright = "amcl_lab developers"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    # copies MathJax 3 (shipped in the PyPI package) into _build/html/_static/mathjax and
    # points mathjax_path at it: the equations render without network access
    "sphinx-mathjax-offline",
    "amcl_apidoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_static", "tests", "Thumbs.db", ".DS_Store"]

# Every cross-reference must resolve: -W turns these warnings into errors.
nitpicky = True
# Types from outside the package (torch, numpy, the standard library, ...) appear in
# signatures and docstrings; without intersphinx (the build is offline) they cannot link.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|matplotlib|pandas|seaborn|hypothesis|sklearn)(\..*)?"),
    (r"py:.*", r"(collections|pathlib|argparse|types|typing|dataclasses|functools|os)\..*"),
    # torch names as the annotations spell them (``from torch import Tensor, nn``)
    (r"py:class", r"Tensor|Module|Dropout|BatchNorm|nn\..*"),
    # private helpers (a leading underscore) are deliberately not in the reference
    (r"py:.*", r"amcl_lab\.(\w+\.)*_[A-Za-z]\w*"),
    (r"py:class", r"_[A-Za-z]\w*"),
]
# an annotation string autodoc could not evaluate (shown quoted, e.g. 'dict[str, Errors]')
nitpick_ignore_regex.append((r"py:class", r"'.*"))
nitpick_ignore = [("py:class", "amcl_lab.distributed.T")]  # a TypeVar

add_module_names = False  # the section says which module; signatures stay short
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

html_theme = "furo"
html_title = "amcl_lab"
html_static_path = []
