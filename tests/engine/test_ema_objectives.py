"""BYOL and MoCo v3 in the engine (an EMA target network and a predictor), and the other
self-supervised losses as engine objectives: VICReg, DCL/DCLW, multi-view VICReg."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from amcl_lab import losses
from amcl_lab.engine import OBJECTIVES, Objective, TrainConfig, build_network, open_run, train
from amcl_lab.engine.batches import cached_dataset
from amcl_lab.engine.build import build_optimisation
from amcl_lab.engine.loop import train_step
from amcl_lab.engine.objectives import MomentumNetwork, MomentumQueue, Predictor
from amcl_lab.models import NetworkOutput

BYOL = TrainConfig(
    encoder="mlp",
    width=16,
    proj_hidden=16,
    proj_dim=8,
    batch_size=16,
    steps=4,
    eval_every=2,
    checkpoint_every=2,
    probe_steps=5,
    knn_k=10,
    augment="ab",
    crop_min_scale=0.5,
    loss="byol",
    key_momentum=0.9,
    device="cpu",
)


def _parts(config: TrainConfig):
    split = cached_dataset(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)
    network = build_network(config, split)
    objective = Objective(config, network=network)
    opt = build_optimisation(config, network, objective, len(split.train), split.num_classes)
    x = split.train.batch(torch.arange(config.batch_size))
    return network, objective, opt, torch.stack([x, x.flip(-1)])


def test_moco_and_byol_share_one_ema_implementation():
    """The MoCo key encoder is a MomentumNetwork with a queue; BYOL's target is the same class."""
    assert issubclass(MomentumQueue, MomentumNetwork)
    _, objective, _, _ = _parts(BYOL)
    assert type(objective.momentum) is MomentumNetwork
    assert isinstance(objective.predictor, Predictor)


def test_the_target_network_moves_by_the_ema_rule():
    """xi <- m xi + (1 - m) theta after each step (Grill et al. 2020, Section 3.1), in NumPy."""
    network, objective, _, _ = _parts(BYOL)
    target = objective.momentum
    with torch.no_grad():
        for p in network.parameters():
            p.add_(1.0)
    before = [p.detach().numpy().astype(np.float64) for p in target.network.parameters()]
    online = [p.detach().numpy().astype(np.float64) for p in network.parameters()]
    objective.after_step(network, torch.zeros(1, 6, BYOL.proj_dim), views=2)
    for after, xi, theta in zip(target.network.parameters(), before, online, strict=True):
        np.testing.assert_allclose(
            after.detach().numpy(), 0.9 * xi + 0.1 * theta, rtol=1e-6, atol=2e-7
        )


def test_the_loss_is_byols_symmetrised_loss_of_predictions_against_targets():
    """L = |p1 - z2'|^2 + |p2 - z1'|^2 of normalised vectors: the predictor's outputs of the
    online projections against the target network's projections of the other view."""
    network, objective, _, views = _parts(BYOL)
    flat = views.flatten(0, 1)
    targets = objective.momentum.keys(flat)
    out = network(flat)
    value = objective(out, 2, torch.zeros(16, dtype=torch.long), targets)
    p = objective.predictor(out.embeddings)[0].reshape(2, 16, -1)
    t = targets[0].reshape(2, 16, -1)
    expected = losses.negative_cosine(p[0], p[1], t[0], t[1], convention="byol")
    torch.testing.assert_close(value, expected)
    assert 0.0 <= float(value.detach()) <= 8.0


def test_only_the_online_network_and_the_predictor_get_gradients():
    network, objective, _, views = _parts(BYOL)
    flat = views.flatten(0, 1)
    targets = objective.momentum.keys(flat)
    assert not targets.requires_grad
    objective(network(flat), 2, torch.zeros(16, dtype=torch.long), targets).backward()
    assert all(p.grad is None for p in objective.momentum.network.parameters())
    assert all(p.grad is not None for p in network.parameters())
    assert all(p.grad is not None for p in objective.predictor.parameters())


def test_the_predictor_is_optimised_and_the_target_is_not():
    network, objective, opt, views = _parts(BYOL)
    target_before = [p.clone() for p in objective.momentum.network.parameters()]
    predictor_before = [p.clone() for p in objective.predictor.parameters()]
    train_step(network, objective, opt, views, torch.zeros(16, dtype=torch.long), None, 0)
    after = objective.predictor.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(predictor_before, after, strict=True))
    # the target moved only by the moving average, towards the updated online network
    online = list(network.parameters())
    for before, after, theta in zip(
        target_before, objective.momentum.network.parameters(), online, strict=True
    ):
        torch.testing.assert_close(after, 0.9 * before + 0.1 * theta.detach())


def test_a_byol_run_resumes_bit_for_bit(tmp_path):
    clean = train(BYOL, tag="b")
    run = open_run(tmp_path, "exp", BYOL, preset="p", seeds=(0,), run_id="r")
    calls = []

    def crash(held):  # interrupts the step-4 evaluation, after the step-2 checkpoint
        calls.append(held)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(BYOL, run, tag="b", hooks=[crash])
    resumed = open_run(tmp_path, "exp", BYOL, preset="p", seeds=(0,), run_id="r", resume=True)
    result = train(BYOL, resumed, tag="b")
    assert json.dumps(result.history) == json.dumps(clean.history)
    state = result.objective.state_dict()
    assert any(k.startswith("momentum.network.") for k in state)
    assert any(k.startswith("predictor.") for k in state)
    for key, tensor in clean.objective.state_dict().items():
        assert torch.equal(state[key], tensor), key


def test_moco_v3_trains_with_the_same_target_and_its_in_batch_keys():
    """MoCo v3: ctr(q1, k2) + ctr(q2, k1) of the predictor's queries and the target's keys."""
    config = replace(BYOL, loss="moco_v3", temperature=0.2, steps=2, eval_every=0)
    network, objective, _, views = _parts(config)
    flat = views.flatten(0, 1)
    keys = objective.momentum.keys(flat)
    out = network(flat)
    q = objective.predictor(out.embeddings)[0].reshape(2, 16, -1)
    k = keys[0].reshape(2, 16, -1)
    value = objective(out, 2, torch.zeros(16, dtype=torch.long), keys)
    torch.testing.assert_close(value, losses.moco_v3(q[0], q[1], k[0], k[1], 0.2))
    assert math.isfinite(train(config).final["train_loss"])


def test_ema_objectives_need_the_network_to_copy():
    with pytest.raises(ValueError, match="needs the network"):
        Objective(BYOL)


TINY = replace(BYOL, batch_size=32, loss="nt_xent", steps=2, eval_every=0)


@pytest.mark.parametrize(
    ("loss", "options", "views"),
    [
        ("vicreg", (), 2),
        ("vicreg", ("lambda_invariance=10", "nu_covariance=0.5"), 3),
        ("dcl", (), 2),
        ("dclw", ("sigma=0.3",), 2),
        ("multiview_vicreg", (), 3),
        ("byol", ("convention=simsiam",), 3),
    ],
)
def test_self_supervised_losses_train(loss, options, views):
    result = train(replace(TINY, loss=loss, loss_options=options, views=views))
    assert math.isfinite(result.final["train_loss"])
    assert 0.0 <= result.final["linear_probe"] <= 1.0


def test_vicreg_objective_averages_the_view_pairs_of_the_registered_loss():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3 * 6, 5, generator=g, dtype=torch.float64)
    value = Objective(replace(TINY, loss="vicreg", views=3))(
        _embeddings_only(z), 3, torch.zeros(6, dtype=torch.long)
    )
    per_view = z[0].reshape(3, 6, 5)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(losses.vicreg(per_view[a], per_view[b]) for a, b in pairs) / 3
    torch.testing.assert_close(value, expected)


def test_multiview_vicreg_objective_sees_images_by_views():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 4 * 6, 5, generator=g, dtype=torch.float64)
    value = Objective(replace(TINY, loss="multiview_vicreg", views=4))(
        _embeddings_only(z), 4, torch.zeros(6, dtype=torch.long)
    )
    views = z[0].reshape(4, 6, 5).transpose(0, 1)  # (N, V, D)
    torch.testing.assert_close(value, losses.multiview_vicreg(views))


def test_registry_entries_train_with_their_stop_gradient():
    """dclw is registered with stop_gradient=False for gradcheck; the engine keeps the default."""
    assert OBJECTIVES["dclw"].fixed == {"weight": "vmf"}
    assert OBJECTIVES["vicreg"].kind == "pairwise" and OBJECTIVES["dcl"].kind == "pairwise"
    assert OBJECTIVES["multiview_vicreg"].kind == "multiview"
    assert {OBJECTIVES["byol"].kind, OBJECTIVES["moco_v3"].kind} == {"ema_target"}
    assert "dino" not in OBJECTIVES and "swav" not in OBJECTIVES  # prototypes, multi-crop


def _embeddings_only(z):
    return NetworkOutput(torch.zeros(z.shape[1], 1), z, None)
