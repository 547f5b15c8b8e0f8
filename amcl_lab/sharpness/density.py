r"""The Hessian eigenvalue density by stochastic Lanczos quadrature: :func:`spectral_density`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .. import _validation as v
from .lanczos import generator, lanczos, random_rows
from .operator import HVP_METHODS, HessianOperator, LossFn


@dataclass(frozen=True)
class SpectralDensity:
    r"""Stochastic Lanczos quadrature of the Hessian spectrum (:func:`spectral_density`).

    Run :math:`r` gives nodes :math:`\theta_{rj}` (Ritz values) and weights
    :math:`\tau_{rj}^2` (squared first components of the Ritz vectors, summing to 1); the
    spectral measure :math:`\frac1n\sum_i\delta(\lambda-\lambda_i)` is approximated by
    their average over runs.

    Attributes:
        nodes: one ``(m_r,)`` float64 tensor per run (``m_r`` = Lanczos steps done).
        weights: one ``(m_r,)`` float64 tensor per run.
        dim: Hessian size n.
        n_hvp: products used.
        method, mode: HVP settings.
    """

    nodes: tuple[Tensor, ...]
    weights: tuple[Tensor, ...]
    dim: int
    n_hvp: int
    method: str
    mode: str

    def density(self, grid: Tensor, sigma: float) -> Tensor:
        r"""Gaussian-broadened density on ``grid``: mean over runs of
        :math:`\sum_j \tau_j^2 \mathcal N(\lambda; \theta_j, \sigma^2)`; integrates to 1.

        Args:
            grid: ``(G,)`` points :math:`\lambda`.
            sigma: broadening :math:`\sigma > 0`.

        Returns:
            ``(G,)`` float64 density values.
        """
        v.check_tensor("SpectralDensity.density", "grid", grid, ndim=1)
        v.check_positive_float("SpectralDensity.density", "sigma", sigma)
        x = grid.detach().to(torch.float64).cpu()[:, None]
        total = torch.zeros(x.shape[0], dtype=torch.float64)
        for theta, w in zip(self.nodes, self.weights, strict=True):
            gauss = torch.exp(-0.5 * ((x - theta[None, :]) / sigma) ** 2)
            total += (gauss * w[None, :]).sum(1) / (sigma * math.sqrt(2.0 * math.pi))
        return total / len(self.nodes)

    @property
    def trace(self) -> float:
        r"""SLQ trace estimate :math:`n \cdot \mathrm{mean}_r \sum_j \tau_{rj}^2\theta_{rj}`."""
        moments = [float((w * t).sum()) for t, w in zip(self.nodes, self.weights, strict=True)]
        return self.dim * sum(moments) / len(moments)


def spectral_density(
    model: nn.Module,
    loss_fn: LossFn,
    batch: tuple[Any, Any],
    *,
    n_runs: int = 1,
    n_steps: int = 80,
    seed: int = 0,
    hvp_method: str = "double-backward",
    mode: str = "eval",
) -> SpectralDensity:
    r"""Hessian eigenvalue density by stochastic Lanczos quadrature (SLQ).

    For each run a Rademacher probe :math:`v = z/\lVert z\rVert` starts ``n_steps`` of
    Lanczos with full reorthogonalisation; with :math:`T = S\Theta S^\top` the Gauss
    quadrature rule :math:`v^\top f(H) v \approx \sum_j \tau_j^2 f(\theta_j)`,
    :math:`\tau_j = S_{1j}`, is exact for polynomials of degree below :math:`2m`, and
    :math:`\mathbb E[v^\top f(H) v] = \frac1n \mathrm{tr} f(H)`.  Implements SLQ as in
    [Ubaru2017]_ and its use for neural-network Hessians [Ghorbani2019]_ (PyHessian's
    ``density``).

    Args:
        model, loss_fn, batch, hvp_method, mode: as in :class:`HessianOperator`.
        n_runs: independent probes (>= 1).
        n_steps: Lanczos steps per run (capped at ``dim``; fewer if the Krylov space is
            exhausted).
        seed: seed of the probes.

    Returns:
        :class:`SpectralDensity` (``.density(grid, sigma)``, ``.trace``).

    Raises:
        ValueError: ``n_runs < 1`` or ``n_steps < 1``; the errors of
            :class:`HessianOperator`.

    Example:
        >>> import torch
        >>> lin = torch.nn.Linear(2, 1, bias=False).double()
        >>> x = torch.tensor([[1.0, 0.0], [1.0, 2.0]], dtype=torch.float64)
        >>> mse = lambda out, y: ((out - y) ** 2).mean()  # eigenvalues 3 -+ sqrt(5)
        >>> d = spectral_density(lin, mse, (x, torch.zeros(2, 1, dtype=torch.float64)))
        >>> [round(t, 10) for t in d.nodes[0].tolist()]  # two steps: exact nodes
        [0.7639320225, 5.2360679775]
        >>> [round(w, 10) for w in d.weights[0].tolist()]  # probe (1, -1)/sqrt(2) here
        [0.9472135955, 0.0527864045]
        >>> round(d.trace, 10)  # 2 v^T H v for this one probe (tr H = 6 on average)
        2.0

    References:
        .. [Ubaru2017] S. Ubaru, J. Chen, Y. Saad, "Fast Estimation of tr(f(A)) via Stochastic
           Lanczos Quadrature", SIAM J. Matrix Anal. Appl. 38(4), 2017.
        .. [Ghorbani2019] B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural
           Net Optimization via Hessian Eigenvalue Density", ICML 2019, arXiv:1901.10159.

    .. note:: Documented choice.
        Nodes come from a symmetric eigensolver (``eigh``) on the tridiagonal matrix;
        PyHessian 0.1 uses the removed ``torch.eig`` (a general solver).  ``n_steps=80``
        steps by default (PyHessian: ``iter=100``); the basis is kept for full
        reorthogonalisation, ``n_steps`` parameter copies per run.
    """
    fn = "spectral_density"
    v.check_int(fn, "n_runs", n_runs, low=1)
    v.check_int(fn, "n_steps", n_steps, low=1)
    v.check_int(fn, "seed", seed, low=0)
    v.check_choice(fn, "hvp_method", hvp_method, HVP_METHODS)
    op = HessianOperator._for(fn, model, loss_fn, batch, hvp_method, mode)
    gen = generator(seed, op.device)
    nodes, weights = [], []
    for _ in range(n_runs):
        start = random_rows((1, op.dim), op, gen, "rademacher")
        state = list(lanczos(op, start, n_steps, gen))[-1]
        theta, s = torch.linalg.eigh(state.t[: state.m, : state.m])
        nodes.append(theta)
        weights.append(s[0] ** 2)
    return SpectralDensity(tuple(nodes), tuple(weights), op.dim, op.n_hvp, hvp_method, mode)
