"""The adversarial matrix: every registered loss, metric, optimizer and sharpness entry point
against the catalogue of bad inputs of :mod:`adversarial_cases`, plus special cases.

Each case must end in the correct value or a ``ValueError``/``TypeError`` naming the
argument; the session summary (``tests/conftest.py``) prints how many cases ran.
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch

from amcl_lab import fast, losses, oracle
from amcl_lab.optim import MESA, frozen_bn_stats
from amcl_lab.sharpness import top_eigenvalues

from adversarial_cases import RTOL, Case, beyond_range, cases, close, flatten, names_argument
from adversarial_entries import COVERED_ELSEWHERE, ENTRIES

CASES = cases()
#: The matrix must stay this large (2,000 cases at least): a refactoring that silently
#: drops entries or mutations fails here.
MIN_CASES = 2000


def _run(case: Case):
    args, kwargs = case.build()
    return case.entry.call(*args, **kwargs)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_case(case: Case):
    if case.expect == "raise":
        with pytest.raises((ValueError, TypeError)) as caught:
            _run(case)
        assert names_argument(caught.value, case.name), (
            f"the error does not name {case.name!r}: {caught.value}"
        )
        return
    try:
        result = _run(case)
    except (ValueError, TypeError) as error:
        assert names_argument(error, case.name), f"the error does not name {case.name!r}: {error}"
        return
    ref_args, ref_kwargs = case.reference()
    reference = case.entry.call(*ref_args, **ref_kwargs)
    if case.entry.summary is not None:
        result, reference = case.entry.summary(result), case.entry.summary(reference)
    if case.dtype is None:  # the same numbers in another layout or type: equal to rounding
        problem = close(result, reference, rtol=1e-6, atol=1e-9)
    else:
        rtol = RTOL[case.dtype]
        largest = max((float(t.abs().max()) for t in flatten(reference) if t.numel()), default=1)
        problem = close(result, beyond_range(reference, torch.float32), rtol, rtol * 1e-3 * largest)
    assert problem is None, problem


def test_the_matrix_is_large_and_prints_its_count(capsys):
    by_kind = {}
    for case in CASES:
        by_kind[case.expect] = by_kind.get(case.expect, 0) + 1
    with capsys.disabled():
        print(
            f"\nadversarial matrix: {len(CASES)} API cases over {len(ENTRIES)} entry points "
            f"({by_kind.get('raise', 0)} must raise, {by_kind.get('value', 0)} must compute)"
        )
    assert len(CASES) >= MIN_CASES
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


def test_every_public_function_has_an_entry():
    """A new public function of these modules is attacked once it is registered here."""
    entered = {e.name for e in ENTRIES}
    missing = []
    for module in ("amcl_lab.metrics", "amcl_lab.optim", "amcl_lab.sharpness"):
        for name in importlib.import_module(module).__all__:
            obj = getattr(importlib.import_module(module), name)
            if not callable(obj) or f"{module}.{name}" in COVERED_ELSEWHERE:
                continue
            if name not in entered and f"{name}.first_step" not in entered:
                missing.append(f"{module}.{name}")
    assert missing == [], f"add an Entry to tests/adversarial/adversarial_entries.py: {missing}"
    from amcl_lab import registry

    assert set(registry.REGISTRY) <= entered


# --- special cases ---------------------------------------------------------------------------


def _second_derivative(fn, *args):
    """The HVP of ``fn`` along a fixed direction, by double backward."""
    first = args[0].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(first, *args[1:]), first, create_graph=True)
    direction = torch.ones_like(grad)
    (hvp,) = torch.autograd.grad((grad * direction).sum(), first)
    return hvp


@pytest.mark.parametrize(
    ("name", "fast_fn", "reference", "args"),
    [
        (
            "nt_xent",
            lambda z1, z2: fast.nt_xent(z1, z2, 0.5),
            lambda z1, z2: losses.nt_xent(z1, z2, 0.5),
            (torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)),
        ),
        (
            "supcon",
            lambda f, y: fast.supcon(f, y, 0.5),
            lambda f, y: losses.supcon(f, y, 0.5),
            (torch.randn(6, 2, 4, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2])),
        ),
    ],
    ids=["nt_xent", "supcon"],
)
def test_fast_path_second_derivatives_are_exact_or_refused(name, fast_fn, reference, args):
    """Before: wrong HVPs under double backward (off by 1.6; top eigenvalue 1.11, not 1.95).
    Exact second derivatives, or a clear error under create_graph=True, both pass."""
    try:
        got = _second_derivative(fast_fn, *args)
    except (RuntimeError, ValueError, TypeError) as error:
        assert "create_graph" in str(error) or "double backward" in str(error)
        return
    torch.testing.assert_close(got, _second_derivative(reference, *args))


def test_fast_nt_xent_hessian_eigenvalues_are_refused_not_wrong():
    """Before: the top eigenvalue of the fast loss was 1.11 where the reference gives 1.95."""
    torch.manual_seed(0)
    x = torch.randn(8, 3, dtype=torch.float64)
    net = torch.nn.Linear(3, 4).double()

    def loss_of(fn):
        return lambda out, _: fn(out[:4], out[4:], 0.5)

    assert top_eigenvalues(net, loss_of(losses.nt_xent), (x, None)).eigenvalues[0] > 0
    with pytest.raises(RuntimeError, match="double backward"):
        top_eigenvalues(net, loss_of(fast.nt_xent), (x, None))


@pytest.mark.parametrize(
    "call",
    [
        lambda: MESA("x"),
        lambda: frozen_bn_stats("x").__enter__(),
        lambda: MESA(torch.nn.Linear(2, 2)).update("x"),
    ],
    ids=["MESA", "frozen_bn_stats", "MESA.update"],
)
def test_a_non_module_model_is_a_type_error_naming_model(call):
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got str"):
        call()


def test_the_oracle_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was asked for"):
        oracle.check(losses.nt_xent, "nt_xent", device="cuda", max_examples=1)


def test_every_registered_loss_validates_flags_with_check_bool():
    """The registry's functions take no flag that the matrix does not attack."""
    from amcl_lab import registry

    for spec in registry.REGISTRY.values():
        flags = [
            p.name
            for p in inspect.signature(spec.fn).parameters.values()
            if isinstance(p.default, bool)
        ]
        for flag in flags:
            assert any(
                c.mutation == f"kw:{flag}:'False'" for c in CASES if c.entry.name == spec.name
            )
