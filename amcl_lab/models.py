"""Encoders, projection heads and classifier heads for the experiments (no torchvision).

* :class:`ResNet18`: the CIFAR variant used by SimCLR/AMCL CIFAR experiments: a 3x3
  stride-1 stem without max-pooling, four stages of two basic blocks, global average
  pooling; ``width`` is the first stage's channel count (64 in the papers, a smaller value
  for CPU runs); features are ``8 * width``-dimensional (512 at width 64).
* :class:`SmallCNN`: three conv-BN-ReLU layers (the last two with stride 2) and global
  average pooling, sized for the bundled 8x8 digits and 28x28 MNIST; ``4 * width`` features.
* :class:`MLP`: flatten plus two hidden ReLU layers; ``width`` features.
* :class:`ProjectionHead`: the SimCLR projector Linear-(BN)-ReLU-Linear.  The multi-head
  projector of AMCL is :class:`amcl_lab.amcl.MultiHeadProjector`, re-exported here.
* :class:`LinearClassifier`: a linear layer on frozen or trained features.

:class:`Network` ties them together: input normalisation, encoder, projector and/or
classifier, so a checkpoint holds everything a run needs.  Encoders are built by name
(:data:`ENCODERS`, :func:`build_encoder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import _validation as v
from .amcl import MultiHeadProjector

__all__ = [
    "ENCODERS",
    "MLP",
    "LinearClassifier",
    "MultiHeadProjector",
    "Network",
    "NetworkOutput",
    "Normalize",
    "ProjectionHead",
    "ResNet18",
    "SmallCNN",
    "build_encoder",
]


class Normalize(nn.Module):
    """Per-channel standardisation ``(x - mean) / std`` with the statistics as buffers."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().float().reshape(1, -1, 1, 1).clone())
        self.register_buffer("std", std.detach().float().reshape(1, -1, 1, 1).clone())

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    ]


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(c_in, c_out, stride), nn.ReLU(inplace=True), *_conv_bn(c_out, c_out)
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-stem ResNet-18 (He et al. 2016, arXiv:1512.03385; the stem of SimCLR's CIFAR
    experiments, Chen et al. 2020, arXiv:2002.05709, Appendix B.9).

    Args:
        in_channels: image channels (3 for CIFAR/STL, 1 for digits).
        width: channels of the first stage; stages have ``width * (1, 2, 4, 8)``.

    Input ``(B, in_channels, H, W)``; output ``(B, 8 * width)``.
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        v.check_int("ResNet18", "width", width, low=1)
        layers: list[nn.Module] = [*_conv_bn(in_channels, width), nn.ReLU(inplace=True)]
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if stage == 0 else 2
            layers += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.feature_dim = 8 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers (strides 1, 2, 2) and global average pooling.

    Args:
        in_channels: image channels.
        width: channels of the first layer; the others have ``2 * width`` and ``4 * width``.

    Input ``(B, in_channels, H, W)`` with H, W >= 4; output ``(B, 4 * width)``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        v.check_int("SmallCNN", "width", width, low=1)
        self.net = nn.Sequential(
            *_conv_bn(in_channels, width),
            nn.ReLU(inplace=True),
            *_conv_bn(width, 2 * width, stride=2),
            nn.ReLU(inplace=True),
            *_conv_bn(2 * width, 4 * width, stride=2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class MLP(nn.Module):
    """Flatten, then Linear-BN-ReLU twice: ``(B, C, H, W)`` or ``(B, D)`` -> ``(B, width)``.

    Args:
        in_features: ``C * H * W`` (or D).
        width: hidden and output width.
    """

    def __init__(self, in_features: int, width: int = 256) -> None:
        super().__init__()
        v.check_int("MLP", "width", width, low=1)
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )
        self.feature_dim = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ProjectionHead(nn.Module):
    """SimCLR's projector ``Linear -> (BatchNorm) -> ReLU -> Linear``: ``(B, F) -> (B, D)``.

    Args:
        in_dim: encoder feature dimension F.
        hidden_dim: hidden width (SimCLR/AMCL on CIFAR: 512).
        out_dim: embedding dimension D (SimCLR/AMCL: 128).
        batch_norm: add BatchNorm after the hidden linear layer (SimCLR v2 style).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, out_dim: int, *, batch_norm: bool = False
    ) -> None:
        super().__init__()
        hidden: list[nn.Module] = [nn.Linear(in_dim, hidden_dim, bias=not batch_norm)]
        if batch_norm:
            hidden.append(nn.BatchNorm1d(hidden_dim))
        self.net = nn.Sequential(*hidden, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class LinearClassifier(nn.Module):
    """A linear classifier ``(B, F) -> (B, num_classes)`` logits."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.linear(h)


#: Encoder name -> ``build(in_channels, image_size, width)``; ``width`` as each class says.
ENCODERS: dict[str, Callable[[int, int, int], nn.Module]] = {
    "resnet18": lambda c, size, width: ResNet18(c, width),
    "cnn": lambda c, size, width: SmallCNN(c, width),
    "mlp": lambda c, size, width: MLP(c * size * size, width),
}


def build_encoder(name: str, in_channels: int, image_size: int, width: int) -> nn.Module:
    """The encoder called ``name`` (see :data:`ENCODERS`); it has a ``feature_dim``."""
    v.check_choice("build_encoder", "name", name, tuple(ENCODERS))
    return ENCODERS[name](in_channels, image_size, width)


class NetworkOutput(NamedTuple):
    """What :class:`Network` returns for a batch of B images.

    ``features``: ``(B, F)`` encoder output (what probes read); ``embeddings``: ``(C, B, D)``
    projector output per head (``None`` without a projector); ``logits``: ``(B, K)`` classifier
    output (``None`` without a classifier).
    """

    features: Tensor
    embeddings: Tensor | None
    logits: Tensor | None


class Network(nn.Module):
    """Input normalisation, an encoder, and optional projector and classifier heads.

    Args:
        normalize: the input standardisation (train-set statistics).
        encoder: a module with a ``feature_dim`` attribute.
        projector: a :class:`ProjectionHead` (one head) or a
            :class:`~amcl_lab.amcl.MultiHeadProjector` returning ``(C, B, D)``, or ``None``.
        classifier: a :class:`LinearClassifier` on the features, or ``None``.
    """

    def __init__(
        self,
        normalize: Normalize,
        encoder: nn.Module,
        projector: nn.Module | None = None,
        classifier: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.normalize, self.encoder = normalize, encoder
        self.projector, self.classifier = projector, classifier

    def encode(self, x: Tensor) -> Tensor:
        """``(B, F)`` features of images ``x`` (floats in [0, 1])."""
        return self.encoder(self.normalize(x))

    def forward(self, x: Tensor) -> NetworkOutput:
        h = self.encode(x)
        z = None
        if self.projector is not None:
            z = self.projector(h)
            z = z[None] if z.ndim == 2 else z  # one head -> (1, B, D)
        logits = self.classifier(h) if self.classifier is not None else None
        return NetworkOutput(h, z, logits)
