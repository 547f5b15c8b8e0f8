"""Proof check: the idealized kernel loss equals invariance + beta-orthogonality up to a constant.

Claim (Ghosh, Agrawal et al., "Harnessing small projectors and multiple views", NeurIPS 2024,
arXiv:2312.10725: the idealized loss and its "functionally equivalent" reformulation, written
as the identities (K1)-(K2) of ``amcl_lab.losses.kernel``, not the paper's own numbering).
On a finite augmentation graph with image probabilities p(x), augmentation probabilities
p(a | x), marginal p(a) and kernel k(a, a') = w(a, a') / (p(a) p(a')), let T be the kernel's
integral operator on L2(p), T_c = (1 - c) I + c T, F = (f_1, ..., f_d) features,
G = E_a[f f^T] their uncentred Gram and Inv(F) = E_x sum_i Var_{a|x} f_i(a).  Then

    (K1)  ||T - FF*||_HS^2   = ||T||_HS^2   - d + 2 Inv(F) + ||G - I||_F^2,
    (K2)  ||T_c - FF*||_HS^2 = ||T_c||_HS^2 - d + 2c Inv(F) + ||G - I||_F^2,

so L_beta(F) = Inv(F) + beta ||G - I||_F^2 is the idealized loss of T_c with beta = 1/(2c)
("functionally equivalent"): for every beta > 0 its minimisers span the top-d eigenfunctions
of T, the minimum of the idealized loss is the energy of the remaining eigenvalues of T_c,
and the optimal features have squared norms max(0, 1 - (1 - lambda_k) / (2 beta)).

How it is checked.  Graphs come from ``amcl_lab.data.synthetic.random_augmentation_graph``
(defaults: 12 images, 40 points, p(a | x) from uniform draws to the 6th power).  The
left sides are the library's ``kernel_loss``; the right sides are computed here in NumPy
float64 from p(x) and p(a | x) alone (kernel, Gram, within-image variances, eigenvalues),
and once more with the library's ``invariance_orthogonality_loss`` on exact population
weights.  Minimisers are found by L-BFGS (SciPy) on the library losses from random starts and
compared with the top eigenvectors of the symmetric matrix D^(1/2) K_c D^(1/2) from
``numpy.linalg.eigh`` (principal angles, ``scipy.linalg.subspace_angles``).

Run ``python proofs_checks/kernel_equivalence.py`` (full) or with ``--fast`` (a few seconds).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from scipy.linalg import subspace_angles
from scipy.optimize import minimize

from amcl_lab.data.synthetic import random_augmentation_graph
from amcl_lab.losses import invariance_orthogonality_loss, kernel_loss

torch.set_num_threads(1)  # tiny problems: threading only adds overhead

#: Acceptance thresholds stated in the issue (identities) and for the optimisation.
IDENTITY_RTOL = 1e-10  # relative error of (K1)-(K2) in float64
ANGLE_TOL = 1e-6  # largest principal angle between the minimiser and the top eigenvectors
VALUE_RTOL = 1e-9  # optimised value vs the tail-eigenvalue energy

RESULTS: list[bool] = []


def statement(label: str, claim: str, ok: bool, evidence: str) -> None:
    RESULTS.append(bool(ok))
    print(f"[{'PASS' if ok else 'FAIL'}] {label}: {claim}\n        {evidence}")


# --- independent NumPy quantities (from p(x) and p(a | x) only) ------------------------------


class Truth:
    """Kernel, operator and feature statistics of a graph, computed in NumPy float64."""

    def __init__(self, graph) -> None:
        self.prior = graph.prior.numpy()
        self.cond = graph.conditional.numpy()
        self.p = self.prior @ self.cond
        self.w = np.einsum("x,xa,xb->ab", self.prior, self.cond, self.cond)
        self.k = self.w / np.outer(self.p, self.p)

    def operator(self, c: float) -> np.ndarray:
        """D^(1/2) K_c D^(1/2): symmetric, with the eigenvalues of T_c."""
        root = np.sqrt(self.p)
        return (1.0 - c) * np.eye(self.p.size) + c * root[:, None] * self.k * root[None, :]

    def eigen(self, c: float) -> tuple[np.ndarray, np.ndarray]:
        values, vectors = np.linalg.eigh(self.operator(c))
        order = np.argsort(values)[::-1]
        return values[order], vectors[:, order]

    def invariance(self, f: np.ndarray) -> float:
        """E_x sum_i Var_{a|x} f_i(a)."""
        means = self.cond @ f  # (n, d): E_{a|x} f
        second = self.cond @ (f * f)  # (n, d): E_{a|x} f^2
        return float(self.prior @ (second - means**2).sum(axis=1))

    def gram(self, f: np.ndarray) -> np.ndarray:
        return f.T @ (self.p[:, None] * f)

    def rhs(self, f: np.ndarray, c: float) -> float:
        """||T_c||^2 - d + 2c Inv(F) + ||G - I||^2 (right side of (K2))."""
        d = f.shape[1]
        hs = float((self.eigen(c)[0] ** 2).sum())
        return hs - d + 2 * c * self.invariance(f) + float(((self.gram(f) - np.eye(d)) ** 2).sum())


def _graphs(count: int, seed: int):
    for k in range(count):
        yield random_augmentation_graph(generator=torch.Generator().manual_seed(seed + k))


def _relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


# --- statements ----------------------------------------------------------------------------


def check_graph_matches_numpy(graphs) -> None:
    worst = 0.0
    for graph in graphs:
        truth = Truth(graph)
        worst = max(worst, float(np.abs(graph.kernel.numpy() - truth.k).max() / truth.k.max()))
        top = truth.eigen(1.0)[0]
        worst = max(worst, float(np.abs(graph.eigenpairs.values.numpy() - top).max()))
    statement(
        "S0",
        "the generator's kernel and spectrum equal the NumPy ones built from p(x), p(a|x)",
        worst < 1e-12,
        f"max relative kernel / absolute eigenvalue difference {worst:.1e} over {len(graphs)} "
        "graphs",
    )


def check_identities(graphs, cs, dims, rng) -> None:
    worst_np, worst_lib, cases = 0.0, 0.0, 0
    for graph in graphs:
        truth = Truth(graph)
        k, p = graph.kernel, graph.marginal
        for d in dims:
            f = rng.standard_normal((graph.num_augmentations, d))
            ft = torch.from_numpy(f)
            views, weights = graph.population_views(ft)
            for c in cs:
                lhs = float(kernel_loss(ft, k, p, c=c))
                worst_np = max(worst_np, _relative(lhs, truth.rhs(f, c)))
                hs = float((truth.eigen(c)[0] ** 2).sum())
                l_beta = float(invariance_orthogonality_loss(views, 1 / (2 * c), weights=weights))
                worst_lib = max(worst_lib, _relative(lhs, hs - d + 2 * c * l_beta))
                cases += 1
    if cs == [1.0]:
        label, claim = "S1", "(K1): ||T - FF*||^2 = ||T||^2 - d + 2 Inv + ||G - I||^2"
    else:
        label = "S2"
        claim = f"(K2), c in {cs}: ||T_c - FF*||^2 = ||T_c||^2 - d + 2c Inv + ||G - I||^2"
    statement(
        label,
        claim,
        worst_np < IDENTITY_RTOL and worst_lib < IDENTITY_RTOL,
        f"{cases} cases (d in {dims}): max relative error {worst_np:.1e} against the NumPy right "
        f"side, {worst_lib:.1e} against ||T_c||^2 - d + 2c L_beta(F) with the library's "
        f"invariance_orthogonality_loss (beta = 1/(2c)); tolerance {IDENTITY_RTOL:g}",
    )


def check_spectral_contrastive(graphs, rng) -> None:
    worst = 0.0
    for graph in graphs:
        truth = Truth(graph)
        f = rng.standard_normal((graph.num_augmentations, 4))
        inner = f @ f.T
        haochen = -2 * float((truth.w * inner).sum()) + float(
            (np.outer(truth.p, truth.p) * inner**2).sum()
        )
        hs = float((truth.w**2 / np.outer(truth.p, truth.p)).sum())
        lhs = float(kernel_loss(torch.from_numpy(f), graph.kernel, graph.marginal)) - hs
        worst = max(worst, _relative(lhs, haochen))
    statement(
        "S3",
        "HaoChen et al.: -2 E_pos[f.f'] + E_indep[(f.f')^2] = ||T - FF*||^2 - ||T||^2",
        worst < IDENTITY_RTOL,
        f"max relative error {worst:.1e} over {len(graphs)} graphs",
    )


def check_rotation_invariance(graphs, rng) -> None:
    worst = 0.0
    for graph in graphs:
        f = torch.from_numpy(rng.standard_normal((graph.num_augmentations, 5)))
        q = torch.from_numpy(np.linalg.qr(rng.standard_normal((5, 5)))[0])
        views, weights = graph.population_views(f)
        rotated, _ = graph.population_views(f @ q)
        pairs = [
            (
                kernel_loss(f @ q, graph.kernel, graph.marginal),
                kernel_loss(f, graph.kernel, graph.marginal),
            ),
            (
                invariance_orthogonality_loss(rotated, 0.7, weights=weights),
                invariance_orthogonality_loss(views, 0.7, weights=weights),
            ),
        ]
        worst = max(worst, *(_relative(float(a), float(b)) for a, b in pairs))
    statement(
        "S4",
        "both losses are invariant to F -> FQ for orthogonal Q",
        worst < 1e-12,
        f"max relative change {worst:.1e} over {len(graphs)} graphs",
    )


def _minimise(objective, shape, rng, starts: int) -> tuple[np.ndarray, float]:
    """Best L-BFGS minimiser of a torch objective of an (M, d) tensor over ``starts`` starts."""

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        f = torch.from_numpy(x.reshape(shape)).requires_grad_(True)
        value = objective(f)
        (grad,) = torch.autograd.grad(value, f)
        return float(value.detach()), grad.numpy().ravel()

    best = None
    for _ in range(starts):
        x0 = 0.3 * rng.standard_normal(np.prod(shape))
        result = minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "maxcor": 30, "ftol": 1e-300, "gtol": 1e-13},
        )
        if best is None or result.fun < best.fun:
            best = result
    return best.x.reshape(shape), float(best.fun)


def check_minimiser(graph, d: int, c: float, rng, starts: int) -> None:
    """Minimise the idealized loss of T_c; compare with the top-d eigenvectors (Eckart-Young)."""
    truth = Truth(graph)
    values, vectors = truth.eigen(c)
    shape = (graph.num_augmentations, d)
    f, best = _minimise(
        lambda f: kernel_loss(f, graph.kernel, graph.marginal, c=c), shape, rng, starts
    )
    angle = float(subspace_angles(np.sqrt(truth.p)[:, None] * f, vectors[:, :d]).max())
    tail = float((values[d:] ** 2).sum() + (np.minimum(values[:d], 0.0) ** 2).sum())
    gap = values[d - 1] - values[d]
    statement(
        "S5",
        f"the minimiser of ||T_c - FF*||^2 (c = {c:g}, d = {d}) spans the top-{d} eigenvectors; "
        "minimum = energy of the other eigenvalues",
        angle < ANGLE_TOL and _relative(best, tail) < VALUE_RTOL,
        f"best of {starts} L-BFGS starts: largest principal angle {angle:.1e} rad (eigengap "
        f"{gap:.3f}); value {best:.12f} vs tail energy {tail:.12f} (relative "
        f"{_relative(best, tail):.1e})",
    )


def check_efficient_minimiser(graph, d: int, beta: float, rng, starts: int) -> None:
    """Minimise L_beta on exact population statistics: same subspace, predicted norms."""
    truth = Truth(graph)
    values, vectors = truth.eigen(1.0)  # eigenfunctions of T (and of every T_c)
    shape = (graph.num_augmentations, d)

    def objective(f: torch.Tensor) -> torch.Tensor:
        views, weights = graph.population_views(f)
        return invariance_orthogonality_loss(views, beta, weights=weights)

    f, _ = _minimise(objective, shape, rng, starts)
    angle = float(subspace_angles(np.sqrt(truth.p)[:, None] * f, vectors[:, :d]).max())
    norms = np.sort(np.linalg.eigvalsh(truth.gram(f)))[::-1]
    target = np.maximum(0.0, 1.0 - (1.0 - values[:d]) / (2 * beta))
    norm_error = float(np.abs(norms - target).max())
    statement(
        "S6",
        f"the minimiser of Inv + beta ||G - I||^2 (beta = {beta:g}, d = {d}) spans the same "
        "top eigenvectors, with squared norms max(0, 1 - (1 - lambda_k)/(2 beta))",
        angle < ANGLE_TOL and norm_error < 1e-8,
        f"largest principal angle {angle:.1e} rad; eigenvalues of G "
        f"{np.array2string(norms, precision=6)} vs predicted "
        f"{np.array2string(target, precision=6)} (max error {norm_error:.1e})",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="few graphs, one start each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(__doc__.split("How it is checked")[0].strip(), "\n")

    graphs = list(_graphs(2 if args.fast else 10, args.seed))
    check_graph_matches_numpy(graphs)
    check_identities(graphs, [1.0], [1, 5] if args.fast else [1, 3, 5, 12], rng)
    check_identities(graphs, [0.1, 0.5, 2.0], [5] if args.fast else [1, 5, 12], rng)
    check_spectral_contrastive(graphs, rng)
    check_rotation_invariance(graphs, rng)
    if args.fast:
        check_minimiser(graphs[0], 3, 1.0, rng, starts=1)
        check_efficient_minimiser(graphs[0], 3, 2.0, rng, starts=1)
    else:
        for graph, d, c in [(graphs[0], 3, 1.0), (graphs[1], 5, 1.0), (graphs[2], 4, 0.25)]:
            check_minimiser(graph, d, c, rng, starts=3)
        for graph, d, beta in [(graphs[0], 3, 0.5), (graphs[1], 5, 2.0), (graphs[3], 4, 10.0)]:
            check_efficient_minimiser(graph, d, beta, rng, starts=3)

    passed = sum(RESULTS)
    print(f"\nkernel_equivalence: {passed}/{len(RESULTS)} statements hold")
    return 0 if passed == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
