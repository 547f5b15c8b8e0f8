"""The peers under the distributed and optimizer oracles (``nox -s peers``).

Distributed rows (2 gloo ranks, ``oracle.check(..., world_size=2)``): lightly 1.6.0's
``NTXentLoss`` and ``BarlowTwinsLoss`` with ``gather_distributed=True``,
pytorch-metric-learning 2.9.0's ``DistributedLossWrapper(NTXentLoss())`` with per-rank
``arange`` labels and with globally unique labels, and solo-learn's ``barlow_loss_func``.
solo-learn is not installed: its only PyPI release (1.0.2) pins ``torch==1.9.1`` and pulls
pytorch-lightning 1.4, wandb and DALI, so :func:`solo_learn_barlow_transcription` is a
transcription of that function's distributed part, written here and marked as such (local
``BatchNorm1d(affine=False)`` standardisation, ``corr = z1^T z2 / N``, a raw
``dist.all_reduce(corr)`` then ``corr /= world_size``; ``scale_loss`` set to 1, its factor
0.025 being a scale convention).

Optimizer rows (``oracle.check_optimizer``): pytorch-optimizer's ``SAM`` (PyPI
``pytorch-optimizer``) and davda54/sam's ``SAM`` (not on PyPI; loaded from
``peers/vendored/davda54_sam.py`` when that file is present, see the README there).

Each case either agrees or names the differences it shows (:data:`DIFFERENCES`); the
minimal reproduction of a difference is the oracle's own shrunk input or case, printed with
the values of both sides by ``peers/crosscheck.py``.  No peer code is copied here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins
from lightly.loss import NTXentLoss as LightlyNTXent
from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper
from pytorch_optimizer import SAM as PytorchOptimizerSAM

from amcl_lab.oracle.optimizers import sam_cases
from amcl_lab.samples import Tolerance

VENDORED = Path(__file__).resolve().parent / "vendored" / "davda54_sam.py"


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# --- distributed candidates -------------------------------------------------------------------


def lightly_ntxent_gathered(z1, z2, temperature):
    return LightlyNTXent(temperature=temperature, gather_distributed=True)(z1, z2)


def lightly_barlow_gathered(z1, z2, lambda_offdiag):
    return LightlyBarlowTwins(lambda_param=lambda_offdiag, gather_distributed=True)(z1, z2)


def _pml_distributed(z1, z2, temperature, offset: bool):
    rank, _ = _rank_world()
    n = z1.shape[0]
    ids = torch.arange(n) + (rank * n if offset else 0)
    loss = DistributedLossWrapper(PMLNTXent(temperature=temperature))
    return loss(torch.cat([z1, z2]), ids.repeat(2))


def pml_distributed_arange_labels(z1, z2, temperature):
    """PML's wrapper with labels ``arange(n)`` on every rank (its documented examples)."""
    return _pml_distributed(z1, z2, temperature, offset=False)


def pml_distributed_unique_labels(z1, z2, temperature):
    """PML's wrapper with instance labels offset by ``rank * n`` (unique over ranks)."""
    return _pml_distributed(z1, z2, temperature, offset=True)


def pml_distributed_unique_labels_value_over_w(z1, z2, temperature):
    """The same with the value divided by W and the gradient left as it is."""
    loss = pml_distributed_unique_labels(z1, z2, temperature)
    _, world = _rank_world()
    return loss - loss.detach() * (world - 1) / world


def solo_learn_barlow_transcription(z1, z2, lambda_offdiag):
    """TRANSCRIPTION (not the installed package) of solo-learn 1.0.2's
    ``solo.losses.barlow.barlow_loss_func`` with ``scale_loss=1``: local batch-norm
    standardisation, a raw all-reduce of the correlation, the mean over ranks."""
    n, d = z1.shape
    z1 = torch.nn.functional.batch_norm(z1, None, None, training=True, eps=1e-5)
    z2 = torch.nn.functional.batch_norm(z2, None, None, training=True, eps=1e-5)
    corr = torch.einsum("bi, bj -> ij", z1, z2) / n
    _, world = _rank_world()
    if world > 1:
        dist.all_reduce(corr)
        corr /= world
    diag = torch.eye(d, dtype=corr.dtype)
    cdif = (corr - diag).pow(2)
    cdif[~diag.bool()] *= lambda_offdiag
    return cdif.sum()


@dataclass(frozen=True)
class DistributedCase:
    """One peer loss under the distributed oracle at W = 2."""

    name: str
    call: str
    candidate: Callable[..., Any]
    reference: str
    adapter: str | None = None
    difference: tuple[str, ...] = ()
    note: str = ""


DISTRIBUTED_CASES: tuple[DistributedCase, ...] = (
    DistributedCase(
        "lightly-ntxent-gather",
        "lightly `NTXentLoss(temperature=t, gather_distributed=True)(z1, z2)`",
        lightly_ntxent_gathered,
        "nt_xent",
    ),
    DistributedCase(
        "lightly-barlow-gather",
        "lightly `BarlowTwinsLoss(lambda_param=l, gather_distributed=True)(z1, z2)`",
        lightly_barlow_gathered,
        "barlow_twins",
        difference=("lightly_barlow_local_statistics",),
    ),
    DistributedCase(
        "pml-distributed-arange",
        "PML `DistributedLossWrapper(NTXentLoss(t))(cat(z1, z2), arange(n).repeat(2))`",
        pml_distributed_arange_labels,
        "nt_xent",
        "pml_log_floor",
        difference=("pml_arange_labels",),
    ),
    DistributedCase(
        "pml-distributed-unique",
        "PML `DistributedLossWrapper(NTXentLoss(t))(cat(z1, z2), (r n + arange(n)).repeat(2))`",
        pml_distributed_unique_labels,
        "nt_xent",
        "pml_log_floor",
        difference=("pml_value_times_world_size",),
    ),
    DistributedCase(
        "pml-distributed-unique-value-over-w",
        "the same, value divided by W (gradient untouched)",
        pml_distributed_unique_labels_value_over_w,
        "nt_xent",
        "pml_log_floor",
    ),
    DistributedCase(
        "solo-learn-barlow",
        "solo-learn `barlow_loss_func(z1, z2, lamb=l, scale_loss=1)` (TRANSCRIPTION, see "
        "`peers/peer_oracles.py`)",
        solo_learn_barlow_transcription,
        "barlow_twins",
        difference=("solo_learn_raw_all_reduce",),
        note="transcription",
    ),
)


# --- optimizer candidates -----------------------------------------------------------------------


def davda54_sam() -> type | None:
    """davda54/sam's ``SAM`` class from ``peers/vendored/davda54_sam.py``, or ``None``."""
    if not VENDORED.exists():
        return None
    spec = importlib.util.spec_from_file_location("davda54_sam", VENDORED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SAM


def _davda54(*args, **kwargs):
    cls = davda54_sam()
    if cls is None:
        raise RuntimeError(f"davda54/sam is not available: {VENDORED} is absent")
    return cls(*args, **kwargs)


_davda54.__qualname__ = "davda54/sam:SAM"
_davda54.__module__ = None


@dataclass(frozen=True)
class OptimizerCase:
    """One peer optimizer under the optimizer oracle."""

    name: str
    call: str
    factory: Callable[..., Any]
    reference: str
    adapter: str = "two_step"
    strategy: Callable[[], Any] | None = None
    domain_note: str = "the default cases"
    difference: tuple[str, ...] = ()
    needs_vendored: bool = False
    tolerance: Tolerance | None = None
    options: dict[str, Any] = field(default_factory=dict)


def _plain() -> Any:
    return sam_cases(momentum=0.0, pass1_only=False, pass2_only=False)


#: pytorch-optimizer's float32 gradient norm is good to about 1e-8 relative on float64 models.
FLOAT32_NORM = Tolerance(rtol=1e-5, atol=1e-7, inverse_temperature=False)

OPTIMIZER_CASES: tuple[OptimizerCase, ...] = (
    OptimizerCase(
        "pytorch-optimizer-sam",
        "pytorch-optimizer 4.1.0 `SAM(params, SGD, rho=r, lr=..)`, first_step/second_step",
        PytorchOptimizerSAM,
        "sam",
        difference=("pytorch_optimizer_float32_norm",),
    ),
    OptimizerCase(
        "pytorch-optimizer-sam-rtol-1e-5",
        "pytorch-optimizer 4.1.0 `SAM(...)`, first_step/second_step, rtol 1e-5",
        PytorchOptimizerSAM,
        "sam",
        tolerance=FLOAT32_NORM,
    ),
    OptimizerCase(
        "pytorch-optimizer-sam-closure",
        "pytorch-optimizer 4.1.0 `SAM(...)`, `step(closure)`, rtol 1e-5",
        PytorchOptimizerSAM,
        "sam",
        "closure",
        tolerance=FLOAT32_NORM,
    ),
    OptimizerCase(
        "pytorch-optimizer-asam",
        "pytorch-optimizer 4.1.0 `SAM(..., adaptive=True)`, rtol 1e-5",
        PytorchOptimizerSAM,
        "asam",
        tolerance=FLOAT32_NORM,
    ),
    OptimizerCase(
        "davda54-sam",
        "davda54/sam `SAM(params, SGD, rho=r, lr=..)`, first_step/second_step",
        _davda54,
        "sam",
        difference=("davda54_state_dict_drops_momentum",),
        needs_vendored=True,
    ),
    OptimizerCase(
        "davda54-sam-gradient-disappears",
        "davda54/sam `SAM(...)`",
        _davda54,
        "sam",
        strategy=lambda: sam_cases(momentum=0.0, pass2_only=False),
        domain_note="no momentum; no parameter gains a gradient in pass 2",
        difference=("davda54_left_perturbed",),
        needs_vendored=True,
    ),
    OptimizerCase(
        "davda54-sam-gradient-appears",
        "davda54/sam `SAM(...)`",
        _davda54,
        "sam",
        strategy=lambda: sam_cases(momentum=0.0, pass1_only=False),
        domain_note="no momentum; no parameter loses its gradient in pass 2",
        difference=("davda54_keyerror_old_p",),
        needs_vendored=True,
    ),
    OptimizerCase(
        "davda54-sam-plain",
        "davda54/sam `SAM(...)`, `step(closure)`",
        _davda54,
        "sam",
        "closure",
        strategy=_plain,
        domain_note="no momentum; the same parameters have gradients in both passes",
        needs_vendored=True,
    ),
    OptimizerCase(
        "davda54-asam-plain",
        "davda54/sam `SAM(..., adaptive=True)`",
        _davda54,
        "asam",
        strategy=_plain,
        domain_note="no momentum; the same parameters have gradients in both passes",
        needs_vendored=True,
    ),
)

#: What each difference key means (the minimal input comes from the oracle's shrinking).
DIFFERENCES: dict[str, str] = {
    "lightly_barlow_local_statistics": (
        "lightly standardises each rank's shard with its own batch statistics and averages "
        "the ranks' correlations (autograd-aware since #1977/#1980, so the gradient "
        "convention holds); the reference standardises with the global batch statistics"
    ),
    "pml_arange_labels": (
        "labels arange(n) restart on every rank, so sample i of each rank is a positive of "
        "sample i of the others: wrong value and gradient"
    ),
    "pml_value_times_world_size": (
        "DistributedLossWrapper returns W x the global loss on every rank (loss * world_size); "
        "the gradients are W dL/dz_r, the criterion's, so DDP's average is right"
    ),
    "solo_learn_raw_all_reduce": (
        "local standardisation, and a raw (non-autograd) dist.all_reduce of the "
        "correlation: the other ranks' terms send no gradient back"
    ),
    "pytorch_optimizer_float32_norm": (
        "get_global_gradient_norm casts the per-parameter norms to float32 (.float()) also "
        "for float64 parameters: the perturbation of a float64 model is off by about 1e-8 "
        "relative, the weights after a step by about 1e-10"
    ),
    "davda54_state_dict_drops_momentum": (
        "state_dict() is SAM's own state (old_p), not the base optimizer's, so a reloaded "
        "optimizer restarts its momentum"
    ),
    "davda54_left_perturbed": (
        "second_step restores only parameters with a gradient in the second pass: one whose "
        "gradient disappeared keeps its perturbation"
    ),
    "davda54_keyerror_old_p": (
        "a parameter whose first gradient comes in the second pass has no saved 'old_p': "
        "second_step raises KeyError"
    ),
}
