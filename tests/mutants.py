"""Deliberately wrong versions of the reference losses.

Each mutant reproduces one mistake seen in real implementations (``../shared/spec/peers.md``
section 4 and 5).  The mutation tests require that every mutant violates at least one stated
property, which shows that the properties can fail.  Mutants share the signature of the loss
they imitate so that the same checks can drive them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Mutant:
    name: str
    target: str  # registry name of the reference it imitates
    fn: Callable[..., torch.Tensor]
    mistake: str


def _stack(z1, z2, normalize=True):
    z = torch.cat([z1, z2])
    return F.normalize(z, dim=1, eps=1e-8) if normalize else z


def _reduce(losses, reduction):
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def _nt_xent_variant(
    z1,
    z2,
    temperature=0.5,
    *,
    reduction="mean",
    tau_power=1,
    keep_positive=True,
    double_positive=False,
    normalize=True,
    mask_self=True,
):
    n = z1.shape[0]
    z = _stack(z1, z2, normalize)
    logits = z @ z.T / temperature**tau_power
    rows = torch.arange(2 * n)
    pos = (rows + n) % (2 * n)
    keep = torch.ones_like(logits, dtype=torch.bool)
    if mask_self:
        keep &= rows[:, None] != rows[None, :]
    if not keep_positive:
        keep[rows, pos] = False
    lse = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=1)
    if double_positive:
        lse = torch.logaddexp(lse, logits[rows, pos])
    return _reduce(lse - logits[rows, pos], reduction)


def tau_twice(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, tau_power=2)


def no_temperature(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, tau_power=0)


def positive_dropped(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, keep_positive=False)


def positive_doubled(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, double_positive=True)


def missing_normalization(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, normalize=False)


def self_not_masked(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2, temperature, reduction=reduction, mask_self=False)


def mean_over_n(z1, z2, temperature=0.5, *, reduction="mean", **_):
    losses = _nt_xent_variant(z1, z2, temperature, reduction="none")
    if reduction == "none":
        return losses
    return losses.sum() / z1.shape[0] if reduction == "mean" else losses.sum()


def one_direction(z1, z2, temperature=0.5, *, reduction="mean", **_):
    """Only the anchors of the first view (a MoCo-style half passed off as NT-Xent)."""
    losses = _nt_xent_variant(z1, z2, temperature, reduction="none")[: z1.shape[0]]
    return _reduce(losses, reduction)


def detached_view(z1, z2, temperature=0.5, *, reduction="mean", **_):
    return _nt_xent_variant(z1, z2.detach(), temperature, reduction=reduction)


def half_precision_exp(z1, z2, temperature=0.5, *, reduction="mean", **_):
    """Exponentiates the logits directly (no max subtraction): overflows at small tau."""
    n = z1.shape[0]
    z = _stack(z1, z2).float()
    e = torch.exp(z @ z.T / temperature)
    rows = torch.arange(2 * n)
    pos = (rows + n) % (2 * n)
    denominator = e.masked_fill(torch.eye(2 * n, dtype=torch.bool), 0.0).sum(dim=1)
    return _reduce(-torch.log(e[rows, pos] / denominator), reduction).to(z1.dtype)


MUTANTS: tuple[Mutant, ...] = (
    Mutant("tau_twice", "nt_xent", tau_twice, "similarities divided by tau twice"),
    Mutant("no_temperature", "nt_xent", no_temperature, "temperature not applied"),
    Mutant("positive_dropped", "nt_xent", positive_dropped, "positive missing from denominator"),
    Mutant("positive_doubled", "nt_xent", positive_doubled, "positive counted twice"),
    Mutant("missing_normalization", "nt_xent", missing_normalization, "dot products, not cosines"),
    Mutant("self_not_masked", "nt_xent", self_not_masked, "self-similarity in the denominator"),
    Mutant("mean_over_n", "nt_xent", mean_over_n, "mean over N instead of 2N anchors"),
    Mutant("one_direction", "nt_xent", one_direction, "only view-1 anchors"),
    Mutant("detached_view", "nt_xent", detached_view, "no gradient through the second view"),
    Mutant("half_precision_exp", "nt_xent", half_precision_exp, "exp without max subtraction"),
)
