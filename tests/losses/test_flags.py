"""Boolean flags must be booleans: ``decoupled="False"`` used to compute the decoupled loss."""

from __future__ import annotations

import pytest
import torch

from amcl_lab import losses, metrics
from amcl_lab.optim import SAF
from amcl_lab.sharpness import ascent_sharpness

g = torch.Generator().manual_seed(0)
Z1, Z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
HEADS = torch.randn(2, 6, 4, generator=g)
CASES = [
    ("nt_xent", lambda **kw: losses.nt_xent(Z1, Z2, 0.5, **kw), "decoupled"),
    ("nt_xent", lambda **kw: losses.nt_xent(Z1, Z2, 0.5, **kw), "gather_distributed"),
    ("info_nce", lambda **kw: losses.info_nce(Z1, Z2, None, 0.5, **kw), "gather_distributed"),
    ("supcon", lambda **kw: losses.supcon(torch.stack([Z1, Z2], 1), **kw), "gather_distributed"),
    ("cross_correlation", lambda **kw: losses.barlow_twins(Z1, Z2, **kw), "gather_distributed"),
    (
        "amcl_nt_xent",
        lambda **kw: losses.amcl_nt_xent(HEADS, HEADS + 0.1, 0.5, **kw),
        "gather_distributed",
    ),
    (
        "amcl_simsiam",
        lambda **kw: losses.amcl_simsiam(HEADS, HEADS, HEADS, HEADS, 0.5, **kw),
        "stop_gradient",
    ),
    (
        "amcl_barlow_twins",
        lambda **kw: losses.amcl_barlow_twins(HEADS, HEADS + 0.1, 0.5, **kw),
        "gather_distributed",
    ),
    (
        "multiview_barlow_twins",
        lambda **kw: losses.multiview_barlow_twins(torch.stack([Z1, Z2], 1), **kw),
        "normalize",
    ),
    ("effective_rank", lambda **kw: metrics.effective_rank(Z1, **kw), "center"),
    ("spectrum_decay", lambda **kw: metrics.spectrum_decay(Z1, **kw), "center"),
    ("SAF", lambda **kw: SAF(4, 3, **kw), "gather_distributed"),
    (
        "ascent_sharpness",
        lambda **kw: ascent_sharpness(
            torch.nn.Linear(4, 2), lambda out, y: out.pow(2).mean(), (Z1, None), **kw
        ),
        "adaptive",
    ),
]


@pytest.mark.parametrize("value", ["False", "false", "True", 0, 1, None])
@pytest.mark.parametrize(("fn", "call", "flag"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_flag_that_is_not_a_bool_is_a_type_error(fn, call, flag, value):
    with pytest.raises(TypeError, match=rf"{fn}: {flag} must be a bool \(True or False\)"):
        call(**{flag: value})


def test_the_string_false_no_longer_computes_the_decoupled_loss():
    plain = losses.nt_xent(Z1, Z2, 0.5)
    assert not torch.equal(plain, losses.nt_xent(Z1, Z2, 0.5, decoupled=True))
    assert torch.equal(plain, losses.nt_xent(Z1, Z2, 0.5, decoupled=False))
