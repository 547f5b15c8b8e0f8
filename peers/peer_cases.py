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
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins
from lightly.loss import DCLLoss as LightlyDCL
from lightly.loss import DCLWLoss as LightlyDCLW
from lightly.loss import DINOLoss as LightlyDINO
from lightly.loss import NegativeCosineSimilarity as LightlyNegativeCosine
from lightly.loss import NTXentLoss as LightlyNTXent
from lightly.loss import SwaVLoss as LightlySwaV
from lightly.loss import VICRegLoss as LightlyVICReg
from pytorch_metric_learning.losses import NTXentLoss as PMLNTXent
from pytorch_metric_learning.losses import SelfSupervisedLoss as PMLSelfSupervised
from pytorch_metric_learning.losses import SupConLoss as PMLSupCon

from amcl_lab import registry
from amcl_lab.losses import dino, info_nce, moco_v3, negative_cosine, nt_xent, supcon
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
        flagged_in: the dtype in which the oracle must flag the difference (``"float32"``;
            ``"float64"`` for a difference below float32's tolerance).
    """

    name: str
    call: str
    candidate: Callable[..., torch.Tensor]
    reference: str | LossSpec
    adapter: str | None = None
    domain: Callable[[], st.SearchStrategy[SampleInput]] | None = None
    domain_note: str = "the reference's default strategy"
    difference: tuple[str, ...] = ()
    flagged_in: str = "float32"

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


# --- self-supervised losses (lightly 1.6.0) ---------------------------------------------------


def lightly_vicreg(z1, z2, lambda_invariance, mu_variance, nu_covariance, gamma=1.0):
    if gamma != 1.0:  # lightly's hinge target is fixed at 1
        raise ValueError(f"lightly's VICRegLoss has no gamma (fixed 1), got {gamma}")
    loss = LightlyVICReg(
        lambda_param=lambda_invariance, mu_param=mu_variance, nu_param=nu_covariance
    )
    return loss(z1, z2)


def _gamma_one(sample: SampleInput) -> SampleInput:
    return dataclasses.replace(sample, kwargs={**sample.kwargs, "gamma": 1.0})


def vicreg_gamma_one() -> st.SearchStrategy[SampleInput]:
    return ams.vicreg_samples().map(_gamma_one)


def lightly_negative_cosine(p1, p2, z1, z2, convention="simsiam"):
    """lightly's SimSiam / BYOL examples: 0.5 * (criterion(p1, z2) + criterion(p2, z1))."""
    criterion = LightlyNegativeCosine()
    return 0.5 * (criterion(p1, z2) + criterion(p2, z1))


def _convention(name: str) -> Callable[[SampleInput], SampleInput]:
    def fix(sample: SampleInput) -> SampleInput:
        return dataclasses.replace(sample, kwargs={**sample.kwargs, "convention": name})

    return fix


def simsiam_convention() -> st.SearchStrategy[SampleInput]:
    return ams.negative_cosine_samples().map(_convention("simsiam"))


def byol_convention() -> st.SearchStrategy[SampleInput]:
    return ams.negative_cosine_samples().map(_convention("byol"))


def lightly_moco_v3(q1, q2, k1, k2, temperature):
    """MoCo v3's ctr written with lightly's NTXentLoss on in-batch keys (no memory bank)."""
    ntxent = LightlyNTXent(temperature=temperature)
    return 2 * temperature * (ntxent(q1, k2) + ntxent(q2, k1))


def lightly_dino(
    student, teacher, center, student_temperature, teacher_temperature, *, exact=False
):
    """lightly's DINOLoss with its centre buffer set to ``center`` (a copy: lightly updates the
    buffer in place after the loss) and the teacher temperature fixed (no warm-up).

    lightly divides by ``torch.tensor(teacher_temp)``, a float32 scalar; ``exact=True``
    passes the temperature as a tensor of the inputs' dtype instead (``forward``'s
    ``teacher_temp`` argument), which removes the float64 difference.
    """
    loss = LightlyDINO(
        output_dim=student.shape[2],
        warmup_teacher_temp=teacher_temperature,
        teacher_temp=teacher_temperature,
        warmup_teacher_temp_epochs=1,
        student_temp=student_temperature,
    )
    loss.center = center.reshape(1, 1, -1).clone()
    if not exact:
        return loss(list(teacher.unbind(1)), list(student.unbind(1)))
    temperature = torch.tensor(teacher_temperature, dtype=teacher.dtype)
    with warnings.catch_warnings():  # lightly copies the tensor with torch.tensor(tensor)
        warnings.simplefilter("ignore", UserWarning)
        return loss(list(teacher.unbind(1)), list(student.unbind(1)), teacher_temp=temperature)


def lightly_dino_exact(student, teacher, center, student_temperature, teacher_temperature):
    return lightly_dino(
        student, teacher, center, student_temperature, teacher_temperature, exact=True
    )


def lightly_swav(scores, assigned, temperature, epsilon, iterations):
    """lightly's SwaVLoss: the first ``assigned`` crops are its high-resolution outputs; its
    (1,)-shaped result is returned as a scalar."""
    loss = LightlySwaV(
        temperature=temperature, sinkhorn_iterations=iterations, sinkhorn_epsilon=epsilon
    )
    crops = list(scores.unbind(1))
    return loss(crops[:assigned], crops[assigned:]).reshape(())


def _trained(name: str, label: str) -> LossSpec:
    """A registry entry with its stop-gradient (the peer detaches the same branch)."""
    spec = registry.get(name)
    kept = {k: v for k, v in spec.fixed_kwargs.items() if k != "stop_gradient"}
    return dataclasses.replace(spec, name=f"{name} ({label})", fixed_kwargs=kept)


DCLW_DETACHED = _trained("dclw", "weights detached")
SWAV_DETACHED = _trained("swav", "codes without gradient")


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
    # self-supervised losses
    PeerCase(
        "lightly-vicreg",
        "lightly `VICRegLoss(lambda_param=l, mu_param=m, nu_param=n)(z1, z2)`",
        lightly_vicreg,
        "vicreg",
        domain=vicreg_gamma_one,
        domain_note="gamma = 1 (lightly's fixed target std)",
    ),
    PeerCase(
        "lightly-negative-cosine",
        "lightly `0.5 * (NegativeCosineSimilarity()(p1, z2) + ...(p2, z1))`",
        lightly_negative_cosine,
        "negative_cosine",
        domain=simsiam_convention,
        domain_note="convention='simsiam'",
    ),
    PeerCase(
        "lightly-negative-cosine-byol",
        "lightly's BYOL recipe `0.5 * (NegativeCosineSimilarity()(p1, z2) + ...(p2, z1))`",
        lightly_negative_cosine,
        "negative_cosine",
        domain=byol_convention,
        domain_note="convention='byol'",
        difference=("lightly_byol_scale",),
    ),
    PeerCase(
        "lightly-dcl",
        "lightly `DCLLoss(temperature=t)(z1, z2)`",
        LightlyDCL,
        "dcl",
        "module",
    ),
    PeerCase(
        "lightly-dclw",
        "lightly `DCLWLoss(temperature=t, sigma=s)(z1, z2)`",
        LightlyDCLW,
        DCLW_DETACHED,
        "module",
    ),
    PeerCase(
        "lightly-ntxent-moco-v3",
        "lightly `2t * (NTXentLoss(t)(q1, k2) + NTXentLoss(t)(q2, k1))`",
        lightly_moco_v3,
        "moco_v3",
        difference=("lightly_ntxent_is_simclr",),
    ),
    PeerCase(
        "lightly-dino",
        "lightly `DINOLoss(K, teacher_temp=tt, student_temp=ts)(teacher crops, student crops)`, "
        "centre buffer = c",
        lightly_dino,
        "dino",
        difference=("lightly_dino_float32_temperature",),
        flagged_in="float64",
    ),
    PeerCase(
        "lightly-dino-exact-temperature",
        "lightly `DINOLoss(...)(teacher crops, student crops, teacher_temp=tensor(tt, dtype))`, "
        "centre buffer = c",
        lightly_dino_exact,
        "dino",
    ),
    PeerCase(
        "lightly-swav",
        "lightly `SwaVLoss(t, sinkhorn_iterations=i, sinkhorn_epsilon=e)(high, low)`",
        lightly_swav,
        SWAV_DETACHED,
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


def reproduce_byol_scale(dtype: torch.dtype = torch.float32) -> Reproduction:
    z = torch.eye(2, dtype=dtype)
    return Reproduction(
        "lightly_byol_scale",
        "lightly's BYOL recipe trains NegativeCosineSimilarity halved over the two directions, "
        "SimSiam's [-1, 1] scale; BYOL's L + L~ (2 - 2cos per direction) is 4 + 4 x that, so "
        "its minimum is 0, not -1, and its gradient 4x larger",
        "p1 = p2 = z1 = z2 = eye(2) (aligned predictions), convention='byol'",
        float(negative_cosine(*(z.double(),) * 4, convention="byol")),
        float(lightly_negative_cosine(z, z, z, z)),
    )


def reproduce_ntxent_is_simclr(dtype: torch.dtype = torch.float32) -> Reproduction:
    e = torch.eye(2, dtype=dtype)
    return Reproduction(
        "lightly_ntxent_is_simclr",
        "lightly's NTXentLoss(q, k) is SimCLR's loss on [q; k]: the other queries are "
        "negatives and the keys are anchors too; MoCo v3's ctr scores each query against the "
        "keys only",
        "q1 = q2 = k1 = k2 = eye(2), tau = 1 (reference 4 log(1 + e^-1), lightly "
        "4 log(1 + 2 e^-1))",
        float(moco_v3(*(e.double(),) * 4, 1.0)),
        float(lightly_moco_v3(e, e, e, e, 1.0)),
    )


def reproduce_dino_float32_temperature(dtype: torch.dtype = torch.float64) -> Reproduction:
    student = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]], dtype=dtype)
    teacher = torch.tensor([[[0.0, 0.125], [0.0, 0.125]]], dtype=dtype)
    center = torch.zeros(2, dtype=dtype)
    return Reproduction(
        "lightly_dino_float32_temperature",
        "lightly's DINOLoss divides the teacher logits by torch.tensor(teacher_temp), a float32 "
        "scalar: in float64 the teacher temperature 0.04 becomes 0.03999999910593033 "
        "(relative error 2.2e-8); passing teacher_temp as a float64 tensor removes it",
        "student = [[[0, 1], [0, 1]]], teacher = [[[0, 0.125], [0, 0.125]]], centre 0, "
        "tau_s = 0.1, tau_t = 0.04",
        float(dino(student.double(), teacher.double(), center.double())),
        float(lightly_dino(student, teacher, center, 0.1, 0.04)),
    )


#: The minimal reproduction of each documented difference, by key.
REPRODUCTIONS: dict[str, Callable[..., Reproduction]] = {
    "pml_log_floor": reproduce_log_floor,
    "pml_supcon_no_negatives": reproduce_no_negatives,
    "pml_supcon_zero_dropped": reproduce_zero_loss_anchor_dropped,
    "pml_ntxent_per_pair": reproduce_per_pair,
    "lightly_byol_scale": reproduce_byol_scale,
    "lightly_ntxent_is_simclr": reproduce_ntxent_is_simclr,
    "lightly_dino_float32_temperature": reproduce_dino_float32_temperature,
}
