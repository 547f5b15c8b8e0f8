"""Files a run, a benchmark or the oracle writes: atomic writes, JSON, versions, git revision.

Everything here is standard library plus the package metadata, so any layer may use it
(the oracle, benchmarks and peers use it without importing the training engine):

* :func:`atomic_path` / :func:`write_json`: a file appears whole or not at all (temporary
  file, ``fsync``, ``os.replace``); JSON is standard (NaN and infinities become ``null``);
* :func:`package_versions` and :func:`git_revision`: what a result was computed with.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "VERSIONED",
    "atomic_path",
    "git_revision",
    "json_safe",
    "package_versions",
    "write_json",
]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    Whatever is written to the yielded path becomes ``path`` only when the block finishes
    without error (``os.replace`` after an ``fsync``), so a killed process leaves either the
    old file or the new one, never a truncated one.  The file is created by the writer, so
    it gets the usual permissions (umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by ``None`` (standard JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: json_safe(val) for k, val in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(val) for val in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, standard JSON (NaN -> null), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


VERSIONED = ("torch", "numpy", "scipy", "scikit-learn", "matplotlib", "seaborn", "pandas")


def package_versions() -> dict[str, str | None]:
    """Python, amcl_lab and the versions of the packages results depend on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("amcl-lab", *VERSIONED):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> str | None:
    """``HEAD`` of the checkout the package runs from (``+dirty`` if modified), else None."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD", "--show-toplevel"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        # a non-editable install inside some other repository must not report its HEAD
        if rev.returncode or Path(rev.stdout.split()[-1]).resolve() != root:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.split()[0] + ("+dirty" if status.stdout.strip() else "")
