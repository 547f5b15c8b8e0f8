r"""The experiment engine: configuration, one training loop, evaluation, checkpoints, run folders.

A training run is described by a frozen :class:`TrainConfig` (flat, commented defaults;
strict ``key=value`` overrides through :func:`apply_overrides`) and executed by
:func:`train`:

* **data**: a dataset from :data:`amcl_lab.data.DATASETS`, fixed train/test split, ``views``
  augmented views per image (:class:`amcl_lab.data.Augmentation`, families ``augment``);
* **model**: :class:`amcl_lab.models.Network` = normalisation + encoder + projector
  (``heads`` heads) and/or a linear classifier;
* **objective**: any loss of :data:`OBJECTIVES` by name: the registry's two-view losses
  (averaged over view pairs), SupCon (instance or class labels), the multi-view losses, the
  AMCL losses (through :class:`amcl_lab.amcl.AMCLModel`) and supervised cross-entropy;
* **optimiser**: SGD, AdamW or the sharpness-aware optimisers of :mod:`amcl_lab.optim`
  (:data:`OPTIMIZERS`), cosine or constant learning rate with linear warm-up;
* **evaluation** on frozen features: linear probe (L-BFGS logistic regression), weighted
  k-NN, trained-classifier accuracy, and geometry metrics on the held-out split
  (:data:`GEOMETRY` by name, or any :data:`EvalHook`).

Every random choice is a pure function of ``(seed, step)``: the batch order of an epoch and
the augmentations of a step come from generators seeded by :func:`derive_seed`, model
initialisation from ``seed``.  A run checkpointed at step ``s`` and resumed therefore sees
exactly the batches and views of an uninterrupted run; the checkpoint also restores the
model, optimiser, scheduler, loss-term states, global RNG states and the metric history, so
``--resume`` reproduces the uninterrupted run's numbers bit for bit on the same device and
thread count (CUDA kernels may be non-deterministic).

Runs write to ``<out>/<experiment>/<run-id>/`` (:class:`Run`): ``config.json`` (resolved
config, seeds, package versions, device, git revision), ``metrics.jsonl`` (one line per
evaluation), ``results.json`` (the tidy results table and claims), ``figures/`` and
``checkpoints/``.  Every file is written atomically (:func:`amcl_lab.io.atomic_path`).
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import functools
import inspect
import itertools
import json
import math
import os
import random
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import _validation as v
from . import distributed, losses, metrics, registry
from .amcl import AMCL_LOSSES, AMCLModel, PairTemperature
from .data import DATASETS, Augmentation, ImageData, Split, load_dataset
from .io import atomic_path, git_revision, json_safe, package_versions, write_json
from .models import (
    ENCODERS,
    LinearClassifier,
    MultiHeadProjector,
    Network,
    NetworkOutput,
    Normalize,
    ProjectionHead,
    build_encoder,
)
from .optim import MESA, SAF, SAM, frozen_bn_stats

__all__ = [
    "GEOMETRY",
    "OBJECTIVES",
    "OPTIMIZERS",
    "EvalHook",
    "HeldOut",
    "Run",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "config_dict",
    "derive_seed",
    "knn_accuracy",
    "linear_probe",
    "nearest_mean_accuracy",
    "open_run",
    "train",
    "training_set",
]

CHECKPOINT_FORMAT = 1
# independent random streams derived from one seed
_STREAM_SHUFFLE, _STREAM_AUGMENT, _STREAM_EVAL, _STREAM_SUBSET, _STREAM_NOISE = 1, 2, 3, 4, 5


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; experiment configs subclass it and add fields.

    Field groups (each default is the plain SimCLR-on-digits setting):

    * data: ``dataset``, ``data_dir``, ``augment``, ``crop_min_scale``, ``views``,
      ``batch_size``, ``train_fraction``, ``label_noise`` (see :func:`training_set`);
    * model: ``encoder``, ``width``, ``proj_hidden``, ``proj_dim``, ``heads``;
    * objective: ``loss``, ``temperature``, ``supervised``, ``adaptive_temperature``,
      ``loss_options``;
    * optimisation: ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``rho``,
      ``optimizer_options``, ``schedule``, ``warmup_steps``, ``steps``;
    * evaluation and bookkeeping: ``eval_every``, ``checkpoint_every``, ``probe_steps``,
      ``probe_weight_decay``, ``knn_k``, ``knn_temperature``, ``geometry``, ``seed``,
      ``device``.

    ``loss_options`` and ``optimizer_options`` are ``"key=value"`` strings passed as keyword
    arguments (values parsed as Python literals, else kept as strings), e.g.
    ``("beta=1e-4", "mode=topk", "k=100")`` for ``loss="amcl_nt_xent"``.
    """

    # data
    dataset: str = "digits"  # a name from amcl_lab.data.DATASETS
    data_dir: str = ""  # folder holding CIFAR/STL files; bundled datasets ignore it
    augment: str = "abcde"  # families: a crop, b blur, c grayscale, d colour jitter, e flip
    crop_min_scale: float = 0.08  # smallest crop area with family a (SimCLR: 0.08)
    views: int = 2  # augmented views per image and step (1 allowed for ce and supervised SupCon)
    batch_size: int = 256  # images per step (each seen `views` times)
    train_fraction: float = 1.0  # random subset of the training images (drawn from `seed`)
    label_noise: float = 0.0  # fraction of training labels flipped to another class
    # model
    encoder: str = "cnn"  # resnet18 | cnn | mlp
    width: int = 32  # resnet18/cnn: first-stage channels; mlp: hidden units
    proj_hidden: int = 128  # projector hidden width
    proj_dim: int = 64  # projector output dimension; 0 = no projector (cross-entropy)
    heads: int = 1  # projection heads (AMCL: 3); losses sum over heads
    # objective
    loss: str = "nt_xent"  # a name from engine.OBJECTIVES
    temperature: float = 0.5  # for losses with a temperature (constant-temperature AMCL too)
    supervised: bool = False  # class labels (SupCon, CE) instead of instance identities
    adaptive_temperature: bool = True  # AMCL losses: learned PairTemperature vs `temperature`
    loss_options: tuple[str, ...] = ()  # extra loss keywords, "key=value"
    # optimisation
    optimizer: str = "sgd"  # sgd | adamw | sam | asam | saf | mesa
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (also the base of SAM/SAF/MESA)
    weight_decay: float = 5e-4
    rho: float = 0.05  # SAM/ASAM neighbourhood radius
    optimizer_options: tuple[str, ...] = ()  # extra keywords of SAM/SAF/MESA, "key=value"
    schedule: str = "cosine"  # cosine | constant (after linear warm-up)
    warmup_steps: int = 0
    steps: int = 500  # optimiser steps
    # evaluation and bookkeeping
    eval_every: int = 0  # steps between evaluations; 0 = at the start and the end only
    checkpoint_every: int = 100  # steps between checkpoints (and at the end)
    probe_steps: int = 100  # L-BFGS iterations of the linear probe
    probe_weight_decay: float = 1e-4  # L2 penalty of the linear probe
    knn_k: int = 200  # neighbours of the k-NN classifier (capped at the train size)
    knn_temperature: float = 0.1  # k-NN vote weight exp(cosine / t)
    geometry: tuple[str, ...] = ()  # held-out metrics from engine.GEOMETRY
    seed: int = 0
    device: str = "auto"  # auto (CUDA if available) | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        fn = type(self).__name__
        v.check_choice(fn, "dataset", self.dataset, tuple(DATASETS))
        v.check_choice(fn, "encoder", self.encoder, tuple(ENCODERS))
        v.check_choice(fn, "loss", self.loss, tuple(OBJECTIVES))
        v.check_choice(fn, "optimizer", self.optimizer, OPTIMIZERS)
        v.check_choice(fn, "schedule", self.schedule, SCHEDULES)
        for name in self.geometry:
            v.check_choice(fn, "geometry", name, tuple(GEOMETRY))
        for name, low in (
            ("batch_size", 2),
            ("width", 1),
            ("proj_hidden", 1),
            ("proj_dim", 0),
            ("heads", 1),
            ("steps", 1),
            ("warmup_steps", 0),
            ("eval_every", 0),
            ("checkpoint_every", 1),
            ("probe_steps", 1),
            ("knn_k", 1),
        ):
            v.check_int(fn, name, getattr(self, name), low=low)
        one_view = self.loss == "ce" or (self.supervised and OBJECTIVES[self.loss].kind == "labels")
        v.check_int(fn, "views", self.views, low=1 if one_view else 2)
        for name in ("temperature", "lr", "knn_temperature"):
            v.check_positive_float(fn, name, getattr(self, name))
        for name in ("momentum", "weight_decay", "rho", "probe_weight_decay"):
            v.check_positive_float(fn, name, getattr(self, name), allow_zero=True)
        Augmentation(self.augment, crop_min_scale=self.crop_min_scale)  # validates both
        if not 0.0 < self.train_fraction <= 1.0:
            raise ValueError(f"{fn}: train_fraction must be in (0, 1], got {self.train_fraction}")
        if not 0.0 <= self.label_noise <= 1.0:
            raise ValueError(f"{fn}: label_noise must be in [0, 1], got {self.label_noise}")
        if self.label_noise and not self.supervised:
            raise ValueError(f"{fn}: label_noise only affects supervised training")
        kind = OBJECTIVES[self.loss].kind
        if kind == "ce" and not self.supervised:
            raise ValueError(f"{fn}: loss 'ce' is supervised; set supervised=true")
        if self.supervised and kind not in ("ce", "labels"):
            with_labels = sorted(k for k, o in OBJECTIVES.items() if o.kind in ("ce", "labels"))
            raise ValueError(
                f"{fn}: loss {self.loss!r} does not use class labels; supervised=true needs one "
                f"of {', '.join(with_labels)}"
            )
        if (kind == "ce") != (self.proj_dim == 0):
            need = (
                "proj_dim=0 (a linear classifier on the features)"
                if kind == "ce"
                else ("a projector; set proj_dim >= 1")
            )
            raise ValueError(f"{fn}: loss {self.loss!r} needs {need}")
        _parse_options(fn, "loss_options", self.loss_options)
        _parse_options(fn, "optimizer_options", self.optimizer_options)


def _parse_options(fn: str, name: str, options: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{fn}: {name} entries must look like 'key=value', got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _parse_value(fn: str, key: str, raw: str, current: Any, hint: Any) -> Any:
    """``raw`` converted to the type of the field (``hint``; ``current`` is its value)."""
    origin = typing.get_origin(hint)
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{fn}: {key} expects a bool (true/false), got {raw!r}")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{fn}: {key} expects an int, got {raw!r}") from None
    if hint is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{fn}: {key} expects a float, got {raw!r}") from None
    if hint is str:
        return raw
    if origin is tuple:
        (item, *_rest) = typing.get_args(hint)
        parts = [p.strip() for p in raw.split(",") if p.strip()] if raw.strip() else []
        return tuple(_parse_value(fn, key, p, None, item) for p in parts)
    raise ValueError(f"{fn}: {key} has type {hint} which --set cannot parse (value {current!r})")


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """``config`` with ``"key=value"`` overrides applied; the result is validated again.

    Values are parsed to the field's declared type: ints, floats, bools (true/false) and
    strings; tuples are comma-separated (``geometry=alignment,uniformity``; an empty value is
    the empty tuple), except the ``*_options`` tuples, whose ``key=value`` entries are
    separated by ``;`` (``loss_options=beta=1e-4;mode=topk;k=10``).

    Raises:
        ValueError: a malformed override, an unknown key (the message lists the valid
            keys), a value that does not parse as the field's type, or a resulting config
            that fails validation.
    """
    fn = "--set"
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"{fn}: overrides must look like key=value, got {item!r}")
        if key not in fields:
            raise ValueError(
                f"{fn}: unknown key {key!r} for {type(config).__name__}; valid keys: "
                f"{', '.join(sorted(fields))}"
            )
        if key.endswith("_options"):  # entries contain "=", so they are split on ";"
            changes[key] = tuple(p.strip() for p in raw.split(";") if p.strip())
        else:
            changes[key] = _parse_value(fn, key, raw, getattr(config, key), hints[key])
    return dataclasses.replace(config, **changes)


# --- objectives ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectiveSpec:
    """How :class:`Objective` calls a loss.

    ``kind``: ``"pairwise"`` (``fn(z_a, z_b)`` on two views, averaged over view pairs),
    ``"labels"`` (``fn(features (N, V, D), labels)``), ``"multiview"``
    (``fn(views (N, V, D))``), ``"amcl"`` (through :class:`~amcl_lab.amcl.AMCLModel`) or
    ``"ce"`` (cross-entropy on the classifier's logits).  ``fixed`` are keyword arguments of
    every call (a registry variant's ``fixed_kwargs``).
    """

    kind: str
    fn: Callable[..., Tensor] | None
    fixed: Mapping[str, Any] = field(default_factory=dict)


def _objectives() -> dict[str, ObjectiveSpec]:
    kinds = {("z1", "z2"): "pairwise", ("query", "key", "queue"): "pairwise"}
    kinds[("features", "labels")] = "labels"
    table: dict[str, ObjectiveSpec] = {}
    for name, spec in registry.REGISTRY.items():
        if spec.inputs in kinds:
            table[name] = ObjectiveSpec(kinds[spec.inputs], spec.fn, spec.fixed_kwargs)
    table["multiview_barlow_twins"] = ObjectiveSpec("multiview", losses.multiview_barlow_twins)
    table["invariance_orthogonality"] = ObjectiveSpec(
        "multiview", losses.invariance_orthogonality_loss
    )
    for name, fn in AMCL_LOSSES.items():
        if name.startswith("amcl_"):
            table[name] = ObjectiveSpec("amcl", fn)
    table["ce"] = ObjectiveSpec("ce", None)
    return table


#: Loss name -> :class:`ObjectiveSpec`: every two-view and SupCon loss of the registry,
#: the multi-view losses, the AMCL losses (MoCo excepted: it needs a momentum encoder and a
#: queue) and ``"ce"``.
OBJECTIVES: dict[str, ObjectiveSpec] = _objectives()


class Objective(nn.Module):
    """The training loss of a :class:`NetworkOutput` on ``V`` views of ``N`` images.

    Embeddings arrive as ``(C, V * N, D)`` (head, view-major rows).  Pairwise losses are
    averaged over the ``V (V - 1) / 2`` view pairs and summed over heads; SupCon sees
    ``(N, V, D)`` per head with instance labels (self-supervised, the multi-view NT-Xent) or
    class labels; AMCL losses are evaluated by :class:`~amcl_lab.amcl.AMCLModel` on the head
    stacks (its temperature network, if any, is a parameter of this module).

    ``gather_distributed=True`` (set by :func:`train` under a process group) passes
    ``gather_distributed=True`` to every loss that takes it (NT-Xent, InfoNCE, SupCon, Barlow
    Twins, the AMCL NT-Xent/InfoNCE/Barlow Twins with a constant or a learned temperature):
    the rows are then this rank's shard and the negatives (or batch statistics) those of the
    global batch (:mod:`amcl_lab.distributed`).  A learned temperature is computed on the
    same gathered rows (:class:`~amcl_lab.amcl.AMCLModel`); for Barlow Twins the network's
    input width is then the global batch size.  The other losses are evaluated on the local
    shard (AMCL SimSiam is per sample and needs no gather); a ``loss_options`` entry
    ``gather_distributed=False`` opts out.
    """

    def __init__(self, config: TrainConfig, *, gather_distributed: bool = False) -> None:
        super().__init__()
        fn = "Objective"
        self.spec = OBJECTIVES[config.loss]
        self.supervised = config.supervised
        options = {**self.spec.fixed, **_parse_options(fn, "loss_options", config.loss_options)}
        takes = self.spec.fn is not None and (
            "gather_distributed" in inspect.signature(self.spec.fn).parameters
        )
        if gather_distributed and takes:
            options.setdefault("gather_distributed", True)
        self.amcl: AMCLModel | None = None
        if self.spec.kind == "amcl":
            self.amcl = _amcl_model(config, options)
            self.kwargs: dict[str, Any] = {}
            return
        if self.spec.fn is not None and "temperature" in inspect.signature(self.spec.fn).parameters:
            options.setdefault("temperature", config.temperature)
        if self.spec.fn is not None:
            try:
                inspect.signature(self.spec.fn).bind_partial(**options)
            except TypeError as error:
                params = inspect.signature(self.spec.fn).parameters.values()
                keywords = [p.name for p in params if p.default is not inspect.Parameter.empty]
                raise ValueError(
                    f"{fn}: bad loss_options for {config.loss!r} ({error}); keywords of "
                    f"{self.spec.fn.__name__}: {', '.join(keywords)}"
                ) from None
        self.kwargs = options

    def forward(self, out: NetworkOutput, views: int, labels: Tensor) -> Tensor:
        kind, fn, kw = self.spec.kind, self.spec.fn, self.kwargs
        if kind == "ce":
            assert out.logits is not None  # guaranteed by build_network
            return F.cross_entropy(out.logits, labels.repeat(views))
        assert out.embeddings is not None
        c, rows, d = out.embeddings.shape
        z = out.embeddings.reshape(c, views, rows // views, d)  # (C, V, N, D)
        if kind == "amcl":
            assert self.amcl is not None
            return self.amcl(*z.unbind(dim=1))
        if kind == "pairwise":
            pairs = list(itertools.combinations(range(views), 2))
            total = sum(fn(z[h, a], z[h, b], **kw) for a, b in pairs for h in range(c))
            return total / len(pairs)
        per_image = z.permute(0, 2, 1, 3)  # (C, N, V, D)
        if kind == "labels":
            targets = labels if self.supervised else None  # None: instance ids (global if gathered)
            return sum(fn(per_image[h], targets, **kw) for h in range(c))
        return sum(fn(per_image[h], **kw) for h in range(c))


def _amcl_model(config: TrainConfig, options: dict[str, Any]) -> AMCLModel:
    temperature: PairTemperature | float = config.temperature
    if config.adaptive_temperature:
        # Barlow Twins compares channel vectors across the batch (amcl.md section 5): those
        # of the global batch when gathered, of the local shard otherwise
        batch = config.batch_size
        if not options.get("gather_distributed", False):
            batch //= distributed.world_size()
        dim = batch if config.loss == "amcl_barlow_twins" else config.proj_dim
        temperature = PairTemperature(dim)
    predictor = None
    if config.loss == "amcl_simsiam":
        predictor = MultiHeadProjector(
            config.proj_dim, config.proj_hidden, config.proj_dim, heads=config.heads
        )
    return AMCLModel(
        nn.Identity(), nn.Identity(), temperature, config.loss, predictor=predictor, **options
    )


# --- model and optimiser ---------------------------------------------------------------------


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


#: Optimiser names; ``sam``/``asam``/``saf``/``mesa`` come from :mod:`amcl_lab.optim`.
OPTIMIZERS = ("sgd", "adamw", "sam", "asam", "saf", "mesa")
SCHEDULES = ("cosine", "constant")


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
class _Optimisation:
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    two_pass: bool  # SAM/ASAM: a second forward/backward at the perturbed weights
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
) -> _Optimisation:
    """Optimiser, LR scheduler and the SAF/MESA loss terms of ``config``.

    ``samples`` (training images: the SAF buffer's rows) and ``classes`` size SAF's buffer.
    ``gather_distributed`` makes SAF write the logits of every rank into its buffer
    (:class:`~amcl_lab.optim.SAF`; set by :func:`train` under a process group).
    """
    fn = "build_optimisation"
    params = [*network.parameters(), *objective.parameters()]
    options = _parse_options(fn, "optimizer_options", config.optimizer_options)
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
    return _Optimisation(
        optimizer,
        scheduler,
        two_pass=name in ("sam", "asam"),
        saf=extra if name == "saf" else None,
        mesa=extra if name == "mesa" else None,
        logits=logits,
    )


# --- data order and seeds ----------------------------------------------------------------------


def derive_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (NumPy ``SeedSequence``), e.g. (seed, step, stream)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> 1)


def _generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=_generator(seed, epoch, _STREAM_SHUFFLE))


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """Dataset rows of ``step``: epochs are fresh permutations, the last partial batch dropped."""
    per_epoch = n // batch_size
    epoch, position = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[position * batch_size : (position + 1) * batch_size]


@functools.lru_cache(maxsize=2)
def _cached_dataset(name: str, data_dir: str) -> Split:
    return load_dataset(name, data_dir or None)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else as ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


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
        order = torch.randperm(len(data), generator=_generator(config.seed, _STREAM_SUBSET))
        rows = order[:keep].sort().values
        data = ImageData(
            data.name, data.images[rows], data.labels[rows], data.classes, data.max_value
        )
    clean = data.labels
    if config.label_noise > 0.0:
        gen = _generator(config.seed, _STREAM_NOISE)
        labelled = (clean >= 0).nonzero().squeeze(1)
        count = round(config.label_noise * labelled.numel())
        flip = labelled[torch.randperm(labelled.numel(), generator=gen)[:count]]
        classes = len(data.classes)
        noisy = clean.clone()
        noisy[flip] = (clean[flip] + torch.randint(1, classes, (count,), generator=gen)) % classes
        data = ImageData(data.name, data.images, noisy, data.classes, data.max_value)
    return data, clean


# --- evaluation --------------------------------------------------------------------------------


@torch.no_grad()
def extract(
    network: Network, data: ImageData, device: torch.device, batch: int = 1024
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Features ``(N, F)``, first-head embeddings ``(N, D)`` and logits, in eval mode."""
    was_training = network.training
    network.eval()
    feats, embs, logits = [], [], []
    for start in range(0, len(data), batch):
        out = network(data.batch(torch.arange(start, min(start + batch, len(data))), device))
        feats.append(out.features.float())
        if out.embeddings is not None:
            embs.append(out.embeddings[0].float())
        if out.logits is not None:
            logits.append(out.logits.float())
    network.train(was_training)
    return (
        torch.cat(feats),
        torch.cat(embs) if embs else None,
        torch.cat(logits) if logits else None,
    )


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    steps: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    r"""Test accuracy of multinomial logistic regression on frozen features.

    Features are standardised with the training mean and standard deviation; the weights
    start at zero and minimise :math:`\mathrm{CE} + \lambda\lVert W\rVert^2` (``weight_decay``
    :math:`\lambda`) by full-batch L-BFGS with a strong-Wolfe line search for ``steps``
    iterations.  The problem is convex and the start fixed, so the result is deterministic.
    The linear evaluation protocol of Chen et al. 2020 (arXiv:2002.05709, Section 4).

    Args:
        train_x, test_x: ``(N, F)`` float features.
        train_y, test_y: ``(N,)`` int64 labels in ``[0, K)``.
        steps: L-BFGS iterations.
        weight_decay: L2 penalty on the weights (not the bias).

    Returns:
        Accuracy on ``(test_x, test_y)`` in [0, 1].
    """
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    head = LinearClassifier(xs.shape[1], classes).to(xs.device)
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xs), train_y) + weight_decay * head.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((head(xt).argmax(dim=1) == test_y).float().mean())


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    r"""Test accuracy of the weighted k-NN classifier on cosine similarity.

    Each test point takes its ``k`` most similar training points (cosine similarity
    :math:`s`, ``k`` capped at the training size); class :math:`c` scores
    :math:`\sum_{j \in \mathrm{kNN}, y_j = c} \exp(s_j / t)`, the prediction is the top
    score.  The monitor of Wu et al. 2018 (arXiv:1805.01978) used by the contrastive2021 and
    AMCL code with ``k = 200``, ``t = 0.1``.
    """
    a = F.normalize(train_x, dim=1)
    b = F.normalize(test_x, dim=1)
    k = min(k, a.shape[0])
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, b.shape[0], chunk):
        sim = b[start : start + chunk] @ a.T
        top, index = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=sim.device, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[index], torch.exp(top / temperature))
        correct += int((votes.argmax(dim=1) == test_y[start : start + chunk]).sum())
    return correct / b.shape[0]


class HeldOut:
    """The held-out (test) split as the geometry hooks see it.

    ``features`` ``(N, F)``: encoder output; ``embeddings`` ``(N, D)``: first projection
    head (the features when there is no projector); ``labels`` ``(N,)``;
    :attr:`view_pair` ``(2, N, D)``: embeddings of two augmented views of every image
    (computed on first use, with a generator fixed by the run's seed and step).
    """

    def __init__(
        self,
        features: Tensor,
        embeddings: Tensor,
        labels: Tensor,
        views: Callable[[], Tensor],
    ) -> None:
        self.features, self.embeddings, self.labels = features, embeddings, labels
        self._views = views

    @cached_property
    def view_pair(self) -> Tensor:
        return self._views()


#: A geometry hook: held-out data -> named scalar metrics.
EvalHook = Callable[[HeldOut], Mapping[str, float]]


def _simplex(h: HeldOut) -> dict[str, float]:
    report = metrics.simplex_report(h.embeddings, h.labels)
    return {
        "simplex_distance": float(report.simplex_distance),
        "simplex_max_cosine_gap": float(report.max_cosine_gap),
        "nc1": float(report.nc1),
    }


#: Geometry metrics selectable by name in ``TrainConfig.geometry`` (:mod:`amcl_lab.metrics`),
#: computed on the held-out split.
GEOMETRY: dict[str, EvalHook] = {
    "alignment": lambda h: {"alignment": float(metrics.alignment(*h.view_pair))},
    "uniformity": lambda h: {"uniformity": float(metrics.uniformity(h.embeddings))},
    "tolerance": lambda h: {"tolerance": float(metrics.tolerance(h.embeddings, h.labels))},
    "effective_rank": lambda h: {"effective_rank": float(metrics.effective_rank(h.features))},
    "simplex": _simplex,
}


def evaluate(
    network: Network,
    split: Split,
    config: TrainConfig,
    device: torch.device,
    step: int,
    hooks: Sequence[EvalHook] = (),
    training: tuple[ImageData, Tensor] | None = None,
) -> dict[str, float]:
    """Probe, k-NN and classifier accuracies plus the geometry metrics of ``config``.

    ``training`` is :func:`training_set`'s result (computed when omitted): probes and k-NN
    fit the labelled training images with their clean labels; ``train_accuracy`` scores the
    classifier against the labels training used (noisy ones included).  Supervised runs
    without a classifier (SupCon) score the nearest-class-mean classifier of their first-head
    embeddings instead (:func:`nearest_mean_accuracy`, Graf et al.'s "explicit linear" head).
    """
    data, clean = training if training is not None else training_set(split, config)
    labelled = clean >= 0  # STL-10's unlabelled images serve training only
    train = ImageData(
        data.name, data.images[labelled], data.labels[labelled], data.classes, data.max_value
    )
    f_train, e_train, logits_train = extract(network, train, device)
    f_test, e_test, logits_test = extract(network, split.test, device)
    y_train, y_test = clean[labelled].to(device), split.test.labels.to(device)
    out = {
        "linear_probe": linear_probe(
            f_train,
            y_train,
            f_test,
            y_test,
            steps=config.probe_steps,
            weight_decay=config.probe_weight_decay,
        ),
        "knn": knn_accuracy(
            f_train, y_train, f_test, y_test, k=config.knn_k, temperature=config.knn_temperature
        ),
    }
    if logits_train is not None and logits_test is not None:
        fitted = train.labels.to(device)
        out["train_accuracy"] = float((logits_train.argmax(1) == fitted).float().mean())
        out["test_accuracy"] = float((logits_test.argmax(1) == y_test).float().mean())
    elif config.supervised and e_train is not None:
        fitted = train.labels.to(device)
        out["train_accuracy"] = nearest_mean_accuracy(e_train, fitted, split.num_classes)
    hooks = [*(GEOMETRY[name] for name in config.geometry), *hooks]
    if hooks:
        aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)

        def views() -> Tensor:
            gen = _generator(config.seed, step, _STREAM_EVAL)
            x = split.test.batch(None, device)
            pair = aug.views(x, 2, gen)
            return torch.stack([_embed(network, p) for p in pair])

        held = HeldOut(f_test, e_test if e_test is not None else f_test, y_test, views)
        for hook in hooks:
            out.update({k: float(val) for k, val in hook(held).items()})
    return out


@torch.no_grad()
def nearest_mean_accuracy(z: Tensor, labels: Tensor, classes: int) -> float:
    r"""Accuracy on ``labels`` of the nearest-class-mean classifier of the normalised ``z``.

    With :math:`u_i = z_i / \lVert z_i\rVert` and class means :math:`\mu_c` of the
    :math:`u_i` labelled :math:`c`, sample :math:`i` is predicted
    :math:`\arg\max_c \langle u_i, \mu_c\rangle`: the linear head whose rows are the class
    means ("explicit linear" in Graf et al. 2021, arXiv:2102.08817), i.e. how well a
    classifier-free embedding (SupCon) fits the labels it was trained on.

    Args:
        z: ``(N, D)`` embeddings.
        labels: ``(N,)`` int64 labels in ``[0, classes)``.
        classes: number of classes.
    """
    u = F.normalize(z.float(), dim=1)
    sums = torch.zeros(classes, u.shape[1], device=u.device).index_add_(0, labels, u)
    counts = torch.bincount(labels, minlength=classes).clamp_min(1).to(u.dtype)
    means = sums / counts[:, None]
    return float(((u @ means.T).argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def _embed(network: Network, x: Tensor) -> Tensor:
    was_training = network.training
    network.eval()
    out = network(x)
    network.train(was_training)
    return (out.embeddings[0] if out.embeddings is not None else out.features).float()


@dataclass
class Run:
    """One run folder ``<out>/<experiment>/<run_id>/`` and what a run writes into it.

    Under a process group (``torchrun``) every rank holds the same ``Run``; only rank 0
    writes into the folder, and every rank reads its checkpoints on resume (one node, or a
    filesystem shared by all nodes).
    """

    experiment: str
    run_id: str
    dir: Path
    seeds: tuple[int, ...]
    device: torch.device
    resume: bool = False
    quiet: bool = False

    @property
    def config_path(self) -> Path:
        return self.dir / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.dir / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    @property
    def figures_dir(self) -> Path:
        return self.dir / "figures"

    def checkpoint(self, tag: str) -> Path:
        """Checkpoint file of the training run ``tag`` (e.g. ``"seed0"``)."""
        return self.dir / "checkpoints" / f"{tag}.pt"

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed and synced; rank 0 only)."""
        if not distributed.is_main():
            return
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(json_safe(record), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_metrics(self, tag: str, step: int) -> None:
        """Drop the lines of ``tag`` after ``step`` (and any partial line) before resuming."""
        if not distributed.is_main() or not self.metrics_path.exists():
            return
        kept = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("run") == tag and record.get("step", 0) > step:
                continue
            kept.append(line)
        with atomic_path(self.metrics_path) as tmp:
            tmp.write_text("".join(f"{line}\n" for line in kept))


def _timestamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


def open_run(
    out: str | Path,
    experiment: str,
    config: Any,
    *,
    preset: str,
    overrides: Sequence[str] = (),
    seeds: Sequence[int],
    run_id: str | None = None,
    resume: bool = False,
    quiet: bool = False,
) -> Run:
    """Create (or, with ``resume``, reopen) the run folder and write ``config.json``.

    A fresh run gets ``run_id`` or ``<preset>-<UTC timestamp>`` and refuses an existing
    folder.  With ``resume``, ``run_id`` names the run to continue; without it the most
    recent run of ``experiment`` whose resolved config equals ``config`` is continued.

    Under a process group, rank 0 creates (or finds) the folder and every rank gets the
    same :class:`Run`, or the same error.

    Raises:
        ValueError: an existing folder for a fresh run, no run to resume, or a resumed run
            whose stored config differs from ``config`` (the differing keys are listed).
    """
    return distributed.on_main(
        _open_run,
        out,
        experiment,
        config,
        preset=preset,
        overrides=overrides,
        seeds=seeds,
        run_id=run_id,
        resume=resume,
        quiet=quiet,
    )


def _open_run(
    out: str | Path,
    experiment: str,
    config: Any,
    *,
    preset: str,
    overrides: Sequence[str],
    seeds: Sequence[int],
    run_id: str | None,
    resume: bool,
    quiet: bool,
) -> Run:
    root = Path(out) / experiment
    resolved = config_dict(config)
    if resume:
        folder = _resume_folder(root, resolved, run_id)
        stored = json.loads((folder / "config.json").read_text())["config"]
        diff = sorted(k for k in set(stored) | set(resolved) if stored.get(k) != resolved.get(k))
        if diff:
            raise ValueError(
                f"--resume: {folder} was run with a different config; differing keys: "
                + ", ".join(
                    f"{k} (stored {stored.get(k)!r}, now {resolved.get(k)!r})" for k in diff
                )
            )
        device = resolve_device(config.device)
        return Run(experiment, folder.name, folder, tuple(seeds), device, True, quiet)
    run_id = run_id or f"{preset}-{_timestamp()}"
    folder = root / run_id
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(
            f"run folder {folder} already exists; pass --resume to continue it or choose "
            "another --run-id"
        )
    device = resolve_device(config.device)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(
        folder / "config.json",
        {
            "experiment": experiment,
            "run_id": run_id,
            "preset": preset,
            "overrides": list(overrides),
            "seeds": list(seeds),
            "config": resolved,
            "device": str(device),
            "versions": package_versions(),
            "git_revision": git_revision(),
            "command": sys.argv,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return Run(experiment, run_id, folder, tuple(seeds), device, False, quiet)


def _resume_folder(root: Path, resolved: dict[str, Any], run_id: str | None) -> Path:
    if run_id is not None:
        folder = root / run_id
        if not (folder / "config.json").is_file():
            existing = sorted(p.name for p in root.glob("*/config.json")) if root.is_dir() else []
            raise ValueError(
                f"--resume: no run {run_id!r} under {root}; existing runs: "
                f"{', '.join(p.parent.name for p in map(Path, existing)) or 'none'}"
            )
        return folder
    candidates = []
    for path in sorted(root.glob("*/config.json")) if root.is_dir() else []:
        stored = json.loads(path.read_text())
        if stored.get("config") == resolved:
            candidates.append((stored.get("created", ""), path.parent))
    if not candidates:
        raise ValueError(
            f"--resume: no run under {root} has this resolved config; pass --run-id to name "
            "the run to continue (its config must match)"
        )
    return max(candidates)[1]


# --- checkpoints -------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    # the legacy global NumPy state is what third-party code draws from; save it as is
    np_state = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))  # noqa: NPY002
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history``: one record per evaluation (``step``, ``epoch``, ``train_loss`` = mean loss
    since the previous evaluation, ``linear_probe``, ``knn``, classifier and geometry
    metrics); ``network`` and ``objective``: the trained modules (on the run's device).
    """

    tag: str
    config: TrainConfig
    history: list[dict[str, Any]]
    network: Network
    objective: Objective

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation record."""
        return self.history[-1]

    def rows(self, **condition: Any) -> list[dict[str, Any]]:
        """The history as tidy rows ``{**condition, seed, step, epoch, metric, value}``."""
        return [
            {
                **condition,
                "seed": self.config.seed,
                "step": r["step"],
                "epoch": r["epoch"],
                "metric": k,
                "value": val,
            }
            for r in self.history
            for k, val in r.items()
            if k not in ("run", "seed", "step", "epoch")
        ]


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def train(
    config: TrainConfig,
    run: Run | None = None,
    tag: str = "train",
    hooks: Sequence[EvalHook] = (),
) -> TrainResult:
    """Train one model as ``config`` says, checkpointing into ``run`` and resuming from it.

    With a ``run``, evaluations are appended to its ``metrics.jsonl`` and a checkpoint
    ``checkpoints/<tag>.pt`` is written every ``checkpoint_every`` steps and at the end.  If
    the run is resumed and the checkpoint exists, training continues from it (or, for a
    finished run, the stored model and history are returned without training).

    Evaluations happen before the first step (the randomly initialised network), every
    ``eval_every`` steps and after the last step.

    Data parallelism: under a process group of W ranks (``torchrun``,
    :mod:`amcl_lab.distributed`) every rank draws the same global batch of ``batch_size``
    images and their views from the ``(seed, step)`` order and keeps its contiguous block of
    ``batch_size / W`` (the equivalent of a ``DistributedSampler`` over that order); the
    network (and a loss with parameters) is wrapped in ``DistributedDataParallel``;
    contrastive losses gather their negatives over ranks (:class:`Objective`) and SAF its
    logits, so the gradients are those of the single-process loss on the global batch,
    BatchNorm statistics aside (per-rank batches; ``SyncBatchNorm`` is CUDA-only); SAM
    perturbs with each rank's own gradient (m-sharpness, :class:`~amcl_lab.optim.SAM`).
    Rank 0 evaluates (the record is broadcast, so every rank returns the same history),
    logs and writes checkpoints; ``train_loss`` is the mean over ranks; every rank resumes
    from the same checkpoint.

    Raises:
        ValueError: an inconsistent config (e.g. a batch larger than the training set,
            supervised training on unlabelled images, a batch not divisible by the number
            of processes), or a checkpoint of another config.
        FloatingPointError: the training loss became NaN or infinite.
    """
    fn = "train"
    device = run.device if run is not None else resolve_device(config.device)
    split = _cached_dataset(config.dataset, config.data_dir)
    training = training_set(split, config)
    n_train = len(training[0])
    if config.batch_size > n_train:
        raise ValueError(
            f"{fn}: batch_size {config.batch_size} exceeds the {n_train} training images "
            f"of {config.dataset!r} (train_fraction={config.train_fraction})"
        )
    if config.supervised and bool((training[1] < 0).any()):
        raise ValueError(f"{fn}: supervised training needs labels; {config.dataset!r} has none")
    parallel, ranks = distributed.is_active(), distributed.world_size()
    if config.batch_size % ranks:
        raise ValueError(
            f"{fn}: batch_size {config.batch_size} must be divisible by the {ranks} processes "
            "(each takes an equal shard of every batch)"
        )
    per_epoch = n_train // config.batch_size
    torch.manual_seed(config.seed)
    network = build_network(config, split).to(device)
    objective = Objective(config, gather_distributed=parallel).to(device)
    opt = build_optimisation(
        config, network, objective, n_train, split.num_classes, gather_distributed=parallel
    )
    for module in opt.extras().values():
        module.to(device)
    images = training[0].to(device)
    aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)

    step, history = 0, []
    loss_sum, loss_count = torch.zeros((), device=device, dtype=torch.float64), 0
    ckpt = run.checkpoint(tag) if run is not None else None
    if ckpt is not None and distributed.on_main(ckpt.exists):  # rank 0 decides for all
        if not run.resume:  # type: ignore[union-attr]
            raise ValueError(f"{fn}: {ckpt} exists; resume the run instead of overwriting it")
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state["config"] != config_dict(config):
            raise ValueError(f"{fn}: {ckpt} was written by a different config")
        network.load_state_dict(state["network"])
        objective.load_state_dict(state["objective"])
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        for name, module in opt.extras().items():
            module.load_state_dict(state["extras"][name])
        _set_rng_state(state["rng"])
        step, history = state["step"], state["history"]
        loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        run.truncate_metrics(tag, step)  # type: ignore[union-attr]
        if state["done"]:
            return TrainResult(tag, config, history, network, objective)
    elif run is not None and run.resume:
        run.truncate_metrics(tag, -1)  # killed before its first checkpoint: start over
    model, loss_fn = network, objective  # what the steps call: DDP wrappers when parallel
    if parallel:
        model = DistributedDataParallel(network)
        if any(p.requires_grad for p in objective.parameters()):
            loss_fn = DistributedDataParallel(objective)

    def check_finite(at: int) -> float:
        nonlocal loss_sum
        if parallel:  # the mean over ranks, the same on every rank (and in checkpoints)
            loss_sum = distributed.all_reduce_sum(loss_sum) / ranks
        mean_loss = float(loss_sum) / loss_count if loss_count else float("nan")
        if loss_count and not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"{fn}: the training loss of {tag!r} became non-finite before step {at} "
                f"(loss={config.loss!r}, lr={config.lr}); lower the learning rate or check "
                "the loss options"
            )
        return mean_loss

    def record(at: int) -> None:
        nonlocal loss_sum, loss_count
        mean_loss = check_finite(at)
        entry = {"run": tag, "seed": config.seed, "step": at, "epoch": at / per_epoch}
        entry["train_loss"] = mean_loss
        entry.update(
            distributed.on_main(evaluate, network, split, config, device, at, hooks, training)
        )
        history.append(entry)
        loss_sum, loss_count = torch.zeros_like(loss_sum), 0
        if run is not None:
            run.log(entry)

    def checkpoint(done: bool) -> None:
        if ckpt is None or not distributed.is_main():
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config_dict(config),
            "step": step,
            "done": done,
            "network": network.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "extras": {k: m.state_dict() for k, m in opt.extras().items()},
            "rng": _rng_state(),
            "history": history,
            "loss_sum": loss_sum,
            "loss_count": loss_count,
        }
        _save_checkpoint(ckpt, payload)

    if step == 0 and not history:
        record(0)
    network.train()
    quiet = run.quiet if run is not None else False
    silent = quiet or not distributed.is_main()
    bar = tqdm(
        total=config.steps, initial=step, desc=tag, disable=True if silent else None, leave=False
    )
    while step < config.steps:
        index = batch_indices(n_train, config.batch_size, config.seed, step)
        x = images.batch(index, device)
        labels = images.labels[index.to(device)]
        views = aug.views(x, config.views, _generator(config.seed, step, _STREAM_AUGMENT))
        if parallel:  # this rank's block of the global batch (views drawn as for one process)
            index, labels = distributed.shard(index), distributed.shard(labels)
            views = distributed.shard(views, dim=1)
        loss = _step(model, loss_fn, opt, views, labels, index, step // per_epoch)
        loss_sum += loss.detach().double()
        loss_count += 1
        opt.scheduler.step()
        step += 1
        bar.update(1)
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            record(step)
        if step == config.steps or step % config.checkpoint_every == 0:
            check_finite(step)  # never checkpoint diverged weights
            checkpoint(step == config.steps)
    bar.close()
    distributed.sync_buffers(network)  # rank 0's BatchNorm statistics, as in its checkpoint
    return TrainResult(tag, config, history, network, objective)


def _step(
    network: Network | DistributedDataParallel,
    objective: Objective | DistributedDataParallel,
    opt: _Optimisation,
    views: Tensor,
    labels: Tensor,
    index: Tensor,
    epoch: int,
) -> Tensor:
    """One optimiser step on ``views`` ``(V, B, C, H, W)``; returns the loss at the weights.

    SAM/ASAM take the second forward/backward at the perturbed weights with BatchNorm
    statistics frozen (``docs/optim-api.md``); SAF and MESA add their distillation term on
    the first view's logits (SAF keyed by the images' dataset rows, its epoch counter being
    ``epoch``), and MESA's teacher is updated after every step.  Under DDP, SAM's first pass
    runs in ``no_sync``: each rank perturbs with its own gradient (m-sharpness).
    """
    v_count, b = views.shape[:2]
    flat = views.reshape(v_count * b, *views.shape[2:])
    first_pass = distributed.no_sync(network, objective) if opt.two_pass else nullcontext()
    with first_pass:
        out = network(flat)
        loss = objective(out, v_count, labels)
        if opt.saf is not None or opt.mesa is not None:
            assert out.logits is not None  # build_optimisation requires a classifier
            first = out.logits[:b]
            if opt.saf is not None:
                loss = loss + opt.saf(first, index.to(first.device), epoch)
            if opt.mesa is not None:
                loss = loss + opt.mesa(first, views[0], epoch)
        loss.backward()
    if opt.two_pass:
        opt.optimizer.first_step(zero_grad=True)  # type: ignore[attr-defined]
        with frozen_bn_stats(network):
            objective(network(flat), v_count, labels).backward()
        opt.optimizer.second_step(zero_grad=True)  # type: ignore[attr-defined]
    else:
        opt.optimizer.step()
        opt.optimizer.zero_grad(set_to_none=True)
    if opt.mesa is not None:
        opt.mesa.update(opt.logits)
    return loss
