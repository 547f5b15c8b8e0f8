"""Calling-convention adapters of the loss oracle.

An :class:`Adapter` maps a candidate's calling convention onto a reference loss's (stacked
embeddings plus labels, pre-normalised inputs, a loss object built from the
hyperparameters, another reduction, a peer's documented numerical floor);
:data:`ADAPTERS` holds the built-in ones by name and :func:`resolve_adapter` turns names,
``"a,b"`` compositions or adapter objects into one adapter checked against a reference.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..losses._common import l2_normalize
from ..registry import LossSpec
from ..samples import SampleInput
from .candidate import Candidate

#: Positional input names that hold embeddings (normalised by the ``prenormalized`` adapter).
EMBEDDING_INPUTS = ("z1", "z2", "query", "key", "queue", "features", "p1", "p2", "h1", "h2")


@dataclass(frozen=True)
class Adapter:
    """Maps a candidate's calling convention onto a reference's.

    Attributes:
        name: the key in :data:`ADAPTERS` (``"a+b"`` for a composition).
        description: one line for reports and ``--help``.
        wrap: ``wrap(candidate, spec)`` returns a callable with the reference's signature
            (``f(*sample.args, **sample.kwargs)``); ``None`` calls the candidate as it is.
        reference_kwargs: keyword arguments added to the *reference* call (for example
            ``reduction="sum"`` when the candidate sums over anchors).
        reference_transform: ``transform(value, dtype)`` applied to the reference's output
            to obtain the expected value for a candidate computing in ``dtype`` (for
            example a peer's documented numerical floor).
        signatures: the ``LossSpec.inputs`` tuples the adapter understands; ``None`` for any.
    """

    name: str
    description: str
    wrap: Callable[[Candidate, LossSpec], Candidate] | None = None
    reference_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reference_transform: Callable[[Tensor, torch.dtype], Tensor] | None = None
    signatures: tuple[tuple[str, ...], ...] | None = None

    def problem_with(self, spec: LossSpec) -> str | None:
        """Why this adapter cannot be used with ``spec`` (``None`` if it can)."""
        if self.signatures is not None and tuple(spec.inputs) not in self.signatures:
            wanted = " or ".join(str(s) for s in self.signatures)
            return (
                f"adapter {self.name!r} maps inputs {wanted}, but reference {spec.name!r} "
                f"takes {tuple(spec.inputs)}"
            )
        params = inspect.signature(spec.fn).parameters
        missing = [k for k in self.reference_kwargs if k not in params]
        if missing:
            return (
                f"adapter {self.name!r} passes {missing} to the reference, which "
                f"{spec.fn.__name__} does not accept"
            )
        return None

    def adapt(self, candidate: Candidate, spec: LossSpec) -> Candidate:
        """The candidate as a callable with the reference's signature."""
        return candidate if self.wrap is None else self.wrap(candidate, spec)

    def expected(self, spec: LossSpec, sample: SampleInput, dtype: torch.dtype) -> Tensor:
        """The reference's value for ``sample`` as this adapter's candidate should return it."""
        value = spec(*sample.args, **{**sample.kwargs, **self.reference_kwargs})
        if self.reference_transform is not None:
            value = self.reference_transform(value, dtype)
        return value


def _two_view_labels(candidate: Candidate, spec: LossSpec) -> Candidate:
    if tuple(spec.inputs) == ("z1", "z2"):

        def call_views(z1: Tensor, z2: Tensor, **kwargs: Any) -> Any:
            labels = torch.arange(z1.shape[0], device=z1.device).repeat(2)
            return candidate(torch.cat([z1, z2]), labels, **kwargs)

        return call_views

    def call_features(features: Tensor, labels: Tensor | None = None, **kwargs: Any) -> Any:
        n, views, dim = features.shape
        if labels is None:
            labels = torch.arange(n, device=features.device)
        # view-major, like the reference's item order: item r is view r // N of sample r % N
        flat = features.transpose(0, 1).reshape(views * n, dim)
        return candidate(flat, labels.repeat(views), **kwargs)

    return call_features


def _module(candidate: Candidate, spec: LossSpec) -> Candidate:
    def call(*args: Any, **kwargs: Any) -> Any:
        return candidate(**kwargs)(*args)

    return call


def _views_stacked(candidate: Candidate, spec: LossSpec) -> Candidate:
    def call(z1: Tensor, z2: Tensor, **kwargs: Any) -> Any:
        return candidate(torch.stack([z1, z2], dim=1), **kwargs)

    return call


def _prenormalized(candidate: Candidate, spec: LossSpec) -> Candidate:
    embedded = {i for i, name in enumerate(spec.inputs) if name in EMBEDDING_INPUTS}

    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(
            l2_normalize(a) if i in embedded and isinstance(a, Tensor) else a
            for i, a in enumerate(args)
        )
        return candidate(*args, **kwargs)

    return call


def _log_floor(per_anchor: Tensor, dtype: torch.dtype) -> Tensor:
    # -log(p + tiny) with p = exp(-loss): pytorch-metric-learning adds finfo(dtype).tiny
    # inside the log of every positive pair (its losses/ntxent_loss.py, version 2.9.0; the
    # README's peer table and peers/peer_cases.py reproduce the cap).
    log_tiny = torch.tensor(math.log(torch.finfo(dtype).tiny), dtype=per_anchor.dtype)
    return -torch.logaddexp(-per_anchor, log_tiny.to(per_anchor.device)).mean()


_TWO_VIEW = (("z1", "z2"),)

#: The built-in adapters, by name.
ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in (
        Adapter("identity", "calls the candidate exactly like the reference"),
        Adapter(
            "embeddings_labels",
            "candidate(embeddings (M, D), labels (M,), **hyper): two views stacked with "
            "sample ids as labels, or SupCon features flattened view-major",
            wrap=_two_view_labels,
            signatures=(*_TWO_VIEW, ("features", "labels")),
        ),
        Adapter(
            "module",
            "the candidate is a loss class built from the hyperparameters: "
            "candidate(**hyper)(*tensors)",
            wrap=_module,
        ),
        Adapter(
            "views_stacked",
            "candidate(features (N, 2, D), **hyper) for [batch, views, dim] layouts",
            wrap=_views_stacked,
            signatures=_TWO_VIEW,
        ),
        Adapter(
            "prenormalized",
            "the candidate expects unit-norm rows: embeddings are L2-normalised before the call",
            wrap=_prenormalized,
        ),
        Adapter(
            "sum",
            "the candidate sums over anchors instead of averaging",
            reference_kwargs={"reduction": "sum"},
        ),
        Adapter(
            "per_anchor",
            "the candidate returns the per-anchor losses (reduction='none')",
            reference_kwargs={"reduction": "none"},
        ),
        Adapter(
            "pml_log_floor",
            "each per-anchor loss is -log(p + tiny) as in pytorch-metric-learning's NTXentLoss, "
            "so losses are capped at -log(finfo.tiny) (87.34 in float32)",
            reference_kwargs={"reduction": "none"},
            reference_transform=_log_floor,
            signatures=_TWO_VIEW,
        ),
    )
}


def _compose(adapters: Sequence[Adapter]) -> Adapter:
    """One adapter applying ``adapters`` from the outside in (the first sees the reference's
    arguments, the last calls the candidate)."""
    if len(adapters) == 1:
        return adapters[0]
    merged: dict[str, Any] = {}
    for a in adapters:
        clash = set(merged) & set(a.reference_kwargs)
        if clash:
            raise ValueError(f"adapters set the reference's {sorted(clash)} twice")
        merged.update(a.reference_kwargs)
    transforms = [a.reference_transform for a in adapters if a.reference_transform is not None]
    if len(transforms) > 1:
        raise ValueError("at most one adapter may transform the reference's value")
    signature_sets = [set(a.signatures) for a in adapters if a.signatures is not None]
    signatures = tuple(set.intersection(*signature_sets)) if signature_sets else None

    def wrap(candidate: Candidate, spec: LossSpec) -> Candidate:
        for a in reversed(adapters):
            candidate = a.adapt(candidate, spec)
        return candidate

    return Adapter(
        "+".join(a.name for a in adapters),
        "; ".join(a.description for a in adapters),
        wrap=wrap,
        reference_kwargs=merged,
        reference_transform=transforms[0] if transforms else None,
        signatures=signatures,
    )


def resolve_adapter(
    adapter: str | Adapter | Sequence[str | Adapter] | None, spec: LossSpec
) -> Adapter:
    """Turn ``adapter`` (a name, ``"a,b"``, an :class:`Adapter` or a sequence) into one adapter.

    Raises:
        ValueError: an unknown name, or an adapter that does not fit ``spec``.
    """
    if adapter is None:
        items: list[str | Adapter] = ["identity"]
    elif isinstance(adapter, (str, Adapter)):
        items = [adapter]
    else:
        items = list(adapter)
    resolved: list[Adapter] = []
    for item in items:
        if isinstance(item, Adapter):
            resolved.append(item)
            continue
        for name in filter(None, (part.strip() for part in str(item).split(","))):
            if name not in ADAPTERS:
                raise ValueError(
                    f"unknown adapter {name!r}; available: {', '.join(sorted(ADAPTERS))}"
                )
            resolved.append(ADAPTERS[name])
    if not resolved:
        resolved = [ADAPTERS["identity"]]
    combined = _compose(resolved)
    problem = combined.problem_with(spec)
    if problem is not None:
        raise ValueError(problem)
    return combined
