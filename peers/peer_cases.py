"""The peer libraries as oracle candidates: how each is called, and where it differs.

Every :class:`PeerCase` maps one peer loss (lightly 1.6.0, pytorch-metric-learning 2.9.0) onto
an amcl_lab reference through the oracle's adapters, with the call settings under which the
peer computes the reference's quantity (``docs/conventions.md``, "Peer libraries as
oracles"; each case's ``call`` string).  A case either agrees on a stated input domain or
carries a documented difference with a minimal reproduction (:data:`REPRODUCTIONS`): a
tiny input, the reference's value and the peer's value.  ``peers/test_peers.py`` asserts
both; ``peers/crosscheck.py`` prints the table for the README.  No peer code is copied:
peers are only imported and called.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins
from lightly.loss import NTXentLoss as LightlyNTXent
from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent
from pytorch_metric_learning.losses import SelfSupervisedLoss as PMLSelfSupervised
from pytorch_metric_learning.losses import SupConLoss as PMLSupCon

from amcl_lab import registry
from amcl_lab.losses import info_nce, nt_xent, supcon
from amcl_lab.registry import LossSpec
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams


@dataclass(frozen=True)
class PeerCase:
    """One peer loss checked against one reference.

    Attributes:
        name: a short id.
        call: how the peer is called, for the table.
        candidate: the peer (or a small call wrapper) as the oracle's candidate.
        reference: the registry name, or a variant :class:`LossSpec`.
        adapter: the oracle adapter(s) mapping the calling convention.
        domain: ``None`` for the reference's whole default domain, else a function returning
            the restricted strategy, described in ``domain_note``.
        difference: empty if the peer agrees on its domain; otherwise the keys of the
            minimal reproductions (:data:`REPRODUCTIONS`) of what differs there.
    """

    name: str
    call: str
    candidate: Callable[..., torch.Tensor]
    reference: str | LossSpec
    adapter: str | None = None
    domain: Callable[[], st.SearchStrategy[SampleInput]] | None = None
    domain_note: str = "the reference's default strategy"
    difference: tuple[str, ...] = ()

    @property
    def reference_name(self) -> str:
        return self.reference if isinstance(self.reference, str) else self.reference.name


def lightly_barlow_twins(z1, z2, lambda_offdiag):
    return LightlyBarlowTwins(lambda_param=lambda_offdiag)(z1, z2)


def lightly_memory_bank(query, key, queue, temperature):
    """lightly's NT-Xent with a memory bank holding the (normalised) queue."""
    loss = LightlyNTXent(temperature=temperature, memory_bank_size=tuple(queue.shape))
    loss.memory_bank.bank = F.normalize(queue, dim=1)
    return loss(query, key)


def pml_self_supervised(z1, z2, temperature):
    return PMLSelfSupervised(PMLNTXent(temperature=temperature), symmetric=True)(z1, z2)


def _info_nce_queue_buffer(query, key, queue, temperature=0.07, **kwargs):
    # MoCo's queue is a buffer: keys of past batches carry no gradient
    return info_nce(query, key, queue.detach(), temperature, **kwargs)


INFO_NCE_QUEUE_BUFFER = dataclasses.replace(
    registry.get("info_nce"), name="info_nce (queue as a buffer)", fn=_info_nce_queue_buffer
)


def _two_classes_or_more(sample: SampleInput) -> bool:
    return int(sample.args[1].unique().numel()) >= 2


def pml_supcon_domain() -> st.SearchStrategy[SampleInput]:
    return ams.supcon_samples(min_temperature=0.05).filter(_two_classes_or_more)


CASES: tuple[PeerCase, ...] = (
    PeerCase(
        "lightly-ntxent",
        "lightly `NTXentLoss(temperature=t)(z1, z2)`",
        LightlyNTXent,
        "nt_xent",
        "module",
    ),
    PeerCase(
        "lightly-ntxent-bank",
        "lightly `NTXentLoss(t, memory_bank_size=(K, D))`, bank = queue",
        lightly_memory_bank,
        INFO_NCE_QUEUE_BUFFER,
    ),
    PeerCase(
        "lightly-barlow",
        "lightly `BarlowTwinsLoss(lambda_param=l)(z1, z2)`",
        lightly_barlow_twins,
        "barlow_twins",
    ),
    PeerCase(
        "pml-ntxent",
        "PML `NTXentLoss(temperature=t)(cat(z1, z2), ids)`",
        PMLNTXent,
        "nt_xent",
        "pml_log_floor,embeddings_labels,module",
    ),
    PeerCase(
        "pml-ntxent-no-floor",
        "PML `NTXentLoss(temperature=t)(cat(z1, z2), ids)`, log floor ignored",
        PMLNTXent,
        "nt_xent",
        "embeddings_labels,module",
        difference=("pml_log_floor",),
    ),
    PeerCase(
        "pml-selfsupervised",
        "PML `SelfSupervisedLoss(NTXentLoss(t), symmetric=True)(z1, z2)`",
        pml_self_supervised,
        "nt_xent",
        "pml_log_floor",
    ),
    PeerCase(
        "pml-supcon",
        "PML `SupConLoss(temperature=t)(features, labels)`",
        PMLSupCon,
        "supcon",
        "embeddings_labels,module",
        difference=("pml_supcon_no_negatives", "pml_supcon_zero_dropped"),
    ),
    PeerCase(
        "pml-supcon-restricted",
        "PML `SupConLoss(temperature=t)(features, labels)`",
        PMLSupCon,
        "supcon",
        "embeddings_labels,module",
        domain=pml_supcon_domain,
        domain_note="tau >= 0.05, at least two classes",
    ),
    PeerCase(
        "pml-ntxent-multi-positive",
        "PML `NTXentLoss(temperature=t)(features, labels)`, several positives",
        PMLNTXent,
        "supcon",
        "embeddings_labels,module",
        difference=("pml_ntxent_per_pair",),
    ),
)


# --- minimal reproductions of the differences --------------------------------------------------


@dataclass(frozen=True)
class Reproduction:
    """A tiny input on which a peer and the reference differ, with both values."""

    key: str
    what: str
    inputs: str
    reference: float
    peer: float


def _pml_flat(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, views, dim = features.shape
    return features.transpose(0, 1).reshape(views * n, dim), labels.repeat(views)


def reproduce_log_floor(dtype: torch.dtype = torch.float32) -> Reproduction:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    z2 = -z1
    ids = torch.arange(2).repeat(2)
    peer = PMLNTXent(temperature=0.005)(torch.cat([z1, z2]), ids)
    return Reproduction(
        "pml_log_floor",
        "PML adds finfo(dtype).tiny inside each per-pair log, capping the loss at "
        f"-log(tiny) = {-math.log(torch.finfo(dtype).tiny):.4f} in {str(dtype)[6:]}",
        "z1 = [[1, 0], [0, 1]], z2 = -z1 (antipodal views), tau = 0.005",
        float(nt_xent(z1.double(), z2.double(), 0.005)),
        float(peer),
    )


def reproduce_no_negatives(dtype: torch.dtype = torch.float32) -> Reproduction:
    features = torch.ones(2, 2, 1, dtype=dtype)
    labels = torch.tensor([0, 0])
    peer = PMLSupCon(temperature=1.0)(*_pml_flat(features, labels))
    return Reproduction(
        "pml_supcon_no_negatives",
        "a batch without any negative pair gives 0 in PML (no valid pairs); the reference "
        "is defined there (identical items, all positives: L_out = log(NV - 1))",
        "features = ones(2, 2, 1), labels = [0, 0], tau = 1",
        float(supcon(features.double(), labels, 1.0)),
        float(peer),
    )


def reproduce_zero_loss_anchor_dropped(dtype: torch.dtype = torch.float32) -> Reproduction:
    e = torch.eye(3, dtype=dtype)
    features = torch.stack([e[0], e[1], e[0], e[2]])[:, None, :]
    labels = torch.tensor([1, 0, 1, 0])
    peer = PMLSupCon(temperature=0.01)(*_pml_flat(features, labels))
    return Reproduction(
        "pml_supcon_zero_dropped",
        "AvgNonZeroReducer leaves out anchors whose loss rounds to exactly 0 (here two "
        "duplicated items: true loss log(1 + 2 e^-100)), so the mean runs over fewer anchors",
        "features = [e1, e2, e1, e3] (V = 1), labels = [1, 0, 1, 0], tau = 0.01",
        float(supcon(features.double(), labels, 0.01)),
        float(peer),
    )


def reproduce_per_pair(dtype: torch.dtype = torch.float32) -> Reproduction:
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(4, 2, 3, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    peer = PMLNTXent(temperature=0.5)(*_pml_flat(features.to(dtype), labels))
    return Reproduction(
        "pml_ntxent_per_pair",
        "with several positives PML's NTXentLoss averages per positive pair and removes the "
        "anchor's other positives from each denominator; SupCon L_out keeps them",
        "features = randn(4, 2, 3) (seed 0), labels = [0, 0, 1, 1], tau = 0.5",
        float(supcon(features, labels, 0.5)),
        float(peer),
    )


#: The minimal reproduction of each documented difference, by key.
REPRODUCTIONS: dict[str, Callable[..., Reproduction]] = {
    "pml_log_floor": reproduce_log_floor,
    "pml_supcon_no_negatives": reproduce_no_negatives,
    "pml_supcon_zero_dropped": reproduce_zero_loss_anchor_dropped,
    "pml_ntxent_per_pair": reproduce_per_pair,
}
