"""The implementation under test, as every oracle takes it.

:data:`Candidate` is any callable; :func:`load_candidate` imports one given as
``package.module:function`` (the form the command line takes) and :func:`qualname` is the
name a report gives it (``functools.partial`` objects included).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

Candidate = Callable[..., Any]


def qualname(candidate: Candidate) -> str:
    if isinstance(candidate, functools.partial):
        inner = qualname(candidate.func)
        kw = ", ".join(f"{k}={v!r}" for k, v in candidate.keywords.items())
        return f"partial({inner}, {kw})" if kw else inner
    module = getattr(candidate, "__module__", None)
    name = getattr(candidate, "__qualname__", None) or type(candidate).__qualname__
    return f"{module}:{name}" if module else name


def load_candidate(target: str) -> Candidate:
    """Import ``package.module:attribute[.attribute]`` and return the attribute.

    Raises:
        ValueError: a malformed target, a module that cannot be imported, a missing
            attribute or one that is not callable (each message names the target).
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"candidate must look like package.module:function, got {target!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import module {module_name!r} for {target!r}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{target!r}: {module_name!r} has no attribute path {attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj
