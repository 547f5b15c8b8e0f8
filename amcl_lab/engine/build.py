"""What a run trains with: the network, the optimiser, the schedule and SAF/MESA terms.

:func:`build_network` assembles :class:`amcl_lab.models.Network` (normalisation, encoder,
projector heads and/or a linear classifier) for the config and the data's image shape;
:func:`build_optimisation` the optimiser of :data:`~amcl_lab.engine.catalog.OPTIMIZERS`
(SGD, AdamW, or the sharpness-aware optimisers of :mod:`amcl_lab.optim`), the learning-rate
schedule (:func:`lr_factor`) and SAF's or MESA's distillation term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data import Split
from ..models import (
    LinearClassifier,
    MultiHeadProjector,
    Network,
    Normalize,
    ProjectionHead,
    build_encoder,
)
from ..optim import MESA, SAF, SAM
from .catalog import OBJECTIVES
from .config import TrainConfig
from .objectives import Objective

__all__ = ["Optimisation", "build_network", "build_optimisation", "lr_factor"]


def build_network(config: TrainConfig, split: Split) -> Network:
    """The :class:`~amcl_lab.models.Network` of ``config`` for images of ``split``."""
    channels, size, _ = split.train.shape
    encoder = build_encoder(config.encoder, channels, size, config.width)
    projector: nn.Module | None = None
    if config.proj_dim:
        projector = (
            MultiHeadProjector(
                encoder.feature_dim, config.proj_hidden, config.proj_dim, heads=config.heads
            )
            if config.heads > 1 or OBJECTIVES[config.loss].kind == "amcl"
            else ProjectionHead(encoder.feature_dim, config.proj_hidden, config.proj_dim)
        )
    classifier = None
    if OBJECTIVES[config.loss].kind == "ce":
        classifier = LinearClassifier(encoder.feature_dim, split.num_classes)
    return Network(Normalize(split.mean, split.std), encoder, projector, classifier)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then cosine to 0 or constant."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(config.steps - config.warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - config.warmup_steps, span) / span))


class _Logits(nn.Module):
    """The classifier logits of a network (what SAF and MESA distil)."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        logits = self.network(x).logits
        assert logits is not None
        return logits


@dataclass
class Optimisation:
    """The optimiser, its scheduler and the SAF/MESA term of a run (:func:`build_optimisation`)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    two_pass: bool  # SAM/ASAM: a second forward/backward at the perturbed weights
    params: list[Tensor]  # what the optimiser updates (the gradient norm is theirs)
    grad_clip: float = 0.0  # clip their global L2 gradient norm to this; 0 = off
    saf: nn.Module | None = None
    mesa: nn.Module | None = None
    logits: _Logits | None = None

    def extras(self) -> dict[str, nn.Module]:
        return {k: m for k, m in (("saf", self.saf), ("mesa", self.mesa)) if m is not None}


def build_optimisation(
    config: TrainConfig,
    network: Network,
    objective: Objective,
    samples: int,
    classes: int,
    *,
    gather_distributed: bool = False,
) -> Optimisation:
    """Optimiser, LR scheduler and the SAF/MESA loss terms of ``config``.

    ``samples`` (training images: the SAF buffer's rows) and ``classes`` size SAF's buffer.
    ``gather_distributed`` makes SAF write the logits of every rank into its buffer
    (:class:`~amcl_lab.optim.SAF`; set by :func:`train` under a process group).
    """
    fn = "build_optimisation"
    trainable = (*network.parameters(), *objective.parameters())
    params = [p for p in trainable if p.requires_grad]  # not a MoCo key network
    options = config.optimizer_kwargs
    sgd = {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay}
    name = config.optimizer
    if name in ("saf", "mesa") and network.classifier is None:
        raise ValueError(
            f"{fn}: optimizer {name!r} distils classifier logits; use loss='ce' "
            f"(supervised=true), got loss={config.loss!r}"
        )
    extra: nn.Module | None = None
    logits = _Logits(network) if name in ("saf", "mesa") else None
    try:
        if name == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(params, **sgd, **options)
        elif name == "adamw":
            optimizer = torch.optim.AdamW(
                params, lr=config.lr, weight_decay=config.weight_decay, **options
            )
        elif name in ("sam", "asam"):
            optimizer = SAM(
                params, torch.optim.SGD, rho=config.rho, adaptive=name == "asam", **sgd, **options
            )
        elif name == "saf":
            optimizer = torch.optim.SGD(params, **sgd)
            gather = {"gather_distributed": gather_distributed}
            extra = SAF(num_samples=samples, num_classes=classes, **{**gather, **options})
        else:
            optimizer = torch.optim.SGD(params, **sgd)
            extra = MESA(logits, **options)
    except TypeError as error:
        raise ValueError(f"{fn}: bad optimizer_options for {name!r}: {error}") from None
    base = getattr(optimizer, "base_optimizer", optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(base, lambda step: lr_factor(step, config))
    return Optimisation(
        optimizer,
        scheduler,
        two_pass=name in ("sam", "asam"),
        params=params,
        grad_clip=config.grad_clip,
        saf=extra if name == "saf" else None,
        mesa=extra if name == "mesa" else None,
        logits=logits,
    )
