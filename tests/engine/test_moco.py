"""MoCo in the engine: the momentum update, the FIFO queue, no gradient into keys or queue,
the queue updated after the optimiser step, and bit-identical resume."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from amcl_lab import losses
from amcl_lab.engine import Objective, TrainConfig, build_network, open_run, train
from amcl_lab.engine.batches import cached_dataset
from amcl_lab.engine.build import build_optimisation
from amcl_lab.engine.loop import train_step
from amcl_lab.engine.objectives import MomentumQueue

MOCO = TrainConfig(
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
    loss="moco",
    temperature=0.2,
    queue_size=40,
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
    return split, network, objective, opt, torch.stack([x, x.flip(-1)])


def test_the_key_network_moves_by_the_momentum_rule():
    """theta_k <- m theta_k + (1 - m) theta_q (He et al. 2020, Eq. 2), checked in NumPy."""
    _, network, objective, _, _ = _parts(MOCO)
    queue = objective.momentum
    with torch.no_grad():
        for p in network.parameters():
            p.add_(1.0)  # the query network moves away from its copy
    keys_before = [p.detach().numpy().astype(np.float64) for p in queue.network.parameters()]
    query = [p.detach().numpy().astype(np.float64) for p in network.parameters()]
    queue.update(network, torch.zeros(MOCO.heads, 2 * 3, MOCO.proj_dim), views=2)
    for after, k, q in zip(queue.network.parameters(), keys_before, query, strict=True):
        np.testing.assert_allclose(after.detach().numpy(), 0.9 * k + 0.1 * q, rtol=1e-6, atol=2e-7)


def fifo_violations(queue: MomentumQueue) -> list[str]:
    """What is wrong with ``queue.enqueue`` on a 5-row queue (empty: a FIFO that wraps)."""
    found = []
    rows = torch.arange(1.0, 15.0).reshape(1, 7, 2)  # seven distinct keys
    queue.enqueue(rows[:, :3])
    if queue.position.item() != 3 or not torch.equal(queue.queue[0, :3], rows[0, :3]):
        found.append("first write")
    queue.enqueue(rows[:, 3:6])  # fills slots 3, 4 and wraps into 0
    wrapped = torch.stack([rows[0, 5], *rows[0, 1:5]])
    if queue.position.item() != 1 or not torch.equal(queue.queue[0], wrapped):
        found.append("wrap-around")
    queue.enqueue(torch.arange(100.0, 114.0).reshape(1, 7, 2))  # more than fits: the last 5
    if not torch.equal(queue.queue[0], torch.arange(104.0, 114.0).reshape(5, 2)):
        found.append("overflow")
    return found


def _small_queue(cls: type[MomentumQueue] = MomentumQueue) -> MomentumQueue:
    network = build_network(MOCO, cached_dataset("digits", ""))
    return cls(network, heads=1, dim=2, size=5, momentum=0.5, seed=0)


def test_the_queue_is_fifo_and_wraps_around():
    assert fifo_violations(_small_queue()) == []


class _OffByOne(MomentumQueue):
    def enqueue(self, keys):  # writes one slot too far
        self.position += 1
        super().enqueue(keys)


class _Newest(MomentumQueue):
    def enqueue(self, keys):  # keeps the first keys when too many arrive
        super().enqueue(keys[:, : self.queue.shape[1]] if keys.shape[1] > 5 else keys)


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", [_OffByOne, _Newest])
def test_fifo_check_catches_broken_queues(mutant):
    assert fifo_violations(_small_queue(mutant))


def test_no_gradient_reaches_the_keys_or_the_queue():
    _, network, objective, _, views = _parts(MOCO)
    flat = views.flatten(0, 1)
    keys = objective.momentum.keys(flat)
    assert not keys.requires_grad and not objective.momentum.queue.requires_grad
    objective(network(flat), 2, torch.zeros(16, dtype=torch.long), keys).backward()
    assert all(p.grad is None for p in objective.momentum.network.parameters())
    assert all(p.grad is not None for p in network.parameters())


def test_the_loss_is_the_symmetrised_info_nce_against_the_queue():
    _, network, objective, _, views = _parts(MOCO)
    flat = views.flatten(0, 1)
    keys = objective.momentum.keys(flat)
    out = network(flat)
    q = out.embeddings[0].reshape(2, 16, -1)
    k = keys[0].reshape(2, 16, -1)
    bank = objective.momentum.queue[0]
    expected = 0.5 * (
        losses.info_nce(q[0], k[1], bank, 0.2) + losses.info_nce(q[1], k[0], bank, 0.2)
    )
    assert torch.allclose(objective(out, 2, torch.zeros(16, dtype=torch.long), keys), expected)


def test_the_queue_gets_the_keys_after_the_optimiser_step():
    _, network, objective, opt, views = _parts(MOCO)
    flat = views.flatten(0, 1)
    before = objective.momentum.queue.clone()
    keys = objective.momentum.keys(flat)  # the key network before the step
    labels = torch.zeros(16, dtype=torch.long)
    expected = objective(network(flat), 2, labels, keys).detach()  # against the old queue
    loss, _ = train_step(network, objective, opt, views, labels, None, 0)
    assert torch.equal(loss.detach(), expected)
    queue = objective.momentum.queue
    assert torch.equal(queue[:, : 2 * 16], keys)  # this step's keys, view major
    assert torch.equal(queue[:, 32:], before[:, 32:])  # the rest untouched
    assert objective.momentum.position.item() == 32


def test_a_moco_run_resumes_bit_for_bit(tmp_path):
    clean = train(MOCO, tag="m")
    run = open_run(tmp_path, "exp", MOCO, preset="p", seeds=(0,), run_id="r")
    calls = []

    def crash(held):  # interrupts the step-4 evaluation, after the step-2 checkpoint
        calls.append(held)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(MOCO, run, tag="m", hooks=[crash])
    resumed = open_run(tmp_path, "exp", MOCO, preset="p", seeds=(0,), run_id="r", resume=True)
    result = train(MOCO, resumed, tag="m")
    assert json.dumps(result.history) == json.dumps(clean.history)
    for key, tensor in clean.objective.state_dict().items():
        assert torch.equal(result.objective.state_dict()[key], tensor), key


@pytest.mark.parametrize("adaptive", [True, False])
def test_amcl_moco_trains_with_learned_or_constant_temperatures(adaptive):
    config = replace(
        MOCO, loss="amcl_moco", heads=3, adaptive_temperature=adaptive, steps=2, eval_every=0
    )
    result = train(config)
    assert np.isfinite(result.final["train_loss"])
    has_net = result.objective.pair_temperature is not None
    assert has_net == adaptive and ("tau_at_bound" in result.final) == adaptive


def test_moco_needs_the_network_to_copy():
    with pytest.raises(ValueError, match="needs the network"):
        Objective(MOCO)
