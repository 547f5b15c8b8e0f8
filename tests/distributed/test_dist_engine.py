"""The engine on 2 gloo ranks: trains, checkpoints once, is interrupted, resumes exactly.

One launch runs, on both ranks, an uninterrupted training run and one interrupted after its
first checkpoint (an evaluation hook raises on rank 0; the error reaches every rank) and
then resumed from that checkpoint.  The resumed history and weights must equal the
uninterrupted ones bit for bit, be the same on both ranks, and be logged once (rank 0).
The optimiser is SAM, so the ``no_sync`` first pass runs too.

The same launch trains the gathered losses with SGD on a network without BatchNorm (the
one per-rank computation left): the 2-rank runs must equal the single-process runs on the
global batch up to float32 rounding, which checks the whole chain - sharding of images,
views and labels, the gathered loss, learned AMCL temperatures of the gathered candidates,
DDP's gradient average - end to end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from amcl_lab.engine import (
    HeldOut,
    Objective,
    TrainConfig,
    build_optimisation,
    open_run,
    train,
)
from amcl_lab.io import json_safe
from amcl_lab.models import Network

from ddp_launch import launch

pytestmark = pytest.mark.distributed

TINY = TrainConfig(
    encoder="mlp",
    width=16,
    proj_hidden=16,
    proj_dim=8,
    batch_size=32,  # 16 images per rank
    steps=4,
    eval_every=3,  # evaluations at steps 0, 3 and 4
    checkpoint_every=2,  # checkpoints at steps 2 and 4
    probe_steps=5,
    knn_k=10,
    augment="ab",
    crop_min_scale=0.5,
    optimizer="sam",
    device="cpu",
)


class Interrupted(RuntimeError):
    """Raised by the hook to cut a run short after its first checkpoint."""


def _fail_on_second_evaluation() -> object:
    calls = []

    def hook(held: HeldOut) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 2:  # step 3: after the checkpoint of step 2
            raise Interrupted("simulated kill")
        return {}

    return hook


def _state(network: Network, objective: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The network's state and the parameters of the objective (a temperature network)."""
    state = {k: t.detach().clone() for k, t in network.state_dict().items()}
    if objective is not None:
        state |= {f"objective.{k}": t.detach().clone() for k, t in objective.named_parameters()}
    return state


#: Objectives whose 2-rank training equals single-process training (config fields).
GATHERED: dict[str, dict[str, object]] = {
    "nt_xent": {"loss": "nt_xent"},
    "supcon": {"loss": "supcon"},  # instance labels: ids unique over the global batch
    "barlow_twins": {"loss": "barlow_twins"},  # global batch statistics
    "amcl_nt_xent": {"loss": "amcl_nt_xent", "adaptive_temperature": False},
    # learned temperatures of the local anchors against the gathered candidates; the
    # temperature network's weights are compared too
    "amcl_nt_xent-learned": {"loss": "amcl_nt_xent", "adaptive_temperature": True},
    # learned temperatures of the global batch's channel vectors (width: the global batch).
    # One step: in three SGD steps this loss grows to the hundreds and float32 rounding of
    # its gradients moves the weights by up to 3e-5 (the same runs in float64 agree to 1e-15)
    # MoCo: local queries against a queue filled with the keys of every rank, in the order
    # of the global batch; the key network follows the (DDP-averaged) query network
    "moco": {"loss": "moco", "queue_size": 40},
    "amcl_moco-learned": {"loss": "amcl_moco", "adaptive_temperature": True, "queue_size": 40},
    "amcl_barlow_twins-learned": {
        "loss": "amcl_barlow_twins",
        "adaptive_temperature": True,
        "steps": 1,
    },
}


def _plain(name: str, **changes: object) -> TrainConfig:
    """The SGD config of ``name`` (a :data:`GATHERED` key, or a loss name)."""
    fields = {"optimizer": "sgd", "steps": 3, "eval_every": 100}
    return dataclasses.replace(TINY, **{**fields, **GATHERED.get(name, {"loss": name}), **changes})


class _NoNorm(nn.Identity):
    """Stands in for BatchNorm, whose statistics are per rank under DDP."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__()


@contextlib.contextmanager
def _without_batchnorm() -> Iterator[None]:
    with (
        mock.patch.object(nn, "BatchNorm1d", _NoNorm),
        mock.patch.object(nn, "BatchNorm2d", _NoNorm),
    ):
        yield


def _plain_runs() -> dict[str, tuple[list[float], dict[str, torch.Tensor]]]:
    out = {}
    with _without_batchnorm():
        for name in GATHERED:
            result = train(_plain(name), None, tag=name)
            state = _state(result.network, result.objective)
            out[name] = ([r["train_loss"] for r in result.history[1:]], state)
    return out


def _ranks(rank: int, world_size: int, out: str) -> dict:
    def run(run_id: str, resume: bool = False):
        return open_run(out, "smoke", TINY, preset="t", seeds=(0,), run_id=run_id, resume=resume)

    full = train(TINY, run("full"), tag="seed0")
    cut = run("cut")
    try:
        train(TINY, cut, tag="seed0", hooks=(_fail_on_second_evaluation(),))
        interrupted = False
    except Interrupted:
        interrupted = True
    saved = torch.load(cut.checkpoint("seed0"), weights_only=True)
    resumed = train(TINY, run("cut", resume=True), tag="seed0")
    with _without_batchnorm():
        local = train(_plain("nt_xent", loss_options=("gather_distributed=False",)), None)
    return {
        "plain": _plain_runs(),
        "local": [r["train_loss"] for r in local.history[1:]],
        "interrupted": interrupted,
        "checkpoint": (saved["step"], saved["done"]),
        "full": (json_safe(full.history), _state(full.network)),  # NaN -> None: comparable
        "resumed": (json_safe(resumed.history), _state(resumed.network)),
    }


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    import torch._dynamo  # noqa: F401  (DDP imports it: once here, not once per rank)

    out = tmp_path_factory.mktemp("runs")
    return launch(_ranks, str(out), timeout=120), out / "smoke"


@pytest.fixture(scope="module")
def single_process() -> dict[str, tuple[list[float], dict[str, torch.Tensor]]]:
    return _plain_runs()


@pytest.mark.parametrize("name", list(GATHERED))
def test_two_ranks_train_like_one_process_on_the_global_batch(ranks, single_process, name):
    losses, state = single_process[name]
    for result in ranks[0]:
        got_losses, got_state = result["plain"][name]
        assert got_losses == pytest.approx(losses, rel=1e-5, abs=1e-6), name
        for key, tensor in state.items():
            torch.testing.assert_close(got_state[key], tensor, rtol=1e-4, atol=1e-6)


def test_local_negatives_train_differently(ranks, single_process):
    """The comparison above can fail: opting out of the gather changes the run."""
    losses, _ = single_process["nt_xent"]
    for result in ranks[0]:
        assert abs(result["local"][0] - losses[0]) > 1e-3


def test_run_is_interrupted_after_one_checkpoint_and_resumes_exactly(ranks):
    results, _ = ranks
    for result in results:
        assert result["interrupted"]  # rank 0's hook error reached every rank
        assert result["checkpoint"] == (2, False)  # the one checkpoint before the cut
        full_history, full_state = result["full"]
        history, state = result["resumed"]
        assert [r["step"] for r in history] == [0, 3, 4]
        assert history == full_history
        for key, tensor in full_state.items():
            assert torch.equal(state[key], tensor), key
    first, second = results
    assert first["resumed"][0] == second["resumed"][0]  # rank 0's evaluations, broadcast
    for key, tensor in first["resumed"][1].items():
        assert torch.equal(second["resumed"][1][key], tensor), key  # DDP kept them in sync


def test_rank_zero_alone_logs_and_checkpoints(ranks):
    _, folder = ranks
    for run_id in ("full", "cut"):
        lines = (folder / run_id / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in lines] == [0, 3, 4]
        assert [p.name for p in (folder / run_id / "checkpoints").iterdir()] == ["seed0.pt"]
        stray = [p.name for p in (folder / run_id).rglob(".*.tmp")]
        assert not stray


def test_objective_gathers_only_the_losses_that_can():
    """Global negatives (or batch statistics) wherever the loss takes ``gather_distributed``."""
    cases = {
        "nt_xent": True,
        "supcon": True,
        "info_nce": True,
        "barlow_twins": True,
        "multiview_barlow_twins": False,  # no gathered form
    }
    for loss, gathers in cases.items():
        config = dataclasses.replace(TINY, loss=loss, optimizer="sgd")
        kwargs = Objective(config, gather_distributed=True).kwargs
        assert kwargs.get("gather_distributed", False) is gathers, loss
    amcl = {
        "amcl_nt_xent": True,
        "amcl_info_nce": True,
        "amcl_barlow_twins": True,
        "amcl_simsiam": False,  # per-sample terms
    }
    for loss, gathers in amcl.items():
        for adaptive in (False, True):  # learned temperatures gather their candidates too
            config = dataclasses.replace(TINY, loss=loss, adaptive_temperature=adaptive)
            model = Objective(config, gather_distributed=True).amcl
            assert model is not None
            assert model.gather_distributed is gathers, (loss, adaptive)
    assert "gather_distributed" not in Objective(TINY).kwargs  # single process: untouched


def test_saf_buffer_gathers_under_the_engine():
    config = dataclasses.replace(
        TINY, loss="ce", supervised=True, proj_dim=0, optimizer="saf", views=1
    )
    from amcl_lab.engine import build_network
    from amcl_lab.engine.batches import cached_dataset

    split = cached_dataset(config.dataset, config.data_dir)
    network = build_network(config, split)
    objective = Objective(config)
    for gather in (False, True):
        opt = build_optimisation(
            config, network, objective, 100, split.num_classes, gather_distributed=gather
        )
        assert opt.saf is not None and opt.saf.gather_distributed is gather
