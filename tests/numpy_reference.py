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


def barlow_twins(z1, z2, lam: float, eps: float = 1e-5, unbiased: bool = False) -> float:
    """Barlow Twins with per-view, per-feature standardisation."""
    z1 = np.asarray(z1, dtype=np.float64)
    z2 = np.asarray(z2, dtype=np.float64)
    n, d = z1.shape
    ddof = 1 if unbiased else 0

    def standardize(z):
        return (z - z.mean(axis=0)) / np.sqrt(z.var(axis=0, ddof=ddof) + eps)

    a, b = standardize(z1), standardize(z2)
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
