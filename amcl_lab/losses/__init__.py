"""Reference losses: pure functions on tensors plus thin ``nn.Module`` wrappers.

One module per family: :mod:`.contrastive` (NT-Xent, InfoNCE), :mod:`.supcon`,
:mod:`.barlow_twins`, :mod:`.hard` (hard and simple contrastive losses), :mod:`.amcl` and
:mod:`.amcl_siamese` (AMCL's multi-head, pair-adaptive-temperature losses), :mod:`.kernel`
(the idealized kernel loss, its invariance + orthogonality form and multi-view Barlow Twins).
"""

from .amcl import amcl_info_nce, amcl_moco, amcl_nt_xent, omega
from .amcl_siamese import amcl_barlow_twins, amcl_simsiam
from .barlow_twins import barlow_twins, cross_correlation
from .contrastive import info_nce, nt_xent
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
from .modules import (
    BarlowTwinsLoss,
    HardContrastiveLoss,
    InfoNCELoss,
    NTXentLoss,
    SimpleContrastiveLoss,
    SupConLoss,
)
from .supcon import supcon

__all__ = [
    "TUNED_BETA",
    "BarlowTwinsLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "InvarianceOrthogonalityLoss",
    "MultiViewBarlowTwinsLoss",
    "NTXentLoss",
    "SimpleContrastiveLoss",
    "SupConLoss",
    "amcl_barlow_twins",
    "amcl_info_nce",
    "amcl_moco",
    "amcl_nt_xent",
    "amcl_simsiam",
    "barlow_twins",
    "beta_for_dim",
    "cross_correlation",
    "hard_contrastive",
    "hard_negative_mask",
    "info_nce",
    "invariance_orthogonality_loss",
    "kernel_loss",
    "multiview_barlow_twins",
    "nt_xent",
    "omega",
    "simple_contrastive",
    "supcon",
]
