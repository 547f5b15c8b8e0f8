"""The distributed and optimizer rows of ``nox -s peers``: agreeing peers pass, the
documented differences are flagged (``peers/peer_oracles.py``)."""

from __future__ import annotations

import pytest
import torch

from amcl_lab import oracle

import peer_oracles as po

DTYPES = [torch.float32, torch.float64]


def run_distributed(case, dtype, **kwargs):
    return oracle.check(
        case.candidate, case.reference, adapter=case.adapter, world_size=2, dtype=dtype, **kwargs
    )


def run_optimizer(case, **kwargs):
    return oracle.check_optimizer(
        case.factory,
        case.reference,
        adapter=case.adapter,
        strategy=case.strategy() if case.strategy is not None else None,
        tolerance=case.tolerance,
        **kwargs,
    )


def _skip_without_vendored(case):
    if case.needs_vendored and po.davda54_sam() is None:
        pytest.skip(f"{po.VENDORED} is absent (peers/vendored/README.md)")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "case", [c for c in po.DISTRIBUTED_CASES if not c.difference], ids=lambda c: c.name
)
def test_distributed_peer_agrees(case, dtype):
    report = run_distributed(case, dtype, max_examples=50)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "case", [c for c in po.DISTRIBUTED_CASES if c.difference], ids=lambda c: c.name
)
def test_distributed_difference_is_flagged(case):
    report = run_distributed(case, torch.float64, max_examples=100)
    assert not report.passed


def test_pml_unique_labels_differ_in_the_value_only():
    case = next(c for c in po.DISTRIBUTED_CASES if c.name == "pml-distributed-unique")
    report = run_distributed(case, torch.float64, max_examples=50)
    assert report.failure.startswith("the mean over ranks of the values differs")
    values = report.worst.candidate_value
    assert torch.allclose(values, 2 * report.worst.expected_value.expand(2))  # W x L


def test_solo_learn_transcription_is_the_reference_in_one_process():
    case = next(c for c in po.DISTRIBUTED_CASES if c.name == "solo-learn-barlow")
    report = oracle.check(case.candidate, "barlow_twins", dtype=torch.float64, max_examples=30)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "case", [c for c in po.OPTIMIZER_CASES if not c.difference], ids=lambda c: c.name
)
def test_optimizer_peer_agrees(case):
    _skip_without_vendored(case)
    report = run_optimizer(case, max_examples=50)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "case", [c for c in po.OPTIMIZER_CASES if c.difference], ids=lambda c: c.name
)
def test_optimizer_difference_is_flagged(case):
    _skip_without_vendored(case)
    report = run_optimizer(case, max_examples=100)
    assert not report.passed


def test_davda54_bugs_as_reported():
    if po.davda54_sam() is None:
        pytest.skip(f"{po.VENDORED} is absent")
    cases = {c.name: c for c in po.OPTIMIZER_CASES}
    left = run_optimizer(cases["davda54-sam-gradient-disappears"], max_examples=60)
    assert "(gradient in pass 1 only) differs" in left.failure
    raised = run_optimizer(cases["davda54-sam-gradient-appears"], max_examples=60)
    assert "raised KeyError: 'old_p' in second_step" in raised.failure
    reloaded = run_optimizer(cases["davda54-sam"], max_examples=60)
    assert "after state_dict() / load_state_dict()" in reloaded.failure


def test_every_difference_is_described():
    keys = {k for c in (*po.DISTRIBUTED_CASES, *po.OPTIMIZER_CASES) for k in c.difference}
    assert keys == set(po.DIFFERENCES)
