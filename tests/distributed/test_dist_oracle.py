"""The distributed oracle (``oracle.check(..., world_size=2)``) and its mutation suite.

Every amcl_lab loss of ``oracle.SHARDINGS`` passes at W = 2 with ``gather_distributed=True``
(the per-sample ones without it), and each mutant below - a distributed bug seen in a real
library - is flagged, although it agrees with the reference in a single process (checked
too: these bugs pass every single-process test).  The mutants gather by hand with raw
``torch.distributed`` calls, the way the libraries did:

* ``gather_without_allreduce``: the gather's backward returns the local slice of the
  gradient without summing over ranks (lightly #1528, fixed in PR #1531);
* ``local_negatives``: no gather, each rank's anchors only see its own shard;
* ``barlow_raw_allreduce``: the cross-correlation of the local rows summed by a plain
  ``dist.all_reduce`` (official Barlow Twins code with SyncBatchNorm, solo-learn): the right
  value on every rank, the input gradient of the correlation 1/W of the single-process one;
* ``barlow_gather_mean_backward``: a gather whose backward averages instead of sums, the
  gradient off by 1/W (lightly #1977, fixed in PR #1980);
* ``labels_not_offset``: instance labels ``arange(n)`` restarting on every rank, so samples
  of different ranks become positives (pytorch-metric-learning's ``DistributedLossWrapper``
  with per-rank ``arange`` labels);
* ``noncontiguous_gather_by_hand``: a feature-major (transposed, non-contiguous) gather whose
  hand-written backward slices the gradient buffer as if each rank's block were contiguous
  (the class of pytorch #120386); invisible for D = 1;
* ``local_means_summed``: the ranks' losses all-reduced by a sum instead of a mean.
"""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.distributed as dist
from torch import Tensor

from amcl_lab import cli, distributed, oracle, registry
from amcl_lab.losses import barlow_twins, nt_xent, supcon
from amcl_lab.oracle.ranks import RankPool

pytestmark = pytest.mark.distributed

F64 = torch.float64
EXAMPLES = 12  # per reference; each input is one round trip to the two ranks


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_gather(x: Tensor) -> Tensor:
    _rank, world = _world()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherLocalBackward(torch.autograd.Function):
    """lightly #1528: backward keeps this rank's slice, forgets the other ranks' terms."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = x.shape[0]
        return _all_gather(x.detach())

    @staticmethod
    def backward(ctx, grad):
        rank, _ = _world()
        return grad.narrow(0, rank * ctx.rows, ctx.rows)


class _GatherMeanBackward(torch.autograd.Function):
    """Backward all-reduces the gradient, then divides by W: the gradient is 1/W too small."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = x.shape[0]
        return _all_gather(x.detach())

    @staticmethod
    def backward(ctx, grad):
        rank, world = _world()
        grad = grad.contiguous()
        if world > 1:
            dist.all_reduce(grad)
        return (grad / world).narrow(0, rank * ctx.rows, ctx.rows)


class _GatherTransposedByHand(torch.autograd.Function):
    """Gathers ``x.T`` (D, n), a non-contiguous view, along dim 1; the backward takes rank
    r's gradient as block r of the flat (D, W n) buffer, which holds it only when D = 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows, ctx.dim = x.shape
        xt = x.detach().t()
        _, world = _world()
        if world == 1:
            return x.detach().clone()
        parts = [torch.empty(ctx.dim, ctx.rows, dtype=x.dtype) for _ in range(world)]
        dist.all_gather(parts, xt.contiguous())
        return torch.cat(parts, dim=1).t()

    @staticmethod
    def backward(ctx, grad):
        rank, world = _world()
        if world == 1:
            return grad
        g = grad.t().contiguous()  # (D, W n)
        dist.all_reduce(g)
        return g.view(world, ctx.dim, ctx.rows)[rank].t()


def gather_without_allreduce(z1, z2, temperature):
    g = _GatherLocalBackward.apply
    return nt_xent(g(z1), g(z2), temperature)


def local_negatives(z1, z2, temperature):
    return nt_xent(z1, z2, temperature)


def _standardize_global(z: Tensor) -> Tensor:
    """Standardisation with the global batch statistics (SyncBatchNorm), gradients right."""
    whole = distributed.gather(z)
    mean, var = whole.mean(0), whole.var(0, unbiased=False)
    return (z - mean) / torch.sqrt(var + 1e-5)


def _barlow_from_correlation(c: Tensor, lambda_offdiag: float) -> Tensor:
    on_diag = (1.0 - c.diagonal()).pow(2).sum()
    off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diag + lambda_offdiag * off_diag


def barlow_raw_allreduce(z1, z2, lambda_offdiag=5e-3):
    _, world = _world()
    c = _standardize_global(z1).T @ _standardize_global(z2) / (z1.shape[0] * world)
    if world > 1:
        dist.all_reduce(c)  # not recorded by autograd: the other ranks' rows get no gradient
    return _barlow_from_correlation(c, lambda_offdiag)


def barlow_gather_mean_backward(z1, z2, lambda_offdiag=5e-3):
    g = _GatherMeanBackward.apply
    return barlow_twins(g(z1), g(z2), lambda_offdiag)


def labels_not_offset(z1, z2, temperature):
    _, world = _world()
    features = torch.stack([distributed.gather(z1), distributed.gather(z2)], dim=1)
    labels = torch.arange(z1.shape[0]).repeat(world)  # sample i of every rank: one class
    return supcon(features, labels, temperature)


def noncontiguous_gather_by_hand(z1, z2, temperature):
    g = _GatherTransposedByHand.apply
    return nt_xent(g(z1), g(z2), temperature)


def local_means_summed(z1, z2, temperature):
    return distributed.all_reduce_sum(nt_xent(z1, z2, temperature, gather_distributed=True))


MUTANTS = {
    "gather_without_allreduce": (gather_without_allreduce, "nt_xent"),
    "local_negatives": (local_negatives, "nt_xent"),
    "barlow_raw_allreduce": (barlow_raw_allreduce, "barlow_twins"),
    "barlow_gather_mean_backward": (barlow_gather_mean_backward, "barlow_twins"),
    "labels_not_offset": (labels_not_offset, "nt_xent"),
    "noncontiguous_gather_by_hand": (noncontiguous_gather_by_hand, "nt_xent"),
    "local_means_summed": (local_means_summed, "nt_xent"),
}
#: how each mutant shows at W = 2: in the value, or only in a rank's gradient
SHOWS_IN = {
    "gather_without_allreduce": "rank",
    "local_negatives": "mean over ranks of the values",
    "barlow_raw_allreduce": "rank",
    "barlow_gather_mean_backward": "rank",
    "labels_not_offset": "mean over ranks of the values",
    "noncontiguous_gather_by_hand": "rank",
    "local_means_summed": "mean over ranks of the values",
}


def _reference_candidate(name: str):
    spec = registry.get(name)
    kwargs = dict(spec.fixed_kwargs)
    if "gather_distributed" in inspect.signature(spec.fn).parameters:
        kwargs["gather_distributed"] = True
    return functools.partial(spec.fn, **kwargs)


@pytest.mark.parametrize("name", list(oracle.SHARDINGS))
def test_every_amcl_lab_loss_passes_on_two_ranks(name):
    report = oracle.check(
        _reference_candidate(name), name, world_size=2, dtype=F64, max_examples=EXAMPLES
    )
    assert report.passed, str(report)
    assert report.world_size == 2 and report.examples == EXAMPLES


def test_the_gathered_nt_xent_passes_in_float32():
    report = oracle.check(_reference_candidate("nt_xent"), "nt_xent", world_size=2)
    assert report.passed, str(report)


@pytest.mark.mutation
@pytest.mark.parametrize("name", list(MUTANTS))
def test_distributed_mutant_is_flagged(name):
    fn, reference = MUTANTS[name]
    report = oracle.check(fn, reference, world_size=2, dtype=F64, max_examples=40)
    assert not report.passed, f"{name} was not flagged:\n{report}"
    assert SHOWS_IN[name] in report.failure
    assert "shards: rank" in report.failure  # which rank held which rows
    if SHOWS_IN[name] == "rank":
        assert "W x reference" in report.failure


@pytest.mark.mutation
@pytest.mark.parametrize("name", list(MUTANTS))
def test_distributed_mutant_passes_in_a_single_process(name):
    """Without a process group every mutant is the reference: only W > 1 reveals the bug."""
    fn, reference = MUTANTS[name]
    report = oracle.check(fn, reference, dtype=F64, max_examples=10)
    assert report.passed, str(report)


def test_the_report_names_the_rank_and_the_minimal_shards():
    report = oracle.check(
        gather_without_allreduce, "nt_xent", world_size=2, dtype=F64, max_examples=40
    )
    text = str(report)
    assert "x 2 gloo ranks" in text and "candidate values by rank" in text
    assert "rank 0: gradient of z1 differs" in report.failure or "rank 0: gradient of z2" in (
        report.failure
    )
    assert "rank 0 held z1: samples (dim 0) 0..1 of the global batch of 4" in report.failure
    assert report.worst.sample.args[0].shape[0] == 4  # shrunk to two rows per rank
    assert report.to_dict()["world_size"] == 2


def _raises_on_rank_one(z1, z2, temperature):
    if _world()[0] == 1:
        raise RuntimeError("out of memory on this rank")
    return nt_xent(z1, z2, temperature, gather_distributed=True)  # rank 0 waits for rank 1


def _python_float(z1, z2, temperature):
    return float(nt_xent(z1, z2, temperature, gather_distributed=True))


def test_a_rank_that_raises_is_a_finding_not_a_hang():
    report = oracle.check(
        _raises_on_rank_one, "nt_xent", world_size=2, max_examples=3, shrink=False
    )
    assert not report.passed
    assert "rank 1 failed: RuntimeError: out of memory on this rank" in report.failure
    assert "rank 0 failed: did not answer" in report.failure


def test_a_non_tensor_value_is_reported_per_rank():
    report = oracle.check(_python_float, "nt_xent", world_size=2, max_examples=3, shrink=False)
    assert "rank 0 returned a float, not a tensor" in report.failure


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="no sharding is known for reference 'kernel_loss'"):
        oracle.check(nt_xent, "kernel_loss", world_size=2)
    with pytest.raises(ValueError, match="world_size must be an int >= 2"):
        oracle.check_distributed(nt_xent, "nt_xent", world_size=1)
    with pytest.raises(ValueError, match="only apply with world_size > 1"):
        oracle.check(nt_xent, "nt_xent", start_method="fork")
    with pytest.raises(ValueError, match="splits must be among"):
        oracle.check(nt_xent, "nt_xent", world_size=2, splits=("rows", "diagonal"))


def _dies(rank, world_size, payload):
    if rank == 1:
        import os

        os._exit(3)
    return payload


def test_rank_pool_reports_a_dead_rank_and_restarts():
    with RankPool(2, _dies, grace=1.0) as pool:
        _, failures = pool.run([1, 2])
        assert failures[0].rank in (0, 1)
        assert any("died (exit code 3)" in f.what for f in failures)
        _answers, failures = pool.run([1, 2])  # a fresh group
        assert pool.starts == 2


def test_cli_world_size(capsys):
    argv = ["oracle", "test_dist_oracle:gather_without_allreduce", "--reference", "nt_xent"]
    assert cli.main([*argv, "--world-size", "2", "--dtype", "float64"]) == 1
    assert "x 2 gloo ranks" in capsys.readouterr().out
    argv = ["oracle", "amcl_lab.fast:nt_xent", "--reference", "nt_xent", "--world-size", "2"]
    assert cli.main([*argv, "--max-examples", "5"]) == 1  # no gather: local negatives
