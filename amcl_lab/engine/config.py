r"""What a training run is: :class:`TrainConfig`, its ``--set`` overrides and its device.

A run is one frozen :class:`TrainConfig`: flat, commented defaults (the plain SimCLR-on-digits
setting), validated on construction, so a config that exists is a config that can train.
:func:`apply_overrides` applies strict ``key=value`` overrides (unknown keys and values of
the wrong type are errors); :func:`config_dict` is the JSON form stored in ``config.json``
and in every checkpoint.  The names a config may hold come from the tables
of :mod:`.catalog` (losses, geometry metrics, optimisers, schedules), datasets from
:data:`amcl_lab.data.DATASETS` and encoders from :data:`amcl_lab.models.ENCODERS`.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import _validation as v
from ..data import DATASETS, Augmentation
from ..models import ENCODERS
from .catalog import (
    GEOMETRY,
    OBJECTIVES,
    OPTIMIZER_TARGETS,
    OPTIMIZERS,
    SCHEDULES,
    TEMPERATURE_MODELS,
)

__all__ = [
    "TrainConfig",
    "apply_overrides",
    "check_option_types",
    "config_dict",
    "parse_options",
    "resolve_device",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; experiment configs subclass it and add fields.

    Field groups (each default is the plain SimCLR-on-digits setting):

    * data: ``dataset``, ``data_dir``, ``augment``, ``crop_min_scale``, ``views``,
      ``batch_size``, ``train_fraction``, ``label_noise`` (see :func:`training_set`);
    * model: ``encoder``, ``width``, ``proj_hidden``, ``proj_dim``, ``heads``;
    * objective: ``loss``, ``temperature``, ``supervised``, ``adaptive_temperature``,
      ``temperature_model``, ``tau_min``, ``tau_max``, ``loss_options``, for MoCo
      ``queue_size``, and for MoCo, BYOL and MoCo v3 ``key_momentum``;
    * optimisation: ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``rho``,
      ``optimizer_options``, ``schedule``, ``warmup_steps``, ``steps``, ``grad_clip``;
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
    adaptive_temperature: bool = True  # AMCL losses: a learned temperature vs `temperature`
    temperature_model: str = "pair"  # learned: pair (AMCL's PairTemperature) | scalar (control)
    tau_min: float = 1e-5  # bounds of a learned temperature (the second AMCL release's)
    tau_max: float = 2.0
    loss_options: tuple[str, ...] = ()  # extra loss keywords, "key=value"
    queue_size: int = 4096  # MoCo losses: keys per head in the FIFO queue of negatives
    key_momentum: float = 0.99  # MoCo/BYOL/MoCo v3: EMA factor of the key/target network
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
    grad_clip: float = 0.0  # clip the global L2 norm of the gradients to this; 0 = off
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
        v.check_choice(fn, "temperature_model", self.temperature_model, TEMPERATURE_MODELS)
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
            ("queue_size", 1),
        ):
            v.check_int(fn, name, getattr(self, name), low=low)
        one_view = self.loss == "ce" or (self.supervised and OBJECTIVES[self.loss].kind == "labels")
        v.check_int(fn, "views", self.views, low=1 if one_view else 2)
        hints = typing.get_type_hints(type(self))
        largest = torch.finfo(torch.float32).max  # the weights and the losses are float32
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hints[f.name] is float and isinstance(value, float) and abs(value) > largest:
                raise ValueError(
                    f"{fn}: {f.name} must be at most {largest:.4g} in magnitude (the float32 "
                    f"range of the weights it is applied to), got {value!r}"
                )
        for name in ("temperature", "lr", "knn_temperature"):
            v.check_positive_float(fn, name, getattr(self, name))
        for name in ("momentum", "weight_decay", "rho", "probe_weight_decay", "grad_clip"):
            v.check_positive_float(fn, name, getattr(self, name), allow_zero=True)
        v.check_positive_float(fn, "tau_min", self.tau_min)
        v.check_positive_float(fn, "tau_max", self.tau_max)
        if self.tau_min >= self.tau_max:
            raise ValueError(
                f"{fn}: tau_min must be < tau_max, got tau_min={self.tau_min}, "
                f"tau_max={self.tau_max}"
            )
        if not 0.0 <= self.key_momentum < 1.0:
            raise ValueError(f"{fn}: key_momentum must be in [0, 1), got {self.key_momentum}")
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
        loss_options = parse_options(fn, "loss_options", self.loss_options)
        if OBJECTIVES[self.loss].fn is not None:
            check_option_types(fn, "loss_options", loss_options, OBJECTIVES[self.loss].fn)
        optimizer_options = parse_options(fn, "optimizer_options", self.optimizer_options)
        targets = OPTIMIZER_TARGETS[self.optimizer]
        check_option_types(fn, "optimizer_options", optimizer_options, *targets)

    @property
    def loss_kwargs(self) -> dict[str, Any]:
        """``loss_options`` as keyword arguments (values parsed as Python literals)."""
        return parse_options(type(self).__name__, "loss_options", self.loss_options)

    @property
    def optimizer_kwargs(self) -> dict[str, Any]:
        """``optimizer_options`` as keyword arguments (values parsed as Python literals)."""
        return parse_options(type(self).__name__, "optimizer_options", self.optimizer_options)


def parse_options(fn: str, name: str, options: Sequence[str]) -> dict[str, Any]:
    """``"key=value"`` entries as a dict: ``true``/``false`` in any case are bools, other values
    are parsed as Python literals, else kept as strings."""
    out: dict[str, Any] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"{fn}: {name} entries must look like 'key=value', got {item!r}")
        value = raw.strip()
        if value.lower() in ("true", "false"):
            out[key.strip()] = value.lower() == "true"
            continue
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            out[key.strip()] = value
    return out


def check_option_types(fn: str, name: str, options: dict[str, Any], *targets: Any) -> None:
    """Raise unless every option whose keyword has a bool default in ``targets`` is a bool.

    ``targets`` are the callables the options are passed to (a loss function, an optimiser
    class); a string such as ``'maybe'`` for a flag would otherwise be truthy.
    """
    for target in targets:
        try:
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue
        for key, value in options.items():
            flag = key in params and isinstance(params[key].default, bool)
            if flag and not isinstance(value, bool):
                raise ValueError(
                    f"{fn}: {name} entry {key}={value!r} must be true or false "
                    f"({key} is a flag of {getattr(target, '__name__', target)})"
                )


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _parse_value(fn: str, key: str, raw: str, current: Any, hint: Any) -> Any:
    """``raw`` converted to the type of the field (``hint``; ``current`` is its value)."""
    origin = typing.get_origin(hint)
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
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

    Values are parsed to the field's declared type: ints, floats, bools (``true``/``false``
    in any case, nothing else) and strings; tuples are comma-separated
    (``geometry=alignment,uniformity``; an empty value is the empty tuple), except the
    ``*_options`` tuples, whose ``key=value`` entries are separated by ``;``
    (``loss_options=beta=1e-4;mode=topk;k=10``; ``true``/``false`` in any case are bools
    there too, and a flag of the loss or optimiser given anything else is an error).

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
