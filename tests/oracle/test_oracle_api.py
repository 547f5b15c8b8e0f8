"""The oracle's API: verdicts, failure reporting, shrinking, blame and its own errors.

A misbehaving candidate (raises, returns a non-scalar, a non-finite value or a non-tensor,
changes its inputs, cuts a gradient) must give a failed report whose message names what
happened - never a crash of the oracle - and ``assert_matches_reference`` must turn it into
an ``AssertionError`` carrying the report.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import strategies as st

from amcl_lab import fast, oracle
from amcl_lab.losses import hard_contrastive, nt_xent
from amcl_lab.samples import SampleInput

import mutants

FEW = 20  # inputs per check: enough to trigger each misbehaviour below


def _raises(z1, z2, temperature):
    raise RuntimeError("kernel launch failed")


def _per_anchor(z1, z2, temperature):
    return nt_xent(z1, z2, temperature, reduction="none")


def _nan(z1, z2, temperature):
    return nt_xent(z1, z2, temperature) * float("nan")


def _python_float(z1, z2, temperature):
    return float(nt_xent(z1, z2, temperature).detach())


def _modifies_input(z1, z2, temperature):
    value = nt_xent(z1, z2, temperature)
    with torch.no_grad():
        z1.mul_(2.0)
    return value


def _fully_detached(z1, z2, temperature):
    return nt_xent(z1, z2, temperature).detach()


class _BrokenBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward not implemented")


def _backward_raises(z1, z2, temperature):
    return _BrokenBackward.apply(nt_xent(z1, z2, temperature))


MISBEHAVIOURS = [
    (_raises, "the candidate raised RuntimeError: kernel launch failed"),
    (_per_anchor, "returned shape (4,), expected a scalar"),
    (_nan, "returned a non-finite value"),
    (_python_float, "returned a float, not a tensor"),
    (_modifies_input, "modified its input(s) z1 in place"),
    (mutants.detached_view, "no gradient reaches z2"),
    (_fully_detached, "carries no gradient"),
    (_backward_raises, "backward raised RuntimeError: backward not implemented"),
]


@pytest.mark.parametrize(
    ("candidate", "message"), MISBEHAVIOURS, ids=[c.__name__.strip("_") for c, _ in MISBEHAVIOURS]
)
def test_misbehaving_candidate_is_a_named_mismatch_not_a_crash(candidate, message):
    report = oracle.check(candidate, "nt_xent", max_examples=FEW)
    assert not report.passed
    assert message in report.failure
    with pytest.raises(AssertionError, match="MISMATCH") as caught:
        oracle.assert_matches_reference(candidate, "nt_xent", max_examples=FEW)
    assert message in str(caught.value)


def test_correct_candidate_passes_and_reports_its_errors():
    report = oracle.assert_matches_reference(fast.nt_xent, "nt_xent", max_examples=FEW)
    assert report.passed and report.failure is None and report.blame is None
    assert report.examples == FEW and report.shrink_examples == 0
    assert set(report.gradients) == {"z1", "z2"}
    assert 0.0 < report.value.abs < 1e-3
    assert "oracle PASS" in str(report) and "input closest to its bound" in str(report)
    assert report.to_dict()["passed"] is True


def test_failing_input_is_shrunk_to_a_minimal_one():
    """tau applied twice: shrinking reaches the smallest batch (N = 2) in a tiny dimension."""
    report = oracle.check(mutants.tau_twice, "nt_xent", max_examples=100)
    z1, z2 = report.worst.sample.args
    assert z1.shape == z2.shape and z1.shape[0] == 2 and z1.shape[1] <= 2
    assert report.shrink_examples > 0
    assert "minimal failing input" in str(report)


def _naive_exp(z1, z2, temperature):
    """Exponentiates logits in the input dtype: right in float64, overflows in float32."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    e = torch.exp(z @ z.T / temperature)
    n = z1.shape[0]
    rows = torch.arange(2 * n)
    denominator = e.sum(dim=1) - e.diagonal()
    return -torch.log(e[rows, (rows + n) % (2 * n)] / denominator).mean()


def test_blame_separates_numerics_from_definitions():
    numerical = oracle.check(_naive_exp, "nt_xent", max_examples=100)
    assert not numerical.passed and "non-finite" in numerical.failure
    assert "the difference is numerical" in numerical.blame
    definitional = oracle.check(mutants.mean_over_n, "nt_xent", max_examples=FEW)
    assert "does not come from the input precision" in definitional.blame
    assert oracle.check(_naive_exp, "nt_xent", dtype=torch.float64, max_examples=FEW).blame is None


def _near_tie() -> SampleInput:
    """Two negatives of anchor 0 whose cosines differ by ~3e-7: one is kept in float64, both
    are ties in float32 (hard_negative_mask keeps ties within 64 ulps of the dtype)."""
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    z2 = torch.tensor(
        [[0.0, 1.0], [math.cos(1.2), math.sin(1.2)], [math.cos(1.2), -math.sin(1.2)]],
        dtype=torch.float64,
    )
    z2[2, 1] -= 1e-6
    return SampleInput((z1, z2), {"k": 1, "temperature": 0.05}, "near_tie")


def test_ill_conditioned_input_holds_the_candidate_to_the_references_own_accuracy():
    strategy = st.just(_near_tie())
    report = oracle.check(hard_contrastive, "hard_contrastive", strategy=strategy, max_examples=1)
    assert report.passed and report.ill_conditioned == 1
    assert "ill-conditioned at float32" in str(report)

    def off_by_a_third(z1, z2, temperature, k):  # still wrong where the input is ill-conditioned
        return hard_contrastive(z1, z2, temperature, k=k) * 1.3

    wrong = oracle.check(off_by_a_third, "hard_contrastive", strategy=strategy, max_examples=1)
    assert not wrong.passed and wrong.ill_conditioned >= 1  # (the failure is replayed once)


def test_oracle_errors_are_value_errors_naming_the_problem():
    with pytest.raises(ValueError, match="unknown reference loss 'ntxent'; registered: "):
        oracle.check(nt_xent, "ntxent")
    with pytest.raises(ValueError, match="unknown adapter 'transpose'; available: "):
        oracle.check(nt_xent, "nt_xent", adapter="transpose")
    with pytest.raises(ValueError, match="adapter 'views_stacked' maps inputs"):
        oracle.check(nt_xent, "info_nce", adapter="views_stacked")
    with pytest.raises(ValueError, match="passes \\['reduction'\\] to the reference"):
        oracle.check(nt_xent, "barlow_twins", adapter="sum")
    with pytest.raises(ValueError, match="set the reference's \\['reduction'\\] twice"):
        oracle.check(nt_xent, "nt_xent", adapter="sum,per_anchor")
    capped = oracle.Adapter(
        "cap", "caps the value", reference_transform=lambda v, d: v.clamp(max=9)
    )
    with pytest.raises(ValueError, match="at most one adapter may transform"):
        oracle.check(nt_xent, "nt_xent", adapter=[capped, "pml_log_floor"])
    with pytest.raises(ValueError, match=r"dtype must be a floating torch\.dtype"):
        oracle.check(nt_xent, "nt_xent", dtype=torch.int64)
    with pytest.raises(ValueError, match="max_examples must be an int >= 1, got 0"):
        oracle.check(nt_xent, "nt_xent", max_examples=0)
