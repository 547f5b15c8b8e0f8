"""Deliberately wrong versions of the reference losses.

Each mutant reproduces one mistake seen in real implementations (definition differences and
numerical pitfalls of the peer libraries that ``peers/peer_cases.py`` cross-checks, and
misreadings of the AMCL paper, Wang et al. 2024, arXiv:2310.05615, and of its code
releases).  The mutation tests require that every mutant violates at least one stated
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


# --- AMCL (issue 3) ----------------------------------------------------------------------------
# Broken versions of amcl_nt_xent and amcl_simsiam, written independently of amcl_lab (same
# signatures).  Each reproduces a plausible misreading of Table 2 (Wang et al. 2024,
# arXiv:2310.05615), of its Fig. 5 "Softmax" variant or of the code releases;
# tests/properties/test_amcl.py requires that each violates at least one of the properties
# P3-P13 or of the log-sum-exp modes' properties.  Kept apart from MUTANTS, whose battery is
# NT-Xent's.


def _amcl_variant(
    z1,
    z2,
    temperature,
    *,
    beta=1e-4,
    mode="max",
    k=None,
    neg_regularizer="omega",
    reduction="mean",
    heads="sum",
    select_by="raw",
    neg_sign=-1.0,
    negative_temperature="pair",
    positive_is_candidate=False,
    anchors="both",
    topk_reduce="mean",
    log_coefficient=None,
    lse_positive="as_mode",
    lse_neg_sign=-1.0,
    lse_omega_reduce="mean",
    **_,
):
    c, n, d = z1.shape
    z = F.normalize(torch.cat([z1, z2], dim=1), dim=-1, eps=1e-8)
    sim = z @ z.transpose(-1, -2)
    tau = torch.as_tensor(temperature, dtype=sim.dtype).expand(c, 2 * n, 2 * n)
    rows = torch.arange(2 * n)
    pos = (rows + n) % (2 * n)
    keep = rows[:, None] != rows[None, :]
    if not positive_is_candidate:
        keep[rows, pos] = False
    cols = rows.expand(2 * n, 2 * n)[keep].reshape(2 * n, -1).expand(c, -1, -1)
    s_cand, t_cand = sim.gather(-1, cols), tau.gather(-1, cols)
    s_pos, t_pos = sim[:, rows, pos], tau[:, rows, pos]
    if negative_temperature == "positive":
        t_cand = t_pos[..., None].expand_as(t_cand)
    coefficient = d / 2 if log_coefficient is None else log_coefficient

    def omega(t):
        return coefficient * torch.log(t) + 1 / t

    if mode in ("softmax", "nt_xent"):  # every candidate in a log-sum-exp (Fig. 5, right)
        logits = s_cand / t_cand
        with_positive = mode == "nt_xent" if lse_positive == "as_mode" else lse_positive == "in"
        if with_positive:
            logits = torch.cat([logits, (s_pos / t_pos)[..., None]], dim=-1)
        reg = omega(t_cand).sum(-1) if lse_omega_reduce == "sum" else omega(t_cand).mean(-1)
        sign = neg_sign * -lse_neg_sign
        losses = (
            -s_pos / t_pos + torch.logsumexp(logits, -1) + beta * omega(t_pos) + sign * beta * reg
        )
        if anchors == "first_view":
            losses = losses[:, :n]
        losses = losses.sum(0) if heads == "sum" else losses.mean(0)
        return _reduce(losses, reduction)
    score = s_cand if select_by == "raw" else s_cand / t_cand
    count = 1 if mode == "max" else k
    chosen = torch.sort(score.detach(), dim=-1, descending=True, stable=True).indices[..., :count]
    s_k, t_k = s_cand.gather(-1, chosen), t_cand.gather(-1, chosen)
    negative = (s_k / t_k).sum(-1) if topk_reduce == "sum" else (s_k / t_k).mean(-1)
    release2 = (torch.log(t_k) + 1 / t_k).sum(-1)
    reg = omega(t_k).mean(-1) if neg_regularizer == "omega" else release2
    losses = -s_pos / t_pos + negative + beta * omega(t_pos) + neg_sign * beta * reg
    if anchors == "first_view":
        losses = losses[:, :n]
    losses = losses.sum(0) if heads == "sum" else losses.mean(0)
    return _reduce(losses, reduction)


def amcl_heads_averaged(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, heads="mean")


def amcl_scaled_selection(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, select_by="scaled")


def amcl_regularizer_sign_flipped(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, neg_sign=1.0)


def amcl_positive_temperature_for_negative(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, negative_temperature="positive")


def amcl_positive_as_candidate(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, positive_is_candidate=True)


def amcl_one_view_direction(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, anchors="first_view")


def amcl_topk_summed(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, topk_reduce="sum")


def amcl_omega_log_coefficient_one(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, log_coefficient=1.0)


# The four below are right in the max and top-kappa modes and wrong only in the log-sum-exp
# modes, so only the properties of those modes can catch them.


def amcl_softmax_positive_in_lse(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, lse_positive="in")


def amcl_nt_xent_mode_positive_left_out(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, lse_positive="out")


def amcl_softmax_regularizer_sign_flipped(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, lse_neg_sign=1.0)


def amcl_softmax_omega_summed(z1, z2, temperature, **kw):
    return _amcl_variant(z1, z2, temperature, **kw, lse_omega_reduce="sum")


def _amcl_simsiam_variant(
    p1,
    p2,
    h1,
    h2,
    temperature,
    *,
    beta=1e-4,
    stop_gradient=True,
    reduction="mean",
    detach=True,
    half=0.5,
    **_,
):
    c, n, d = p1.shape
    if stop_gradient and detach:
        h1, h2 = h1.detach(), h2.detach()
    a1, a2, t1, t2 = (F.normalize(t, dim=-1, eps=1e-8) for t in (p1, p2, h1, h2))
    tau = torch.as_tensor(temperature, dtype=a1.dtype).expand(c, 2, n)
    sims = torch.stack([(a1 * t2).sum(-1), (a2 * t1).sum(-1)], dim=1)
    terms = -half * sims / tau + beta * (d / 2 * torch.log(tau) + 1 / tau)
    return _reduce(terms.sum(dim=(0, 1)), reduction)


def amcl_simsiam_target_not_detached(p1, p2, h1, h2, temperature, **kw):
    return _amcl_simsiam_variant(p1, p2, h1, h2, temperature, **kw, detach=False)


def amcl_simsiam_halves_dropped(p1, p2, h1, h2, temperature, **kw):
    return _amcl_simsiam_variant(p1, p2, h1, h2, temperature, **kw, half=1.0)


AMCL_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "amcl_heads_averaged", "amcl_nt_xent", amcl_heads_averaged, "heads averaged, not summed"
    ),
    Mutant(
        "amcl_scaled_selection",
        "amcl_nt_xent",
        amcl_scaled_selection,
        "hardest negative chosen by s/tau instead of raw similarity",
    ),
    Mutant(
        "amcl_regularizer_sign_flipped",
        "amcl_nt_xent",
        amcl_regularizer_sign_flipped,
        "+beta Omega on the negative-pair temperature",
    ),
    Mutant(
        "amcl_positive_temperature_for_negative",
        "amcl_nt_xent",
        amcl_positive_temperature_for_negative,
        "negative term divided by the positive pair's temperature",
    ),
    Mutant(
        "amcl_positive_as_candidate",
        "amcl_nt_xent",
        amcl_positive_as_candidate,
        "positive among the candidates (Eq. 2.4 passed off as 2.1)",
    ),
    Mutant(
        "amcl_one_view_direction",
        "amcl_nt_xent",
        amcl_one_view_direction,
        "only the anchors of the first view",
    ),
    Mutant(
        "amcl_topk_summed",
        "amcl_nt_xent",
        amcl_topk_summed,
        "top-k similarity term summed, not averaged",
    ),
    Mutant(
        "amcl_omega_log_coefficient_one",
        "amcl_nt_xent",
        amcl_omega_log_coefficient_one,
        "Omega = log tau + 1/tau (coefficient 1, not d'/2)",
    ),
    Mutant(
        "amcl_softmax_positive_in_lse",
        "amcl_nt_xent",
        amcl_softmax_positive_in_lse,
        "positive left in the log-sum-exp of mode='softmax' (the nt_xent form passed off as it)",
    ),
    Mutant(
        "amcl_nt_xent_mode_positive_left_out",
        "amcl_nt_xent",
        amcl_nt_xent_mode_positive_left_out,
        "positive left out of the log-sum-exp of mode='nt_xent'",
    ),
    Mutant(
        "amcl_softmax_regularizer_sign_flipped",
        "amcl_nt_xent",
        amcl_softmax_regularizer_sign_flipped,
        "+beta mean Omega on the negative temperatures of the log-sum-exp modes",
    ),
    Mutant(
        "amcl_softmax_omega_summed",
        "amcl_nt_xent",
        amcl_softmax_omega_summed,
        "Omega of the negatives summed, not averaged, in the log-sum-exp modes",
    ),
    Mutant(
        "amcl_simsiam_target_not_detached",
        "amcl_simsiam",
        amcl_simsiam_target_not_detached,
        "no stop-gradient on the target branch",
    ),
    Mutant(
        "amcl_simsiam_halves_dropped",
        "amcl_simsiam",
        amcl_simsiam_halves_dropped,
        "each direction's similarity not halved",
    ),
)


# --- mutants of other references (issue 9: the oracle's mutation suite) -----------------------
# Each is flagged by amcl_lab.oracle.check against its target (tests/oracle/test_mutants.py).
# Kept apart from MUTANTS, whose property battery is NT-Xent's.


def float16_exp(z1, z2, temperature=0.5, *, reduction="mean", **_):
    """Exponentiates the logits in float16: exp overflows once s/tau > 11.09 (tau < ~0.09)."""
    n = z1.shape[0]
    z = _stack(z1, z2)
    e = torch.exp((z @ z.T / temperature).half()).to(z.dtype)
    rows = torch.arange(2 * n)
    pos = (rows + n) % (2 * n)
    denominator = e.masked_fill(torch.eye(2 * n, dtype=torch.bool), 0.0).sum(dim=1)
    return _reduce(-torch.log(e[rows, pos] / denominator), reduction)


def queue_off_by_one(query, key, queue, temperature=0.07, *, reduction="mean", **_):
    """MoCo with the queue pointer one slot ahead: the last queue row is never a negative."""
    q = F.normalize(query, dim=1, eps=1e-8)
    k = F.normalize(key, dim=1, eps=1e-8)
    bank = F.normalize(queue[:-1], dim=1, eps=1e-8)
    positive = (q * k).sum(dim=1, keepdim=True) / temperature
    logits = torch.cat([positive, q @ bank.T / temperature], dim=1)
    return _reduce(torch.logsumexp(logits, dim=1) - positive[:, 0], reduction)


def supcon_self_positive(features, labels=None, temperature=0.1, *, reduction="mean", **_):
    """SupCon whose positive set keeps the anchor itself (the diagonal is not removed)."""
    n, views, _ = features.shape
    labels = torch.arange(n) if labels is None else labels
    z = F.normalize(features.transpose(0, 1).reshape(views * n, -1), dim=1, eps=1e-8)
    items = labels.repeat(views)
    logits = z @ z.T / temperature
    eye = torch.eye(views * n, dtype=torch.bool)
    log_prob = logits - torch.logsumexp(logits.masked_fill(eye, float("-inf")), dim=1)[:, None]
    positives = items[:, None] == items[None, :]  # mistake: self counted as a positive
    has_other = (positives & ~eye).any(dim=1)
    losses = -(log_prob * positives).sum(dim=1) / positives.sum(dim=1)
    losses = losses[has_other]
    return losses.sum() if reduction == "sum" else losses.mean()


ORACLE_MUTANTS: tuple[Mutant, ...] = (
    Mutant("float16_exp", "nt_xent", float16_exp, "float16 overflow at small temperature"),
    Mutant("queue_off_by_one", "info_nce", queue_off_by_one, "off-by-one queue handling"),
    Mutant(
        "supcon_self_positive", "supcon", supcon_self_positive, "anchor counted as its own positive"
    ),
)
