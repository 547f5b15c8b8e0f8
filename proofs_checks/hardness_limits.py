"""Proof check: the InfoNCE gradient's weights over negatives and their temperature limits.

Claim (F. Wang, H. Liu, "Understanding the Behaviour of Contrastive Loss", CVPR 2021,
arXiv:2012.09740, Eqs. 4-7, and its statement that the entropy of the relative penalties
falls with tau; the rates and bounds below are derived here).  For an NT-Xent anchor i
with negative similarities s_j (2N - 2 of them, K in total) the gradient puts relative
weight r_j = softmax(s / tau)_j on negative j.  As tau -> 0 the weights become one-hot on
the hardest negative: with Delta the gap between the hardest and the second-hardest
similarity, eps = 1 - r_max satisfies
|tau log(eps) + Delta| <= tau log(K - 1) once eps <= 1/2 (exponential rate e^(-Delta/tau)),
and the entropy H(r) = h(eps) + eps * H(rest), with h the binary entropy and
0 <= H(rest) <= log(K - 1), goes to 0 (to log m on an m-way tie).  As tau -> infinity they
become uniform at rate 1/tau: tau (K r_j - 1) -> s_j - mean(s), and
log K - H = Var(s) / (2 tau^2) + O(tau^-3).  In between, dH/dtau = Var_r(s) / tau^3 >= 0,
and the r-mass of the k hardest negatives decreases with tau.  At the loss level,
tau L -> max(s_max - s_pos, 0) as tau -> 0 (Eq. 6), and the first-order expansion of Eq. 7
has remainder Var_M(s) / (2 tau^2) + O(tau^-3) over the M = 2N - 1 denominator terms.

How it is checked.  The weights and summaries are ``amcl_lab.metrics.negative_weights`` and
the loss is ``amcl_lab.losses.nt_xent`` (the code under test); every predicted value (gaps,
means, variances, limits) is computed from the similarities in float64 NumPy, independently.

Run ``python proofs_checks/hardness_limits.py`` (full) or with ``--fast`` (a few seconds).
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from amcl_lab.losses import nt_xent
from amcl_lab.metrics import negative_weights

torch.set_num_threads(1)

RESULTS: list[bool] = []


def statement(label: str, claim: str, ok: bool, evidence: str) -> None:
    RESULTS.append(bool(ok))
    print(f"[{'PASS' if ok else 'FAIL'}] {label}: {claim}\n        {evidence}")


def similarity_rows(z1: np.ndarray, z2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive similarity, negative similarities in increasing row order) per anchor."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    two_n = len(z)
    n = two_n // 2
    pos = np.array([s[i, (i + n) % two_n] for i in range(two_n)])
    neg = np.array(
        [[s[i, j] for j in range(two_n) if j not in (i, (i + n) % two_n)] for i in range(two_n)]
    )
    return pos, neg


def weights(z1: torch.Tensor, z2: torch.Tensor, tau: float, top_k: int = 1):
    w = negative_weights(z1, z2, tau, top_k=top_k)
    return (
        w.weights.numpy(),
        w.entropy.numpy(),
        w.top_k_share.numpy(),
    )


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """h(p) = -p log p - (1 - p) log(1 - p), accurate for tiny p, with h(0) = 0."""
    return -(p * np.log(np.where(p > 0, p, 1.0)) + (1.0 - p) * np.log1p(-p))


# --- statements --------------------------------------------------------------------------


def check_softmax(z1, z2, neg) -> None:
    worst = 0.0
    for tau in np.logspace(-3, 3, 13):
        r = weights(z1, z2, tau)[0]
        logits = neg / tau
        expected = np.exp(logits - logits.max(axis=1, keepdims=True))
        expected /= expected.sum(axis=1, keepdims=True)
        worst = max(worst, np.abs(r - expected).max(), np.abs(r.sum(axis=1) - 1).max())
    statement(
        "H1",
        "weights are softmax(s_neg / tau) over the 2N - 2 negatives and sum to 1 (Eq. 5)",
        worst < 1e-12,
        f"13 temperatures in [1e-3, 1e3], {neg.shape[0]} anchors: largest deviation {worst:.1e}",
    )


def check_zero_temperature(z1, z2, neg) -> None:
    k = neg.shape[1]
    top2 = np.sort(neg, axis=1)[:, ::-1][:, :2]
    gap = top2[:, 0] - top2[:, 1]
    hardest = neg.argmax(axis=1)
    # down to Delta_min / 40, where every anchor has eps <= (K - 1) e^-40
    taus = np.geomspace(0.5, gap.min() / 40, 8)
    rows = []
    ok = True
    for tau in taus:
        r, entropy, _ = weights(z1, z2, tau)
        others = r.copy()
        others[np.arange(len(r)), hardest] = 0.0
        eps = others.sum(axis=1)  # 1 - r_max without cancellation
        small = (eps <= 0.5) & (eps > 0)  # eps = 0: the second-hardest weight underflowed
        dev = np.abs(tau * np.log(np.where(small, eps, 1.0)) + gap)[small]
        ok &= bool(np.all(dev <= tau * math.log(k - 1) + 1e-12))
        h_eps = binary_entropy(eps)
        ok &= bool(np.all(entropy >= h_eps - 1e-12))
        ok &= bool(np.all(entropy <= h_eps + eps * math.log(k - 1) + 1e-12))
        rows.append((tau, dev.max() if dev.size else None, entropy.max()))
    ok &= rows[-1][2] < 1e-12
    table = "; ".join(
        f"tau={t:.2g}: "
        + ("" if d is None else f"max|tau log eps + Delta| {d:.1e}, ")
        + f"max H {h:.1e}"
        for t, d, h in rows
    )
    statement(
        "H2",
        "tau -> 0: weights become one-hot on the hardest negative, 1 - r_max ~ e^(-Delta/tau), "
        "and H(r) -> 0 between h(eps) and h(eps) + eps log(K - 1)",
        ok,
        f"gaps Delta in [{gap.min():.3f}, {gap.max():.3f}]; {table}",
    )


def check_tie_limit() -> None:
    # Anchor 0 (e1) has two negatives tied at cosine 0.9 and four others at most 0.
    s = math.sqrt(0.19)
    z1 = torch.tensor([[1.0, 0, 0], [0.9, s, 0], [0.9, s, 0], [0, -1.0, 0]], dtype=torch.float64)
    z2 = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]], dtype=torch.float64)
    _, entropy, share = weights(z1, z2, 1e-3, top_k=2)
    ok = abs(entropy[0] - math.log(2)) < 1e-12 and abs(share[0] - 1.0) < 1e-12
    statement(
        "H3",
        "tau -> 0 with an m-way tie for the hardest negative: H(r) -> log m",
        ok,
        f"m = 2 at cosine 0.9, tau = 1e-3: H = {entropy[0]:.15f}, log 2 = {math.log(2):.15f}; "
        f"share of the 2 hardest = {share[0]:.15f}",
    )


def check_infinite_temperature(z1, z2, neg) -> None:
    k = neg.shape[1]
    centred = neg - neg.mean(axis=1, keepdims=True)
    variance = (centred**2).mean(axis=1)
    rows = []
    ok = True
    for tau in (10.0, 100.0, 1e3, 1e4):
        r, entropy, _ = weights(z1, z2, tau)
        first = np.abs(tau * (k * r - 1.0) - centred).max()
        ok &= first * tau <= 4.0
        row = f"tau={tau:g}: max|tau(K r - 1) - (s - mean s)| {first:.1e}"
        if tau <= 1e3:  # log K - H ~ 1e-7 there; beyond, the rounding of H dominates
            second = np.abs(2 * tau**2 * (math.log(k) - entropy) / variance - 1.0).max()
            ok &= second * tau <= 10.0
            row += f", |2 tau^2 (log K - H)/Var - 1| {second:.1e}"
        rows.append(row)
    ok &= first < 1e-3
    statement(
        "H4",
        "tau -> infinity: weights become uniform at rate 1/tau, log K - H = Var(s)/(2 tau^2) + "
        "O(tau^-3)",
        ok,
        "; ".join(rows),
    )


def check_entropy_derivative_and_monotonicity(z1, z2, neg) -> None:
    worst_rel = 0.0
    for tau in (0.05, 0.2, 1.0, 5.0):
        step = 1e-4 * tau
        h_plus = weights(z1, z2, tau + step)[1]
        h_minus = weights(z1, z2, tau - step)[1]
        r = weights(z1, z2, tau)[0]
        mean = (r * neg).sum(axis=1)
        var_r = (r * (neg - mean[:, None]) ** 2).sum(axis=1)
        predicted = var_r / tau**3
        numeric = (h_plus - h_minus) / (2 * step)
        worst_rel = max(worst_rel, (np.abs(numeric - predicted) / predicted).max())
    grid = np.geomspace(0.02, 5.0, 40)
    entropies = np.stack([weights(z1, z2, tau)[1] for tau in grid])
    increments = np.diff(entropies, axis=0).min()
    shares = np.stack([weights(z1, z2, tau, top_k=3)[2] for tau in grid])
    share_increments = np.diff(shares, axis=0).max()
    statement(
        "H5",
        "dH/dtau = Var_r(s)/tau^3 >= 0: the entropy grows with tau, and the mass of the 3 "
        "hardest negatives shrinks",
        worst_rel < 1e-6 and increments >= -1e-14 and share_increments <= 1e-14,
        f"central differences vs Var_r(s)/tau^3 at tau in (0.05, 0.2, 1, 5): worst relative "
        f"error {worst_rel:.1e}; on 40 temperatures in [0.02, 5] the smallest entropy step is "
        f"{increments:.1e} and the largest top-3 share step {share_increments:.1e} (rounding "
        "allowance 1e-14)",
    )


def check_loss_limits(z1, z2, pos, neg) -> None:
    m = neg.shape[1] + 1
    hinge = np.maximum(neg.max(axis=1) - pos, 0.0)
    rows = []
    ok = True
    for tau in (1e-1, 1e-2, 1e-3):
        dev = tau * nt_xent(z1, z2, tau, reduction="none").numpy() - hinge
        bound = tau * math.log(m)
        ok &= bool(np.all(dev >= -1e-12) and np.all(dev <= bound + 1e-12))
        rows.append(f"tau={tau:g}: max|tau L - hinge| {np.abs(dev).max():.1e} <= {bound:.1e}")
    statement(
        "H6",
        "tau -> 0: tau L_i -> max(s_max - s_pos, 0), within tau log(2N - 1) (Eq. 6)",
        ok,
        "; ".join(rows),
    )
    variance = np.concatenate([pos[:, None], neg], axis=1).var(axis=1)
    rows = []
    ok = True
    for tau in (10.0, 100.0, 1000.0):
        loss = nt_xent(z1, z2, tau, reduction="none").numpy()
        first_order = math.log(m) - (m - 1) * pos / (m * tau) + neg.sum(axis=1) / (m * tau)
        remainder = loss - first_order
        rel = np.abs(remainder * tau**2 / (variance / 2) - 1).max()
        ok &= rel * tau <= 10.0
        worst = np.abs(remainder).max()
        rows.append(f"tau={tau:g}: max remainder R {worst:.2e}, |2 tau^2 R/Var - 1| {rel:.1e}")
    statement(
        "H7",
        "tau -> infinity: the remainder of Eq. 7's first-order expansion is Var_M(s)/(2 tau^2) "
        "+ O(tau^-3) (Eq. 7)",
        ok,
        "; ".join(rows),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="one configuration")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(__doc__.split("How it is checked")[0].strip(), "\n")
    rng = np.random.default_rng(args.seed)
    shapes = [(4, 3)] if args.fast else [(4, 3), (8, 16), (16, 4), (32, 64)]
    for n, d in shapes:
        print(f"-- configuration: N = {n} pairs in D = {d} ({2 * n - 2} negatives per anchor)")
        a = rng.standard_normal((n, d))
        b = a + 0.5 * rng.standard_normal((n, d))
        pos, neg = similarity_rows(a, b)
        z1, z2 = torch.from_numpy(a), torch.from_numpy(b)
        check_softmax(z1, z2, neg)
        check_zero_temperature(z1, z2, neg)
        check_infinite_temperature(z1, z2, neg)
        check_entropy_derivative_and_monotonicity(z1, z2, neg)
        check_loss_limits(z1, z2, pos, neg)
    check_tie_limit()
    passed = sum(RESULTS)
    print(f"\nhardness_limits: {passed}/{len(RESULTS)} statements hold")
    return 0 if passed == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
