"""The shared input checks of ``amcl_lab._validation``: NumPy scalars, meta tensors, flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amcl_lab import _validation as v
from amcl_lab import nt_xent, supcon, uniformity


def _views():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)


@pytest.mark.parametrize("scalar", [np.float32(0.5), np.float64(0.5), np.float16(0.5)])
def test_numpy_real_temperatures_are_accepted_like_floats(scalar):
    """Before: np.float64 (a float subclass) passed while np.float32 was rejected."""
    z1, z2 = _views()
    assert torch.equal(nt_xent(z1, z2, scalar), nt_xent(z1, z2, 0.5))
    features, labels = torch.stack([z1, z2], 1), torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.equal(supcon(features, labels, temperature=scalar), supcon(features, labels, 0.5))


def test_numpy_scalars_pass_the_float_and_int_checks():
    v.check_positive_float("f", "x", np.float32(2.0))
    v.check_int("f", "k", np.int64(3), low=1)
    z, _ = _views()
    same = uniformity(z, 2.0, chunk_size=2)
    assert torch.equal(uniformity(z, np.float32(2.0), chunk_size=np.int64(2)), same)
    for bad in (np.bool_(True), True, "0.5", 1 + 2j):
        with pytest.raises(ValueError, match="temperature must be a positive float"):
            v.check_temperature("f", bad)
    with pytest.raises(ValueError, match="k must be an int, got bool"):
        v.check_int("f", "k", np.bool_(True), low=1)


def test_bool_and_complex_tensor_temperatures_are_refused():
    for bad in (torch.tensor(True), torch.tensor(1 + 1j)):
        with pytest.raises(ValueError, match="temperature must be a real"):
            v.check_temperature("f", bad)


def test_meta_tensors_get_a_clear_error_instead_of_a_crash_in_item():
    """Before: RuntimeError 'Tensor.item() cannot be called on meta tensors'."""
    z1, z2 = _views()
    with pytest.raises(ValueError, match="nt_xent: z1 is a meta tensor"):
        nt_xent(z1.to("meta"), z2.to("meta"))
    with pytest.raises(ValueError, match="nt_xent: temperature is a meta tensor"):
        nt_xent(z1, z2, torch.tensor(0.5, device="meta"))
    features = torch.stack([z1, z2], 1)
    with pytest.raises(ValueError, match="supcon: labels is a meta tensor"):
        supcon(features, torch.zeros(6, dtype=torch.long, device="meta"))


@pytest.mark.parametrize("bad", ["False", "True", 0, 1, None, 1.0])
def test_check_bool_refuses_everything_but_a_bool(bad):
    with pytest.raises(TypeError, match=r"f: flag must be a bool \(True or False\), got"):
        v.check_bool("f", "flag", bad)
    v.check_bool("f", "flag", np.bool_(False))


def test_first_nonfinite_names_the_first_bad_tensor():
    ok, nan = torch.ones(2), torch.tensor([1.0, float("nan")])
    assert v.first_nonfinite([]) is None
    assert v.first_nonfinite([ok, ok]) is None
    assert v.first_nonfinite([ok, nan, torch.tensor([float("inf")])]) == 1
