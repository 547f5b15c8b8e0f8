"""Which images a step sees: seeds, batch order and the training set of a run.

Every random choice of a run is a pure function of ``(seed, step)``: :func:`derive_seed`
mixes integer keys into a seed, and each consumer draws from its own stream (the ``STREAM_*``
keys), so the batch order of an epoch, the augmentations of a step and the held-out view
pairs of an evaluation never depend on how many numbers another consumer drew.  That is what
makes a resumed run see exactly the batches and views of an uninterrupted one.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..data import ImageData, Split, load_dataset
from .config import TrainConfig

__all__ = [
    "STREAM_AUGMENT",
    "STREAM_EVAL",
    "STREAM_NOISE",
    "STREAM_QUEUE",
    "STREAM_SHUFFLE",
    "STREAM_SUBSET",
    "batch_indices",
    "cached_dataset",
    "derive_seed",
    "generator",
    "training_set",
]

# independent random streams derived from one seed
STREAM_SHUFFLE, STREAM_AUGMENT, STREAM_EVAL, STREAM_SUBSET, STREAM_NOISE = 1, 2, 3, 4, 5
STREAM_QUEUE = 6  # MoCo's initial queue


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (NumPy ``SeedSequence``), e.g. (seed, step, stream)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=generator(seed, epoch, STREAM_SHUFFLE))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Dataset rows of ``step``: epochs are fresh permutations, the last partial batch dropped."""
    per_epoch = n // batch_size
    epoch, position = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[position * batch_size : (position + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str, data_dir: str) -> Split:
    """:func:`amcl_lab.data.load_dataset`, cached (a run trains many models on one split)."""
    return load_dataset(name, data_dir or None)


def training_set(split: Split, config: TrainConfig) -> tuple[ImageData, Tensor]:
    """The images a run trains on, with the labels it trains on, and their clean labels.

    ``train_fraction < 1`` keeps a random subset of that fraction of the training images
    (rounded; drawn from ``seed``, so each seed sees its own subset).  ``label_noise > 0``
    gives that fraction of the labelled images a different class, drawn uniformly from
    the others (the flipped labels of Graf et al. 2021, also drawn from ``seed``).  Probes
    always use the clean labels; supervised losses and ``train_accuracy`` use the returned
    ones.
    """
    data = split.train
    if config.train_fraction < 1.0:
        keep = max(1, round(config.train_fraction * len(data)))
        order = torch.randperm(len(data), generator=generator(config.seed, STREAM_SUBSET))
        rows = order[:keep].sort().values
        data = ImageData(
            data.name, data.images[rows], data.labels[rows], data.classes, data.max_value
        )
    clean = data.labels
    if config.label_noise > 0.0:
        gen = generator(config.seed, STREAM_NOISE)
        labelled = (clean >= 0).nonzero().squeeze(1)
        count = round(config.label_noise * labelled.numel())
        flip = labelled[torch.randperm(labelled.numel(), generator=gen)[:count]]
        classes = len(data.classes)
        noisy = clean.clone()
        noisy[flip] = (clean[flip] + torch.randint(1, classes, (count,), generator=gen)) % classes
        data = ImageData(data.name, data.images, noisy, data.classes, data.max_value)
    return data, clean
