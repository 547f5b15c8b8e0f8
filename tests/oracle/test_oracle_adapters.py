"""Adapters map other calling conventions onto a reference, and only those conventions.

Each adapter is shown both ways: a candidate written in the foreign convention passes with
the adapter, and the same candidate (or a wrong one) is flagged without it.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amcl_lab import fast, oracle
from amcl_lab.losses import NTXentLoss, nt_xent, supcon

import mutants

FEW = 30


def _flat_supcon(embeddings, labels, temperature):
    """SupCon on already flattened items, (M, D) plus (M,) labels: one view per item."""
    return supcon(embeddings[:, None], labels, temperature)


class _FlatSupConLoss(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embeddings, labels):
        return _flat_supcon(embeddings, labels, self.temperature)


def _pml_style_floor(z1, z2, temperature):
    """NT-Xent computed as -log(p + tiny) per anchor (pytorch-metric-learning's convention)."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    eye = torch.eye(2 * n, dtype=torch.bool)
    p = torch.softmax((z @ z.T / temperature).masked_fill(eye, float("-inf")), dim=1)
    rows = torch.arange(2 * n)
    positive = p[rows, (rows + n) % (2 * n)]
    return -torch.log(positive + torch.finfo(p.dtype).tiny).mean()


PASSING = {
    "embeddings_labels-two_views": (_flat_supcon, "nt_xent", "embeddings_labels"),
    "embeddings_labels-supcon": (_flat_supcon, "supcon", "embeddings_labels"),
    "module": (NTXentLoss, "nt_xent", "module"),
    "embeddings_labels+module": (_FlatSupConLoss, "supcon", "embeddings_labels,module"),
    "views_stacked": (
        lambda f, temperature: supcon(f, None, temperature),
        "nt_xent",
        "views_stacked",
    ),
    "prenormalized": (mutants.missing_normalization, "nt_xent", "prenormalized"),
    "sum": (functools.partial(fast.nt_xent, reduction="sum"), "nt_xent", "sum"),
    "per_anchor": (functools.partial(nt_xent, reduction="none"), "nt_xent", "per_anchor"),
    "pml_log_floor": (_pml_style_floor, "nt_xent", "pml_log_floor"),
}


@pytest.mark.parametrize(("candidate", "reference", "adapter"), PASSING.values(), ids=PASSING)
def test_candidate_in_a_foreign_convention_passes_through_its_adapter(
    candidate, reference, adapter
):
    report = oracle.assert_matches_reference(
        candidate, reference, adapter=adapter, max_examples=FEW
    )
    assert report.adapter == adapter.replace(",", "+")


@pytest.mark.parametrize(
    ("candidate", "reference"),
    [
        (mutants.missing_normalization, "nt_xent"),
        (functools.partial(fast.nt_xent, reduction="sum"), "nt_xent"),
        (_pml_style_floor, "nt_xent"),
    ],
    ids=["unnormalised", "sum", "pml_floor"],
)
def test_the_same_candidates_are_flagged_without_their_adapter(candidate, reference):
    assert not oracle.check(candidate, reference, max_examples=100, shrink=False).passed


def test_adapter_does_not_excuse_a_wrong_candidate():
    report = oracle.check(mutants.tau_twice, "nt_xent", adapter="prenormalized", shrink=False)
    assert not report.passed


def test_pml_floor_caps_the_expected_loss_at_minus_log_tiny():
    """Antipodal views at tau = 0.005: every anchor's loss is 200 + log 2, above float32's cap
    -log(tiny) = 87.3365 but below float64's 708.40 (pytorch-metric-learning 2.9.0's NTXentLoss;
    the README's peer table and peers/peer_cases.py reproduce it)."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    sample = oracle.SampleInput((z, -z), {"temperature": 0.005})
    floor = oracle.ADAPTERS["pml_log_floor"]
    spec = oracle.registry.get("nt_xent")
    exact = 200 + math.log(2)
    assert abs(float(nt_xent(z, -z, 0.005)) - exact) < 1e-9
    assert abs(float(floor.expected(spec, sample, torch.float64)) - exact) < 1e-9
    capped = float(floor.expected(spec, sample, torch.float32))
    assert abs(capped + math.log(torch.finfo(torch.float32).tiny)) < 1e-9
