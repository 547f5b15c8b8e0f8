"""The memory-efficient fast path passes the oracle and never builds the full matrix.

``amcl_lab.fast`` promises the references' values, gradients, errors and output shapes with
O(N x block) memory.  The oracle checks values and gradients over the references' whole
input domain, with blocks small enough that every batch is split (ragged last block
included); the remaining tests pin the API (errors, reductions, temperature gradient, half
precision) and the memory structure.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from amcl_lab import fast, losses, oracle, registry

EXAMPLES = 50

CASES = {
    "nt_xent": (fast.nt_xent, "nt_xent"),
    "nt_xent-block3": (functools.partial(fast.nt_xent, block_size=3), "nt_xent"),
    "decoupled-block2": (
        functools.partial(fast.nt_xent, decoupled=True, block_size=2),
        "nt_xent_decoupled",
    ),
    "supcon": (fast.supcon, "supcon"),
    "supcon-block3": (functools.partial(fast.supcon, block_size=3), "supcon"),
    "supcon_in-block2": (functools.partial(fast.supcon, variant="in", block_size=2), "supcon_in"),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("candidate", "reference"), CASES.values(), ids=CASES.keys())
def test_fast_path_passes_the_oracle(candidate, reference, dtype):
    oracle.assert_matches_reference(candidate, reference, dtype=dtype, max_examples=EXAMPLES)


def test_fast_supcon_with_one_anchor_view_passes_the_oracle():
    spec = registry.get("supcon")
    one = dataclasses.replace(spec, name="supcon_one", fixed_kwargs={"contrast_mode": "one"})
    candidate = functools.partial(fast.supcon, contrast_mode="one", block_size=2)
    oracle.assert_matches_reference(candidate, one, max_examples=EXAMPLES)


@pytest.mark.parametrize(
    ("candidate", "reference", "adapter"),
    [
        (functools.partial(fast.nt_xent, reduction="none", block_size=3), "nt_xent", "per_anchor"),
        (functools.partial(fast.supcon, reduction="none", block_size=3), "supcon", "per_anchor"),
        (functools.partial(fast.supcon, reduction="sum"), "supcon", "sum"),
    ],
    ids=["nt_xent-none", "supcon-none", "supcon-sum"],
)
def test_fast_path_reductions_pass_the_oracle(candidate, reference, adapter):
    oracle.assert_matches_reference(candidate, reference, adapter=adapter, max_examples=EXAMPLES)


def test_fast_path_in_half_precision_computes_in_float32():
    report = oracle.assert_matches_reference(
        functools.partial(fast.nt_xent, block_size=3), "nt_xent", dtype=torch.float16
    )
    assert report.worst.candidate_value.dtype == torch.float32


@pytest.mark.parametrize(("fn", "reference"), [("nt_xent", "nt_xent"), ("supcon", "supcon")])
def test_temperature_gradient_matches_the_reference(fn, reference):
    for sample in registry.get(reference).sample_inputs(torch.float64, torch.device("cpu")):
        grads = []
        for loss in (getattr(fast, fn), getattr(losses, fn)):
            tau = torch.tensor(sample.kwargs["temperature"], dtype=torch.float64)
            tau.requires_grad_(True)
            leaves = sample.to(requires_grad=True)
            value = loss(*leaves.args, **{**leaves.kwargs, "temperature": tau})
            grads.append(torch.autograd.grad(value, tau)[0])
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("fn", "reference"), [("nt_xent", "nt_xent"), ("supcon", "supcon")])
def test_bad_inputs_raise_the_references_errors(fn, reference):
    for err in registry.get(reference).error_inputs():
        with pytest.raises(err.error, match=err.match):
            err.sample.call(getattr(fast, fn))
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"fast\.nt_xent: block_size must be >= 1, got 0"):
        fast.nt_xent(z, z, block_size=0)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any operation produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def _largest(loss, *args, **kwargs) -> int:
    leaves = [a.detach().requires_grad_(a.is_floating_point()) for a in args]
    with _LargestTensor() as probe:
        loss(*leaves, **kwargs).backward()
    return probe.largest


def test_fast_path_never_materialises_the_full_similarity_matrix():
    gen = torch.Generator().manual_seed(0)
    n, dim, block = 96, 16, 8
    z1, z2 = torch.randn(2, n, dim, generator=gen)
    full = (2 * n) ** 2
    allowed = max(block * 2 * n, 2 * n * dim)  # one block of logits, or the embeddings
    # the probe sees the reference's matrix (built in two halves of the anchors)
    assert _largest(losses.nt_xent, z1, z2) >= full // 2
    assert _largest(fast.nt_xent, z1, z2, block_size=block) <= allowed < full / 10
    features = torch.randn(n, 2, dim, generator=gen)
    labels = torch.arange(n) % 7
    assert _largest(fast.supcon, features, labels, block_size=block) <= allowed


@pytest.mark.parametrize("fn", ["nt_xent", "supcon"])
@pytest.mark.parametrize("block_size", [None, 3], ids=["one-block", "blockwise"])
def test_double_backward_is_refused_with_a_clear_error(fn, block_size):
    """The hand-written backward is not differentiable: create_graph=True must raise, not
    return second derivatives that silently miss the log-sum-exp's curvature."""
    gen = torch.Generator().manual_seed(0)
    if fn == "nt_xent":
        z1, z2 = torch.randn(2, 6, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
        value = fast.nt_xent(z1, z2, 0.5, block_size=block_size)
        inputs = [z1]
    else:
        f = torch.randn(6, 2, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        value = fast.supcon(f, torch.arange(6) % 2, 0.5, block_size=block_size)
        inputs = [f]
    match = rf"fast\.{fn}: double backward \(create_graph=True\) is not supported"
    with pytest.raises(RuntimeError, match=match):
        torch.autograd.grad(value, inputs, create_graph=True)
    # a first-order backward of the same graph still works
    (grad,) = torch.autograd.grad(value, inputs)
    assert torch.isfinite(grad).all()


def test_the_reference_gives_the_second_derivatives_the_fast_path_refuses():
    gen = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    z1.requires_grad_(True)
    direction = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    (grad,) = torch.autograd.grad(losses.nt_xent(z1, z2, 0.5), z1, create_graph=True)
    (hvp,) = torch.autograd.grad((grad * direction).sum(), z1)
    step = 1e-6  # central difference of the gradient along the direction
    plus = torch.autograd.grad(losses.nt_xent(z1 + step * direction, z2, 0.5), z1)[0]
    minus = torch.autograd.grad(losses.nt_xent(z1 - step * direction, z2, 0.5), z1)[0]
    torch.testing.assert_close(hvp, (plus - minus) / (2 * step), rtol=1e-6, atol=1e-8)
