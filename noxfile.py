"""Sessions: ``nox -s tests`` (CI), ``props``, ``lint``, ``proofs``, ``bench``.

Every session installs the package with the pinned versions of ``constraints.txt`` into its
own virtual environment, so results do not depend on what the calling environment holds.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = None  # the interpreter nox itself runs on
CONSTRAINTS = ("-c", "constraints.txt")


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install(*CONSTRAINTS, "-e", spec)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Unit, registry and property tests with the fast, derandomised Hypothesis profile."""
    _install(session, "test")
    session.run(
        "pytest",
        "-n",
        "auto",
        "tests",
        "amcl_lab",
        "--doctest-modules",
        *session.posargs,
        env={"AMCL_HYPOTHESIS_PROFILE": "ci"},
    )


@nox.session(python=PYTHON)
def props(session: nox.Session) -> None:
    """Property tests only, thorough profile (10x the examples of ``tests``)."""
    _install(session, "test")
    session.run(
        "pytest",
        "-n",
        "auto",
        "-m",
        "props",
        "tests",
        *session.posargs,
        env={"AMCL_HYPOTHESIS_PROFILE": "thorough"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def proofs(session: nox.Session) -> None:
    """Run every script in ``proofs_checks/`` in full mode; each exits non-zero on failure."""
    _install(session)
    for script in sorted(Path("proofs_checks").glob("*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark in ``benchmarks/``; results go to ``bench_results/``."""
    _install(session)
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), "--out", "bench_results", *session.posargs)
