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
