"""The names a :class:`~amcl_lab.engine.config.TrainConfig` may hold, and what each means.

* :data:`OBJECTIVES`: loss name -> :class:`ObjectiveSpec` (how the training step calls it);
* :data:`GEOMETRY`: held-out metric name -> :data:`EvalHook` on a :class:`HeldOut` split;
* :data:`OPTIMIZERS` and :data:`SCHEDULES`: optimiser and learning-rate schedule names;
* :data:`TEMPERATURE_MODELS`: the learned temperatures of the AMCL losses.

The tables sit at the bottom of the engine: the config validates against them, and the
modules that act on a config (:mod:`.objectives`, :mod:`.evaluation`, :mod:`.build`) look
names up in them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from .. import losses, metrics, optim, registry
from ..amcl import AMCL_LOSSES

__all__ = [
    "GEOMETRY",
    "OBJECTIVES",
    "OPTIMIZERS",
    "OPTIMIZER_TARGETS",
    "SCHEDULES",
    "TEMPERATURE_MODELS",
    "EvalHook",
    "HeldOut",
    "ObjectiveSpec",
]

#: Optimiser names; ``sam``/``asam``/``saf``/``mesa`` come from :mod:`amcl_lab.optim`.
OPTIMIZERS = ("sgd", "adamw", "sam", "asam", "saf", "mesa")
#: What each optimiser's ``optimizer_options`` are passed to (their flags must be bools).
OPTIMIZER_TARGETS: dict[str, tuple[Callable[..., Any], ...]] = {
    "sgd": (torch.optim.SGD,),
    "adamw": (torch.optim.AdamW,),
    "sam": (optim.SAM, torch.optim.SGD),
    "asam": (optim.SAM, torch.optim.SGD),
    "saf": (optim.SAF,),
    "mesa": (optim.MESA,),
}
SCHEDULES = ("cosine", "constant")
#: Learned temperatures of the AMCL losses: AMCL's pair network, or one learned scalar.
TEMPERATURE_MODELS = ("pair", "scalar")


@dataclass(frozen=True)
class ObjectiveSpec:
    """How :class:`~amcl_lab.engine.objectives.Objective` calls a loss.

    ``kind``: ``"pairwise"`` (``fn(z_a, z_b)`` on two views, averaged over view pairs),
    ``"labels"`` (``fn(features (N, V, D), labels)``), ``"multiview"``
    (``fn(views (N, V, D))``), ``"amcl"`` (through :class:`~amcl_lab.amcl.AMCLModel`),
    ``"moco"`` (``fn(queries, keys, queue)`` with keys from a momentum network and a queue of
    past keys, :class:`~amcl_lab.engine.objectives.MomentumQueue`), ``"ema_target"``
    (``fn(p_a, p_b, t_a, t_b)``: online predictions against the projections of an EMA target
    network, :class:`~amcl_lab.engine.objectives.MomentumNetwork`, as BYOL and MoCo v3) or
    ``"ce"`` (cross-entropy on the classifier's logits).  ``fixed`` are keyword arguments of
    every call (a registry variant's ``fixed_kwargs``, less a ``stop_gradient=False`` that
    only serves the registry's gradient checks).
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
            # entries registered without their stop-gradient (for gradcheck) train with it
            fixed = {k: v for k, v in spec.fixed_kwargs.items() if k != "stop_gradient"}
            table[name] = ObjectiveSpec(kinds[spec.inputs], spec.fn, fixed)
    table["multiview_barlow_twins"] = ObjectiveSpec("multiview", losses.multiview_barlow_twins)
    table["multiview_vicreg"] = ObjectiveSpec("multiview", losses.multiview_vicreg)
    table["invariance_orthogonality"] = ObjectiveSpec(
        "multiview", losses.invariance_orthogonality_loss
    )
    for name, fn in AMCL_LOSSES.items():
        if name.startswith("amcl_"):
            table[name] = ObjectiveSpec("amcl", fn)
    table["moco"] = ObjectiveSpec("moco", losses.info_nce)
    table["amcl_moco"] = ObjectiveSpec("moco", losses.amcl_moco)
    # an EMA target network and a predictor: BYOL's loss (its 2 - 2cos scale) and MoCo v3's
    table["byol"] = ObjectiveSpec("ema_target", losses.negative_cosine, {"convention": "byol"})
    table["moco_v3"] = ObjectiveSpec("ema_target", losses.moco_v3)
    table["ce"] = ObjectiveSpec("ce", None)
    return table


#: Loss name -> :class:`ObjectiveSpec`: every two-view and SupCon loss of the registry
#: (VICReg, DCL and DCLW among them), the multi-view losses (``multiview_vicreg`` too), the
#: AMCL losses, MoCo (``"moco"``: InfoNCE against a queue; ``"amcl_moco"``: its AMCL form),
#: BYOL and MoCo v3 (``"byol"``, ``"moco_v3"``: an EMA target and a predictor) and ``"ce"``.
OBJECTIVES: dict[str, ObjectiveSpec] = _objectives()


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
        """``(2, N, D)`` embeddings of two augmented views of every image (first use)."""
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
