"""amcl_lab: reference losses, executable theory and experiments for contrastive learning.

The public API is re-exported here; see the README for a tour.
"""

from .losses import (
    BarlowTwinsLoss,
    HardContrastiveLoss,
    InfoNCELoss,
    NTXentLoss,
    SimpleContrastiveLoss,
    SupConLoss,
    barlow_twins,
    cross_correlation,
    hard_contrastive,
    hard_negative_mask,
    info_nce,
    nt_xent,
    simple_contrastive,
    supcon,
)

__version__ = "0.1.0"

__all__ = [
    "BarlowTwinsLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SimpleContrastiveLoss",
    "SupConLoss",
    "__version__",
    "barlow_twins",
    "cross_correlation",
    "hard_contrastive",
    "hard_negative_mask",
    "info_nce",
    "nt_xent",
    "simple_contrastive",
    "supcon",
]
