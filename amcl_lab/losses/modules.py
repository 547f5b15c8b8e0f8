"""Thin ``nn.Module`` wrappers that store hyperparameters and call the functional losses."""

from __future__ import annotations

from torch import Tensor, nn

from .barlow_twins import barlow_twins
from .contrastive import info_nce, nt_xent
from .hard import hard_contrastive, simple_contrastive
from .supcon import supcon

__all__ = [
    "BarlowTwinsLoss",
    "HardContrastiveLoss",
    "InfoNCELoss",
    "NTXentLoss",
    "SimpleContrastiveLoss",
    "SupConLoss",
]


class NTXentLoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.nt_xent`; ``forward(z1, z2)``."""

    def __init__(
        self, temperature: float = 0.5, *, decoupled: bool = False, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.temperature, self.decoupled, self.reduction = temperature, decoupled, reduction

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return nt_xent(z1, z2, self.temperature, decoupled=self.decoupled, reduction=self.reduction)


class InfoNCELoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.info_nce`; ``forward(query, key, queue=None)``.

    The module does not own a queue: MoCo-style training keeps and updates it outside the
    loss (the reference never modifies its inputs).
    """

    def __init__(self, temperature: float = 0.07, *, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature, self.reduction = temperature, reduction

    def forward(self, query: Tensor, key: Tensor, queue: Tensor | None = None) -> Tensor:
        return info_nce(query, key, queue, self.temperature, reduction=self.reduction)


class SupConLoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.supcon`; ``forward(features, labels=None)``."""

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        variant: str = "out",
        contrast_mode: str = "all",
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.temperature, self.variant = temperature, variant
        self.contrast_mode, self.reduction = contrast_mode, reduction

    def forward(self, features: Tensor, labels: Tensor | None = None) -> Tensor:
        return supcon(
            features,
            labels,
            self.temperature,
            variant=self.variant,
            contrast_mode=self.contrast_mode,
            reduction=self.reduction,
        )


class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.barlow_twins`; ``forward(z1, z2)``."""

    def __init__(self, lambda_offdiag: float = 5e-3, *, variance: str = "biased") -> None:
        super().__init__()
        self.lambda_offdiag, self.variance = lambda_offdiag, variance

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return barlow_twins(z1, z2, self.lambda_offdiag, variance=self.variance)


class HardContrastiveLoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.hard_contrastive`; ``forward(z1, z2)``."""

    def __init__(
        self, temperature: float = 0.5, *, k: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.temperature, self.k, self.reduction = temperature, k, reduction

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return hard_contrastive(z1, z2, self.temperature, k=self.k, reduction=self.reduction)


class SimpleContrastiveLoss(nn.Module):
    """Module form of :func:`~amcl_lab.losses.simple_contrastive`; ``forward(z1, z2)``."""

    def __init__(
        self, *, lam: float | None = None, k: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.lam, self.k, self.reduction = lam, k, reduction

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        return simple_contrastive(z1, z2, lam=self.lam, k=self.k, reduction=self.reduction)
