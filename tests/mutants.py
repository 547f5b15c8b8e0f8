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


# --- self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV) ------------------
# Broken versions of the references, written independently of amcl_lab with the same
# signatures.  Each is a mistake a re-implementation can make (a term dropped, a mean taken
# over the wrong axis, a stop-gradient forgotten); the property batteries of
# tests/properties/test_{vicreg,byol,dcl,moco_v3,dino,swav}.py must each catch theirs, and the
# oracle flags every one (tests/oracle/test_oracle_mutants.py).


def _vicreg_variant(
    z1,
    z2,
    lambda_invariance=25.0,
    mu_variance=25.0,
    nu_covariance=1.0,
    *,
    gamma=1.0,
    eps=1e-4,
    hinge_on="std",
    cov_ddof=1,
    cov_diagonal=False,
    cov_over_d=True,
    variance_views=2,
    invariance="mean",
    centre=True,
    **_,
):
    n, d = z1.shape

    def v(z):
        var = z.var(dim=0, unbiased=True)
        spread = torch.sqrt(var + eps) if hinge_on == "std" else var + eps
        return torch.relu(gamma - spread).mean()

    def c(z):
        x = z - z.mean(dim=0) if centre else z
        cov = x.T @ x / (n - cov_ddof)
        total = cov.pow(2).sum() if cov_diagonal else cov.pow(2).sum() - cov.diagonal().pow(2).sum()
        return total / d if cov_over_d else total

    inv = F.mse_loss(z1, z2) if invariance == "mean" else (z1 - z2).pow(2).sum(dim=1).mean()
    var = 0.5 * (v(z1) + v(z2)) if variance_views == 2 else v(z1)
    return lambda_invariance * inv + mu_variance * var + nu_covariance * (c(z1) + c(z2))


def vicreg_hinge_on_variance(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, hinge_on="variance")


def vicreg_biased_covariance(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, cov_ddof=0)


def vicreg_covariance_keeps_diagonal(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, cov_diagonal=True)


def vicreg_covariance_not_over_d(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, cov_over_d=False)


def vicreg_variance_of_one_view(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, variance_views=1)


def vicreg_invariance_summed_over_dims(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, invariance="sum")


def vicreg_uncentred_covariance(z1, z2, *args, **kw):
    return _vicreg_variant(z1, z2, *args, **kw, centre=False)


def _negative_cosine_variant(
    p1,
    p2,
    z1,
    z2,
    *,
    convention="simsiam",
    stop_gradient=True,
    reduction="mean",
    detach=True,
    half=0.5,
    pairing="swapped",
    normalize=True,
    constant=4.0,
    **_,
):
    if stop_gradient and detach:
        z1, z2 = z1.detach(), z2.detach()
    if pairing == "same":
        z1, z2 = z2, z1  # p1 scored against its own view's target
    if normalize:
        p1, p2, z1, z2 = (F.normalize(t, dim=1, eps=1e-8) for t in (p1, p2, z1, z2))
    c12, c21 = (p1 * z2).sum(1), (p2 * z1).sum(1)
    losses = -half * (c12 + c21) if convention == "simsiam" else constant - 2 * c12 - 2 * c21
    return _reduce(losses, reduction)


def negative_cosine_target_not_detached(p1, p2, z1, z2, **kw):
    return _negative_cosine_variant(p1, p2, z1, z2, **kw, detach=False)


def negative_cosine_not_halved(p1, p2, z1, z2, **kw):
    return _negative_cosine_variant(p1, p2, z1, z2, **kw, half=1.0)


def negative_cosine_same_view_pairs(p1, p2, z1, z2, **kw):
    return _negative_cosine_variant(p1, p2, z1, z2, **kw, pairing="same")


def negative_cosine_dot_products(p1, p2, z1, z2, **kw):
    return _negative_cosine_variant(p1, p2, z1, z2, **kw, normalize=False)


def negative_cosine_byol_without_constant(p1, p2, z1, z2, **kw):
    return _negative_cosine_variant(p1, p2, z1, z2, **kw, constant=0.0)


def _dcl_variant(
    z1,
    z2,
    temperature=0.1,
    *,
    weight=None,
    sigma=0.5,
    stop_gradient=True,
    reduction="mean",
    keep_positive=False,
    centred_weights=True,
    sigma_divides=True,
    weight_target="positive",
    anchors="both",
    **_,
):
    n = z1.shape[0]
    z = _stack(z1, z2)
    sim = z @ z.T
    logits = sim / temperature
    rows = torch.arange(2 * n)
    pos = (rows + n) % (2 * n)
    keep = rows[:, None] != rows[None, :]
    if not keep_positive:
        keep[rows, pos] = False
    lse = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=1)
    positive = logits[rows, pos]
    if weight == "vmf":
        s = sim[rows[:n], pos[:n]]
        s = s.detach() if stop_gradient else s
        scaled = s / sigma if sigma_divides else s * sigma
        w = n * torch.softmax(scaled, dim=0)
        w = (2.0 - w if centred_weights else w).repeat(2)
        if weight_target == "positive":
            positive = positive * w
        else:
            lse = lse * w
    losses = lse - positive
    if anchors == "first_view":
        losses = losses[:n]
    return _reduce(losses, reduction)


def dcl_positive_in_denominator(z1, z2, *args, **kw):
    return _dcl_variant(z1, z2, *args, **kw, keep_positive=True)


def dclw_weights_not_centred(z1, z2, *args, weight="vmf", **kw):  # DCLW: weighted by default
    return _dcl_variant(z1, z2, *args, weight=weight, **kw, centred_weights=False)


def dclw_sigma_multiplies(z1, z2, *args, weight="vmf", **kw):  # DCLW: weighted by default
    return _dcl_variant(z1, z2, *args, weight=weight, **kw, sigma_divides=False)


def dclw_weight_on_the_negatives(z1, z2, *args, weight="vmf", **kw):  # DCLW: weighted by default
    return _dcl_variant(z1, z2, *args, weight=weight, **kw, weight_target="negatives")


def dcl_one_view_anchors(z1, z2, *args, **kw):
    return _dcl_variant(z1, z2, *args, **kw, anchors="first_view")


def _moco_v3_variant(
    q1,
    q2,
    k1,
    k2,
    temperature=0.2,
    *,
    stop_gradient=True,
    scale=True,
    combine="sum",
    candidates="keys",
    pairing="swapped",
    detach=True,
    **_,
):
    if stop_gradient and detach:
        k1, k2 = k1.detach(), k2.detach()
    if pairing == "same":
        k1, k2 = k2, k1

    def ctr(q, k):
        n = q.shape[0]
        q, k = F.normalize(q, dim=1, eps=1e-8), F.normalize(k, dim=1, eps=1e-8)
        if candidates == "keys":
            logits, target = q @ k.T / temperature, torch.arange(n)
        else:  # SimCLR on [q; k]: other queries are negatives, keys are anchors too
            z = torch.cat([q, k])
            logits = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool), -1e9)
            target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
        loss = F.cross_entropy(logits, target)
        return 2 * temperature * loss if scale else loss

    total = ctr(q1, k2) + ctr(q2, k1)
    return total if combine == "sum" else total / 2


def moco_v3_without_2tau(q1, q2, k1, k2, *args, **kw):
    return _moco_v3_variant(q1, q2, k1, k2, *args, **kw, scale=False)


def moco_v3_directions_averaged(q1, q2, k1, k2, *args, **kw):
    return _moco_v3_variant(q1, q2, k1, k2, *args, **kw, combine="mean")


def moco_v3_queries_as_negatives(q1, q2, k1, k2, *args, **kw):
    return _moco_v3_variant(q1, q2, k1, k2, *args, **kw, candidates="simclr")


def moco_v3_same_view_keys(q1, q2, k1, k2, *args, **kw):
    return _moco_v3_variant(q1, q2, k1, k2, *args, **kw, pairing="same")


def moco_v3_keys_not_detached(q1, q2, k1, k2, *args, **kw):
    return _moco_v3_variant(q1, q2, k1, k2, *args, **kw, detach=False)


def _dino_variant(
    student,
    teacher,
    center=None,
    *,
    student_temperature=0.1,
    teacher_temperature=0.04,
    stop_gradient=True,
    skip_same=True,
    center_sign=-1.0,
    swap_temperatures=False,
    softmax_dim=-1,
    reduce_pairs="mean",
    detach=True,
    **_,
):
    tau_s, tau_t = student_temperature, teacher_temperature
    if swap_temperatures:
        tau_s, tau_t = tau_t, tau_s
    t = teacher if center is None else teacher + center_sign * center
    if stop_gradient and detach:
        t = t.detach()
    target = torch.softmax(t / tau_t, dim=softmax_dim)
    log_s = torch.log_softmax(student / tau_s, dim=-1)
    terms = []
    for u in range(teacher.shape[1]):
        for v in range(student.shape[1]):
            if skip_same and u == v:
                continue
            terms.append(-(target[:, u] * log_s[:, v]).sum(-1).mean())
    total = torch.stack(terms)
    return total.mean() if reduce_pairs == "mean" else total.sum()


def dino_same_crop_pairs_kept(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, skip_same=False)


def dino_center_added(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, center_sign=1.0)


def dino_temperatures_swapped(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, swap_temperatures=True)


def dino_teacher_softmax_over_the_batch(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, softmax_dim=0)


def dino_pairs_summed(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, reduce_pairs="sum")


def dino_teacher_not_detached(student, teacher, center=None, **kw):
    return _dino_variant(student, teacher, center, **kw, detach=False)


def _sinkhorn_variant(scores, epsilon, iterations, *, scale_eps=True, equipartition=True):
    s = scores / epsilon if scale_eps else scores
    q = torch.exp(s - s.max()).T  # (K, N)
    q = q / q.sum()
    k, n = q.shape
    for _ in range(iterations):
        if equipartition:
            q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / n
    return (q * n).T


def _swav_variant(
    scores,
    *,
    assigned=2,
    temperature=0.1,
    epsilon=0.05,
    iterations=3,
    stop_gradient=True,
    detach=True,
    swapped=True,
    scale_eps=True,
    equipartition=True,
    use_temperature=True,
    **_,
):
    crops = scores.shape[1]
    log_p = torch.log_softmax(scores / (temperature if use_temperature else 1.0), dim=-1)
    total = 0.0
    for a in range(assigned):
        source = scores[:, a].detach() if stop_gradient and detach else scores[:, a]
        q = _sinkhorn_variant(
            source, epsilon, iterations, scale_eps=scale_eps, equipartition=equipartition
        )
        others = [v for v in range(crops) if v != a] if swapped else [a]
        total = total + sum(-(q * log_p[:, v]).sum(-1).mean() for v in others) / len(others)
    return total / assigned


def swav_codes_not_detached(scores, **kw):
    return _swav_variant(scores, **kw, detach=False)


def swav_own_code_predicted(scores, **kw):
    return _swav_variant(scores, **kw, swapped=False)


def swav_sinkhorn_without_epsilon(scores, **kw):
    return _swav_variant(scores, **kw, scale_eps=False)


def swav_codes_without_equipartition(scores, **kw):
    return _swav_variant(scores, **kw, equipartition=False)


def swav_prediction_without_temperature(scores, **kw):
    return _swav_variant(scores, **kw, use_temperature=False)


SSL_MUTANTS: tuple[Mutant, ...] = (
    Mutant("vicreg_hinge_on_variance", "vicreg", vicreg_hinge_on_variance, "max(0, gamma - Var)"),
    Mutant(
        "vicreg_biased_covariance", "vicreg", vicreg_biased_covariance, "covariance over N, not N-1"
    ),
    Mutant(
        "vicreg_covariance_keeps_diagonal",
        "vicreg",
        vicreg_covariance_keeps_diagonal,
        "the variances counted in the covariance term",
    ),
    Mutant(
        "vicreg_covariance_not_over_d", "vicreg", vicreg_covariance_not_over_d, "c(Z) not over D"
    ),
    Mutant(
        "vicreg_variance_of_one_view",
        "vicreg",
        vicreg_variance_of_one_view,
        "the variance hinge of the first view only",
    ),
    Mutant(
        "vicreg_invariance_summed_over_dims",
        "vicreg",
        vicreg_invariance_summed_over_dims,
        "the paper's sum over dimensions with the code's coefficients",
    ),
    Mutant(
        "vicreg_uncentred_covariance",
        "vicreg",
        vicreg_uncentred_covariance,
        "Z^T Z / (N - 1) without centring",
    ),
    Mutant(
        "negative_cosine_target_not_detached",
        "negative_cosine",
        negative_cosine_target_not_detached,
        "no stop-gradient on the targets",
    ),
    Mutant(
        "negative_cosine_not_halved",
        "negative_cosine",
        negative_cosine_not_halved,
        "the two negative cosines summed, not halved",
    ),
    Mutant(
        "negative_cosine_same_view_pairs",
        "negative_cosine",
        negative_cosine_same_view_pairs,
        "each prediction scored against its own view's target",
    ),
    Mutant(
        "negative_cosine_dot_products",
        "negative_cosine",
        negative_cosine_dot_products,
        "dot products, not cosines",
    ),
    Mutant(
        "negative_cosine_byol_without_constant",
        "negative_cosine",
        negative_cosine_byol_without_constant,
        "BYOL's 2 - 2cos without the 2",
    ),
    Mutant(
        "dcl_positive_in_denominator",
        "dcl",
        dcl_positive_in_denominator,
        "the positive left in the denominator (NT-Xent)",
    ),
    Mutant("dcl_one_view_anchors", "dcl", dcl_one_view_anchors, "only the first view's anchors"),
    Mutant("dclw_weights_not_centred", "dclw", dclw_weights_not_centred, "w = N softmax, no 2 -"),
    Mutant("dclw_sigma_multiplies", "dclw", dclw_sigma_multiplies, "softmax(s * sigma)"),
    Mutant(
        "dclw_weight_on_the_negatives",
        "dclw",
        dclw_weight_on_the_negatives,
        "the weight multiplies the negative term",
    ),
    Mutant("moco_v3_without_2tau", "moco_v3", moco_v3_without_2tau, "no 2 tau factor"),
    Mutant(
        "moco_v3_directions_averaged",
        "moco_v3",
        moco_v3_directions_averaged,
        "the two directions averaged, not summed",
    ),
    Mutant(
        "moco_v3_queries_as_negatives",
        "moco_v3",
        moco_v3_queries_as_negatives,
        "SimCLR's loss on [q; k] (other queries as negatives)",
    ),
    Mutant("moco_v3_same_view_keys", "moco_v3", moco_v3_same_view_keys, "q1 scored against k1"),
    Mutant(
        "moco_v3_keys_not_detached",
        "moco_v3",
        moco_v3_keys_not_detached,
        "gradient into the momentum keys",
    ),
    Mutant(
        "dino_same_crop_pairs_kept", "dino", dino_same_crop_pairs_kept, "same-crop pairs counted"
    ),
    Mutant("dino_center_added", "dino", dino_center_added, "centre added to the teacher"),
    Mutant(
        "dino_temperatures_swapped",
        "dino",
        dino_temperatures_swapped,
        "student and teacher temperatures swapped",
    ),
    Mutant(
        "dino_teacher_softmax_over_the_batch",
        "dino",
        dino_teacher_softmax_over_the_batch,
        "teacher softmax over the batch axis",
    ),
    Mutant("dino_pairs_summed", "dino", dino_pairs_summed, "sum over crop pairs, not mean"),
    Mutant(
        "dino_teacher_not_detached",
        "dino",
        dino_teacher_not_detached,
        "gradient into the teacher",
    ),
    Mutant("swav_codes_not_detached", "swav", swav_codes_not_detached, "gradient into the codes"),
    Mutant("swav_own_code_predicted", "swav", swav_own_code_predicted, "no swap: own code"),
    Mutant(
        "swav_sinkhorn_without_epsilon",
        "swav",
        swav_sinkhorn_without_epsilon,
        "Sinkhorn on exp(S), epsilon ignored",
    ),
    Mutant(
        "swav_codes_without_equipartition",
        "swav",
        swav_codes_without_equipartition,
        "codes = softmax(S / epsilon) (no prototype equipartition)",
    ),
    Mutant(
        "swav_prediction_without_temperature",
        "swav",
        swav_prediction_without_temperature,
        "prediction softmax without 1/tau",
    ),
)


# Broken versions of the two helpers that are not losses (Sinkhorn-Knopp codes and DINO's
# centre update): tests/properties/test_swav.py and test_dino.py check them directly.  The
# name does not end in MUTANTS, so the oracle's suite (losses only) leaves them out.


def sinkhorn_rows_only(scores, *, epsilon=0.05, iterations=3):
    return _sinkhorn_variant(scores, epsilon, iterations, equipartition=False)


def sinkhorn_without_epsilon(scores, *, epsilon=0.05, iterations=3):
    return _sinkhorn_variant(scores, epsilon, iterations, scale_eps=False)


def sinkhorn_unscaled(scores, *, epsilon=0.05, iterations=3):
    return _sinkhorn_variant(scores, epsilon, iterations) / scores.shape[0]


def sinkhorn_ends_on_prototypes(scores, *, epsilon=0.05, iterations=3):
    q = torch.exp((scores - scores.max()) / epsilon)  # (N, K)
    n, k = q.shape
    for _ in range(iterations):  # samples first, prototypes last: rows no longer sum to 1
        q = q / q.sum(dim=1, keepdim=True) / n
        q = q / q.sum(dim=0, keepdim=True) / k
    return q * n


def center_momentum_swapped(center, teacher, momentum=0.9, **_):
    return (1 - momentum) * center + momentum * teacher.mean(dim=(0, 1))


def center_of_the_first_crop(center, teacher, momentum=0.9, **_):
    return momentum * center + (1 - momentum) * teacher[:, 0].mean(dim=0)


HELPER_MISTAKES: tuple[Mutant, ...] = (
    Mutant("sinkhorn_rows_only", "sinkhorn_knopp", sinkhorn_rows_only, "no prototype rescaling"),
    Mutant("sinkhorn_without_epsilon", "sinkhorn_knopp", sinkhorn_without_epsilon, "exp(S)"),
    Mutant("sinkhorn_unscaled", "sinkhorn_knopp", sinkhorn_unscaled, "codes not times N"),
    Mutant(
        "sinkhorn_ends_on_prototypes",
        "sinkhorn_knopp",
        sinkhorn_ends_on_prototypes,
        "the iteration ends on the prototype rescaling",
    ),
    Mutant(
        "center_momentum_swapped",
        "dino_center_update",
        center_momentum_swapped,
        "m and 1 - m swapped",
    ),
    Mutant(
        "center_of_the_first_crop",
        "dino_center_update",
        center_of_the_first_crop,
        "the mean of the first teacher crop only",
    ),
)
