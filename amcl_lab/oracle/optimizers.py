r"""The optimizer oracle: is my SAM / ASAM (or SAF, MESA) right?

:func:`check_optimizer` builds the candidate and the reference (:mod:`amcl_lab.optim`) on
the same Hypothesis-drawn cases, drives both for several steps and compares every tensor
after each step, then saves the candidate (``state_dict()``), loads it into a fresh one
(``load_state_dict``) and compares one more step.  A case is shrunk to a minimal one.

**SAM and ASAM** (``"sam"``, ``"asam"``).  A case is a small float64 MLP
(``Linear -> [BatchNorm1d] -> Tanh -> Linear``) with, as drawn, a frozen parameter
(``requires_grad=False``), a parameter no forward uses, a branch used only in the first
pass (its gradient disappears in the second) and a branch used only in the second (its
gradient appears there), split into one to three parameter groups with their own ``rho``
and ``lr``, and an SGD base optimizer with or without momentum and weight decay; one to
four steps on fresh batches.  The oracle owns the model and the loss: each step runs pass 1
(``loss.backward()``), then pass 2 inside :func:`~amcl_lab.optim.frozen_bn_stats`, the
same on both sides, so only the optimizers differ.  The candidate is built as

    ``candidate_factory(param_groups, torch.optim.SGD, rho=..., adaptive=..., lr=...,
    momentum=..., weight_decay=...)``

(the constructor of davda54/sam, of pytorch-optimizer's ``SAM`` and of
:class:`~amcl_lab.optim.SAM`; group dicts carry ``"rho"`` and ``"lr"``) and driven through
an adapter (:data:`OPTIMIZER_ADAPTERS`): ``"two_step"`` calls ``first_step(zero_grad=True)``,
the second backward, ``second_step(zero_grad=True)``; ``"closure"`` calls
``step(closure)`` with a closure doing the second forward and backward, then
``zero_grad()``.  The reference is :class:`~amcl_lab.optim.SAM` with ``eta=0`` for
``"asam"`` (:math:`T_w = |w|`, the ASAM of davda54/sam and pytorch-optimizer; pass
``reference_options={"eta": 0.01}`` for amcl_lab's default).  Its behaviour on the
awkward parameters is the specification: a parameter perturbed in the first step is
restored exactly whether or not it has a gradient in the second pass, a parameter that
first gets a gradient in the second pass is stepped from its unperturbed value, and frozen
or unused parameters never move.

**SAF** (``"saf"``): ``candidate_factory(num_samples, num_classes, lag=..., start_epoch=...,
temperature=..., weight=...)`` returns a module called as ``saf(logits, indices, epoch)``
(:class:`~amcl_lab.optim.SAF`); a case is a schedule of calls over epochs (skipped epochs,
subsets of the samples, epochs before ``start_epoch`` and before the first target),
compared in value and in the gradient of the logits.  **MESA** (``"mesa"``):
``candidate_factory(model, decay=..., start_epoch=..., temperature=..., weight=...)``
returns ``mesa`` with ``mesa(logits, inputs, epoch)`` and ``mesa.update(model)``
(:class:`~amcl_lab.optim.MESA`); a case is a small model with or without BatchNorm whose
weights move between steps.  The protocols are those of ``docs/optim-api.md``.

A tensor agrees when ``max |candidate - reference| <= atol + rtol * max |reference|``
(float64 everywhere, :data:`TOLERANCE` by default).  A candidate that raises (davda54/sam's
``KeyError: 'old_p'``) is a mismatch naming the call and the step, never a crash.

Example:
    >>> import functools, torch
    >>> from amcl_lab import oracle
    >>> from amcl_lab.optim import SAM
    >>> oracle.check_optimizer(SAM, "sam", max_examples=5).passed
    True
    >>> report = oracle.check_optimizer(functools.partial(SAM, eta=0.01), "asam",
    ...                                 max_examples=20, shrink=False)
    >>> report.passed  # the reference ASAM has eta = 0, like davda54/sam
    False
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from hypothesis import errors as hypothesis_errors
from hypothesis import given
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from torch import Tensor, nn

from ..optim import MESA, SAF, SAM, frozen_bn_stats
from ..samples import Tolerance
from .candidate import Candidate, qualname
from .report import StepwiseReport
from .search import Mismatch, search_settings

__all__ = [
    "OPTIMIZERS",
    "OPTIMIZER_ADAPTERS",
    "TOLERANCE",
    "MesaCase",
    "SafCase",
    "SamCase",
    "check_optimizer",
    "mesa_cases",
    "saf_cases",
    "sam_cases",
]

#: Default tolerance: float64 arithmetic in a different order stays far below it.
TOLERANCE = Tolerance(rtol=1e-9, atol=1e-12, inverse_temperature=False)

#: The references :func:`check_optimizer` knows, with a one-line description.
OPTIMIZERS: dict[str, str] = {
    "sam": "amcl_lab.optim.SAM (Foret et al. 2021), global gradient norm, exact restore",
    "asam": "amcl_lab.optim.SAM(adaptive=True, eta=0): ASAM with T_w = |w| (Kwon et al. 2021)",
    "saf": "amcl_lab.optim.SAF (Du et al. 2022): KL to the logits of lag epochs ago",
    "mesa": "amcl_lab.optim.MESA (Du et al. 2022): KL to an EMA teacher",
}


class _Failed(Exception):
    """A candidate misbehaved; the message says how (raised inside the oracle only)."""


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as error:  # the candidate's crash is a finding
        raise _Failed(f"the candidate raised {type(error).__name__}: {error} in {what}") from None


def _compare(
    where: str, named: list[tuple[str, Tensor, Tensor]], tol: Tolerance, roles: Mapping[str, str]
) -> tuple[float, float]:
    """The largest error/bound ratio and error over tensors; raises :class:`_Failed` above 1."""
    worst, largest = 0.0, 0.0
    for name, got, want in named:
        got, want = got.detach().double(), want.detach().double()
        if got.shape != want.shape:
            raise _Failed(
                f"{where}: {name} has shape {tuple(got.shape)}, expected {tuple(want.shape)}"
            )
        err = float((got - want).abs().max()) if want.numel() else 0.0
        bound = tol.atol + tol.rtol * (float(want.abs().max()) if want.numel() else 0.0)
        if not math.isfinite(err) or err > bound:
            role = f" ({roles[name]})" if roles.get(name) else ""
            index = int((got - want).abs().flatten().nan_to_num(math.inf).argmax())
            raise _Failed(
                f"{where}: {name}{role} differs by {err:.3e} > bound {bound:.3e} "
                f"(candidate {float(got.flatten()[index]):.10g}, reference "
                f"{float(want.flatten()[index]):.10g})"
            )
        worst, largest = max(worst, err / bound), max(largest, err)
    return worst, largest


# --- SAM / ASAM ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamCase:
    """One drawn SAM case (see the module docstring)."""

    seed: int
    in_dim: int
    hidden: int
    out_dim: int
    batch: int
    batchnorm: bool
    frozen: bool
    unused: bool
    pass1_only: bool
    pass2_only: bool
    groups: tuple[tuple[float, float], ...]  # (rho, lr) per group
    momentum: float
    weight_decay: float
    steps: int

    def lines(self) -> tuple[str, ...]:
        layers = f"Linear({self.in_dim}, {self.hidden})"
        layers += " -> BatchNorm1d" if self.batchnorm else ""
        layers += f" -> Tanh -> Linear({self.hidden}, {self.out_dim})"
        extras = [
            name
            for name, on in (
                ("body.0.bias frozen", self.frozen),
                ("an unused Linear", self.unused),
                ("a branch in pass 1 only", self.pass1_only),
                ("a branch in pass 2 only", self.pass2_only),
            )
            if on
        ]
        groups = ", ".join(f"(rho={r:g}, lr={lr:g})" for r, lr in self.groups)
        return (
            f"model {layers}" + (f" with {', '.join(extras)}" if extras else ""),
            f"param groups (parameters dealt round-robin): {groups}",
            f"SGD momentum={self.momentum:g} weight_decay={self.weight_decay:g}; "
            f"{self.steps} step(s) on batches of {self.batch} (seed {self.seed})",
        )


def _flag(draw: st.DrawFn, fixed: bool | None) -> bool:
    return draw(st.booleans()) if fixed is None else fixed


@st.composite
def sam_cases(
    draw: st.DrawFn,
    *,
    batchnorm: bool | None = None,
    frozen: bool | None = None,
    unused: bool | None = None,
    pass1_only: bool | None = None,
    pass2_only: bool | None = None,
    momentum: float | None = None,
) -> SamCase:
    """Hypothesis strategy of :class:`SamCase`; a keyword fixes that feature (``None``
    draws it), e.g. ``sam_cases(momentum=0.0)``."""
    groups = draw(
        st.lists(
            st.tuples(st.sampled_from([0.0, 0.05, 0.5, 2.0]), st.sampled_from([0.1, 0.5])),
            min_size=1,
            max_size=3,
        )
    )
    return SamCase(
        seed=draw(st.integers(0, 2**16)),
        in_dim=draw(st.integers(1, 3)),
        hidden=draw(st.integers(1, 3)),
        out_dim=draw(st.integers(1, 2)),
        batch=draw(st.integers(2, 4)),
        batchnorm=_flag(draw, batchnorm),
        frozen=_flag(draw, frozen),
        unused=_flag(draw, unused),
        pass1_only=_flag(draw, pass1_only),
        pass2_only=_flag(draw, pass2_only),
        groups=tuple(groups),
        momentum=draw(st.sampled_from([0.0, 0.9])) if momentum is None else momentum,
        weight_decay=draw(st.sampled_from([0.0, 0.1])),
        steps=draw(st.integers(1, 3)),
    )


class _Net(nn.Module):
    def __init__(self, case: SamCase) -> None:
        super().__init__()
        body: list[nn.Module] = [nn.Linear(case.in_dim, case.hidden)]
        if case.batchnorm:
            body.append(nn.BatchNorm1d(case.hidden))
        self.body = nn.Sequential(*body, nn.Tanh())
        self.head = nn.Linear(case.hidden, case.out_dim)
        self.first_only = nn.Linear(case.in_dim, case.out_dim) if case.pass1_only else None
        self.second_only = nn.Linear(case.in_dim, case.out_dim) if case.pass2_only else None
        self.unused = nn.Linear(case.in_dim, case.out_dim) if case.unused else None
        self.double()
        gen = torch.Generator().manual_seed(case.seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        if case.frozen:
            self.body[0].bias.requires_grad_(False)

    def forward(self, x: Tensor, phase: int) -> Tensor:
        out = self.head(self.body(x))
        if phase == 1 and self.first_only is not None:
            out = out + self.first_only(x)
        if phase == 2 and self.second_only is not None:
            out = out + self.second_only(x)
        return out


def _roles(model: _Net) -> dict[str, str]:
    roles = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            roles[name] = "frozen, requires_grad=False"
        elif name.startswith("first_only"):
            roles[name] = "gradient in pass 1 only"
        elif name.startswith("second_only"):
            roles[name] = "gradient in pass 2 only"
        elif name.startswith("unused"):
            roles[name] = "never used"
    return roles


def _param_groups(model: nn.Module, case: SamCase, scale: float = 1.0) -> list[dict[str, Any]]:
    params = list(model.parameters())
    return [
        {"params": params[g :: len(case.groups)], "rho": rho * scale, "lr": lr * scale}
        for g, (rho, lr) in enumerate(case.groups)
        if params[g :: len(case.groups)]
    ]


def _batch(case: SamCase, step: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(case.seed * 1000 + step + 1)
    x = torch.randn(case.batch, case.in_dim, generator=gen, dtype=torch.float64)
    return x, torch.randn(case.batch, case.out_dim, generator=gen, dtype=torch.float64)


def _loss(model: _Net, x: Tensor, y: Tensor, phase: int) -> Tensor:
    return (model(x, phase) - y).pow(2).mean()


def _two_step(opt: Any, model: _Net, x: Tensor, y: Tensor, step: int) -> None:
    _loss(model, x, y, 1).backward()
    _call(f"first_step at step {step}", opt.first_step, True)
    with frozen_bn_stats(model):
        _loss(model, x, y, 2).backward()
    _call(f"second_step at step {step}", opt.second_step, True)


def _closure(opt: Any, model: _Net, x: Tensor, y: Tensor, step: int) -> None:
    _loss(model, x, y, 1).backward()

    def closure() -> Tensor:
        with frozen_bn_stats(model):
            loss = _loss(model, x, y, 2)
        loss.backward()
        return loss

    _call(f"step(closure) at step {step}", opt.step, closure)
    _call(f"zero_grad at step {step}", opt.zero_grad)


#: How the candidate is driven through one SAM step (module docstring).
OPTIMIZER_ADAPTERS: dict[str, Callable[[Any, _Net, Tensor, Tensor, int], None]] = {
    "two_step": _two_step,
    "closure": _closure,
}


def _state(model: nn.Module) -> list[tuple[str, Tensor]]:
    return [*model.named_parameters(), *model.named_buffers()]


def _run_sam(
    factory: Candidate,
    case: SamCase,
    adaptive: bool,
    drive: Callable[..., None],
    tol: Tolerance,
    options: Mapping[str, Any],
) -> tuple[int, float, float]:
    """Run one case: (steps compared, largest ratio, largest error), or :class:`_Failed`."""
    ref_model = _Net(case)
    model = copy.deepcopy(ref_model)
    roles = _roles(ref_model)
    kwargs = {
        "rho": case.groups[0][0],
        "adaptive": adaptive,
        "lr": case.groups[0][1],
        "momentum": case.momentum,
        "weight_decay": case.weight_decay,
    }
    reference = SAM(_param_groups(ref_model, case), torch.optim.SGD, **kwargs, **options)
    try:
        opt = factory(_param_groups(model, case), torch.optim.SGD, **kwargs)
    except Exception as error:
        raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
    worst, largest, compared = 0.0, 0.0, 0
    for step in range(case.steps + 1):
        if step == case.steps:  # save, load into a fresh optimizer (other hyperparameters)
            saved = copy.deepcopy(_call("state_dict", opt.state_dict))
            try:
                opt = factory(_param_groups(model, case, 3.0), torch.optim.SGD, **kwargs)
            except Exception as error:
                raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
            _call("load_state_dict", opt.load_state_dict, saved)
            where = f"after state_dict() / load_state_dict() into a new optimizer, step {step}"
        else:
            where = f"after step {step}"
        x, y = _batch(case, step)
        _two_step(reference, ref_model, x, y, step)
        drive(opt, model, x, y, step)
        named = [
            (name, got, want)
            for (name, got), (_, want) in zip(_state(model), _state(ref_model), strict=True)
        ]
        ratio, err = _compare(where, named, tol, roles)
        worst, largest = max(worst, ratio), max(largest, err)
        compared += 1
    return compared, worst, largest


# --- SAF ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SafCase:
    """One drawn SAF case: hyperparameters and a schedule of ``(epoch, indices)`` calls."""

    seed: int
    num_samples: int
    num_classes: int
    lag: int
    start_epoch: int
    temperature: float
    weight: float
    calls: tuple[tuple[int, tuple[int, ...]], ...]

    def lines(self) -> tuple[str, ...]:
        return (
            f"SAF(num_samples={self.num_samples}, num_classes={self.num_classes}, "
            f"lag={self.lag}, start_epoch={self.start_epoch}, temperature={self.temperature:g}, "
            f"weight={self.weight:g})",
            "calls (epoch, indices): " + ", ".join(f"({e}, {list(i)})" for e, i in self.calls),
        )


@st.composite
def saf_cases(draw: st.DrawFn) -> SafCase:
    """Hypothesis strategy of :class:`SafCase`."""
    n = draw(st.integers(1, 5))
    epoch, calls = 0, []
    for _ in range(draw(st.integers(1, 7))):
        epoch += draw(st.sampled_from([0, 1, 1, 1, 2]))
        idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        calls.append((epoch, tuple(idx)))
    return SafCase(
        seed=draw(st.integers(0, 2**16)),
        num_samples=n,
        num_classes=draw(st.integers(1, 4)),
        lag=draw(st.integers(1, 3)),
        start_epoch=draw(st.integers(0, 3)),
        temperature=draw(st.sampled_from([0.5, 1.0, 5.0])),
        weight=draw(st.sampled_from([0.0, 0.3, 1.0])),
        calls=tuple(calls),
    )


def _value_and_grad(
    what: str, fn: Callable[..., Any], logits: Tensor, *args: Any
) -> tuple[Tensor, Tensor]:
    leaf = logits.detach().clone().requires_grad_(True)
    value = _call(what, fn, leaf, *args)
    if not isinstance(value, Tensor) or value.ndim != 0:
        raise _Failed(f"{what} returned {type(value).__name__}, not a 0-d tensor")
    if value.requires_grad:
        (grad,) = torch.autograd.grad(value, [leaf], allow_unused=True)
    else:
        grad = None
    return value.detach(), torch.zeros_like(leaf) if grad is None else grad


def _run_saf(factory: Candidate, case: SafCase, tol: Tolerance) -> tuple[int, float, float]:
    kwargs = {
        "lag": case.lag,
        "start_epoch": case.start_epoch,
        "temperature": case.temperature,
        "weight": case.weight,
    }
    reference = SAF(case.num_samples, case.num_classes, buffer_dtype=torch.float64, **kwargs)
    try:
        candidate = factory(case.num_samples, case.num_classes, **kwargs)
    except Exception as error:
        raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
    gen = torch.Generator().manual_seed(case.seed)
    worst, largest, compared = 0.0, 0.0, 0
    last = case.calls[-1][0]
    schedule = [*case.calls, (last + 1, case.calls[-1][1])]
    for k, (epoch, idx) in enumerate(schedule):
        where = f"call {k} (epoch {epoch}, indices {list(idx)})"
        if k == len(case.calls):
            saved = copy.deepcopy(_call("state_dict", candidate.state_dict))
            try:
                candidate = factory(case.num_samples, case.num_classes, **kwargs)
            except Exception as error:
                raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
            _call("load_state_dict", candidate.load_state_dict, saved)
            where = f"after state_dict() / load_state_dict() into a new SAF, {where}"
        logits = 3 * torch.randn(len(idx), case.num_classes, generator=gen, dtype=torch.float64)
        logits = logits.float().double()  # exact in a float32 buffer as in a float64 one
        indices = torch.tensor(idx)
        v, g = _value_and_grad(where, candidate, logits, indices, epoch)
        rv, rg = _value_and_grad(where, reference, logits, indices, epoch)
        pairs = [("value", v, rv), ("gradient of the logits", g, rg)]
        ratio, err = _compare(where, pairs, tol, {})
        worst, largest = max(worst, ratio), max(largest, err)
        compared += 1
    return compared, worst, largest


# --- MESA ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MesaCase:
    """One drawn MESA case: a small classifier, hyperparameters and the number of steps."""

    seed: int
    in_dim: int
    num_classes: int
    batchnorm: bool
    decay: float
    start_epoch: int
    temperature: float
    weight: float
    steps: int
    steps_per_epoch: int

    def lines(self) -> tuple[str, ...]:
        model = f"Linear({self.in_dim}, 3)" + (" -> BatchNorm1d" if self.batchnorm else "")
        return (
            f"model {model} -> Tanh -> Linear(3, {self.num_classes}); MESA(decay={self.decay:g}, "
            f"start_epoch={self.start_epoch}, temperature={self.temperature:g}, "
            f"weight={self.weight:g})",
            f"{self.steps} step(s), {self.steps_per_epoch} per epoch (seed {self.seed})",
        )


@st.composite
def mesa_cases(draw: st.DrawFn) -> MesaCase:
    """Hypothesis strategy of :class:`MesaCase`."""
    return MesaCase(
        seed=draw(st.integers(0, 2**16)),
        in_dim=draw(st.integers(1, 3)),
        num_classes=draw(st.integers(1, 3)),
        batchnorm=draw(st.booleans()),
        decay=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        start_epoch=draw(st.integers(0, 2)),
        temperature=draw(st.sampled_from([0.5, 1.0, 5.0])),
        weight=draw(st.sampled_from([0.3, 1.0])),
        steps=draw(st.integers(1, 4)),
        steps_per_epoch=draw(st.integers(1, 2)),
    )


def _mesa_model(case: MesaCase) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(case.in_dim, 3)]
    if case.batchnorm:
        layers.append(nn.BatchNorm1d(3))
    model = nn.Sequential(*layers, nn.Tanh(), nn.Linear(3, case.num_classes)).double()
    gen = torch.Generator().manual_seed(case.seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def _run_mesa(factory: Candidate, case: MesaCase, tol: Tolerance) -> tuple[int, float, float]:
    model = _mesa_model(case)
    kwargs = {
        "decay": case.decay,
        "start_epoch": case.start_epoch,
        "temperature": case.temperature,
        "weight": case.weight,
    }
    reference = MESA(model, **kwargs)
    try:
        candidate = factory(model, **kwargs)
    except Exception as error:
        raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
    gen = torch.Generator().manual_seed(case.seed + 1)
    worst, largest, compared = 0.0, 0.0, 0
    for step in range(case.steps + 1):
        epoch = step // case.steps_per_epoch
        where = f"step {step} (epoch {epoch})"
        if step == case.steps:
            saved = copy.deepcopy(_call("state_dict", candidate.state_dict))
            try:
                other = _mesa_model(dataclasses.replace(case, seed=case.seed + 7))
                candidate = factory(other, **kwargs)
            except Exception as error:
                raise _Failed(f"the factory raised {type(error).__name__}: {error}") from None
            _call("load_state_dict", candidate.load_state_dict, saved)
            where = f"after state_dict() / load_state_dict() into a new MESA, {where}"
        x = torch.randn(4, case.in_dim, generator=gen, dtype=torch.float64)
        logits = model(x).detach()  # the student's training forward (BatchNorm statistics move)
        v, g = _value_and_grad(where, candidate, logits, x, epoch)
        rv, rg = _value_and_grad(where, reference, logits, x, epoch)
        pairs = [("value", v, rv), ("gradient of the logits", g, rg)]
        ratio, err = _compare(where, pairs, tol, {})
        worst, largest = max(worst, ratio), max(largest, err)
        compared += 1
        with torch.no_grad():  # an optimizer step of the student, the same for both
            for p in model.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        _call(f"update at {where}", candidate.update, model)
        reference.update(model)
    return compared, worst, largest


# --- the check ------------------------------------------------------------------------------------


def check_optimizer(
    candidate_factory: Candidate,
    reference: str = "sam",
    *,
    adapter: str = "two_step",
    max_examples: int = 50,
    tolerance: Tolerance | None = None,
    seed: int | None = 0,
    shrink: bool = True,
    reference_options: Mapping[str, Any] | None = None,
    strategy: st.SearchStrategy[Any] | None = None,
) -> StepwiseReport:
    """Drive a candidate optimizer and the reference on the same drawn cases; compare.

    Args:
        candidate_factory: builds the candidate (signatures in the module docstring):
            a SAM class such as davda54's ``SAM``, or any callable with its signature.
        reference: ``"sam"``, ``"asam"``, ``"saf"`` or ``"mesa"`` (:data:`OPTIMIZERS`).
        adapter: for SAM/ASAM, how the candidate is driven: ``"two_step"`` or
            ``"closure"`` (:data:`OPTIMIZER_ADAPTERS`).
        max_examples: cases to draw (shrinking a failure adds more).
        tolerance: overrides :data:`TOLERANCE`.
        seed: Hypothesis seed (``None`` for a random run).
        shrink: shrink a failing case to a minimal one.
        reference_options: extra keyword arguments of the reference SAM (``eta``).
        strategy: cases to draw instead of the default (:func:`sam_cases` with some
            features fixed, :func:`saf_cases`, :func:`mesa_cases`).

    Returns:
        A :class:`~amcl_lab.oracle.report.StepwiseReport`; ``report.passed`` is the verdict
        and ``report.worst`` describes the (shrunk) failing case.

    Raises:
        ValueError: an unknown reference or adapter, ``max_examples < 1``, or
            ``reference_options`` for a reference other than SAM/ASAM.
    """
    if reference not in OPTIMIZERS:
        raise ValueError(
            f"check_optimizer: unknown reference {reference!r}; known: {', '.join(OPTIMIZERS)}"
        )
    if adapter not in OPTIMIZER_ADAPTERS:
        raise ValueError(
            f"check_optimizer: unknown adapter {adapter!r}; known: {', '.join(OPTIMIZER_ADAPTERS)}"
        )
    if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
        raise ValueError(f"check_optimizer: max_examples must be an int >= 1, got {max_examples!r}")
    if reference_options and reference not in ("sam", "asam"):
        raise ValueError("check_optimizer: reference_options apply to 'sam' and 'asam' only")
    tol = tolerance if tolerance is not None else TOLERANCE
    options = {"eta": 0.0, **(reference_options or {})}
    runs: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], tuple[int, float, float]]]] = {
        "sam": (sam_cases(), lambda c: _run_sam(candidate_factory, c, False,
                                                 OPTIMIZER_ADAPTERS[adapter], tol, options)),
        "asam": (sam_cases(), lambda c: _run_sam(candidate_factory, c, True,
                                                  OPTIMIZER_ADAPTERS[adapter], tol, options)),
        "saf": (saf_cases(), lambda c: _run_saf(candidate_factory, c, tol)),
        "mesa": (mesa_cases(), lambda c: _run_mesa(candidate_factory, c, tol)),
    }  # fmt: skip
    default, run_case = runs[reference]
    strategy = strategy if strategy is not None else default
    tally = {"examples": 0, "shrink": 0, "steps": 0, "ratio": 0.0, "err": 0.0}
    found: dict[str, Any] = {}

    @search_settings(max_examples, shrink)
    @given(strategy)
    def run(case: Any) -> None:
        tally["examples"] += 1
        if "failure" in found:
            tally["shrink"] += 1
        try:
            steps, ratio, err = run_case(case)
        except _Failed as failure:
            found.update(case=case, failure=str(failure))
            raise Mismatch(str(failure)) from None
        tally["steps"] += steps
        if ratio >= tally["ratio"]:
            tally["ratio"] = ratio
            found["closest"] = case
        tally["err"] = max(tally["err"], err)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    note = ""
    try:
        run()
    except Mismatch:
        pass
    except (hypothesis_errors.Flaky, hypothesis_errors.FlakyFailure):
        note = (
            " (the failure did not reproduce on a second call: the candidate is not deterministic)"
        )
    failure = found.get("failure")
    case = found.get("case") if failure else found.get("closest")
    return StepwiseReport(
        candidate=qualname(candidate_factory),
        reference=reference,
        adapter=adapter if reference in ("sam", "asam") else "module",
        examples=tally["examples"],
        shrink_examples=tally["shrink"],
        steps=tally["steps"],
        largest_error=tally["err"],
        ratio=tally["ratio"],
        worst=() if case is None else case.lines(),
        failure=None if failure is None else failure + note,
        tolerance=tol,
        seed=seed,
    )
