"""SAM, SAF, MESA and ema_update_ refuse NaN/inf instead of writing them into weights."""

from __future__ import annotations

import pytest
import torch

from amcl_lab.optim import (
    MESA,
    SAF,
    SAM,
    TrajectoryBuffer,
    ema_update_,
    frozen_bn_stats,
    sam_perturbation,
    trajectory_loss,
)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _weights(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_sam_first_step_refuses_a_nan_gradient_and_leaves_the_weights():
    model = _model()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    next(iter(model.parameters())).grad[0, 0] = float("nan")
    before = _weights(model)
    with pytest.raises(ValueError, match=r"SAM.first_step: the gradient of parameter 0"):
        opt.first_step()
    assert _same(before, _weights(model))


def test_sam_second_step_refuses_a_nan_gradient_and_restores_the_weights():
    model = _model()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    before = _weights(model)
    model(torch.randn(5, 3)).sum().backward()
    opt.first_step(zero_grad=True)
    model(torch.randn(5, 3)).sum().backward()
    list(model.parameters())[2].grad.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"SAM.second_step: the gradient of parameter 2"):
        opt.second_step()
    assert _same(before, _weights(model))


def test_sam_perturbation_names_the_bad_gradient():
    grads = [torch.ones(2), torch.tensor([1.0, float("nan")])]
    with pytest.raises(ValueError, match=r"sam_perturbation: grads\[1\] \(shape \(2,\)\)"):
        sam_perturbation(grads, 0.05)
    with pytest.raises(TypeError, match=r"grads\[0\] must be a torch.Tensor"):
        sam_perturbation([[1.0, 2.0]], 0.05)


def test_saf_refuses_nan_logits_and_stores_nothing():
    saf = SAF(num_samples=4, num_classes=3, lag=1, start_epoch=1)
    logits = torch.tensor([[0.0, float("nan"), 1.0], [1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match=r"SAF: logits contains NaN or inf"):
        saf(logits, torch.tensor([0, 1]), epoch=0)
    assert (saf.buffer.stamps == torch.iinfo(torch.int32).min).all()
    buffer = TrajectoryBuffer(4, 3, lag=1)
    with pytest.raises(ValueError, match=r"TrajectoryBuffer.write: logits contains NaN"):
        buffer.write(torch.tensor([0, 1]), logits, epoch=0)


def test_mesa_refuses_nan_logits_a_nan_teacher_and_a_nan_student_update():
    model = _model()
    mesa = MESA(model, decay=0.5, start_epoch=0)
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"MESA: logits contains NaN or inf"):
        mesa(torch.full((5, 2), float("nan")), x, epoch=0)
    with pytest.raises(ValueError, match=r"MESA: the teacher's logits on inputs contain NaN"):
        mesa(model(x), torch.full((5, 3), float("nan")), epoch=0)
    teacher = _weights(mesa.teacher)
    with torch.no_grad():
        next(iter(model.parameters()))[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ema_update_: new\[0\] \(shape \(4, 3\)\) contains NaN"):
        mesa.update(model)
    assert _same(teacher, _weights(mesa.teacher))


def test_ema_update_is_all_or_nothing_on_nan():
    ema = [torch.zeros(2), torch.zeros(3)]
    with pytest.raises(ValueError, match=r"new\[1\]"):
        ema_update_(ema, [torch.ones(2), torch.tensor([1.0, float("inf"), 0.0])], 0.5)
    assert all(bool((e == 0).all()) for e in ema)
    with pytest.raises(TypeError, match=r"new\[0\] must be a torch.Tensor"):
        ema_update_(ema, [[1.0, 2.0], torch.ones(3)], 0.5)


def test_mesa_and_frozen_bn_stats_name_a_non_module_argument():
    """Before: AttributeError from inside copy.deepcopy / model.modules()."""
    with pytest.raises(TypeError, match=r"MESA: model must be a torch.nn.Module, got str"):
        MESA("x")
    with (
        pytest.raises(TypeError, match=r"frozen_bn_stats: model must be a torch.nn.Module"),
        frozen_bn_stats("x"),
    ):
        pass
    with pytest.raises(TypeError, match=r"MESA.update: model must be a torch.nn.Module"):
        MESA(_model()).update("x")


def test_sam_adaptive_must_be_a_bool():
    with pytest.raises(TypeError, match=r"SAM: adaptive must be a bool \(True or False\)"):
        SAM(_model().parameters(), torch.optim.SGD, adaptive="False", lr=0.1)


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_trajectory_loss_with_a_one_element_tensor_temperature_is_0d(shape):
    """Before: temperature=tensor([5.]) returned a (1,) tensor."""
    z = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)
    past = torch.tensor([[0.0, 5.0, -5.0]], dtype=torch.float64)
    tau = torch.full(shape, 5.0, dtype=torch.float64)
    out = trajectory_loss(z, past, temperature=tau, weight=0.3)
    assert out.shape == ()
    assert torch.equal(out, trajectory_loss(z, past, temperature=5.0, weight=0.3))
