"""Properties of DINO's loss and centre update (Caron et al., ICCV 2021, arXiv:2104.14294).

Each test is named after the statement it checks; the docstring cites it.  The checks take
the implementation as an argument; the mutation tests run them on ``tests/mutants.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import dino, dino_center_update
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import HELPER_MISTAKES, SSL_MUTANTS

pytestmark = pytest.mark.props

TOL = 1e-10


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _entropy(logits: np.ndarray) -> np.ndarray:
    """Entropy of softmax(logits) along the last axis."""
    x = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
    return -(p * np.log(np.maximum(p, 1e-300))).sum(axis=-1)


def check_value(loss, sample) -> None:
    """Eqs. (1)-(3): the mean over (teacher crop, other student crop) pairs and images of
    H(P_t, P_s), with P_t centred and sharpened (NumPy transcription)."""
    student, teacher, center = (_np(t) for t in sample.args)
    kw = sample.kwargs
    expected = ref.dino(
        student, teacher, center, kw["student_temperature"], kw["teacher_temperature"]
    )
    checks.assert_close(float(sample.call(loss)), expected, rtol=TOL, atol=TOL, what="dino")


def check_minimum_at_the_centred_sharpened_teacher(loss, sample) -> None:
    """Each term is a cross-entropy H(P_t, P_s) >= H(P_t) (Gibbs), with equality iff
    P_s = P_t, i.e. student logits = (teacher - c) tau_s / tau_t up to a constant.  With one
    teacher distribution per image (every teacher crop alike), that student attains the mean
    teacher entropy and any other student is above it."""
    student, teacher, center = sample.args
    tau_s, tau_t = sample.kwargs["student_temperature"], sample.kwargs["teacher_temperature"]
    one = teacher[:, :1].expand_as(teacher).clone()
    ideal = ((one[:, :1] - center) * (tau_s / tau_t)).expand_as(student).clone()
    entropy = float(np.mean(_entropy((_np(one[:, 0]) - _np(center)) / tau_t)))
    at_ideal = float(loss(ideal, one, center, **sample.kwargs))
    checks.assert_close(at_ideal, entropy, rtol=1e-9, atol=1e-9, what="loss at P_s = P_t")
    assert float(loss(student, one, center, **sample.kwargs)) >= entropy - 1e-9


def check_sharpening_limit(loss, sample) -> None:
    """Sharpening (Section 3.1): as tau_t -> 0 the teacher distribution becomes one-hot at
    argmax(t - c), and each term tends to -log P_s of that prototype."""
    student, teacher, center = (_np(t) for t in sample.args)
    centred = teacher - center
    top = np.sort(centred, axis=-1)
    if centred.shape[-1] > 1 and np.any(top[..., -1] - top[..., -2] < 1e-2):
        return  # a near-tie: the limit is a mixture
    hot = np.argmax(centred, axis=-1)  # (N, V_t)
    tau_s = sample.kwargs["student_temperature"]
    logits = student / tau_s
    top_logit = logits.max(-1, keepdims=True)
    log_p = logits - top_logit - np.log(np.exp(logits - top_logit).sum(-1, keepdims=True))
    terms = [
        -np.mean([log_p[i, v, hot[i, u]] for i in range(student.shape[0])])
        for u in range(teacher.shape[1])
        for v in range(student.shape[1])
        if v != u
    ]
    value = float(loss(*sample.args, student_temperature=tau_s, teacher_temperature=1e-5))
    checks.assert_close(value, float(np.mean(terms)), rtol=1e-6, atol=1e-6, what="tau_t -> 0")


def check_teacher_gets_no_gradient(loss, sample) -> None:
    """The teacher is an EMA of the student (Eq. 2's parameters), trained by no gradient:
    neither its outputs nor the centre receive one; the student does."""
    leaves = sample.to(requires_grad=True)
    grads = torch.autograd.grad(leaves.call(loss), list(leaves.args), allow_unused=True)
    for name, g in zip(("teacher", "center"), grads[1:], strict=True):
        assert g is None or not bool(g.any()), f"gradient reaches the {name}"
    assert grads[0] is not None


def check_same_crop_pair_skipped(loss, sample) -> None:
    """Eq. (3) sums over x' != x: with one teacher crop, student crop 0 (the same crop) is
    never compared, so changing it leaves the loss unchanged."""
    student, teacher, center = sample.args
    if teacher.shape[1] != 1:
        return
    moved = student.clone()
    moved[:, 0] = moved[:, 0] + 7.0 * torch.arange(student.shape[2], dtype=student.dtype)
    checks.assert_close(
        float(loss(moved, teacher, center, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=TOL,
        atol=TOL,
        what="student crop 0 against its own teacher crop",
    )


BATTERY = {
    "value": check_value,
    "same_crop_skipped": check_same_crop_pair_skipped,
    "minimum": check_minimum_at_the_centred_sharpened_teacher,
    "sharpening": check_sharpening_limit,
    "stop_gradient": check_teacher_gets_no_gradient,
}


@given(ams.dino_samples())
def test_equal_temperatures_zero_centre_is_a_cross_entropy_minimised_at_student_equal_teacher(
    sample,
):
    """With tau_s = tau_t and c = 0 the loss is the cross-entropy between the two softmaxes
    (Eq. 2): at least the teacher's entropy, attained exactly when student = teacher."""
    student, teacher, _ = sample.args
    tau = sample.kwargs["teacher_temperature"]
    zero = torch.zeros(teacher.shape[-1], dtype=teacher.dtype)
    equal = {"student_temperature": tau, "teacher_temperature": tau}
    same = SampleInput((student, teacher, zero), equal)
    check_minimum_at_the_centred_sharpened_teacher(dino, same)
    one = teacher[:, :1].expand_as(teacher)
    checks.assert_close(
        float(dino(one[:, :1].expand_as(student), one, zero, **equal)),
        float(np.mean(_entropy(_np(teacher[:, 0]) / tau))),
        rtol=1e-9,
        atol=1e-9,
        what="student = teacher",
    )


@given(ams.dino_samples())
def test_the_minimum_moves_with_the_centre_and_the_sharpening(sample):
    """Centring and sharpening act on the teacher only: the optimal student logits are
    (t - c) tau_s / tau_t (Section 3.1), where the loss equals the teacher entropy."""
    check_minimum_at_the_centred_sharpened_teacher(dino, sample)


@given(ams.dino_samples())
def test_a_vanishing_teacher_temperature_makes_the_target_one_hot(sample):
    """Sharpening: tau_t -> 0 turns P_t into the indicator of argmax(t - c)."""
    check_sharpening_limit(dino, sample)


@given(ams.dino_samples())
def test_same_crop_pairs_are_skipped(sample):
    """Eq. (3) sums over x' != x: a student crop never predicts the teacher of the same crop,
    so changing student crop u changes only the pairs with the other teacher crops."""
    assume(sample.args[1].shape[1] == 1)  # one teacher crop: student crop 0 is never used
    check_same_crop_pair_skipped(dino, sample)


@given(ams.dino_samples())
def test_the_teacher_and_the_centre_get_no_gradient(sample):
    """Stop-gradient on the teacher branch (the teacher is updated by the EMA only)."""
    check_teacher_gets_no_gradient(dino, sample)


# --- the centre update (Eq. 4) -----------------------------------------------------------------


def _center_sample(draw_sample: SampleInput, momentum: float) -> SampleInput:
    _, teacher, center = draw_sample.args
    return SampleInput((center, teacher), {"momentum": momentum})


def check_center_value(update, sample) -> None:
    """c <- m c + (1 - m) mean over the batch and the teacher crops (NumPy)."""
    center, teacher = sample.args
    m = sample.kwargs["momentum"]
    expected = ref.dino_center_update(_np(center), _np(teacher), m)
    checks.assert_close(
        checks.as_numpy(update(center, teacher, momentum=m)),
        expected,
        rtol=1e-12,
        atol=1e-12,
        what="centre",
    )


def check_center_limits(update, sample) -> None:
    """m = 1 keeps the centre; m = 0 gives the batch mean; the batch mean is a fixed point."""
    center, teacher = sample.args
    mean = teacher.mean(dim=(0, 1))
    for m, expected in ((1.0, center), (0.0, mean)):
        checks.assert_close(
            checks.as_numpy(update(center, teacher, momentum=m)),
            checks.as_numpy(expected),
            rtol=1e-12,
            atol=1e-12,
            what=f"momentum {m}",
        )
    checks.assert_close(
        checks.as_numpy(update(mean, teacher, momentum=sample.kwargs["momentum"])),
        checks.as_numpy(mean),
        rtol=1e-12,
        atol=1e-12,
        what="fixed point",
    )


CENTER_BATTERY = {"value": check_center_value, "limits": check_center_limits}
CENTER_SAMPLES = st.builds(_center_sample, ams.dino_samples(), st.floats(0.0, 1.0))


@given(CENTER_SAMPLES)
def test_the_centre_is_an_exponential_moving_average_of_the_teacher_batch_mean(sample):
    """Eq. (4): c <- m c + (1 - m) (1/B) sum_i g_theta_t(x_i), the mean over the teacher's
    crops; momentum 1 freezes it and the batch mean is its fixed point."""
    check_center_value(dino_center_update, sample)
    check_center_limits(dino_center_update, sample)


@given(CENTER_SAMPLES)
def test_the_centre_update_carries_no_gradient_and_leaves_its_inputs_alone(sample):
    center, teacher = (a.clone().requires_grad_(True) for a in sample.args)
    before = [center.detach().clone(), teacher.detach().clone()]
    out = dino_center_update(center, teacher, momentum=sample.kwargs["momentum"])
    assert not out.requires_grad
    assert torch.equal(center.detach(), before[0]) and torch.equal(teacher.detach(), before[1])


def test_cross_entropy_property_ids():
    assert set(registry.names("cross_entropy")) == {"dino", "swav"}


# --- mutation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prop", sorted(BATTERY))
def test_reference_passes_every_dino_property(prop):
    assert not checks.violates(BATTERY[prop], dino, ams.dino_samples(), max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant", [m for m in SSL_MUTANTS if m.target == "dino"], ids=lambda m: m.name
)
def test_every_dino_mutant_violates_a_property(mutant):
    caught = [
        name
        for name, check in BATTERY.items()
        if checks.violates(check, mutant.fn, ams.dino_samples(), max_examples=40)
    ]
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every property"


def test_reference_centre_update_passes_its_properties():
    for check in CENTER_BATTERY.values():
        assert not checks.violates(check, dino_center_update, CENTER_SAMPLES, max_examples=40)


@pytest.mark.mutation
@pytest.mark.parametrize(
    "mutant",
    [m for m in HELPER_MISTAKES if m.target == "dino_center_update"],
    ids=lambda m: m.name,
)
def test_every_centre_update_mutant_violates_a_property(mutant):
    assert any(
        checks.violates(check, mutant.fn, CENTER_SAMPLES, max_examples=40)
        for check in CENTER_BATTERY.values()
    ), mutant.name
