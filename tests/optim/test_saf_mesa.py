"""SAF and MESA wiring: buffer memory, state_dict, teacher mode, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amcl_lab.optim import MESA, SAF, TrajectoryBuffer, ema_update_, trajectory_loss

F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_buffer_memory_is_lag_times_samples_times_classes(dtype):
    """Logits: lag * N * C * itemsize bytes (paper: 57 MB for CIFAR-100); stamps int32."""
    buf = TrajectoryBuffer(50, 10, lag=3, dtype=dtype)
    item = torch.finfo(dtype).bits // 8
    assert buf.logits.numel() * buf.logits.element_size() == 3 * 50 * 10 * item
    assert buf.nbytes == 3 * 50 * 10 * item + 3 * 50 * 4


def test_saf_state_dict_round_trip_keeps_the_trajectory():
    saf = SAF(6, 3, lag=2, start_epoch=2, buffer_dtype=F64)
    idx = torch.tensor([0, 3, 5])
    z = torch.randn(3, 3, dtype=F64)
    saf(z, idx, 0)
    restored = SAF(6, 3, lag=2, start_epoch=2, buffer_dtype=F64)
    restored.load_state_dict(saf.state_dict())
    z2 = torch.randn(3, 3, dtype=F64)
    assert float(restored(z2, idx, 2)) == float(saf(z2, idx, 2)) > 0


def test_saf_excludes_samples_without_a_target_from_the_mean():
    """Half the batch was never written: the term equals the mean over the other half."""
    saf = SAF(4, 3, lag=1, start_epoch=1, weight=1.0, buffer_dtype=F64)
    past = torch.randn(2, 3, dtype=F64)
    saf(past, torch.tensor([0, 1]), 0)
    now = torch.randn(4, 3, dtype=F64)
    term = saf(now, torch.tensor([0, 1, 2, 3]), 1)
    assert float(term) == pytest.approx(float(trajectory_loss(now[:2], past, 5.0, 1.0)))


def test_saf_with_no_valid_target_returns_zero_with_a_graph():
    saf = SAF(4, 3, lag=2, start_epoch=0)
    z = torch.randn(2, 3, requires_grad=True)
    term = saf(z, torch.tensor([0, 1]), 0)
    term.backward()
    assert float(term.detach()) == 0.0 and torch.equal(z.grad, torch.zeros(2, 3))


def test_mesa_teacher_stays_in_eval_mode_without_gradients():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    mesa = MESA(model)
    mesa.train()
    assert not mesa.teacher.training and mesa.training
    assert not any(p.requires_grad for p in mesa.teacher.parameters())
    assert "teacher.1.running_mean" in mesa.state_dict()


def test_mesa_rejects_inputs_that_do_not_match_the_logits():
    model = nn.Linear(2, 3)
    mesa = MESA(model, start_epoch=0)
    with pytest.raises(ValueError, match=r"MESA: teacher logits have shape \(4, 3\)"):
        mesa(torch.randn(5, 3), torch.randn(4, 2), 0)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: TrajectoryBuffer(10, 3, lag=0), r"TrajectoryBuffer: lag must be >= 1, got 0"),
        (lambda: SAF(10, 3, lag=0), r"TrajectoryBuffer: lag must be >= 1, got 0"),
        (lambda: TrajectoryBuffer(0, 3), r"TrajectoryBuffer: num_samples must be >= 1"),
        (lambda: TrajectoryBuffer(4, 3, dtype=torch.int64), r"must be a floating dtype"),
        (lambda: SAF(10, 3, temperature=0.0), r"SAF: temperature must be finite and > 0"),
        (lambda: SAF(10, 3, weight=-1.0), r"SAF: weight must be finite and >= 0"),
        (lambda: SAF(10, 3, start_epoch=-1), r"SAF: start_epoch must be >= 0"),
        (lambda: MESA(nn.Linear(1, 1), decay=1.5), r"MESA: decay must be in \[0, 1\]"),
        (
            lambda: ema_update_([torch.ones(2)], [torch.ones(3)], 0.5),
            r"ema_update_: ema\[0\] and new\[0\] must have the same shape",
        ),
        (
            lambda: trajectory_loss(torch.ones(2, 3), torch.ones(2, 4)),
            r"trajectory_loss: logits and past_logits must have the same shape",
        ),
        (
            lambda: trajectory_loss(torch.ones(2, 3), torch.ones(2, 3), valid=torch.ones(2)),
            r"trajectory_loss: valid must be a bool tensor of shape \(2,\)",
        ),
    ],
)
def test_bad_construction_or_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("indices", "message"),
    [
        (
            torch.tensor([0, 10]),
            r"SAF: indices must lie in \[0, 10\).*got values in \[0, 10\]",
        ),
        (torch.tensor([-1, 2]), r"indices must lie in \[0, 10\)"),
        (torch.tensor([0.0, 1.0]), r"indices must have an integer dtype"),
        (torch.tensor([0, 1, 2]), r"indices must be a 1-D tensor of length 2"),
    ],
)
def test_sample_indices_out_of_buffer_range_raise(indices, message):
    saf = SAF(10, 3)
    with pytest.raises(ValueError, match=message):
        saf(torch.randn(2, 3), indices, 0)


def test_wrong_number_of_classes_and_negative_epoch_raise():
    saf = SAF(10, 3)
    with pytest.raises(ValueError, match=r"logits must have 3 columns \(num_classes\)"):
        saf(torch.randn(2, 4), torch.tensor([0, 1]), 0)
    with pytest.raises(ValueError, match=r"epoch must be >= 0, got -1"):
        saf(torch.randn(2, 3), torch.tensor([0, 1]), -1)


def test_buffer_read_and_write_validate_indices_themselves():
    buf = TrajectoryBuffer(4, 2, lag=1)
    with pytest.raises(ValueError, match=r"TrajectoryBuffer.read: indices must lie in \[0, 4\)"):
        buf.read(torch.tensor([4]), 1)
    with pytest.raises(ValueError, match=r"TrajectoryBuffer.write: indices must lie in \[0, 4\)"):
        buf.write(torch.tensor([-1]), torch.zeros(1, 2), 0)
