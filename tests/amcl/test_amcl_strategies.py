"""The public AMCL strategies: invalid calls raise InvalidArgument, draws meet their contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from amcl_lab.testing import strategies as ams

INVALID = [
    pytest.param(ams.head_stacks, {"heads": 0}, id="head_stacks(heads=0)"),
    pytest.param(ams.head_stacks, {"relations": ("twins",)}, id="head_stacks(twins)"),
    pytest.param(ams.head_stacks, {"dtype": torch.int32}, id="head_stacks(dtype=int32)"),
    pytest.param(
        lambda **kw: ams.pair_temperatures((2, -1), **kw), {}, id="pair_temperatures((2, -1))"
    ),
    pytest.param(
        lambda **kw: ams.pair_temperatures((2, 2), **kw),
        {"min_value": 0.0},
        id="pair_temperatures(min_value=0)",
    ),
    pytest.param(
        ams.amcl_two_view_samples, {"modes": ("hardest",)}, id="amcl_two_view_samples(hardest)"
    ),
    pytest.param(ams.amcl_two_view_samples, {"modes": ()}, id="amcl_two_view_samples(no mode)"),
    pytest.param(
        ams.amcl_queue_samples,
        {"min_temperature": 2.0, "max_temperature": 1.0},
        id="amcl_queue_samples(2>1)",
    ),
    pytest.param(
        ams.amcl_simsiam_samples, {"min_temperature": -1.0}, id="amcl_simsiam_samples(min<0)"
    ),
    pytest.param(ams.amcl_barlow_samples, {"dtype": torch.int64}, id="amcl_barlow_samples(int)"),
]


@pytest.mark.parametrize(("strategy", "kwargs"), INVALID)
def test_invalid_arguments_raise_invalid_argument(strategy, kwargs):
    with pytest.raises(InvalidArgument):
        strategy(**kwargs).example()


@given(ams.head_stacks(heads=3, rows=4, dim=5, dtype=torch.float32))
def test_head_stacks_have_shape_and_dtype(pair):
    z1, z2 = pair
    assert z1.shape == z2.shape == (3, 4, 5) and z1.dtype == torch.float32


@given(ams.pair_temperatures((2, 3, 3), min_value=1e-5, max_value=2.0))
def test_pair_temperatures_stay_in_range(tau):
    assert tau.shape == (2, 3, 3) and tau.dtype == torch.float64
    assert torch.all((tau >= 1e-5) & (tau <= 2.0))


def _candidates(sample, positive_is_candidate):
    z1, z2, _ = sample.args
    c, n, _ = z1.shape
    z = torch.nn.functional.normalize(torch.cat([z1, z2], dim=1), dim=-1).numpy()
    sim = z @ z.transpose(0, 2, 1)
    rows = np.arange(2 * n)
    keep = rows[:, None] != rows[None, :]
    if not positive_is_candidate:
        keep &= rows[None, :] != (rows[:, None] + n) % (2 * n)
    return sim[:, keep].reshape(c, 2 * n, -1)


@pytest.mark.parametrize("positive_is_candidate", [False, True])
@given(data=st.data())
def test_two_view_samples_are_valid_calls_with_a_clear_selection(positive_is_candidate, data):
    """Shapes follow the documented layout, k is in range, and the selected candidates are
    separated from the rest by more than rounding."""
    sample = data.draw(ams.amcl_two_view_samples(positive_is_candidate=positive_is_candidate))
    z1, _, tau = sample.args
    c, n, _ = z1.shape
    assert tau.shape == (c, 2 * n, 2 * n) and torch.all((tau >= 1e-5) & (tau <= 2.0))
    cands = _candidates(sample, positive_is_candidate)
    k = sample.kwargs.get("k", 1)
    assert 1 <= k <= cands.shape[-1]
    if k < cands.shape[-1]:
        ordered = -np.sort(-cands, axis=-1)
        assert np.all(ordered[..., k - 1] - ordered[..., k] > 1e-13)


@given(ams.amcl_queue_samples(modes=("max",)))
def test_queue_samples_follow_the_moco_layout(sample):
    q, k, queue, tau = sample.args
    c, n, d = q.shape
    assert k.shape == q.shape and queue.shape[0] == c and queue.shape[2] == d
    assert tau.shape == (c, n, 1 + queue.shape[1]) and "k" not in sample.kwargs


@given(ams.amcl_simsiam_samples())
def test_simsiam_samples_follow_the_layout(sample):
    p1, p2, h1, h2, tau = sample.args
    assert p1.shape == p2.shape == h1.shape == h2.shape
    assert tau.shape == (p1.shape[0], 2, p1.shape[1])


@given(ams.amcl_barlow_samples())
def test_barlow_samples_follow_the_layout(sample):
    z1, z2, tau = sample.args
    c, n, d = z1.shape
    assert z2.shape == z1.shape and n >= 2 and tau.shape == (c, d, d)
    assert sample.kwargs["omega_dim"] in ("features", "batch")
