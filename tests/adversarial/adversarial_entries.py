"""The entry points the adversarial suite attacks: data, one :class:`Entry` per function.

Losses come from :data:`amcl_lab.registry.REGISTRY` (every registered loss is attacked, a new
one included, with its first sample input).  Metrics, optimizers and the sharpness toolkit
are listed here: adding a public function to ``amcl_lab.metrics``, ``amcl_lab.optim`` or
``amcl_lab.sharpness`` means adding one entry to :data:`METRICS`, :data:`OPTIMIZERS` or
:data:`SHARPNESS` (``test_adversarial_api.py`` fails for a public name that no entry
covers).  An entry says how to build valid float64 arguments, how the error messages name
each positional argument, and which kind of input each one is (:data:`KINDS`); the
keyword arguments to attack are read from the signature of ``keywords_of``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from amcl_lab import fast, metrics, optim, registry, sharpness

#: Argument kinds: ``tensor`` (a floating input: the whole catalogue), ``labels`` (an
#: integer tensor), ``model_input`` (a tensor handed to a user's model: only value attacks
#: and the empty batch, the model itself decides what shapes and dtypes it takes),
#: ``values`` (a gradient: any shape is valid, only value attacks), ``opaque`` (passed
#: through to a user's function, such as the targets of a loss_fn: not attacked).
KINDS = ("tensor", "labels", "model_input", "values", "opaque")


@dataclass(frozen=True)
class Entry:
    """One public function under attack.

    Attributes:
        name: test-id prefix.
        call: ``call(*args, **kwargs)``; its result is compared (tensors, tuples,
            dataclasses and floats are flattened to float64 tensors).
        args: builds fresh valid float64 positional arguments.
        names: how the error messages name each positional argument.
        kinds: the :data:`KINDS` of each positional argument.
        kwargs: valid keyword values passed with every call.
        keywords_of: the function whose signature lists the keywords to attack (those with
            a default, and those in ``kwargs``); ``None`` attacks none.
        skip: mutation ids that do not apply, with the reason.
        summary: what of a result is compared (default: all of it); iterative estimators
            compare their well-conditioned numbers only (their stopping step, and the
            quadrature weights of a near-degenerate spectrum, follow rounding).
    """

    name: str
    call: Callable[..., Any]
    args: Callable[[], tuple[Any, ...]]
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    keywords_of: Callable[..., Any] | None = None
    skip: Mapping[str, str] = field(default_factory=dict)
    summary: Callable[[Any], Any] | None = None


def _randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# --- losses: every registry entry -----------------------------------------------------------


#: Registry inputs that broadcast: dropping a leading dimension is a valid layout.
BROADCAST = {"temperature": "per-pair temperatures broadcast: (C, 2N, 2N)[0] is a valid layout"}


def _registry_entry(spec: registry.LossSpec) -> Entry:
    sample = next(iter(spec.sample_inputs(torch.float64, torch.device("cpu"))))
    kinds = tuple(
        "labels" if isinstance(a, torch.Tensor) and not a.is_floating_point() else "tensor"
        for a in sample.args
    )
    return Entry(
        name=spec.name,
        call=spec,
        args=lambda: tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in sample.args),
        names=spec.inputs,
        kinds=kinds,
        kwargs=dict(sample.kwargs),
        keywords_of=spec.fn,
        skip={
            # the fixed variant keywords name the entry (supcon_in is variant='in')
            **{f"kw:{k}:bogus": "a fixed variant keyword of the entry" for k in spec.fixed_kwargs},
            **{f"{name}:rank-1": why for name, why in BROADCAST.items() if name in spec.inputs},
        },
    )


LOSSES: list[Entry] = [_registry_entry(spec) for spec in registry.REGISTRY.values()]


# --- metrics --------------------------------------------------------------------------------

_LABELS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])

METRICS: list[Entry] = [
    Entry(
        "alignment",
        metrics.alignment,
        lambda: (_randn(0, 8, 4), _randn(1, 8, 4)),
        ("z1", "z2"),
        ("tensor", "tensor"),
        keywords_of=metrics.alignment,
    ),
    Entry(
        "uniformity",
        metrics.uniformity,
        lambda: (_randn(2, 12, 4),),
        ("z",),
        ("tensor",),
        keywords_of=metrics.uniformity,
    ),
    Entry(
        "tolerance",
        metrics.tolerance,
        lambda: (_randn(3, 12, 4), _LABELS.clone()),
        ("z", "labels"),
        ("tensor", "labels"),
        keywords_of=metrics.tolerance,
    ),
    Entry(
        "negative_weights",
        metrics.negative_weights,
        lambda: (_randn(4, 6, 4), _randn(5, 6, 4)),
        ("z1", "z2"),
        ("tensor", "tensor"),
        kwargs={"temperature": 0.5, "top_k": 2},
        keywords_of=metrics.negative_weights,
    ),
    Entry(
        "simplex_report",
        metrics.simplex_report,
        lambda: (_randn(6, 12, 4) + 3.0 * torch.eye(4, dtype=torch.float64)[_LABELS], _LABELS),
        ("z", "labels"),
        ("tensor", "labels"),
        keywords_of=metrics.simplex_report,
    ),
    Entry(
        "effective_rank",
        metrics.effective_rank,
        lambda: (_randn(7, 40, 6),),
        ("z",),
        ("tensor",),
        keywords_of=metrics.effective_rank,
    ),
    Entry(
        "spectrum_decay",
        metrics.spectrum_decay,
        lambda: (_randn(8, 200, 12) * torch.arange(1.0, 13.0, dtype=torch.float64) ** -0.8,),
        ("z",),
        ("tensor",),
        keywords_of=metrics.spectrum_decay,
    ),
]


# --- optimizers -----------------------------------------------------------------------------


def _linear(dtype: torch.dtype, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2).to(dtype if dtype.is_floating_point else torch.float64)


def _sam_first_step(weight_grad, bias_grad, **kwargs):
    """SAM's first step with these gradients; returns the perturbed weights."""
    model = _linear(weight_grad.dtype)
    opt = optim.SAM(model.parameters(), torch.optim.SGD, lr=0.1, **kwargs)
    model.weight.grad, model.bias.grad = weight_grad, bias_grad
    opt.first_step()
    return [p.detach().clone() for p in model.parameters()]


def _sam_perturbation(g0, g1, **kwargs):
    return optim.sam_perturbation([g0, g1], **kwargs)


def _saf_term(logits, indices, **kwargs):
    """SAF at epoch 1 (lag 1) against the logits stored at epoch 0."""
    saf = optim.SAF(8, 3, **{"lag": 1, "start_epoch": 0, **kwargs})
    floating = isinstance(logits, torch.Tensor) and logits.is_floating_point()
    saf(_randn(9, 4, 3).to(logits.dtype if floating else torch.float64), torch.arange(4), 0)
    return saf(logits, indices, 1)


def _mesa_term(logits, inputs, **kwargs):
    teacher = _linear(inputs.dtype if isinstance(inputs, torch.Tensor) else torch.float64, 1)
    return optim.MESA(teacher, **{"start_epoch": 0, **kwargs})(logits, inputs, 0)


def _ema_update(ema, new, **kwargs):
    ema = ema.clone() if isinstance(ema, torch.Tensor) else ema
    optim.ema_update_([ema], [new], **kwargs)
    return ema


OPTIMIZERS: list[Entry] = [
    Entry(
        "sam_perturbation",
        _sam_perturbation,
        lambda: (_randn(10, 2, 3), _randn(11, 2)),
        ("grads[0]", "grads[1]"),
        ("values", "values"),
        kwargs={"rho": 0.05},
        keywords_of=optim.sam_perturbation,
        skip={"kw:scales:bogus": "scales is a list, attacked by the SAM entry"},
    ),
    Entry(
        "SAM.first_step",
        _sam_first_step,
        lambda: (_randn(12, 2, 3), _randn(13, 2)),
        ("parameter 0", "parameter 1"),
        ("values", "values"),
        keywords_of=optim.SAM,
    ),
    Entry(
        "trajectory_loss",
        optim.trajectory_loss,
        lambda: (_randn(14, 4, 3), _randn(15, 4, 3)),
        ("logits", "past_logits"),
        ("tensor", "tensor"),
        keywords_of=optim.trajectory_loss,
    ),
    Entry(
        "SAF",
        _saf_term,
        lambda: (_randn(16, 4, 3), torch.tensor([0, 1, 2, 3])),
        ("logits", "indices"),
        ("tensor", "labels"),
        keywords_of=optim.SAF,
    ),
    Entry(
        "MESA",
        _mesa_term,
        lambda: (_randn(17, 5, 2), _randn(18, 5, 3)),
        ("logits", "inputs"),
        ("tensor", "model_input"),
        keywords_of=optim.MESA,
    ),
    Entry(
        "ema_update_",
        _ema_update,
        lambda: (_randn(19, 2, 3), _randn(20, 2, 3)),
        ("ema[0]", "new[0]"),
        ("tensor", "tensor"),
        kwargs={"decay": 0.75},
        keywords_of=optim.ema_update_,
    ),
]


# --- sharpness ------------------------------------------------------------------------------


def _net(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)


def _on_batch(fn: Callable[..., Any], **fixed: Any) -> Callable[..., Any]:
    def call(inputs, targets, **kwargs):
        return fn(_net(inputs.dtype), F.cross_entropy, (inputs, targets), **{**fixed, **kwargs})

    call.__name__ = fn.__name__
    return call


def _hvp(inputs, targets, vec, **kwargs):
    return sharpness.hvp(_net(inputs.dtype), F.cross_entropy, (inputs, targets), vec, **kwargs)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    return _randn(21, 10, 3), torch.tensor([0, 1, 1, 0, 1, 0, 0, 1, 1, 0])


_BATCH_NAMES = ("inputs", "targets")
#: the targets go to the user's loss_fn, which decides what it accepts
_BATCH_KINDS = ("model_input", "opaque")

SHARPNESS: list[Entry] = [
    Entry(
        "top_eigenvalues",
        _on_batch(sharpness.top_eigenvalues),
        _batch,
        _BATCH_NAMES,
        _BATCH_KINDS,
        keywords_of=sharpness.top_eigenvalues,
        summary=lambda r: (r.eigenvalues, r.tol, r.block_size),  # vectors: up to sign
    ),
    Entry(
        "hessian_trace",
        _on_batch(sharpness.hessian_trace, max_hvp=60),
        _batch,
        _BATCH_NAMES,
        _BATCH_KINDS,
        keywords_of=sharpness.hessian_trace,
        summary=lambda r: (r.sketch_trace, r.samples[:2], r.rtol),  # the first probes
    ),
    Entry(
        "spectral_density",
        _on_batch(sharpness.spectral_density, n_runs=1, n_steps=8),
        _batch,
        _BATCH_NAMES,
        _BATCH_KINDS,
        keywords_of=sharpness.spectral_density,
        summary=lambda r: r.trace,
    ),
    Entry(
        "ascent_sharpness",
        _on_batch(sharpness.ascent_sharpness),
        _batch,
        _BATCH_NAMES,
        _BATCH_KINDS,
        keywords_of=sharpness.ascent_sharpness,
    ),
    Entry(
        "hvp",
        _hvp,
        lambda: (*_batch(), _randn(22, 26)),
        (*_BATCH_NAMES, "v"),
        (*_BATCH_KINDS, "tensor"),
        keywords_of=sharpness.hvp,
        skip={"v:empty": "v must have one entry per parameter (checked: 'v must have 26')"},
    ),
    Entry(
        "HessianOperator",
        _on_batch(lambda *a, **kw: sharpness.HessianOperator(*a, **kw).loss),
        _batch,
        _BATCH_NAMES,
        _BATCH_KINDS,
        keywords_of=sharpness.HessianOperator,
    ),
]


# --- the fast path ----------------------------------------------------------------------------

FAST: list[Entry] = [
    Entry(
        "fast.nt_xent",
        fast.nt_xent,
        lambda: (_randn(23, 4, 5), _randn(24, 4, 5)),
        ("z1", "z2"),
        ("tensor", "tensor"),
        kwargs={"temperature": 0.5},
        keywords_of=fast.nt_xent,
    ),
    Entry(
        "fast.supcon",
        fast.supcon,
        lambda: (_randn(25, 6, 2, 5), torch.tensor([0, 0, 1, 1, 2, 2])),
        ("features", "labels"),
        ("tensor", "labels"),
        kwargs={"temperature": 0.1},
        keywords_of=fast.supcon,
    ),
]

ENTRIES: list[Entry] = [*LOSSES, *METRICS, *OPTIMIZERS, *SHARPNESS, *FAST]

#: Public names of these modules the matrix covers through another entry or does not call
#: directly, with the reason (everything else public must have an entry).
COVERED_ELSEWHERE: dict[str, str] = {
    "amcl_lab.metrics.NegativeWeights": "the result type of negative_weights",
    "amcl_lab.metrics.SimplexReport": "the result type of simplex_report",
    "amcl_lab.metrics.SpectrumDecay": "the result type of spectrum_decay",
    "amcl_lab.optim.TrajectoryBuffer": "SAF's buffer (attacked through SAF)",
    "amcl_lab.optim.frozen_bn_stats": "no tensor input; its non-module case is a special case",
    "amcl_lab.sharpness.AscentSharpness": "a result type",
    "amcl_lab.sharpness.EigenResult": "a result type",
    "amcl_lab.sharpness.SpectralDensity": "a result type",
    "amcl_lab.sharpness.TraceResult": "a result type",
    "amcl_lab.sharpness.PyHessianResult": "a result type",
    "amcl_lab.sharpness.pyhessian_reference": "runs the third-party pyhessian package",
}
