"""The oracle's mutation suite: every deliberately wrong loss in ``tests/mutants.py`` is flagged.

Each mutant imitates a registered reference (its ``target``) with one mistake seen in real
implementations, a departure from the definition the reference implements (NT-Xent: Eq. (1)
of Chen et al. 2020, arXiv:2002.05709; the AMCL losses: Table 2 of Wang et al. 2024,
arXiv:2310.05615; the others as cited in the README's loss table).  The oracle runs it at
float32 on the reference's default strategy and must report a mismatch; the references
themselves must pass, so a flagged mutant is not a false alarm.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from amcl_lab import oracle, registry

import mutants

pytestmark = pytest.mark.mutation

#: Every group of mutants in tests/mutants.py (MUTANTS, AMCL_MUTANTS, ORACLE_MUTANTS, ...).
ALL_MUTANTS = [
    m for name, group in sorted(vars(mutants).items()) if name.endswith("MUTANTS") for m in group
]

# The registry's amcl_simsiam entry drops the stop-gradient so that gradcheck sees the full
# derivative (same value); the oracle judges SimSiam mutants against the loss as trained.
REFERENCES = {
    "amcl_simsiam": dataclasses.replace(registry.get("amcl_simsiam"), fixed_kwargs={}),
}
# The same for the self-supervised entries registered with stop_gradient=False (BYOL/SimSiam
# targets, DCLW weights, MoCo v3 keys, DINO teacher, SwAV codes): judged with the stop-gradient.
for _name, _spec in registry.REGISTRY.items():
    if _spec.fixed_kwargs.get("stop_gradient") is False and _name not in REFERENCES:
        _kept = {k: v for k, v in _spec.fixed_kwargs.items() if k != "stop_gradient"}
        REFERENCES[_name] = dataclasses.replace(_spec, fixed_kwargs=_kept)

#: The mistakes the issue lists; each must have a mutant (issue 9, "mutation suite").
ISSUE_LIST = {
    "tau_twice": "temperature applied twice",
    "no_temperature": "temperature not applied",
    "positive_dropped": "positive missing from the denominator",
    "positive_doubled": "positive doubled in the denominator",
    "missing_normalization": "missing normalisation",
    "self_not_masked": "self-similarity not masked",
    "mean_over_n": "mean over N instead of 2N anchors",
    "one_direction": "asymmetric views",
    "detached_view": "detached gradient",
    "float16_exp": "float16 overflow at small temperature",
    "queue_off_by_one": "off-by-one queue handling",
    "amcl_heads_averaged": "AMCL heads averaged instead of summed",
}


def test_mutation_suite_covers_every_mistake_the_issue_lists():
    names = {m.name for m in ALL_MUTANTS}
    assert set(ISSUE_LIST) <= names, set(ISSUE_LIST) - names
    assert len(ALL_MUTANTS) >= 10
    assert all(m.target in registry.REGISTRY for m in ALL_MUTANTS)


@pytest.mark.parametrize("mutant", ALL_MUTANTS, ids=lambda m: m.name)
def test_oracle_flags_the_mutant(mutant):
    reference = REFERENCES.get(mutant.target, mutant.target)
    report = oracle.check(mutant.fn, reference, max_examples=100, shrink=False)
    assert not report.passed, f"{mutant.name} ({mutant.mistake}) passed the oracle:\n{report}"
    assert report.failure and report.worst is not None


@pytest.mark.parametrize("name", registry.names())
def test_every_reference_passes_the_oracle_at_float32(name):
    """No false alarms: a reference computed in float32 agrees with itself in float64."""
    spec = registry.get(name)
    candidate = functools.partial(spec.fn, **spec.fixed_kwargs)
    oracle.assert_matches_reference(candidate, name, dtype=torch.float32, max_examples=25)
