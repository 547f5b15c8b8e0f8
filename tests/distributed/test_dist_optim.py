"""SAF's trajectory buffer and SAM's perturbation under data parallelism (2 gloo ranks).

* SAF (Du et al., NeurIPS 2022, arXiv:2205.14083; released code ``AngusDujw/SAF``): under a
  shuffling ``DistributedSampler`` a sample moves between ranks every epoch; with
  ``gather_distributed=True`` its target must still be its own logits from exactly ``lag``
  epochs ago.  A per-rank buffer (the released code) must miss about half of them at W = 2:
  the negative control.
* SAM (Foret et al., ICLR 2021, arXiv:2010.01412, Sections 3 and 4.1; the ``no_sync`` recipe
  of ``davda54/sam``): under DDP with the first pass in ``no_sync`` each rank perturbs with
  its local gradient (m-sharpness); without it, with the global one.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from amcl_lab import distributed
from amcl_lab.optim import SAF, SAM, trajectory_loss

from ddp_launch import launch

pytestmark = pytest.mark.distributed

W = 2
SAMPLES, CLASSES, BATCH, LAG, EPOCHS = 24, 4, 3, 2, 5  # 4 steps per rank and epoch
RHO, LR = 0.1, 0.5
W0 = ((0.3, 0.2, -0.1),)  # initial weights of the least-squares model


def logits_of(indices: torch.Tensor, epoch: int) -> torch.Tensor:
    """A distinct, known output for every (sample, epoch)."""
    i = indices.to(torch.float64)[:, None]
    return i * torch.tensor([1.0, -0.5, 0.25, 0.0]) + epoch * torch.tensor([0.0, 1.0, 2.0, 3.0])


def _saf(rank: int, world_size: int, gather: bool) -> dict:
    saf = SAF(
        SAMPLES,
        CLASSES,
        lag=LAG,
        start_epoch=LAG,
        weight=1.0,
        buffer_dtype=torch.float64,
        gather_distributed=gather,
    )
    sampler = DistributedSampler(
        range(SAMPLES), num_replicas=world_size, rank=rank, shuffle=True, seed=7
    )
    hits, reads, error, loss_error = 0, 0, 0.0, 0.0
    seen = []  # the samples this rank saw, per epoch
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        seen.append(sorted(order.tolist()))
        for idx in order.split(BATCH):
            logits = logits_of(idx, epoch)
            past, valid = saf.buffer.read(idx, epoch)  # what SAF is about to use
            term = saf(logits, idx, epoch)
            if epoch < LAG:
                continue
            reads += len(idx)
            hits += int(valid.sum())
            if valid.any():
                wrong = past[valid] - logits_of(idx, epoch - LAG)[valid]
                error = max(error, float(wrong.abs().max()))
            want = trajectory_loss(logits, logits_of(idx, epoch - LAG), 5.0, 1.0)
            loss_error = max(loss_error, float((term - want).abs()))
    return {
        "hits": hits,
        "reads": reads,
        "error": error,
        "loss_error": loss_error,
        "buffer": saf.buffer.logits.clone(),
        "seen": seen,
    }


def _sam(rank: int, world_size: int, local_perturbation: bool) -> dict:
    """One SAM step of DDP least squares on the rank's own data, as the engine runs it."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    net = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor(W0, dtype=torch.float64))
    model = DistributedDataParallel(net)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    with distributed.no_sync(model) if local_perturbation else contextlib.nullcontext():
        F.mse_loss(model(x)[:, 0], y).backward()
    opt.first_step(zero_grad=True)
    perturbed = net.weight.detach().clone()
    F.mse_loss(model(x)[:, 0], y).backward()  # synced: the average over ranks
    opt.second_step(zero_grad=True)
    return {"x": x, "y": y, "perturbed": perturbed, "after": net.weight.detach().clone()}


def _ranks(rank: int, world_size: int) -> dict:
    return {
        "saf": _saf(rank, world_size, gather=True),
        "saf-per-rank": _saf(rank, world_size, gather=False),
        "sam-local": _sam(rank, world_size, local_perturbation=True),
        "sam-global": _sam(rank, world_size, local_perturbation=False),
    }


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return launch(_ranks, world_size=W, timeout=90)


def test_saf_targets_are_each_samples_own_lagged_logits(ranks):
    seen = [r["saf"]["seen"] for r in ranks]
    for epoch in range(EPOCHS):  # every sample is read once per epoch, by one of the ranks
        assert sorted(seen[0][epoch] + seen[1][epoch]) == list(range(SAMPLES))
    moved = [len(set(seen[0][e]) - set(seen[0][e - LAG])) for e in range(LAG, EPOCHS)]
    assert min(moved) > 0  # the shuffle moves samples between ranks: a real test of the lag
    for result in (r["saf"] for r in ranks):
        assert result["reads"] == (EPOCHS - LAG) * SAMPLES // W
        assert result["hits"] == result["reads"]  # every target found, none stale
        assert result["error"] == 0.0  # and it is exactly the sample's own past output
        assert result["loss_error"] <= 1e-12
    torch.testing.assert_close(ranks[0]["saf"]["buffer"], ranks[1]["saf"]["buffer"], rtol=0, atol=0)


def test_per_rank_buffers_miss_targets_when_samples_change_rank(ranks):
    """The released code's failure mode: only samples that stayed on their rank are found."""
    hits = sum(r["saf-per-rank"]["hits"] for r in ranks)
    reads = sum(r["saf-per-rank"]["reads"] for r in ranks)
    assert 0.2 < hits / reads < 0.8, hits / reads  # about 1 / W
    assert all(r["saf-per-rank"]["error"] == 0.0 for r in ranks)  # what is found is right


def _gradient(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 2.0 * ((x @ w[0] - y)[:, None] * x).mean(dim=0)[None, :]  # d/dw mean (xw - y)^2


def _expected_sam(ranks: list[dict], key: str) -> tuple[list[torch.Tensor], torch.Tensor]:
    w0 = torch.tensor(W0, dtype=torch.float64)
    grads = [_gradient(w0, r[key]["x"], r[key]["y"]) for r in ranks]
    if key == "sam-global":
        grads = [sum(grads) / W] * W
    steps = [RHO * g / (g.norm() + 1e-12) for g in grads]
    pairs = zip(steps, ranks, strict=True)
    second = sum(_gradient(w0 + e, r[key]["x"], r[key]["y"]) for e, r in pairs) / W
    return [w0 + e for e in steps], w0 - LR * second


@pytest.mark.parametrize("key", ["sam-local", "sam-global"])
def test_sam_perturbs_with_the_local_gradient_inside_no_sync(ranks, key):
    perturbed, after = _expected_sam(ranks, key)
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result[key]["perturbed"], perturbed[rank], rtol=0, atol=1e-14)
        torch.testing.assert_close(result[key]["after"], after, rtol=0, atol=1e-14)
    differ = not torch.equal(ranks[0][key]["perturbed"], ranks[1][key]["perturbed"])
    assert differ == (key == "sam-local")  # m-sharpness: one perturbation per rank
