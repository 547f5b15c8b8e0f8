"""Independent float64 NumPy references for :mod:`amcl_lab.metrics`, written as plain loops.

Each function follows the formula of the paper its :mod:`amcl_lab.metrics` counterpart cites
(Wang & Isola 2020; Wang & Liu 2021, Eqs. 5, 10, 11; Graf et al. 2021; Roy & Vetterli 2007;
Stringer et al. 2019) term by term and never imports
amcl_lab, so comparing the library against it checks two separately written programs.
Where a quantity has a second, differently derived form (the simplex distance via the
eigenvalues of the class-mean Gram matrix, NC1 via an explicit pseudo-inverse of the
between-class covariance), the reference uses that form.
"""

from __future__ import annotations

import math

import numpy as np


def unit(x, eps: float = 1e-8) -> np.ndarray:
    """Row-normalise; rows with norm below ``eps`` become zero."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    for i, row in enumerate(x):
        norm = math.sqrt(float(row @ row))
        if norm >= eps:
            out[i] = row / norm
    return out


def alignment(z1, z2, alpha: float = 2.0) -> float:
    u1, u2 = unit(z1), unit(z2)
    return sum(float(np.linalg.norm(a - b)) ** alpha for a, b in zip(u1, u2, strict=True)) / len(u1)


def uniformity(z, t: float = 2.0) -> float:
    """log of the mean of exp(-t |u_i - u_j|^2) over pairs i < j (log-sum-exp in a loop)."""
    u = unit(z)
    n = len(u)
    terms = [-t * float(np.sum((u[i] - u[j]) ** 2)) for i in range(n) for j in range(i + 1, n)]
    m = max(terms)
    return m + math.log(sum(math.exp(x - m) for x in terms)) - math.log(len(terms))


def tolerance(z, labels, reading: str = "conditional") -> float:
    u = unit(z)
    labels = list(np.asarray(labels))
    n = len(u)
    total, count = 0.0, 0
    for i in range(n):
        for j in range(n):
            if labels[i] != labels[j] or (reading == "conditional" and i == j):
                continue
            total += float(u[i] @ u[j])
            count += 1
    return total / (count if reading == "conditional" else n * n)


def negative_weights(z1, z2, tau: float, top_k: int = 1):
    """Per-anchor (weights, entropy, inverse-Simpson number, top-k share), anchors [z1; z2]."""
    z = unit(np.concatenate([z1, z2]))
    two_n = len(z)
    n = two_n // 2
    rows = []
    for i in range(two_n):
        p = (i + n) % two_n
        s = [float(z[i] @ z[k]) for k in range(two_n) if k not in (i, p)]
        m = max(s)
        e = [math.exp((x - m) / tau) for x in s]
        r = [x / sum(e) for x in e]
        entropy = -sum(x * math.log(x) for x in r if x > 0)
        rows.append((r, entropy, 1.0 / sum(x * x for x in r), sum(sorted(r)[::-1][:top_k])))
    return rows


def simplex_distance(z, labels) -> float:
    """Via the eigenvalues of G = M M^T (M the centred class means), without cancellation.

    G 1 = 0, so G has the eigenvalue 0 on 1 and eigenvalues l_1..l_n (n = C - 1) on its
    complement, where the target T = (C I - 1 1^T)/(C - 1) acts as C/(C - 1).  The best
    multiple of T leaves sin^2 = 1 - (sum l)^2 / (n sum l^2) = sum_{i<j} (l_i - l_j)^2 /
    (n sum l^2) (Lagrange's identity), which is the squared relative distance.
    """
    means = class_means(z, labels)
    centred = means - means.mean(axis=0)
    lam = np.sort(np.linalg.eigvalsh(centred @ centred.T))[1:]  # drop the eigenvalue on 1
    n = len(lam)
    spread = sum((lam[i] - lam[j]) ** 2 for i in range(n) for j in range(i + 1, n))
    return math.sqrt(spread / (n * (lam**2).sum()))


def class_means(z, labels) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels)
    return np.stack([z[labels == c].mean(axis=0) for c in sorted(set(labels.tolist()))])


def nc1(z, labels) -> float:
    """tr(Sigma_W Sigma_B^+)/C with explicit covariances and numpy's pseudo-inverse."""
    z = np.asarray(z, dtype=np.float64)
    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    means = {c: z[labels == c].mean(axis=0) for c in classes}
    centre = np.mean([means[c] for c in classes], axis=0)
    d = z.shape[1]
    sigma_w = np.zeros((d, d))
    for x, y in zip(z, labels, strict=True):
        r = x - means[int(y)]
        sigma_w += np.outer(r, r) / len(z)
    sigma_b = sum(np.outer(means[c] - centre, means[c] - centre) for c in classes) / len(classes)
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b, hermitian=True)) / len(classes))


def effective_rank(z, center: bool = True) -> float:
    x = np.asarray(z, dtype=np.float64)
    if center:
        x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    s = s[s > max(x.shape) * np.finfo(np.float64).eps * s[0]]
    p = s / s.sum()
    return math.exp(-sum(q * math.log(q) for q in p))


def power_law_fit(eigenvalues, k_min: int, k_max: int) -> tuple[float, float]:
    """(alpha, weighted R^2) of log(lambda_k) ~ c - alpha log(k), weights 1/k, via lstsq."""
    lam = np.asarray(eigenvalues, dtype=np.float64)
    k = np.arange(k_min, k_max + 1, dtype=np.float64)
    y = np.log(lam[k_min - 1 : k_max] / lam.sum())
    root_w = np.sqrt(1.0 / k)
    design = np.stack([np.ones_like(k), np.log(k)], axis=1)
    coef, *_ = np.linalg.lstsq(design * root_w[:, None], y * root_w, rcond=None)
    fitted = design @ coef
    w = 1.0 / k
    y_bar = (w * y).sum() / w.sum()
    r2 = 1.0 - (w * (y - fitted) ** 2).sum() / (w * (y - y_bar) ** 2).sum()
    return -float(coef[1]), float(r2)
