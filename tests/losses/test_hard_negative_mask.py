"""hard_negative_mask checks its arguments (before: no checks at all)."""

from __future__ import annotations

import pytest
import torch

from amcl_lab.losses import hard_negative_mask

SIM = torch.tensor([[1.0, 0.2, -0.3, 0.5], [0.1, 1.0, 0.4, -0.2]])
NEG = torch.tensor([[False, True, True, True], [True, False, True, True]])


@pytest.mark.parametrize(
    ("sim", "negatives", "k", "error", "match"),
    [
        (SIM, NEG, 0, ValueError, r"hard_negative_mask: k must be in \[1, 3\], got 0"),
        (SIM, NEG, -1, ValueError, r"k must be in \[1, 3\], got -1"),
        (SIM, NEG, 4, ValueError, r"k must be in \[1, 3\], got 4"),
        (SIM, NEG, 1.5, ValueError, r"k must be an int, got float"),
        (SIM.masked_fill(NEG, float("nan")), NEG, 1, ValueError, r"sim contains NaN or inf"),
        (SIM[0], NEG[0], 1, ValueError, r"sim must be a 2-D tensor"),
        (SIM, NEG.int(), 1, ValueError, r"negatives must be a bool mask of the shape of sim"),
        (SIM, NEG[:, :3], 1, ValueError, r"negatives must be a bool mask of the shape of sim"),
        (SIM, NEG.tolist(), 1, TypeError, r"negatives must be a torch.Tensor"),
    ],
)
def test_bad_arguments_are_refused(sim, negatives, k, error, match):
    with pytest.raises(error, match=match):
        hard_negative_mask(sim, negatives, k)


def test_valid_arguments_select_the_hardest():
    assert hard_negative_mask(SIM, NEG, 1).tolist() == [
        [False, False, False, True],
        [False, False, True, False],
    ]
    assert torch.equal(hard_negative_mask(SIM, NEG, None), NEG)
    assert torch.equal(hard_negative_mask(SIM, NEG, 3), NEG)
