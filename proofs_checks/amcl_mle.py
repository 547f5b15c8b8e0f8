"""Proof check: the maximum-likelihood reading of AMCL (Wang et al., ECCV 2024).

Each statement is checked numerically, printed with its evidence and PASS/FAIL; the script
exits non-zero if any statement fails.  ``--fast`` shrinks the grids (the test suite runs
that mode); ``nox -s proofs`` runs the full grids.

1. The Gaussian identity: for unit vectors,
   |a - b|^2 / (2 tau) + (d'/2) log tau = -sim(a, b) / tau + Omega(tau), exactly.
2. The optimal positive temperature: argmin over tau in [eta, tau_max] of
   -s/tau + beta Omega(tau) is 2 (beta - s) / (beta d') (clipped to the range) when s < beta,
   and the floor eta when s >= beta; checked against scipy.optimize.
3. The negative term s/tau - beta Omega(tau) has no interior minimum on [eta, tau_max]: scipy
   ends on a boundary, the only stationary point (s < beta) is a maximum, and a dense grid
   finds nothing below the better boundary.
4. The sandwich: AMCL <= NT-Xent (decoupled) <= AMCL + log(2N - 2), and the InfoNCE
   analogue with log(2N - 1), on random batches.

Source: L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head Contrastive Learning",
ECCV 2024, arXiv:2310.05615: the losses of Table 2 and the abstract's statement that they
come from a maximum-likelihood estimation over head-wise posteriors of the positives.  The
derivation checked here (an isotropic Gaussian per pair whose variance is the temperature)
is amcl_lab's reconstruction, not the paper's text; it reproduces Table 2 and the Omega of
both official code releases (``LeiWangR/cl``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

import numpy as np
import torch
from scipy import optimize

from amcl_lab import amcl_info_nce, amcl_nt_xent, nt_xent, omega

ETA, TAU_MAX = 1e-5, 2.0


def _omega(tau: float, dim: int) -> float:
    """The library's Omega at one float (the statements are about amcl_lab.omega)."""
    return float(omega(tau, dim))


def check_gaussian_identity(draws: int, rng: np.random.Generator) -> tuple[bool, str]:
    """Gaussian identity over random unit vectors, dimensions and temperatures in [eta, tau_max]."""
    worst = 0.0
    for _ in range(draws):
        dim = int(rng.integers(1, 2049))
        a, b = rng.standard_normal((2, dim))
        a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
        tau = float(10 ** rng.uniform(math.log10(ETA), math.log10(TAU_MAX)))
        lhs = float(((a - b) ** 2).sum()) / (2 * tau) + dim / 2 * math.log(tau)
        rhs = -float(a @ b) / tau + _omega(tau, dim)
        worst = max(worst, abs(lhs - rhs) / max(1.0, abs(lhs)))
    return worst <= 1e-12, f"{draws} draws, max relative residual {worst:.2e} (tolerance 1e-12)"


def _argmin_log(f: Callable[[float], float]) -> float:
    """Bounded scalar minimisation of f over [eta, tau_max] in log space."""
    result = optimize.minimize_scalar(
        lambda u: f(math.exp(u)),
        bounds=(math.log(ETA), math.log(TAU_MAX)),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return math.exp(result.x)


def _grid(fast: bool) -> list[tuple[float, float, int]]:
    similarities = np.linspace(-0.95, 0.95, 7 if fast else 39)
    betas = (1.0, 1e-2, 1e-4) if fast else (1.0, 0.3, 1e-2, 1e-4, 1e-6)
    dims = (2, 128) if fast else (1, 2, 16, 128, 2048)
    return [(float(s), b, d) for s in similarities for b in betas for d in dims]


def check_optimal_positive_temperature(fast: bool) -> tuple[bool, str]:
    """Optimal positive temperature: closed form vs scipy, in log tau, and the objective at both."""
    worst_log, worst_value, interior = 0.0, 0.0, 0
    for s, beta, dim in _grid(fast):

        def positive(tau, s=s, beta=beta, dim=dim):
            return -s / tau + beta * _omega(tau, dim)

        if s < beta:
            closed = min(max(2 * (beta - s) / (beta * dim), ETA), TAU_MAX)
            interior += ETA < closed < TAU_MAX
        else:
            closed = ETA
        found = _argmin_log(positive)
        worst_log = max(worst_log, abs(math.log(found) - math.log(closed)))
        # the closed form is never worse than what the optimiser found
        gap = positive(closed) - positive(found)
        worst_value = max(worst_value, gap / max(1.0, abs(positive(found))))
    ok = worst_log <= 1e-4 and worst_value <= 1e-12
    return ok, (
        f"{len(_grid(fast))} (s, beta, d') points, {interior} with an interior optimum; "
        f"max |log tau_scipy - log tau_closed| {worst_log:.2e} (tol 1e-4), "
        f"max relative excess of the closed form {worst_value:.2e} (tol 1e-12)"
    )


def check_negative_term_has_no_interior_minimum(fast: bool) -> tuple[bool, str]:
    """The negative term's minimum over [eta, tau_max] lies on the boundary."""
    grid = torch.logspace(math.log10(ETA), math.log10(TAU_MAX), 400 if fast else 4000)[1:-1]
    grid = grid.double()
    worst_boundary, worst_grid, maxima = 0.0, 0.0, 0
    for s, beta, dim in _grid(fast):

        def negative(tau, s=s, beta=beta, dim=dim):
            return s / tau - beta * _omega(tau, dim)

        found = _argmin_log(negative)
        to_boundary = min(abs(math.log(found / ETA)), abs(math.log(found / TAU_MAX)))
        worst_boundary = max(worst_boundary, to_boundary)
        best_end = min(negative(ETA), negative(TAU_MAX))
        dense = float((s / grid - beta * omega(grid, dim)).min())  # interior points at once
        worst_grid = max(worst_grid, (best_end - dense) / max(1.0, abs(best_end)))
        if s < beta:  # the only stationary point, tau0 = 2 (beta - s) / (beta d'), is a maximum
            tau0 = 2 * (beta - s) / (beta * dim)
            second = 2 * (s - beta) / tau0**3 + beta * dim / (2 * tau0**2)
            maxima += second < 0
    stationary = sum(s < beta for s, beta, _ in _grid(fast))
    ok = worst_boundary <= 1e-4 and worst_grid <= 1e-12 and maxima == stationary
    return ok, (
        f"scipy's minimiser within {worst_boundary:.2e} (log tau) of a boundary (tol 1e-4); "
        f"dense-grid interior never below the best boundary (max excess {worst_grid:.2e}); "
        f"{maxima}/{stationary} stationary points are maxima"
    )


def check_sandwich(batches: int, rng: np.random.Generator) -> tuple[bool, str]:
    """The sandwich per anchor with C = 1 and a constant temperature."""
    worst_low, worst_high = math.inf, math.inf
    for _ in range(batches):
        n, dim = int(rng.integers(2, 17)), int(rng.integers(2, 33))
        tau = float(10 ** rng.uniform(-2, 1))
        z1 = torch.from_numpy(rng.standard_normal((n, dim)))
        z2 = z1 + float(rng.uniform(0, 2)) * torch.from_numpy(rng.standard_normal((n, dim)))
        pairs = (
            (amcl_nt_xent, True, 2 * n - 2),
            (amcl_info_nce, False, 2 * n - 1),
        )
        for amcl, decoupled, count in pairs:
            low = amcl(z1[None], z2[None], tau, reduction="none").numpy()
            mid = nt_xent(z1, z2, tau, decoupled=decoupled, reduction="none").numpy()
            worst_low = min(worst_low, float((mid - low).min()))
            worst_high = min(worst_high, float((low + math.log(count) - mid).min()))
    tol = -1e-9
    ok = worst_low >= tol and worst_high >= tol
    return ok, (
        f"{batches} batches x 2 forms; min(NT-Xent - AMCL) = {worst_low:.3e} >= 0, "
        f"min(AMCL + log count - NT-Xent) = {worst_high:.3e} >= 0"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small grids (used by the tests)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    statements = [
        (
            "Gaussian identity: |a-b|^2/(2 tau) + (d'/2) log tau = -sim/tau + Omega(tau)",
            lambda: check_gaussian_identity(200 if args.fast else 5000, rng),
        ),
        (
            "argmin_tau -s/tau + beta Omega(tau) = 2(beta - s)/(beta d') if s < beta, else eta",
            lambda: check_optimal_positive_temperature(args.fast),
        ),
        (
            "Negative term s/tau - beta Omega(tau) has no interior minimum on [eta, tau_max]",
            lambda: check_negative_term_has_no_interior_minimum(args.fast),
        ),
        (
            "sandwich: AMCL <= NT-Xent <= AMCL + log N (decoupled and InfoNCE forms)",
            lambda: check_sandwich(50 if args.fast else 2000, rng),
        ),
    ]
    failures = 0
    for k, (statement, check) in enumerate(statements, 1):
        ok, evidence = check()
        failures += not ok
        print(f"[{'PASS' if ok else 'FAIL'}] {k}. {statement}\n       {evidence}")
    print(f"{len(statements) - failures}/{len(statements)} statements hold")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
