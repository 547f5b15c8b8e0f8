"""The metric oracle: is my fast uniformity / alignment / tolerance / effective rank right?

:func:`check_metric` is the loss oracle (:func:`~amcl_lab.oracle.check`) with a metric of
:data:`amcl_lab.registry.METRICS` as the reference: the same Hypothesis search over the
metric's input domain (row norms from 1e-3 to 1e3, near-duplicate, antipodal and collinear
pairs, one to three classes; Gaussian batches with column scales from 1e-2 to 1e2 for the
effective rank), the value and the gradient of every floating input compared with the
metric's tolerance, a shrunk minimal input on a mismatch.  ``oracle.check(candidate,
"uniformity")`` and ``amcl-lab oracle pkg.mod:fn --reference uniformity`` do the same.

The candidate takes the metric's arguments: ``alignment(z1, z2, alpha=...)``,
``uniformity(z, t=..., chunk_size=...)`` (``chunk_size`` is amcl_lab's memory knob; wrap a
candidate without it, for example ``lambda z, t, chunk_size: mine(z, t)``),
``tolerance(z, labels, reading=...)`` and ``effective_rank(z, center=...)``.  Their
conventions (rows L2-normalised, distinct pairs only, the loss sign of uniformity, the
entropy over singular values) are the docstrings of :mod:`amcl_lab.metrics`; the README's
metric table lists them.

Example:
    >>> import torch
    >>> from amcl_lab import oracle
    >>> def uniformity_all_pairs(z, t=2.0, chunk_size=1024):  # counts i = j, biased up
    ...     u = torch.nn.functional.normalize(z, dim=1)
    ...     return torch.log(torch.exp(-t * torch.cdist(u, u).pow(2)).mean())
    >>> report = oracle.check_metric(uniformity_all_pairs, "uniformity", max_examples=20)
    >>> report.passed, report.failure.split(":")[0]
    (False, 'value differs')
"""

from __future__ import annotations

from typing import Any

from .. import registry
from .candidate import Candidate
from .losses import check
from .report import OracleReport

__all__ = ["check_metric", "metric_names"]


def metric_names() -> list[str]:
    """The metrics a candidate can be checked against."""
    return list(registry.METRICS)


def check_metric(candidate: Candidate, metric: str, **kwargs: Any) -> OracleReport:
    """Compare a candidate metric with the registered one (value and gradients).

    Args:
        candidate: the implementation under test, called like the reference metric.
        metric: a name of :data:`amcl_lab.registry.METRICS` (``"alignment"``,
            ``"uniformity"``, ``"tolerance"``, ``"effective_rank"``).
        **kwargs: the keyword arguments of :func:`~amcl_lab.oracle.check` (``dtype``,
            ``grad``, ``max_examples``, ``strategy``, ``tolerance``, ``seed``, ...).

    Returns:
        An :class:`~amcl_lab.oracle.report.OracleReport`.

    Raises:
        ValueError: an unknown metric, or the argument errors of
            :func:`~amcl_lab.oracle.check`.
    """
    return check(candidate, registry.get_metric(metric), **kwargs)
