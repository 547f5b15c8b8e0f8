"""Cross-checks against real peer libraries (run by ``nox -s peers`` only).

For each case of ``peer_cases.CASES``: a peer that agrees passes the oracle in float32 and
float64 on its domain; a peer with a documented difference is flagged by the oracle on the
default domain, and each minimal reproduction gives the stated values.
"""

from __future__ import annotations

import math

import pytest
import torch

from amcl_lab import oracle

import peer_cases as pc

AGREE = [c for c in pc.CASES if not c.difference]
DIFFER = [c for c in pc.CASES if c.difference]
DTYPES = [torch.float32, torch.float64]


def _check(case, dtype, **kwargs):
    strategy = case.domain() if case.domain is not None else None
    return oracle.check(
        case.candidate,
        case.reference,
        adapter=case.adapter,
        dtype=dtype,
        strategy=strategy,
        **kwargs,
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("case", AGREE, ids=lambda c: c.name)
def test_peer_agrees_with_the_reference(case, dtype):
    report = _check(case, dtype, max_examples=100)
    assert report.passed, str(report)


@pytest.mark.parametrize("case", DIFFER, ids=lambda c: c.name)
def test_oracle_flags_the_documented_difference(case):
    dtype = {"float32": torch.float32, "float64": torch.float64}[case.flagged_in]
    report = _check(case, dtype, max_examples=200, shrink=False)
    assert not report.passed


def test_every_documented_difference_has_a_reproduction():
    keys = {k for case in DIFFER for k in case.difference}
    assert keys == set(pc.REPRODUCTIONS)


def test_pml_log_floor_caps_the_loss_in_float32_only():
    exact = 200 + math.log(2)
    r32 = pc.reproduce_log_floor(torch.float32)
    assert abs(r32.reference - exact) < 1e-9
    assert abs(r32.peer + math.log(torch.finfo(torch.float32).tiny)) < 1e-4  # 87.3365
    r64 = pc.reproduce_log_floor(torch.float64)
    assert abs(r64.peer - exact) < 1e-9  # below float64's cap of 708.4


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pml_supcon_without_negatives_returns_zero(dtype):
    r = pc.reproduce_no_negatives(dtype)
    assert r.peer == 0.0 and abs(r.reference - math.log(3)) < 1e-12


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pml_supcon_drops_anchors_whose_loss_is_zero(dtype):
    """Two anchors of four have loss ~e^-100: the reference averages log 3 over four anchors,
    PML over the two non-zero ones."""
    r = pc.reproduce_zero_loss_anchor_dropped(dtype)
    assert abs(r.reference - math.log(3) / 2) < 1e-12
    assert abs(r.peer - math.log(3)) < 1e-5  # float32 logits of size 1/tau = 100


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_pml_ntxent_with_several_positives_is_not_supcon(dtype):
    r = pc.reproduce_per_pair(dtype)
    assert abs(r.peer - r.reference) > 0.1


# --- self-supervised losses ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lightly_byol_recipe_is_the_simsiam_scale(dtype):
    """Aligned predictions: BYOL's L + L~ is 0, lightly's halved negative cosines -1."""
    r = pc.reproduce_byol_scale(dtype)
    assert r.reference == 0.0 and abs(r.peer + 1.0) < 1e-6


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_lightly_ntxent_is_not_moco_v3s_ctr(dtype):
    r = pc.reproduce_ntxent_is_simclr(dtype)
    assert abs(r.reference - 4 * math.log(1 + math.exp(-1))) < 1e-12
    assert abs(r.peer - 4 * math.log(1 + 2 * math.exp(-1))) < 1e-5


def test_lightly_dino_rounds_the_teacher_temperature_to_float32():
    """The float64 difference is the float32 rounding of 0.04 (relative 2.2e-8), and passing
    the temperature as a float64 tensor removes it."""
    r = pc.reproduce_dino_float32_temperature(torch.float64)
    assert 1e-9 < abs(r.peer - r.reference) < 1e-6 * abs(r.reference)
    student = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], dtype=torch.float64)
    teacher = torch.tensor([[[0.0, 0.125], [0.0, 0.125]]], dtype=torch.float64)
    exact = pc.lightly_dino_exact(student, teacher, torch.zeros(2, dtype=torch.float64), 0.1, 0.04)
    assert abs(float(exact) - r.reference) < 1e-15
