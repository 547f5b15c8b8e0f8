"""The image containers every dataset returns: :class:`ImageData` and :class:`Split`.

Images stay uint8 in memory (STL-10's unlabelled split is 2.8 GB as uint8, four times that
as float32); :meth:`ImageData.batch` converts the rows a training step needs to floats in
[0, 1] on the target device.  The bundled datasets (:mod:`.datasets`) and the file readers
(:mod:`.readers`) both build these types, and neither imports the other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = ["ImageData", "Split"]

#: Images per chunk when computing channel statistics (bounds the float64 copy).
STATS_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class ImageData:
    """A set of images with integer labels.

    Attributes:
        name: dataset and split, e.g. ``"digits/train"``.
        images: ``(N, C, H, W)`` uint8 tensor.
        labels: ``(N,)`` int64 tensor of class indices; ``-1`` marks unlabelled images.
        classes: class names, indexed by label.
        max_value: the pixel value that maps to 1.0 (16 for digits, 255 otherwise).
    """

    name: str
    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    max_value: float = 255.0

    def __post_init__(self) -> None:
        fn = f"ImageData({self.name!r})"
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"{fn}: images must be a (N, C, H, W) uint8 tensor, got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"{fn}: labels must be an int64 tensor of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )
        if self.labels.numel() and int(self.labels.max()) >= len(self.classes):
            raise ValueError(
                f"{fn}: labels must be < {len(self.classes)} (the number of classes), got "
                f"{int(self.labels.max())}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def batch(self, index: Tensor | None = None, device: torch.device | str = "cpu") -> Tensor:
        """Rows ``index`` (all rows for ``None``) as float32 in [0, 1] on ``device``."""
        x = self.images if index is None else self.images[index.to(self.images.device)]
        return x.to(device=device, dtype=torch.float32) / self.max_value

    def to(self, device: torch.device | str) -> ImageData:
        """A copy whose tensors live on ``device`` (uint8 keeps GPU copies small)."""
        return ImageData(
            self.name,
            self.images.to(device),
            self.labels.to(device),
            self.classes,
            self.max_value,
        )


@dataclass(frozen=True, eq=False)
class Split:
    """A dataset's fixed train and test sets plus the train set's per-channel statistics.

    ``mean`` and ``std`` (``(C,)`` float32, in [0, 1] pixel units) are what models normalise
    inputs with, computed on the training images only (unlabelled ones included).  Training
    images labelled ``-1`` (STL-10's unlabelled split) serve self-supervised training only;
    probes use the labelled rows.
    """

    name: str
    train: ImageData
    test: ImageData

    @cached_property
    def _stats(self) -> tuple[Tensor, Tensor]:
        total = torch.zeros(self.train.shape[0], dtype=torch.float64)
        squares = torch.zeros_like(total)
        for chunk in self.train.images.split(STATS_CHUNK):
            x = chunk.to(torch.float64) / self.train.max_value
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
        count = len(self.train) * self.train.shape[1] * self.train.shape[2]
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0.0).sqrt().clamp_min(1e-6)
        return mean.float(), std.float()

    @property
    def mean(self) -> Tensor:
        return self._stats[0]

    @property
    def std(self) -> Tensor:
        return self._stats[1]

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)
