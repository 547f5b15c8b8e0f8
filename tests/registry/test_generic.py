"""Generic tests generated from the loss registry (ids: ``loss-sample-dtype``).

Every registered loss gets: finite value and gradient on its named sample inputs; agreement
of float32/float16/bfloat16 with float64 on the same (rounded) inputs; ``gradcheck`` in
float64; the documented errors with their messages; inputs left untouched; and, where a GPU
exists, CPU/CUDA agreement.  Exceptions are ``Override`` records in the entry.
"""

from __future__ import annotations

import pytest
import torch

from amcl_lab import registry

import checks

CPU = torch.device("cpu")
LOW_PRECISION = (torch.float32, torch.float16, torch.bfloat16)


def _cases(dtypes=(torch.float64,)):
    return [
        pytest.param(spec, sample, dtype, id=f"{name}-{sample.name}-{dtype}")
        for name, spec in registry.REGISTRY.items()
        for sample in spec.sample_inputs(torch.float64, CPU)
        for dtype in dtypes
    ]


def _skip_if_overridden(spec, test, sample, dtype=None):
    override = spec.skipped(test, sample.name, dtype)
    if override is not None:
        pytest.skip(f"{spec.name}: {override.reason}")


def _value_and_grads(spec, sample):
    leaves = sample.to(requires_grad=True)
    value = leaves.call(spec)
    idx = leaves.floating_indices()
    grads = torch.autograd.grad(value, [leaves.args[i] for i in idx], allow_unused=True)
    return value, grads


@pytest.mark.parametrize(("spec", "sample", "dtype"), _cases((torch.float64, torch.float32)))
def test_sample_gives_finite_value_and_gradient(spec, sample, dtype):
    checks.check_finite_value_and_gradient(spec, sample.to(dtype))


@pytest.mark.parametrize(("spec", "sample", "dtype"), _cases(LOW_PRECISION))
def test_lower_precision_agrees_with_float64_on_the_same_inputs(spec, sample, dtype):
    """Compute at ``dtype`` and in float64 from the *rounded* inputs; compare values and grads."""
    _skip_if_overridden(spec, "precision", sample, dtype)
    low = sample.to(dtype)
    exact = low.to(torch.float64)
    value, grads = _value_and_grads(spec, low)
    value64, grads64 = _value_and_grads(spec, exact)
    tol = spec.tolerance(dtype)
    atol = tol.atol_for(sample.kwargs.get("temperature"))
    checks.assert_close(value.item(), value64.item(), rtol=tol.rtol, atol=atol, what="value")
    for i, (g, g64) in enumerate(zip(grads, grads64, strict=True)):
        scale = float(g64.abs().max()) if g64.numel() else 0.0
        checks.assert_close(
            checks.as_numpy(g),
            checks.as_numpy(g64),
            rtol=tol.rtol,
            atol=atol + tol.rtol * scale,
            what=f"gradient of input {i}",
        )


@pytest.mark.parametrize(("spec", "sample", "dtype"), _cases())
def test_gradcheck_in_float64(spec, sample, dtype):
    """Finite differences agree with autograd; the step shrinks with tau like the curvature."""
    _skip_if_overridden(spec, "gradcheck", sample)
    leaves = sample.to(dtype, requires_grad=True)
    idx = leaves.floating_indices()
    tau = float(sample.kwargs.get("temperature", 1.0))

    def f(*floating):
        args = list(leaves.args)
        for i, t in zip(idx, floating, strict=True):
            args[i] = t
        return spec(*args, **leaves.kwargs)

    assert torch.autograd.gradcheck(
        f, [leaves.args[i] for i in idx], eps=1e-6 * min(1.0, tau), atol=1e-5, rtol=1e-3
    )


def _error_cases():
    return [
        pytest.param(spec, err, id=f"{name}-{err.sample.name or k}")
        for name, spec in registry.REGISTRY.items()
        for k, err in enumerate(spec.error_inputs())
    ]


@pytest.mark.parametrize(("spec", "err"), _error_cases())
def test_bad_input_raises_a_named_error(spec, err):
    with pytest.raises(err.error, match=err.match):
        err.sample.call(spec)


@pytest.mark.parametrize(("spec", "sample", "dtype"), _cases())
def test_loss_does_not_modify_its_inputs(spec, sample, dtype):
    before = sample.to(dtype)
    args = before.to(dtype)
    args.call(spec)
    for a, b in zip(args.args, before.args, strict=True):
        assert a is None or torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("spec", "sample", "dtype"), _cases())
def test_cuda_agrees_with_cpu(spec, sample, dtype):
    cpu = float(sample.call(spec))
    gpu = float(sample.to(device="cuda").call(spec))
    tol = spec.tolerance(torch.float64)
    checks.assert_close(
        gpu,
        cpu,
        rtol=tol.rtol * 100,
        atol=tol.atol_for(sample.kwargs.get("temperature")) * 100,
        what="cuda vs cpu",
    )


def test_every_registered_loss_has_error_inputs_and_samples():
    for spec in registry.REGISTRY.values():
        assert list(spec.sample_inputs(torch.float64, CPU)), spec.name
        assert list(spec.error_inputs()), spec.name
