"""SAM / ASAM wiring: protocol errors, param groups, schedulers, state_dict, bad input."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amcl_lab.optim import SAM, frozen_bn_stats, sam_perturbation

F64 = torch.float64


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=g, dtype=F64), torch.randint(0, 2, (8,), generator=g)


def train(model: nn.Module, opt: SAM, steps: int, offset: int = 0) -> None:
    for step in range(steps):
        x, y = data(offset + step)
        F.cross_entropy(model(x), y).backward()
        opt.first_step(zero_grad=True)
        with frozen_bn_stats(model):
            F.cross_entropy(model(x), y).backward()
        opt.second_step(zero_grad=True)


def test_state_dict_round_trip_continues_identically():
    """Saving after 2 steps and loading into a fresh SAM gives the same next steps (momentum)."""
    model = net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.1, lr=0.1, momentum=0.9)
    train(model, opt, 2)
    state = copy.deepcopy(opt.state_dict())  # as if saved to disk (state_dict holds references)
    clone = copy.deepcopy(model)
    fresh = SAM(clone.parameters(), torch.optim.SGD, rho=0.7, lr=0.5, momentum=0.9)
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["rho"] == 0.1 and fresh.param_groups[0]["lr"] == 0.1
    assert fresh.param_groups is fresh.base_optimizer.param_groups
    train(model, opt, 2, offset=2)
    train(clone, fresh, 2, offset=2)
    for p, q in zip(model.state_dict().values(), clone.state_dict().values(), strict=True):
        assert torch.equal(p, q)


def test_lr_scheduler_on_the_base_optimizer_changes_the_step_without_warnings():
    """A scheduler attached to sam.base_optimizer drives the shared lr (davda54 issue #28)."""
    model = net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt.base_optimizer, step_size=1, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            train(model, opt, 1)
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.125)


def test_parameters_without_gradient_are_neither_perturbed_nor_counted():
    """A parameter with grad None keeps its value; the norm runs over the others only."""
    used = nn.Parameter(torch.tensor([3.0, 4.0], dtype=F64))
    unused = nn.Parameter(torch.tensor([1.0], dtype=F64))
    opt = SAM([used, unused], torch.optim.SGD, rho=0.5, lr=0.1)
    (used * used).sum().mul(0.5).backward()
    opt.first_step()
    assert unused.item() == 1.0
    assert used.tolist() == pytest.approx([3.3, 4.4], rel=1e-12)


def test_param_group_without_asam_scaling_shares_the_global_norm():
    """Official-ASAM layout: one group adaptive, one not; T = |w| + eta only where asked."""
    w = nn.Parameter(torch.tensor([2.0], dtype=F64))
    b = nn.Parameter(torch.tensor([0.0], dtype=F64))
    opt = SAM(
        [{"params": [w]}, {"params": [b], "adaptive": False}],
        torch.optim.SGD,
        rho=1.0,
        adaptive=True,
        eta=0.0,
        lr=0.1,
    )
    (3.0 * w + 4.0 * b).sum().backward()  # g = (3, 4); T g = (6, 4); T^2 g = (12, 4)
    opt.first_step()
    norm = (6.0**2 + 4.0**2) ** 0.5
    assert w.item() == pytest.approx(2.0 + 12.0 / norm, rel=1e-12)
    assert b.item() == pytest.approx(4.0 / norm, rel=1e-12)


def test_step_with_closure_returns_the_closure_loss():
    model = net()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    x, y = data()
    F.cross_entropy(model(x), y).backward()

    def closure():
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


def test_weights_are_restored_exactly_before_the_base_step():
    """With lr = 0 a full SAM step leaves the weights bitwise unchanged (restore, not subtract)."""
    model = net()
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.3, adaptive=True, lr=0.0)
    train(model, opt, 1)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_frozen_bn_stats_restores_attributes_after_an_exception():
    model = net()
    with pytest.raises(RuntimeError), frozen_bn_stats(model):
        raise RuntimeError("boom")
    assert model[1].track_running_stats is True


def test_frozen_bn_stats_keeps_instance_norm_statistics():
    norm = nn.InstanceNorm1d(3, track_running_stats=True, momentum=0.5)
    with frozen_bn_stats(norm):
        norm(torch.randn(2, 3, 5))
    assert norm.running_mean.tolist() == [0.0, 0.0, 0.0] and norm.momentum == 0.5


# --- protocol and bad input ---------------------------------------------------------------------


def one_param_sam(**kwargs):
    w = nn.Parameter(torch.ones(2, dtype=F64))
    return w, SAM([w], torch.optim.SGD, lr=0.1, **kwargs)


def test_first_step_without_gradients_raises():
    _, opt = one_param_sam()
    with pytest.raises(ValueError, match=r"SAM.first_step: no parameter has a gradient"):
        opt.first_step()


def test_first_step_twice_raises_and_second_step_alone_raises():
    w, opt = one_param_sam()
    with pytest.raises(ValueError, match=r"SAM.second_step: no saved weights"):
        opt.second_step()
    w.sum().backward()
    opt.first_step()
    with pytest.raises(ValueError, match=r"SAM.first_step: called twice"):
        opt.first_step()


def test_step_without_closure_raises():
    _, opt = one_param_sam()
    with pytest.raises(ValueError, match=r"SAM.step: a closure"):
        opt.step()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rho": -0.1}, r"SAM: rho must be finite and >= 0, got -0.1"),
        ({"rho": float("nan")}, r"SAM: rho must be finite and >= 0"),
        ({"eta": -1.0}, r"SAM: eta must be finite and >= 0"),
        ({"eps": 0.0}, r"SAM: eps must be finite and > 0"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        one_param_sam(**kwargs)


def test_negative_rho_in_a_param_group_raises():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"SAM: param group rho must be finite and >= 0"):
        SAM([{"params": [w], "rho": -1.0}], torch.optim.SGD, lr=0.1)


def test_base_optimizer_instance_instead_of_class_raises():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"base_optimizer_cls must be a torch.optim.Optimizer"):
        SAM([w], torch.optim.SGD([w], lr=0.1), lr=0.1)


def test_sam_perturbation_rejects_negative_rho_and_length_mismatch():
    g = [torch.ones(2)]
    with pytest.raises(ValueError, match=r"sam_perturbation: rho must be finite and >= 0"):
        sam_perturbation(g, -1.0)
    with pytest.raises(ValueError, match=r"sam_perturbation: rho must be a float or one value"):
        sam_perturbation(g, [0.1, 0.2])
    with pytest.raises(ValueError, match=r"sam_perturbation: scales must have one entry"):
        sam_perturbation(g, 0.1, scales=[None, None])


def test_zero_gradient_gives_a_zero_step_not_nan():
    (e,) = sam_perturbation([torch.zeros(3, dtype=F64)], 0.05)
    assert torch.equal(e, torch.zeros(3, dtype=F64))
