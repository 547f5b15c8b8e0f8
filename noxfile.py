"""Sessions: ``nox -s tests`` (CI), ``props``, ``lint``, ``proofs``, ``bench``, ``experiments``,
``report``, ``peers``, ``docs``.

Every session installs the package with the pinned versions of ``constraints.txt`` into its
own virtual environment, so results do not depend on what the calling environment holds.
"""

from __future__ import annotations

import shutil
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


@nox.session(python=PYTHON)
def experiments(session: nox.Session) -> None:
    """Run every experiment's smoke preset, then build the HTML report of those runs.

    Installs the package *non-editable* (so the ``experiments/`` -> ``amcl_lab.experiments``
    mapping is exercised as users get it) and runs outside the checkout; the runs and
    ``report.html`` go to ``.nox/experiments/tmp/runs``.  Extra arguments go to every
    ``amcl-lab run`` (e.g. ``nox -s experiments -- --device cpu``).
    """
    session.install(*CONSTRAINTS, ".")
    out = Path(session.create_tmp()).resolve() / "runs"
    shutil.rmtree(out, ignore_errors=True)
    session.chdir(out.parent)
    code = "from amcl_lab import experiments; print(*experiments.names())"
    listing = session.run("python", "-W", "ignore", "-c", code, silent=True) or ""
    for name in listing.strip().splitlines()[-1].split():
        run = ("amcl-lab", "run", name, "--preset", "smoke", "--out", str(out), "--quiet")
        session.run(*run, *session.posargs)
    session.run("amcl-lab", "report", str(out))


#: The smoke runs of ``nox -s report``: the main job and the experiments with the most figure
#: kinds (bands, bars, error bars, histograms), about a minute and a half on two CPU cores.
REPORT_EXPERIMENTS = ("simclr_digits", "sharpness", "amcl", "temperature")


@nox.session(python=PYTHON)
def report(session: nox.Session) -> None:
    """Smoke runs of ``REPORT_EXPERIMENTS``, their HTML report, rendered by headless Chromium.

    The runs, ``report.html`` and the screenshot ``report.png`` go to
    ``.nox/report/tmp/runs``.  ``scripts/render_report.py`` checks that every image of the
    page loaded and that the page logged no errors, and takes the screenshot; without a
    Chromium binary (``chromium`` on the PATH or ``CHROMIUM=/path``) it says the check was
    skipped.  Extra arguments go to every ``amcl-lab run``.  Not part of ``tests``: the
    light HTML checks of the page are (``tests/figures/test_report_page.py``).
    """
    _install(session)
    out = Path(session.create_tmp()).resolve() / "runs"
    shutil.rmtree(out, ignore_errors=True)
    for name in REPORT_EXPERIMENTS:
        run = ("amcl-lab", "run", name, "--preset", "smoke", "--out", str(out), "--quiet")
        session.run(*run, *session.posargs)
    session.run("amcl-lab", "report", str(out))
    page, shot = str(out / "report.html"), str(out / "report.png")
    session.run("python", "scripts/render_report.py", page, "--screenshot", shot)


# lightly needs torchvision, which pins torch exactly: both are installed in the same pip
# command as the peers (otherwise pip pulls a second, CUDA, torch stack).
PEER_TORCH = ("torch==2.14.1", "torchvision==0.29.1")


@nox.session(python=PYTHON)
def peers(session: nox.Session) -> None:
    """Cross-check the references against lightly and pytorch-metric-learning.

    Runs in its own virtual environment (the peers need a newer torch than the one pinned in
    ``constraints.txt``): the agreement tests in ``peers/``, then the cross-check table
    (``peers/crosscheck.py``), written to ``bench_results/peers.json`` and printed.
    """
    pins = Path(session.create_tmp()) / "constraints-peers.txt"
    lines = Path("constraints.txt").read_text().splitlines(keepends=True)
    pins.write_text("".join(line for line in lines if not line.startswith("torch==")))
    session.install("-c", str(pins), *PEER_TORCH, "-e", ".[test,peers]")
    session.run("pytest", "peers", "-q", *session.posargs)
    session.run("python", "peers/crosscheck.py", "--out", "bench_results")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the HTML site into ``docs/_build/html`` and check it.

    Sphinx (autodoc + napoleon for the docstrings, myst-parser for ``docs/*.md``) runs with
    ``-n -W``: an unresolved cross-reference or a malformed docstring fails the build.  The
    versions are pinned by the ``docs`` extra of ``pyproject.toml``.  Then
    ``docs/check_site.py`` (internal links, no network resources, the equations typeset in
    headless Chromium, a screenshot) and ``docs/tests`` (every public name is in the
    reference).
    """
    session.install(*CONSTRAINTS, "-e", ".[docs]", "pytest")
    shutil.rmtree("docs/_build", ignore_errors=True)
    session.run(
        "sphinx-build", "-b", "html", "-n", "-W", "--keep-going", "-E", "docs", "docs/_build/html"
    )
    session.run("python", "docs/reference_coverage.py", "docs/_build/html/objects.inv")
    session.run("python", "docs/check_site.py", "docs/_build/html")
    session.run("pytest", "-q", "-p", "no:cacheprovider", "docs/tests", *session.posargs)
