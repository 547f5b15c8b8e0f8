"""The Hypothesis search every oracle runs over its inputs.

:func:`search_settings` are the settings of a run (no example database, no deadline, no
health checks, quiet, shrinking on request); a failing input raises :class:`Mismatch`
inside the run so that Hypothesis shrinks it, and :class:`Tally` accumulates the
:class:`~amcl_lab.oracle.report.Comparison` of every input into the figures of an
:class:`~amcl_lab.oracle.report.OracleReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, Verbosity, settings

from .report import Comparison, Errors


def search_settings(max_examples: int, shrink: bool) -> settings:
    """The settings of an oracle's Hypothesis run: ``max_examples`` inputs; a failure is
    shrunk to a minimal input only with ``shrink``."""
    return settings(
        max_examples=max_examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=(Phase.generate, Phase.shrink) if shrink else (Phase.generate,),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )


class Mismatch(AssertionError):
    """Raised inside the Hypothesis run so that it shrinks the failing input."""


@dataclass
class Tally:
    examples: int = 0
    shrink_examples: int = 0
    ill_conditioned: int = 0
    value: Errors = field(default_factory=Errors)
    gradients: dict[str, Errors] = field(default_factory=dict)
    closest: Comparison | None = None
    failing: Comparison | None = None

    def add(self, c: Comparison) -> None:
        self.examples += 1
        self.ill_conditioned += c.ill_conditioned
        if self.failing is not None:
            self.shrink_examples += 1
        self.value = self.value.max(c.value)
        for name, e in c.gradients.items():
            self.gradients[name] = self.gradients.get(name, Errors()).max(e)
        if c.failure is not None:
            self.failing = c  # the last failure seen is the shrunk one Hypothesis replays
        elif self.closest is None or c.ratio > self.closest.ratio:
            self.closest = c
