"""Reference losses: pure functions on tensors plus thin ``nn.Module`` wrappers.

One module per family: :mod:`.contrastive` (NT-Xent, InfoNCE), :mod:`.supcon`,
:mod:`.barlow_twins`, :mod:`.hard` (hard and simple contrastive losses), :mod:`.amcl` and
:mod:`.amcl_siamese` (AMCL's multi-head, pair-adaptive-temperature losses), :mod:`.kernel`
(the idealized kernel loss, its invariance + orthogonality form and multi-view Barlow Twins),
and the self-supervised losses :mod:`.vicreg` (VICReg and its multi-view form),
:mod:`.negative_cosine` (BYOL / SimSiam), :mod:`.dcl` (DCL, DCLW), :mod:`.moco_v3`,
:mod:`.dino` and :mod:`.swav` (with the Sinkhorn-Knopp codes).
"""

from .amcl import amcl_info_nce, amcl_moco, amcl_nt_xent, omega
from .amcl_siamese import amcl_barlow_twins, amcl_simsiam
from .barlow_twins import barlow_twins, cross_correlation
from .contrastive import info_nce, nt_xent
from .dcl import DCLLoss, dcl, vmf_weights
from .dino import DINOLoss, dino, dino_center_update
from .hard import hard_contrastive, hard_negative_mask, simple_contrastive
from .kernel import (
    TUNED_BETA,
    InvarianceOrthogonalityLoss,
    MultiViewBarlowTwinsLoss,
    beta_for_dim,
    invariance_orthogonality_loss,
    kernel_loss,
    multiview_barlow_twins,
)
from .moco_v3 import MoCoV3Loss, moco_v3
from .modules import (
    BarlowTwinsLoss,
    HardContrastiveLoss,
    InfoNCELoss,
    NTXentLoss,
    SimpleContrastiveLoss,
    SupConLoss,
)
from .negative_cosine import NegativeCosineLoss, negative_cosine
from .supcon import supcon
from .swav import SwAVLoss, sinkhorn_knopp, swav
from .vicreg import (
    MultiViewVICRegLoss,
    VICRegLoss,
    VICRegTerms,
    multiview_vicreg,
    vicreg,
    vicreg_terms,
)

__all__ = [
    "TUNED_BETA",
    "BarlowTwinsLoss",
    "DCLLoss",
    "DINOLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "InvarianceOrthogonalityLoss",
    "MoCoV3Loss",
    "MultiViewBarlowTwinsLoss",
    "MultiViewVICRegLoss",
    "NTXentLoss",
    "NegativeCosineLoss",
    "SimpleContrastiveLoss",
    "SupConLoss",
    "SwAVLoss",
    "VICRegLoss",
    "VICRegTerms",
    "amcl_barlow_twins",
    "amcl_info_nce",
    "amcl_moco",
    "amcl_nt_xent",
    "amcl_simsiam",
    "barlow_twins",
    "beta_for_dim",
    "cross_correlation",
    "dcl",
    "dino",
    "dino_center_update",
    "hard_contrastive",
    "hard_negative_mask",
    "info_nce",
    "invariance_orthogonality_loss",
    "kernel_loss",
    "moco_v3",
    "multiview_barlow_twins",
    "multiview_vicreg",
    "negative_cosine",
    "nt_xent",
    "omega",
    "simple_contrastive",
    "sinkhorn_knopp",
    "supcon",
    "swav",
    "vicreg",
    "vicreg_terms",
    "vmf_weights",
]
