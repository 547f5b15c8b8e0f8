"""Shared pytest configuration: Hypothesis profiles and test-wide settings.

Profiles (choose with the environment variable ``AMCL_HYPOTHESIS_PROFILE``):

* ``ci`` - derandomized, no deadline (torch's first calls are slow), 30 examples per test;
  used by ``nox -s tests`` and CI.
* ``thorough`` - 10x the examples (300), random seeds; used by ``nox -s props``.
* ``dev`` (default) - like ``ci`` but randomised, for local runs.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

_COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}

CI_EXAMPLES = 30
settings.register_profile("ci", derandomize=True, max_examples=CI_EXAMPLES, **_COMMON)
settings.register_profile("thorough", max_examples=10 * CI_EXAMPLES, **_COMMON)
settings.register_profile("dev", max_examples=CI_EXAMPLES, **_COMMON)
settings.load_profile(os.environ.get("AMCL_HYPOTHESIS_PROFILE", "dev"))

# Tests are small; one intra-op thread per worker avoids oversubscription under xdist.
torch.set_num_threads(1)


# --- the adversarial suite's case count (tests/adversarial) --------------------------------
# Counted from the test reports, so the line is right under xdist too (the reports reach the
# controlling process, which prints the summary).

_ADVERSARIAL: dict[str, int] = {}
_ADVERSARIAL_SECONDS = [0.0]


def pytest_runtest_logreport(report) -> None:
    if "tests/adversarial/" not in report.nodeid.replace("\\", "/"):
        return
    _ADVERSARIAL_SECONDS[0] += report.duration
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if hasattr(report, "wasxfail"):
            outcome = "xpassed" if report.passed else "xfailed"
        else:
            outcome = report.outcome
        _ADVERSARIAL[outcome] = _ADVERSARIAL.get(outcome, 0) + 1


def pytest_terminal_summary(terminalreporter) -> None:
    if _ADVERSARIAL:
        total = sum(_ADVERSARIAL.values())
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(_ADVERSARIAL.items()))
        terminalreporter.write_line(
            f"adversarial suite: {total} cases ({parts}) in {_ADVERSARIAL_SECONDS[0]:.0f} s "
            "of worker time"
        )
