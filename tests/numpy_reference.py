"""Independent float64 NumPy transcriptions of the losses, written as plain loops.

These follow the papers' formulas term by term and never import amcl_lab, so a property
test that compares the library against them checks two separately written programs.
"""

from __future__ import annotations

import math

import numpy as np


def _unit(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / np.maximum(norms, eps)


def _log_sum_exp(values: list[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def nt_xent(z1, z2, tau: float, decoupled: bool = False) -> np.ndarray:
    """Per-anchor NT-Xent, anchors ordered [z1 rows; z2 rows]."""
    z = _unit(np.concatenate([z1, z2]))
    two_n = z.shape[0]
    n = two_n // 2
    out = np.empty(two_n)
    for i in range(two_n):
        p = (i + n) % two_n
        terms = []
        for k in range(two_n):
            if k == i or (decoupled and k == p):
                continue
            terms.append(float(z[i] @ z[k]) / tau)
        out[i] = -float(z[i] @ z[p]) / tau + _log_sum_exp(terms)
    return out


def info_nce(q, k, queue, tau: float) -> np.ndarray:
    """Per-query MoCo InfoNCE; ``queue=None`` means in-batch keys as negatives."""
    q, k = _unit(q), _unit(k)
    out = np.empty(q.shape[0])
    for i in range(q.shape[0]):
        pos = float(q[i] @ k[i]) / tau
        if queue is None:
            terms = [float(q[i] @ k[j]) / tau for j in range(k.shape[0])]
        else:
            bank = _unit(queue)
            terms = [pos] + [float(q[i] @ bank[j]) / tau for j in range(bank.shape[0])]
        out[i] = -pos + _log_sum_exp(terms)
    return out


def supcon(features, labels, tau: float, variant: str = "out") -> tuple[np.ndarray, np.ndarray]:
    """Per-item SupCon losses (item r = view r // N of sample r % N) and has-positive flags."""
    n, views, _ = features.shape
    items = [_unit(features[s, v]) for v in range(views) for s in range(n)]
    item_labels = [int(labels[s]) for _ in range(views) for s in range(n)]
    m = len(items)
    losses, has_pos = np.zeros(m), np.zeros(m, dtype=bool)
    for i in range(m):
        others = [a for a in range(m) if a != i]
        log_denominator = _log_sum_exp([float(items[i] @ items[a]) / tau for a in others])
        pos = [p for p in others if item_labels[p] == item_labels[i]]
        if not pos:
            continue
        has_pos[i] = True
        log_probs = [float(items[i] @ items[p]) / tau - log_denominator for p in pos]
        if variant == "out":
            losses[i] = -sum(log_probs) / len(pos)
        else:
            losses[i] = -(_log_sum_exp(log_probs) - math.log(len(pos)))
    return losses, has_pos


def _standardize(z: np.ndarray, eps: float, unbiased: bool) -> np.ndarray:
    """Per-feature standardisation over the batch (rows)."""
    ddof = 1 if unbiased else 0
    return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0, ddof=ddof) + eps)


def barlow_twins(z1, z2, lam: float, eps: float = 1e-5, unbiased: bool = False) -> float:
    """Barlow Twins with per-view, per-feature standardisation."""
    z1 = np.asarray(z1, dtype=np.float64)
    z2 = np.asarray(z2, dtype=np.float64)
    n, d = z1.shape
    a, b = _standardize(z1, eps, unbiased), _standardize(z2, eps, unbiased)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[s, i] * b[s, j] for s in range(n)) / n
            total += (1.0 - c) ** 2 if i == j else lam * c * c
    return total


def _selected_negatives(sim_row: np.ndarray, negatives: list[int], k: int | None) -> list[int]:
    if k is None:
        return negatives
    # ties within 64 machine epsilons of the k-th largest similarity are all kept
    threshold = sorted((sim_row[j] for j in negatives), reverse=True)[k - 1]
    return [j for j in negatives if sim_row[j] >= threshold - 64 * np.finfo(np.float64).eps]


def hard_contrastive(z1, z2, tau: float, k: int | None) -> np.ndarray:
    """Per-anchor hard contrastive loss (Wang & Liu Eq. 9), ties at the threshold kept."""
    z = _unit(np.concatenate([z1, z2]))
    two_n = z.shape[0]
    n = two_n // 2
    sim = z @ z.T
    out = np.empty(two_n)
    for i in range(two_n):
        p = (i + n) % two_n
        negatives = [j for j in range(two_n) if j not in (i, p)]
        chosen = _selected_negatives(sim[i], negatives, k)
        terms = [sim[i, p] / tau] + [sim[i, j] / tau for j in chosen]
        out[i] = -sim[i, p] / tau + _log_sum_exp(terms)
    return out


def simple_contrastive(z1, z2, lam: float | None, k: int | None) -> np.ndarray:
    """Per-anchor simple loss (Wang & Liu Eq. 3); lam=None means the mean over negatives."""
    z = _unit(np.concatenate([z1, z2]))
    two_n = z.shape[0]
    n = two_n // 2
    sim = z @ z.T
    out = np.empty(two_n)
    for i in range(two_n):
        p = (i + n) % two_n
        negatives = [j for j in range(two_n) if j not in (i, p)]
        chosen = _selected_negatives(sim[i], negatives, k)
        weight = 1.0 / len(chosen) if lam is None else lam
        out[i] = -sim[i, p] + weight * sum(sim[i, j] for j in chosen)
    return out


# --- AMCL (issue 3) ----------------------------------------------------------------------------
# Wang et al. 2024, Table 2: per head c and anchor i, -s+/tau+ + s*/tau* + beta Omega(tau+)
# - beta Omega(tau*), summed over heads; the hardest candidate by raw similarity, ties to the
# lowest index.  Temperatures are given per pair in the layouts the library documents.  The
# log-sum-exp modes (the "Softmax" variant of the paper's Fig. 5, right) replace s*/tau* by
# log sum_n exp(s_n/tau_n) over every candidate and Omega(tau*) by the candidates' mean.


def amcl_omega(tau: float, dim: int) -> float:
    """Omega(tau) = (d'/2) log tau + 1/tau."""
    return 0.5 * dim * math.log(tau) + 1.0 / tau


def _amcl_hardest(values: list[float], count: int) -> list[int]:
    """Positions of the ``count`` largest values; equal values in increasing position."""
    return sorted(range(len(values)), key=lambda j: (-values[j], j))[:count]


def _amcl_anchor(s_pos, t_pos, s_cand, t_cand, dim, beta, count, neg_regularizer) -> float:
    chosen = _amcl_hardest(s_cand, count)
    negative = sum(s_cand[j] / t_cand[j] for j in chosen) / len(chosen)
    if neg_regularizer == "omega":
        reg_neg = sum(amcl_omega(t_cand[j], dim) for j in chosen) / len(chosen)
    else:  # the second code release: sum_k log tau_k + 1/tau_k
        reg_neg = sum(math.log(t_cand[j]) + 1.0 / t_cand[j] for j in chosen)
    return -s_pos / t_pos + negative + beta * (amcl_omega(t_pos, dim) - reg_neg)


def _amcl_anchor_log_sum_exp(s_pos, t_pos, s_cand, t_cand, dim, beta, with_positive) -> float:
    """One head and anchor of the log-sum-exp ("Softmax", Fig. 5 right) forms: every candidate
    over its own temperature, Omega of the candidates averaged; ``with_positive`` also puts
    the positive's s/tau inside the log-sum-exp."""
    logits = [s_cand[j] / t_cand[j] for j in range(len(s_cand))]
    if with_positive:
        logits.append(s_pos / t_pos)
    reg_neg = sum(amcl_omega(t, dim) for t in t_cand) / len(t_cand)
    return -s_pos / t_pos + _log_sum_exp(logits) + beta * (amcl_omega(t_pos, dim) - reg_neg)


def _amcl_terms(s_pos, t_pos, s_cand, t_cand, dim, beta, mode, k, neg_regularizer) -> float:
    if mode in ("softmax", "nt_xent"):
        assert neg_regularizer == "omega" and k is None
        return _amcl_anchor_log_sum_exp(
            s_pos, t_pos, s_cand, t_cand, dim, beta, with_positive=mode == "nt_xent"
        )
    count = 1 if mode == "max" else k
    return _amcl_anchor(s_pos, t_pos, s_cand, t_cand, dim, beta, count, neg_regularizer)


def amcl_two_view(
    z1,
    z2,
    tau,
    beta: float = 1e-4,
    mode: str = "max",
    k: int | None = None,
    neg_regularizer: str = "omega",
    positive_is_candidate: bool = False,
) -> np.ndarray:
    """Per-anchor AMCL NT-Xent (Eq. 2.1) or InfoNCE (Eq. 2.4, positive also a candidate).

    ``z1, z2``: (C, N, D); ``tau``: broadcastable to (C, 2N, 2N) over the rows of [z1; z2].
    ``mode``: "max", "topk" (with ``k``), "softmax" (log-sum-exp over the candidates) or
    "nt_xent" (the positive added to it; not with ``positive_is_candidate``).
    """
    assert not (positive_is_candidate and mode == "nt_xent")
    z1, z2 = np.asarray(z1, dtype=np.float64), np.asarray(z2, dtype=np.float64)
    heads, n, d = z1.shape
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (heads, 2 * n, 2 * n))
    out = np.zeros(2 * n)
    for c in range(heads):
        z = _unit(np.concatenate([z1[c], z2[c]]))
        for i in range(2 * n):
            p = (i + n) % (2 * n)
            cands = [j for j in range(2 * n) if j != i and (positive_is_candidate or j != p)]
            s_cand = [float(z[i] @ z[j]) for j in cands]
            t_cand = [float(tau[c, i, j]) for j in cands]
            s_pos, t_pos = float(z[i] @ z[p]), float(tau[c, i, p])
            out[i] += _amcl_terms(s_pos, t_pos, s_cand, t_cand, d, beta, mode, k, neg_regularizer)
    return out


def amcl_moco(
    query,
    key,
    queue,
    tau,
    beta: float = 1e-4,
    mode: str = "max",
    k: int | None = None,
    neg_regularizer: str = "omega",
) -> np.ndarray:
    """Per-query AMCL MoCo; ``queue``: (C, K, D); ``tau``: (C, N, 1 + K), column 0 the key;
    ``mode`` as for :func:`amcl_two_view` ("nt_xent": the key inside the log-sum-exp)."""
    query, key = np.asarray(query, dtype=np.float64), np.asarray(key, dtype=np.float64)
    heads, n, d = query.shape
    size = np.asarray(queue).shape[1]
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (heads, n, 1 + size))
    out = np.zeros(n)
    for c in range(heads):
        q, kk, bank = _unit(query[c]), _unit(key[c]), _unit(queue[c])
        for i in range(n):
            s_cand = [float(q[i] @ bank[j]) for j in range(size)]
            t_cand = [float(tau[c, i, 1 + j]) for j in range(size)]
            s_pos, t_pos = float(q[i] @ kk[i]), float(tau[c, i, 0])
            out[i] += _amcl_terms(s_pos, t_pos, s_cand, t_cand, d, beta, mode, k, neg_regularizer)
    return out


def amcl_simsiam(p1, p2, h1, h2, tau, beta: float = 1e-4) -> np.ndarray:
    """Per-sample AMCL SimSiam (Eq. 2.2); ``tau``: (C, 2, N), [c, 0] for (p1, h2)."""
    p1, p2, h1, h2 = (np.asarray(t, dtype=np.float64) for t in (p1, p2, h1, h2))
    heads, n, d = p1.shape
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (heads, 2, n))
    out = np.zeros(n)
    for c in range(heads):
        a1, a2, t1, t2 = _unit(p1[c]), _unit(p2[c]), _unit(h1[c]), _unit(h2[c])
        for i in range(n):
            first, second = float(tau[c, 0, i]), float(tau[c, 1, i])
            out[i] += (
                -float(a1[i] @ t2[i]) / (2 * first)
                - float(a2[i] @ t1[i]) / (2 * second)
                + beta * (amcl_omega(first, d) + amcl_omega(second, d))
            )
    return out


def amcl_barlow_twins(
    z1,
    z2,
    tau,
    lam: float = 5e-3,
    beta: float = 1e-6,
    omega_dim: str = "features",
    eps: float = 1e-5,
    unbiased: bool = False,
) -> float:
    """AMCL Barlow Twins (Eq. 2.3); ``tau``: (C, D, D), diagonal = positive role."""
    z1, z2 = np.asarray(z1, dtype=np.float64), np.asarray(z2, dtype=np.float64)
    heads, n, d = z1.shape
    tau = np.broadcast_to(np.asarray(tau, dtype=np.float64), (heads, d, d))
    dim = d if omega_dim == "features" else n
    total = 0.0
    for c in range(heads):
        a, b = _standardize(z1[c], eps, unbiased), _standardize(z2[c], eps, unbiased)
        for i in range(d):
            for j in range(d):
                corr = sum(a[s, i] * b[s, j] for s in range(n)) / n
                t = float(tau[c, i, j])
                if i == j:
                    total += (1.0 - corr / t) ** 2 + beta * amcl_omega(t, dim)
                else:
                    total += lam * corr * corr / t - beta * amcl_omega(t, dim)
    return total


# --- self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV) ------------------
# Written from the papers' equations, loop by loop; where the papers' text and the authors'
# code differ (VICReg's invariance and variance scaling, the means over crop pairs), the
# functions follow the code and say so, and tests/properties checks the identities between
# the two readings.


def _column_variance(column: list[float], ddof: int) -> float:
    mean = sum(column) / len(column)
    return sum((x - mean) ** 2 for x in column) / (len(column) - ddof)


def vicreg_paper(z1, z2, lam: float, mu: float, nu: float, gamma=1.0, eps=1e-4) -> float:
    """Bardes et al. Eqs. (1)-(6) as printed: s = (1/n) sum_i |z_i - z'_i|^2 and
    mu [v(Z) + v(Z')] (sums, not means), unbiased variance and covariance."""
    z1 = np.asarray(z1, dtype=np.float64)
    z2 = np.asarray(z2, dtype=np.float64)
    n, d = z1.shape

    def v(z):  # Eq. (1)-(2): hinge on the regularised standard deviation
        total = 0.0
        for j in range(d):
            std = math.sqrt(_column_variance([float(z[i, j]) for i in range(n)], 1) + eps)
            total += max(0.0, gamma - std)
        return total / d

    def c(z):  # Eq. (3)-(4): off-diagonal covariance squared over d
        mean = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a == b:
                    continue
                cov = sum((z[i, a] - mean[a]) * (z[i, b] - mean[b]) for i in range(n)) / (n - 1)
                total += float(cov) ** 2
        return total / d

    s = sum(float(((z1[i] - z2[i]) ** 2).sum()) for i in range(n)) / n  # Eq. (5)
    return lam * s + mu * (v(z1) + v(z2)) + nu * (c(z1) + c(z2))  # Eq. (6)


def vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4) -> float:
    """VICReg as the authors' code computes it: the invariance averaged over the n d entries
    and the variance hinges of the two views averaged; equal to ``vicreg_paper`` with
    lambda / d and mu / 2."""
    d = np.asarray(z1).shape[1]
    return vicreg_paper(z1, z2, lam / d, mu / 2.0, nu, gamma, eps)


def multiview_vicreg(views, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4) -> float:
    """fastssl's multi-view VICReg: each view against the mean of the other views, averaged."""
    views = np.asarray(views, dtype=np.float64)
    m = views.shape[1]
    total = 0.0
    for a in range(m):
        others = [b for b in range(m) if b != a]
        rest = sum(views[:, b] for b in others) / len(others)
        total += vicreg(views[:, a], rest, lam, mu, nu, gamma, eps)
    return total / m


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(_unit(a) @ _unit(b))


def negative_cosine(p1, p2, z1, z2, convention: str = "simsiam") -> np.ndarray:
    """Per-sample SimSiam Eq. (2) (-cos/2 - cos/2) or BYOL's L + L~ (2 - 2cos, twice)."""
    p1, p2, z1, z2 = (np.asarray(t, dtype=np.float64) for t in (p1, p2, z1, z2))
    out = np.empty(p1.shape[0])
    for i in range(p1.shape[0]):
        c12, c21 = _cosine(p1[i], z2[i]), _cosine(p2[i], z1[i])
        out[i] = -0.5 * c12 - 0.5 * c21 if convention == "simsiam" else 4.0 - 2 * c12 - 2 * c21
    return out


def dcl(z1, z2, tau: float, weight: str | None = None, sigma: float = 0.5) -> np.ndarray:
    """Per-anchor DCL / DCLW (Yeh et al. Eq. 6): -w s_pos/tau + log sum over negatives only,
    w_n = 2 - N exp(s_n/sigma) / sum_m exp(s_m/sigma), anchors ordered [z1 rows; z2 rows]."""
    z = _unit(np.concatenate([z1, z2]))
    two_n = z.shape[0]
    n = two_n // 2
    positives = [float(z[s] @ z[s + n]) for s in range(n)]
    if weight == "vmf":
        top = max(p / sigma for p in positives)
        e = [math.exp(p / sigma - top) for p in positives]
        weights = [2.0 - n * x / sum(e) for x in e]
    else:
        weights = [1.0] * n
    out = np.empty(two_n)
    for i in range(two_n):
        p = (i + n) % two_n
        terms = [float(z[i] @ z[k]) / tau for k in range(two_n) if k not in (i, p)]
        out[i] = -weights[i % n] * float(z[i] @ z[p]) / tau + _log_sum_exp(terms)
    return out


def moco_v3(q1, q2, k1, k2, tau: float) -> float:
    """MoCo v3 Algorithm 1: ctr(q1, k2) + ctr(q2, k1), ctr = 2 tau CE(q k^T / tau, arange)."""

    def ctr(q, k):
        q, k = _unit(q), _unit(k)
        total = 0.0
        for i in range(q.shape[0]):
            logits = [float(q[i] @ k[j]) / tau for j in range(k.shape[0])]
            total += _log_sum_exp(logits) - logits[i]
        return 2.0 * tau * total / q.shape[0]

    return ctr(q1, k2) + ctr(q2, k1)


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    e = [math.exp(x - top) for x in values]
    return [x / sum(e) for x in e]


def dino(student, teacher, center=None, tau_s: float = 0.1, tau_t: float = 0.04) -> float:
    """DINO Eqs. (1)-(3): H(P_t(u), P_s(v)) over teacher crops u and student crops v != u,
    averaged over the pairs and the batch; P_t centred by ``center`` and sharpened by tau_t."""
    student = np.asarray(student, dtype=np.float64)
    teacher = np.asarray(teacher, dtype=np.float64)
    n, v_s, k = student.shape
    c = np.zeros(k) if center is None else np.asarray(center, dtype=np.float64)
    total, pairs = 0.0, 0
    for u in range(teacher.shape[1]):
        for v in range(v_s):
            if v == u:
                continue
            pairs += 1
            for i in range(n):
                target = _softmax([(teacher[i, u, j] - c[j]) / tau_t for j in range(k)])
                logits = [student[i, v, j] / tau_s for j in range(k)]
                log_z = _log_sum_exp(logits)
                total -= sum(t * (x - log_z) for t, x in zip(target, logits, strict=True)) / n
    return total / pairs


def dino_center_update(center, teacher, momentum: float) -> np.ndarray:
    """DINO Eq. (4): c <- m c + (1 - m) * mean of the teacher outputs over samples and crops."""
    teacher = np.asarray(teacher, dtype=np.float64)
    rows = [teacher[i, u] for i in range(teacher.shape[0]) for u in range(teacher.shape[1])]
    mean = sum(rows) / len(rows)
    return momentum * np.asarray(center, dtype=np.float64) + (1 - momentum) * mean


def sinkhorn(scores, epsilon: float, iterations: int) -> np.ndarray:
    """SwAV's Sinkhorn-Knopp in the multiplicative form of the paper's code: Q = exp(S/eps)
    (K x B after transposing), normalised to total mass 1, then per iteration prototypes to
    mass 1/K and samples to mass 1/B; returned as (B, K) codes times B."""
    s = np.asarray(scores, dtype=np.float64)
    q = np.exp((s - s.max()) / epsilon).T  # a global shift cancels in the normalisations
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(axis=1, keepdims=True) / k
        q = q / q.sum(axis=0, keepdims=True) / b
    return (q * b).T


def swav(scores, assigned: int = 2, tau: float = 0.1, epsilon: float = 0.05, iterations=3):
    """SwAV's swapped prediction as the official training loop averages it: for each assigned
    crop a, the cross-entropy of its codes against softmax(S/tau) of every other crop, averaged
    over those crops, then over the assigned crops."""
    s = np.asarray(scores, dtype=np.float64)
    n, views, k = s.shape
    total = 0.0
    for a in range(assigned):
        codes = sinkhorn(s[:, a], epsilon, iterations)
        sub = 0.0
        for v in range(views):
            if v == a:
                continue
            for i in range(n):
                logits = [s[i, v, j] / tau for j in range(k)]
                log_z = _log_sum_exp(logits)
                sub -= sum(codes[i, j] * (logits[j] - log_z) for j in range(k)) / n
        total += sub / (views - 1)
    return total / assigned
