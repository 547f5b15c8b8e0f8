"""Reference oracles: is my (fast, fused, third-party) implementation right?

An oracle drives a candidate implementation and a reference with the same Hypothesis-drawn
inputs and reports every disagreement as a shrunk, minimal input.  The loss oracle
:func:`check` compares a loss with a registered reference loss
(:mod:`amcl_lab.registry`); :func:`assert_matches_reference` raises ``AssertionError`` with
its report, for use inside a user's test suite, and ``amcl-lab oracle
package.module:function --reference nt_xent`` runs it from a shell.

What is where (everything public is re-exported here, so ``oracle.check(...)`` works
without knowing the module):

* :mod:`.losses` - the loss oracle: :func:`check`, :func:`assert_matches_reference` and the
  comparison of one input (its conventions are in that module's docstring).
* :mod:`.adapters` - calling-convention adapters of the loss oracle: :class:`Adapter`,
  :data:`ADAPTERS`, :func:`resolve_adapter`.
* :mod:`.distributed` - the distributed oracle, ``check(..., world_size=W)``
  (:func:`check_distributed`): the candidate runs on W local gloo ranks, each on its shard
  of the global batch, against the single-process reference; :mod:`.ranks` holds its
  process pool (:class:`~amcl_lab.oracle.ranks.RankPool`).
* :mod:`.optimizers` - the optimizer oracle :func:`check_optimizer`: a candidate SAM / ASAM
  (or SAF, MESA) against :mod:`amcl_lab.optim` over drawn models, gradient patterns,
  parameter groups and several steps, ``state_dict`` round trip included.
* :mod:`.metrics` - the metric oracle :func:`check_metric`: a candidate alignment,
  uniformity, tolerance or effective rank against :data:`amcl_lab.registry.METRICS`, like a
  loss (value and gradient).
* :mod:`.cli` - the ``oracle`` sub-command of ``amcl-lab`` (:func:`add_subcommand`).

Shared by every oracle:

* :mod:`.report` - the result types :class:`Errors`, :class:`Comparison` and
  :class:`OracleReport`.
* :mod:`.search` - the Hypothesis settings of a run, and the tally of its comparisons.
* :mod:`.tolerance` - errors against ``atol + rtol * scale`` bounds and
  :data:`ILL_CONDITIONED_SLACK`.
* :mod:`.candidate` - the candidate type and :func:`load_candidate`, which imports
  ``package.module:function``.

A new oracle (distributed gradients, optimisers, metrics) is a sibling module of
:mod:`.losses` that builds on the shared modules and adds its sub-command to :mod:`.cli`;
the shared modules import nothing from the oracles.
"""

from __future__ import annotations

from .. import registry as registry
from ..registry import LossSpec as LossSpec
from ..samples import SampleInput as SampleInput
from ..samples import Tolerance as Tolerance
from .adapters import ADAPTERS, Adapter, resolve_adapter
from .adapters import EMBEDDING_INPUTS as EMBEDDING_INPUTS
from .candidate import Candidate as Candidate
from .candidate import load_candidate
from .cli import DTYPES as DTYPES
from .cli import add_subcommand
from .distributed import SHARDINGS, check_distributed
from .losses import assert_matches_reference, check
from .metrics import check_metric, metric_names
from .optimizers import OPTIMIZER_ADAPTERS, OPTIMIZERS, check_optimizer
from .report import Comparison, Errors, OracleReport, StepwiseReport
from .tolerance import ILL_CONDITIONED_SLACK

__all__ = [
    "ADAPTERS",
    "ILL_CONDITIONED_SLACK",
    "OPTIMIZERS",
    "OPTIMIZER_ADAPTERS",
    "SHARDINGS",
    "Adapter",
    "Comparison",
    "Errors",
    "OracleReport",
    "StepwiseReport",
    "add_subcommand",
    "assert_matches_reference",
    "check",
    "check_distributed",
    "check_metric",
    "check_optimizer",
    "load_candidate",
    "metric_names",
    "resolve_adapter",
]
