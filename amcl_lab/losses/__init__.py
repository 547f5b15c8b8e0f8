"""Reference losses: pure functions on tensors plus thin ``nn.Module`` wrappers.

One module per family: :mod:`.contrastive` (NT-Xent, InfoNCE), :mod:`.supcon`,
:mod:`.barlow_twins`, :mod:`.hard` (hard and simple contrastive losses).
"""

from .barlow_twins import barlow_twins, cross_correlation
from .contrastive import info_nce, nt_xent
from .hard import hard_contrastive, hard_negative_mask, simple_contrastive
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
    "BarlowTwinsLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SimpleContrastiveLoss",
    "SupConLoss",
    "barlow_twins",
    "cross_correlation",
    "hard_contrastive",
    "hard_negative_mask",
    "info_nce",
    "nt_xent",
    "simple_contrastive",
    "supcon",
]
