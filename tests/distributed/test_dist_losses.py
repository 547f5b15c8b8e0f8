"""Global-batch negatives: the distributed losses equal the single-process ones (2 gloo ranks).

Criterion (``docs/conventions.md``, "Distributed losses"; conventions in
:mod:`amcl_lab.distributed`): with W ranks
each holding a shard of the global batch and ``gather_distributed=True``, every rank returns
the single-process value on the concatenated batch, and rank r's shard gradient divided by W
equals the single-process gradient of those rows (float64, 1e-10).  Replicated inputs (a
scalar temperature, a MoCo queue) get W times their local share, so their mean over ranks is
the single-process gradient.  Per-sample losses (AMCL SimSiam and MoCo) take no gather: the
mean of the local values is the global value, with the same gradient convention.
:class:`~amcl_lab.amcl.AMCLModel` with a learned :class:`~amcl_lab.amcl.PairTemperature`
is checked the same way, the temperature network's parameters being replicated inputs: the
mean over ranks of their gradients (DDP's average) is the single-process gradient.  All
cases run in one 2-rank launch; the parent computes the references.  Negative controls: a
gather without the backward all-reduce (lightly #1528), local-only negatives and learned
temperatures of the local rows only all fail the criterion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from amcl_lab import distributed, fast, losses
from amcl_lab.amcl import AMCLModel, PairTemperature

from ddp_launch import launch

pytestmark = pytest.mark.distributed

W, N_LOCAL, D, HEADS = 2, 3, 5, 2
N = W * N_LOCAL
TOL = 1e-10


def _randn(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


# --- how global inputs split into rank shards ---------------------------------------------


def _rows(t: torch.Tensor, rank: int, dim: int = 0) -> torch.Tensor:
    return t.narrow(dim, rank * N_LOCAL, N_LOCAL)


def _pair_rows(t: torch.Tensor, rank: int) -> torch.Tensor:
    """(C, 2N, 2N) pair temperatures -> the rows of this rank's anchors [z1 rows; z2 rows]."""
    return torch.cat([_rows(t, rank, 1), t.narrow(1, N + rank * N_LOCAL, N_LOCAL)], dim=1)


SPLIT: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "rows": _rows,  # (N, ...) per-sample tensors
    "heads": lambda t, r: _rows(t, r, 1),  # (C, N, ...) head stacks
    "samples": lambda t, r: _rows(t, r, 2),  # (C, 2, N) AMCL SimSiam temperatures
    "pairs": _pair_rows,  # (C, 2N, 2N) AMCL temperatures: local anchors x all candidates
    "replicated": lambda t, r: t,  # the same on every rank (a temperature, a queue)
}


@dataclass(frozen=True)
class Case:
    """Global inputs (name -> (tensor, split)), the loss call, and its reduction."""

    inputs: Callable[[], dict[str, tuple[torch.Tensor, str]]]
    call: Callable[[dict[str, torch.Tensor], bool], torch.Tensor]
    per_anchor: bool = False  # reduction="none": compare rows, backprop the local sum
    per_sample: bool = False  # no gather: the mean of the ranks' local values is global


def _two_views(seed: int) -> dict[str, tuple[torch.Tensor, str]]:
    z = _randn(2, N, D, seed=seed)
    return {"z1": (z[0], "rows"), "z2": (z[0] + 0.5 * z[1], "rows")}


def _stacks(seed: int) -> dict[str, tuple[torch.Tensor, str]]:
    z = _randn(2, HEADS, N, D, seed=seed)
    return {"z1": (z[0], "heads"), "z2": (z[0] + 0.5 * z[1], "heads")}


def _head_stacks(names: tuple[str, ...], seed: int) -> dict[str, tuple[torch.Tensor, str]]:
    stacks = _randn(len(names), HEADS, N, D, seed=seed)
    return {name: (z, "heads") for name, z in zip(names, stacks, strict=True)}


def _positive(*shape: int, seed: int) -> torch.Tensor:
    """Per-pair temperatures in [0.1, 1.1)."""
    g = torch.Generator().manual_seed(seed)
    return 0.1 + torch.rand(*shape, generator=g, dtype=torch.float64)


def _features(seed: int, views: int, labels: list[int] | None) -> dict:
    out = {"features": (_randn(N, views, D, seed=seed), "rows")}
    if labels is not None:
        out["labels"] = (torch.tensor(labels), "rows")
    return out


def _learned_model(
    loss: str, dim: int, seed: int, **kwargs: object
) -> tuple[Callable[[dict[str, torch.Tensor], bool], torch.Tensor], Callable[[], dict]]:
    """An identity-encoder AMCLModel with a float64 PairTemperature whose parameters are
    replicated inputs: ``(call, parameter inputs)`` for a :class:`Case`."""
    template = PairTemperature(dim, hidden=4, tau_min=0.05, tau_max=1.0).double()
    names = [f"temperature.{k}" for k, _ in template.named_parameters()]
    predictor = {"predictor": nn.Identity()} if loss == "amcl_simsiam" else {}

    def parameters() -> dict[str, tuple[torch.Tensor, str]]:
        params = template.named_parameters()
        return {
            f"temperature.{k}": (_randn(*p.shape, seed=seed + i), "replicated")
            for i, (k, p) in enumerate(params)
        }

    def call(x: dict[str, torch.Tensor], gather: bool) -> torch.Tensor:
        model = AMCLModel(
            nn.Identity(),  # the views are head stacks already
            nn.Identity(),
            template,
            loss,
            gather_distributed=gather,
            **predictor,
            **kwargs,
        )
        views = tuple(x[k] for k in sorted(x) if k.startswith("z"))
        return functional_call(model, {k: x[k] for k in names}, views)

    return call, parameters


def _learned_case(loss: str, views: int, dim: int, seed: int, **kwargs: object) -> Case:
    call, parameters = _learned_model(loss, dim, seed, **kwargs)
    names = tuple(f"z{i + 1}" for i in range(views))
    return Case(
        lambda: {**_head_stacks(names, seed=seed), **parameters()},
        call,
        per_sample=loss == "amcl_simsiam",
    )


# labels shared across ranks; in "sparse" only rank 1 holds anchors with a positive (V = 1)
CLASSES = [0, 1, 2, 0, 1, 3]
SPARSE = [0, 1, 2, 3, 3, 4]

CASES: dict[str, Case] = {
    "nt_xent": Case(
        lambda: {**_two_views(1), "tau": (torch.tensor(0.3, dtype=torch.float64), "replicated")},
        lambda x, g: losses.nt_xent(x["z1"], x["z2"], x["tau"], gather_distributed=g),
    ),
    "nt_xent-decoupled-sum": Case(
        lambda: _two_views(2),
        lambda x, g: losses.nt_xent(
            x["z1"], x["z2"], 0.5, decoupled=True, reduction="sum", gather_distributed=g
        ),
    ),
    "nt_xent-none": Case(
        lambda: _two_views(3),
        lambda x, g: losses.nt_xent(x["z1"], x["z2"], 0.2, reduction="none", gather_distributed=g),
        per_anchor=True,
    ),
    "info_nce": Case(
        lambda: {"query": _two_views(4)["z1"], "key": _two_views(4)["z2"]},
        lambda x, g: losses.info_nce(x["query"], x["key"], temperature=0.2, gather_distributed=g),
    ),
    "supcon-out": Case(
        lambda: _features(5, 2, CLASSES),
        lambda x, g: losses.supcon(x["features"], x["labels"], 0.3, gather_distributed=g),
    ),
    "supcon-in-one-view-mode": Case(
        lambda: _features(6, 3, CLASSES),
        lambda x, g: losses.supcon(
            x["features"],
            x["labels"],
            0.4,
            variant="in",
            contrast_mode="one",
            gather_distributed=g,
        ),
    ),
    "supcon-positives-on-one-rank": Case(
        lambda: _features(7, 1, SPARSE),
        lambda x, g: losses.supcon(x["features"], x["labels"], 0.5, gather_distributed=g),
    ),
    "supcon-instance-ids": Case(
        lambda: _features(8, 2, None),
        lambda x, g: losses.supcon(x["features"], None, 0.3, gather_distributed=g),
    ),
    "amcl_nt_xent-topk": Case(
        # k = 5 exceeds the 2n - 2 = 4 local negatives: valid only against the global batch
        lambda: {**_stacks(9), "tau": (_positive(HEADS, 2 * N, 2 * N, seed=9), "pairs")},
        lambda x, g: losses.amcl_nt_xent(
            x["z1"], x["z2"], x["tau"], beta=0.01, mode="topk", k=5, gather_distributed=g
        ),
    ),
    "amcl_nt_xent-release2-none": Case(
        lambda: {**_stacks(14), "tau": (_positive(HEADS, 2 * N, 2 * N, seed=14), "pairs")},
        lambda x, g: losses.amcl_nt_xent(
            x["z1"],
            x["z2"],
            x["tau"],
            beta=0.01,
            neg_regularizer="release2",
            reduction="none",
            gather_distributed=g,
        ),
        per_anchor=True,
    ),
    "amcl_info_nce": Case(
        lambda: _stacks(10),
        lambda x, g: losses.amcl_info_nce(x["z1"], x["z2"], 0.5, beta=0.01, gather_distributed=g),
    ),
    "amcl_info_nce-topk-sum": Case(
        lambda: {**_stacks(15), "tau": (_positive(1, 2 * N, 2 * N, seed=15), "pairs")},
        lambda x, g: losses.amcl_info_nce(
            x["z1"], x["z2"], x["tau"], mode="topk", k=3, reduction="sum", gather_distributed=g
        ),
    ),
    # the log-sum-exp modes: every candidate of every rank inside each local anchor's logsumexp
    "amcl_nt_xent-softmax": Case(
        lambda: {**_stacks(26), "tau": (_positive(HEADS, 2 * N, 2 * N, seed=26), "pairs")},
        lambda x, g: losses.amcl_nt_xent(
            x["z1"], x["z2"], x["tau"], beta=0.01, mode="softmax", gather_distributed=g
        ),
    ),
    "amcl_nt_xent-nt_xent-none": Case(
        lambda: {**_stacks(27), "tau": (_positive(HEADS, 2 * N, 2 * N, seed=27), "pairs")},
        lambda x, g: losses.amcl_nt_xent(
            x["z1"],
            x["z2"],
            x["tau"],
            beta=0.01,
            mode="nt_xent",
            reduction="none",
            gather_distributed=g,
        ),
        per_anchor=True,
    ),
    "amcl_info_nce-softmax-sum": Case(
        lambda: {**_stacks(28), "tau": (_positive(HEADS, 2 * N, 2 * N, seed=28), "pairs")},
        lambda x, g: losses.amcl_info_nce(
            x["z1"],
            x["z2"],
            x["tau"],
            beta=0.01,
            mode="softmax",
            reduction="sum",
            gather_distributed=g,
        ),
    ),
    "barlow_twins": Case(
        lambda: _two_views(16),
        lambda x, g: losses.barlow_twins(x["z1"], x["z2"], 0.1, gather_distributed=g),
    ),
    "amcl_barlow_twins": Case(
        lambda: {**_stacks(17), "tau": (_positive(HEADS, D, D, seed=17), "replicated")},
        lambda x, g: losses.amcl_barlow_twins(
            x["z1"],
            x["z2"],
            x["tau"],
            lambda_offdiag=0.1,
            beta=0.01,
            omega_dim="batch",  # the global N when gathered
            variance="unbiased",
            gather_distributed=g,
        ),
    ),
    # per-sample losses: no gather_distributed, DDP's average of the local means is exact
    "amcl_simsiam": Case(
        lambda: {
            **_head_stacks(("p1", "p2", "h1", "h2"), seed=18),
            "tau": (_positive(HEADS, 2, N, seed=18), "samples"),
        },
        lambda x, g: losses.amcl_simsiam(
            x["p1"], x["p2"], x["h1"], x["h2"], x["tau"], beta=0.01, stop_gradient=False
        ),
        per_sample=True,
    ),
    "amcl_moco": Case(
        lambda: {
            **_head_stacks(("query", "key"), seed=19),
            "queue": (_randn(HEADS, 7, D, seed=20), "replicated"),
            "tau": (_positive(HEADS, N, 8, seed=19), "heads"),
        },
        lambda x, g: losses.amcl_moco(
            x["query"], x["key"], x["queue"], x["tau"], beta=0.01, mode="topk", k=2
        ),
        per_sample=True,
    ),
    **{
        f"amcl_moco-{mode}": Case(
            lambda seed=seed: {
                **_head_stacks(("query", "key"), seed=seed),
                "queue": (_randn(HEADS, 7, D, seed=seed + 10), "replicated"),
                "tau": (_positive(HEADS, N, 8, seed=seed), "heads"),
            },
            lambda x, g, mode=mode: losses.amcl_moco(
                x["query"], x["key"], x["queue"], x["tau"], beta=0.01, mode=mode
            ),
            per_sample=True,
        )
        for mode, seed in (("softmax", 29), ("nt_xent", 30))
    },
    # AMCLModel with a learned PairTemperature: local anchors x gathered candidates
    "model-amcl_nt_xent-topk": _learned_case(
        "amcl_nt_xent", 2, D, seed=22, beta=0.01, mode="topk", k=5
    ),
    "model-amcl_info_nce-3-views": _learned_case("amcl_info_nce", 3, D, seed=23, beta=0.01),
    "model-amcl_nt_xent-softmax": _learned_case(
        "amcl_nt_xent", 2, D, seed=31, beta=0.01, mode="softmax"
    ),
    # channel vectors of the global batch: the network's width is the global N
    "model-amcl_barlow_twins": _learned_case(
        "amcl_barlow_twins", 2, N, seed=24, lambda_offdiag=0.1, beta=0.01, omega_dim="batch"
    ),
    "model-amcl_simsiam": _learned_case("amcl_simsiam", 2, D, seed=25, beta=0.01),  # per sample
    # self-supervised losses: VICReg's statistics and DCLW's weights over the global batch,
    # MoCo v3's keys of every rank; DINO is per sample (its centre is replicated)
    "vicreg": Case(
        lambda: _two_views(26),
        lambda x, g: losses.vicreg(x["z1"], x["z2"], 25.0, 25.0, 1.0, gather_distributed=g),
    ),
    "multiview_vicreg": Case(
        lambda: _features(27, 3, None),
        lambda x, g: losses.multiview_vicreg(x["features"], 1.0, 2.0, 0.5, gather_distributed=g),
    ),
    "dcl": Case(
        lambda: _two_views(28),
        lambda x, g: losses.dcl(x["z1"], x["z2"], 0.3, gather_distributed=g),
    ),
    "dclw-none": Case(
        lambda: _two_views(29),
        lambda x, g: losses.dcl(
            x["z1"],
            x["z2"],
            0.3,
            weight="vmf",
            sigma=0.5,
            stop_gradient=False,
            reduction="none",
            gather_distributed=g,
        ),
        per_anchor=True,
    ),
    "moco_v3": Case(
        lambda: {
            name: (z, "rows")
            for name, z in zip(("q1", "q2", "k1", "k2"), _randn(4, N, D, seed=30), strict=True)
        },
        lambda x, g: losses.moco_v3(
            x["q1"], x["q2"], x["k1"], x["k2"], 0.2, stop_gradient=False, gather_distributed=g
        ),
    ),
    "dino": Case(
        lambda: {
            "student": (_randn(N, 4, D, seed=31), "rows"),
            "teacher": (_randn(N, 2, D, seed=32), "rows"),
            "center": (_randn(D, seed=33), "replicated"),
        },
        lambda x, g: losses.dino(x["student"], x["teacher"], x["center"], stop_gradient=False),
        per_sample=True,
    ),
    "fast.nt_xent": Case(
        lambda: _two_views(11),
        lambda x, g: fast.nt_xent(x["z1"], x["z2"], 0.3, block_size=2, gather_distributed=g),
    ),
    "fast.supcon-out": Case(
        lambda: _features(12, 2, CLASSES),
        lambda x, g: fast.supcon(
            x["features"], x["labels"], 0.3, block_size=2, gather_distributed=g
        ),
    ),
    "fast.supcon-in": Case(
        lambda: _features(13, 2, CLASSES),
        lambda x, g: fast.supcon(
            x["features"], x["labels"], 0.3, variant="in", block_size=4, gather_distributed=g
        ),
    ),
}


def _local(case: Case, rank: int) -> dict[str, torch.Tensor]:
    out = {}
    for name, (tensor, split) in case.inputs().items():
        shard = SPLIT[split](tensor, rank).clone()
        out[name] = shard.requires_grad_(shard.is_floating_point())
    return out


def _evaluate(case: Case, inputs: dict[str, torch.Tensor], gather: bool) -> dict:
    value = case.call(inputs, gather)
    (value.sum() if case.per_anchor else value).backward()
    grads = {k: t.grad for k, t in inputs.items() if t.grad is not None}
    return {"value": value.detach(), "grads": grads}


def _naive_gather(x: torch.Tensor, dim: int = 0, **_: object) -> torch.Tensor:
    """The gather of lightly bug #1528: other ranks' rows as constants, no all-reduce backward."""
    x = x.movedim(dim, 0)
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts).movedim(0, dim)


def _ranks(rank: int, world_size: int) -> dict:
    out = {}
    for name, case in CASES.items():
        try:
            out[name] = _evaluate(case, _local(case, rank), True)
        except Exception as error:  # the same on every rank: the cases run in step
            raise RuntimeError(f"case {name!r} failed on rank {rank}") from error
    # negative controls: a gather without the all-reduce backward, and local negatives only
    exact = distributed.gather
    distributed.gather = _naive_gather
    try:
        out["naive-gather"] = _evaluate(CASES["nt_xent"], _local(CASES["nt_xent"], rank), True)
    finally:
        distributed.gather = exact
    out["local-only"] = _evaluate(CASES["nt_xent"], _local(CASES["nt_xent"], rank), False)
    # learned temperatures of the local rows only, tiled to the (C, 2n, 2N) layout
    model = CASES["model-amcl_nt_xent-topk"]
    gathered = AMCLModel._global_rows
    AMCLModel._global_rows = lambda self, z, dim: torch.cat([z] * world_size, dim)
    try:
        out["local-temperatures"] = _evaluate(model, _local(model, rank), True)
    finally:
        AMCLModel._global_rows = gathered
    # DINO's centre follows the teacher mean of the global batch on every rank
    teacher = _randn(N, 2, D, seed=34)
    out["dino-center"] = losses.dino_center_update(
        _randn(D, seed=35), _rows(teacher, rank), 0.9, gather_distributed=True
    )
    # unequal shards: rank 1 drops a sample; every rank must raise, naming the shapes
    z = _randn(N_LOCAL - rank, D, seed=20)
    try:
        losses.nt_xent(z, z + 1.0, gather_distributed=True)
        out["unequal"] = None
    except ValueError as error:
        out["unequal"] = str(error)
    # pytorch #120386: non-contiguous input (a transpose) and a non-contiguous upstream grad
    base = _randn(D, N_LOCAL, seed=21 + rank).requires_grad_()
    weights = torch.arange(N * 1.0, dtype=torch.float64)[:, None].expand(N, D) * (rank + 1)
    (distributed.gather(base.T) * weights).sum().backward()
    out["noncontiguous"] = base.grad.T.clone()
    return out


@pytest.fixture(scope="module")
def ranks() -> list[dict]:
    return launch(_ranks, world_size=W, timeout=90)


def _reference(case: Case) -> dict:
    inputs = {
        k: t.clone().requires_grad_(t.is_floating_point()) for k, (t, _) in case.inputs().items()
    }
    return _evaluate(case, inputs, False)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def errors(ranks: list[dict], name: str) -> dict[str, float]:
    """Largest deviations of case ``name`` from the single-process reference (also used by
    the issue's closing note to report the observed errors)."""
    case, ref = CASES[name], _reference(CASES[name])
    splits = {k: split for k, (_, split) in case.inputs().items()}
    scale = 1 if case.per_anchor else W  # the W copies of a reduced value add up
    out = {"value": 0.0, "shard gradient": 0.0, "replicated gradient": 0.0}
    if case.per_sample:  # local means: their average is the global mean
        mean = sum(r[name]["value"] for r in ranks) / W
        out["value"] = _max_error(mean, ref["value"])
    for rank, result in enumerate(ranks):
        got = result[name]
        if case.per_anchor:  # (2n,) local anchors = rows [z1 shard; z2 shard] of the 2N
            expected = _pair_rows(ref["value"][None, :, None], rank)[0, :, 0]
        else:
            expected = ref["value"]
        if not case.per_sample:
            out["value"] = max(out["value"], _max_error(got["value"], expected))
        for k, grad in got["grads"].items():
            if splits[k] != "replicated":
                want = SPLIT[splits[k]](ref["grads"][k], rank)
                error = _max_error(grad / scale, want)
                out["shard gradient"] = max(out["shard gradient"], error)
    for k, split in splits.items():
        if split == "replicated" and k in ref["grads"]:
            mean = sum(r[name]["grads"][k] for r in ranks) / W  # what DDP's average gives
            error = _max_error(mean, ref["grads"][k])
            out["replicated gradient"] = max(out["replicated gradient"], error)
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_value_and_shard_gradients_equal_single_process(ranks, name):
    assert set(ranks[0][name]["grads"]) == {
        k for k, (t, _) in CASES[name].inputs().items() if t.is_floating_point()
    }  # every floating input got a gradient
    found = errors(ranks, name)
    assert max(found.values()) <= TOL, (name, found)


def test_local_negatives_only_give_another_loss(ranks):
    """The cases can tell the global batch from the local one: scoring the local anchors
    against the local candidates (``gather_distributed=False`` on the shards) is caught."""
    ref = _reference(CASES["nt_xent"])
    assert all(_max_error(r["local-only"]["value"], ref["value"]) > 1e-3 for r in ranks)


def test_gather_without_all_reduce_backward_gives_wrong_gradients(ranks):
    """lightly #1528: dropping the backward all-reduce loses the other ranks' terms."""
    ref = _reference(CASES["nt_xent"])
    errors = [
        _max_error(r["naive-gather"]["grads"]["z1"] / W, _rows(ref["grads"]["z1"], rank))
        for rank, r in enumerate(ranks)
    ]
    assert min(errors) > 1e-3, errors
    # the forward value is unaffected, which is why the bug went unnoticed
    assert all(_max_error(r["naive-gather"]["value"], ref["value"]) <= TOL for r in ranks)


def test_learned_temperatures_of_local_rows_give_another_loss(ranks):
    """AMCLModel must compute the temperatures of its anchors against the gathered
    candidates: the local rows' temperatures (in the same layout) are caught."""
    ref = _reference(CASES["model-amcl_nt_xent-topk"])
    assert all(_max_error(r["local-temperatures"]["value"], ref["value"]) > 1e-3 for r in ranks)


def test_learned_temperature_gradients_are_averaged_over_ranks(ranks):
    """The temperature network's gradient on one rank is W times its anchors' share: neither
    one rank's gradient nor the sum over ranks is the single-process one; the mean is."""
    name = "model-amcl_nt_xent-topk"
    ref = _reference(CASES[name])["grads"]
    weights = [k for k in ref if k.startswith("temperature.")]
    for k in weights:
        per_rank = [r[name]["grads"][k] for r in ranks]
        assert all(_max_error(g, ref[k]) > 1e-6 for g in per_rank), k
        assert _max_error(sum(per_rank), ref[k]) > 1e-6, k
        assert _max_error(sum(per_rank) / W, ref[k]) <= TOL, k


def test_unequal_shards_raise_on_every_rank(ranks):
    for message in (r["unequal"] for r in ranks):
        assert message is not None
        assert "nt_xent" in message and "same shape" in message
        assert f"rank 0: (2, {N_LOCAL}, {D})" in message
        assert f"rank 1: (2, {N_LOCAL - 1}, {D})" in message


def test_gather_handles_non_contiguous_buffers(ranks):
    """pytorch #120386: a transposed input and an expanded upstream gradient."""
    for rank, result in enumerate(ranks):
        rows = torch.arange(rank * N_LOCAL, (rank + 1) * N_LOCAL, dtype=torch.float64)
        expected = (rows * sum(r + 1 for r in range(W)))[:, None].expand(N_LOCAL, D)
        assert _max_error(result["noncontiguous"], expected) == 0.0


def _single_rank_group(rank: int, world_size: int) -> dict:
    return {
        name: [_evaluate(case, _local_full(case), g)["value"] for g in (True, False)]
        for name, case in CASES.items()
    }


def _local_full(case: Case) -> dict[str, torch.Tensor]:
    return {
        k: t.clone().requires_grad_(t.is_floating_point()) for k, (t, _) in case.inputs().items()
    }


@pytest.mark.parametrize("name", list(CASES))
def test_gather_flag_is_a_no_op_without_a_process_group(name):
    case = CASES[name]
    assert not distributed.is_active()
    flagged, plain = (_evaluate(case, _local_full(case), g) for g in (True, False))
    assert torch.equal(flagged["value"], plain["value"])
    for k, grad in plain["grads"].items():
        assert torch.equal(flagged["grads"][k], grad)


def test_gather_flag_is_a_no_op_in_a_world_of_one():
    (values,) = launch(_single_rank_group, world_size=1, timeout=60)
    for name, (flagged, plain) in values.items():
        assert torch.equal(flagged, plain), name


def test_dino_centre_is_the_global_teacher_mean_on_every_rank(ranks):
    expected = losses.dino_center_update(_randn(D, seed=35), _randn(N, 2, D, seed=34), 0.9)
    for r in ranks:
        assert _max_error(r["dino-center"], expected) <= TOL
