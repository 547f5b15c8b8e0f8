r"""SwAV (Caron et al., NeurIPS 2020): Sinkhorn-Knopp codes and the swapped prediction loss.

:func:`sinkhorn_knopp` turns a batch's prototype scores into soft codes whose prototypes
share the batch equally; :func:`swav` predicts the codes of one crop from the scores of every
other crop.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _validation as v

__all__ = ["SwAVLoss", "sinkhorn_knopp", "swav"]


def _check_scores(fn: str, name: str, scores: object, ndim: int) -> Tensor:
    v.check_tensor(fn, name, scores, ndim=ndim)
    if scores.shape[0] < 1:  # type: ignore[union-attr]
        raise ValueError(f"{fn}: {name} must hold at least one sample, got shape (0, ...)")
    return scores  # type: ignore[return-value]


def _sinkhorn(scores: Tensor, epsilon: float, iterations: int) -> Tensor:
    """Log-domain Sinkhorn-Knopp on ``(N, K)`` scores (validated), codes in the input dtype."""
    n, k = scores.shape
    log_q = scores / epsilon
    log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)  # total mass 1
    for _ in range(iterations):
        # every prototype gets mass 1/K, then every sample mass 1/N
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(n)
    return torch.exp(log_q + math.log(n))


def sinkhorn_knopp(scores: Tensor, *, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    r"""SwAV's soft codes: the equipartition-constrained assignment of samples to prototypes.

    Starting from :math:`Q^{(0)} \propto \exp(S/\epsilon)`, each iteration rescales the
    prototypes (columns of the ``(N, K)`` layout) to mass :math:`1/K` and then the samples
    (rows) to mass :math:`1/N`; the result times :math:`N` is returned, so every row (one
    sample's code) sums to exactly 1 and, as the iterations converge, every column to
    :math:`N/K`.  The limit is the solution of the entropy-regularised transport problem

    .. math::

        \max_{Q \in \mathcal Q}\ \mathrm{Tr}(Q^\top S) + \epsilon H(Q), \qquad
        \mathcal Q = \Big\{Q \in \mathbb R_+^{N \times K} :
            Q \mathbf 1_K = \tfrac1N \mathbf 1_N,\ Q^\top \mathbf 1_N = \tfrac1K \mathbf 1_K
        \Big\},

    of the form :math:`\mathrm{diag}(u) \exp(S/\epsilon) \mathrm{diag}(v)`.  ``scores`` is
    :math:`S` (prototype scores :math:`z^\top c_k`), ``epsilon`` :math:`\epsilon` and
    ``iterations`` the number of (column, row) rescalings.  Implements Eq. (3) of
    [Caron2020]_ and the iterative Sinkhorn-Knopp solution of its Section 3.1 as the official
    code's ``distributed_sinkhorn`` (3 iterations, :math:`\epsilon = 0.05`).

    Args:
        scores: ``(N, K)`` scores of N >= 1 samples against K >= 1 prototypes.
        epsilon: entropy weight :math:`\epsilon > 0` (finite).
        iterations: number of Sinkhorn iterations, >= 1.

    Returns:
        The ``(N, K)`` codes, non-negative, rows summing to 1, in the compute dtype (float32
        for half inputs).  Differentiable (SwAV uses them without gradient, see
        :func:`swav`).

    Raises:
        ValueError: ``scores`` not 2-D, empty, NaN/inf, a non-positive ``epsilon`` or an
            ``iterations`` below 1.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]], dtype=torch.float64)
        >>> codes = sinkhorn_knopp(scores, epsilon=0.5, iterations=200)
        >>> [round(x, 12) for x in codes.sum(dim=1).tolist()]  # one unit of mass per sample
        [1.0, 1.0, 1.0]
        >>> [round(x, 6) for x in codes.sum(dim=0).tolist()]  # N/K per prototype
        [1.5, 1.5]

    References:
        .. [Caron2020] M. Caron, I. Misra, J. Mairal, P. Goyal, P. Bojanowski, A. Joulin,
           "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
           NeurIPS 2020, arXiv:2006.09882.

    .. note:: Documented choice.
        The iterations run in the log domain (``logsumexp`` rescalings), which equals the
        official code's multiplicative form in exact arithmetic but cannot overflow or
        divide by zero when :math:`S/\epsilon` is large (the official code and lightly
        exponentiate :math:`S/\epsilon` directly, which overflows float32 once an entry
        exceeds 88.7, e.g. a score above 4.4 at :math:`\epsilon = 0.05`).
    """
    fn = "sinkhorn_knopp"
    _check_scores(fn, "scores", scores, 2)
    v.check_positive_float(fn, "epsilon", epsilon)
    v.check_int(fn, "iterations", iterations, low=1)
    return _sinkhorn(scores.to(v.compute_dtype(scores)), epsilon, iterations)


def swav(
    scores: Tensor,
    *,
    assigned: int = 2,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    stop_gradient: bool = True,
) -> Tensor:
    r"""SwAV's swapped prediction: the codes of one crop predicted from every other crop.

    With scores :math:`S_{i,v} \in \mathbb R^K` of crop :math:`v = 1..V` of sample :math:`i`
    against the K prototypes, the first :math:`A` crops (``assigned``, the high-resolution
    ones) get codes :math:`q_{\cdot,a} = ` :func:`sinkhorn_knopp` :math:`(S_{\cdot,a})`,
    computed over the batch, and

    .. math::

        L = \frac1A \sum_{a=1}^A \frac{1}{V-1} \sum_{v \ne a} \frac1N \sum_{i=1}^N
            -\sum_{k=1}^K q_{i,a,k} \log \mathrm{softmax}\Big(\frac{S_{i,v}}{\tau}\Big)_k

    (``temperature`` :math:`\tau`).  For two crops this is
    :math:`\frac12[\ell(z_2, q_1) + \ell(z_1, q_2)]`, the swapped prediction problem of
    Eqs. (1)-(2) of [Caron2020]_ (halved, see the note); more crops follow its multi-crop
    loss as the official code averages it.  Each term is a cross-entropy, so :math:`L` is at
    least the mean entropy of the codes, with equality when every prediction equals the code
    it predicts.

    Args:
        scores: ``(N, V, K)`` scores of ``V >= 2`` crops of N >= 1 samples; the model computes
            them as cosines of the normalised features and the normalised prototypes, and
            the loss uses them as given.
        assigned: the number :math:`A` of leading crops whose codes are predicted,
            ``1 <= A <= V`` (2 in SwAV: the two high-resolution crops).
        temperature: :math:`\tau > 0` of the prediction softmax (0.1 in SwAV).
        epsilon: :math:`\epsilon` of :func:`sinkhorn_knopp` (0.05 in SwAV).
        iterations: Sinkhorn iterations (3 in SwAV).
        stop_gradient: compute the codes without gradient (SwAV).  ``False`` differentiates
            through the Sinkhorn iterations (same value), for gradient checks.

    Returns:
        A scalar in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: ``scores`` not 3-D, fewer than two crops, ``assigned`` outside
            ``[1, V]``, NaN/inf values, or a bad ``temperature``, ``epsilon`` or
            ``iterations``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.nn.functional.normalize(torch.randn(8, 3, 16, generator=g), dim=-1)
        >>> prototypes = torch.nn.functional.normalize(torch.randn(5, 16, generator=g), dim=-1)
        >>> scores = (z @ prototypes.T).double()  # (8 samples, 3 crops, 5 prototypes)
        >>> round(float(swav(scores)), 6)
        2.684526

    References:
        .. [Caron2020] M. Caron, I. Misra, J. Mairal, P. Goyal, P. Bojanowski, A. Joulin,
           "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments",
           NeurIPS 2020, arXiv:2006.09882.

    .. note:: Documented choice.
        The crop pairing and the two means (over the other crops, then over the assigned
        crops) are those of the official code's training loop and lightly's ``SwaVLoss``
        (whose high-resolution crops are all assigned: ``assigned = V_high``); the paper's
        Eq. (1) writes the two-crop loss as the sum :math:`\ell(z_t, q_s) + \ell(z_s, q_t)`,
        twice this value.  The queue of
        past scores that SwAV adds to small batches is not part of this function: append
        the queued scores to the batch before calling :func:`sinkhorn_knopp` and keep the
        batch rows.
    """
    fn = "swav"
    _check_scores(fn, "scores", scores, 3)
    crops = scores.shape[1]
    if crops < 2:
        raise ValueError(
            f"{fn}: scores must have shape (N, V, K) with V >= 2 crops, got {tuple(scores.shape)}"
        )
    v.check_int(fn, "assigned", assigned, low=1, high=crops)
    temperature = v.check_temperature(fn, temperature)
    v.check_positive_float(fn, "epsilon", epsilon)
    v.check_int(fn, "iterations", iterations, low=1)
    v.check_bool(fn, "stop_gradient", stop_gradient)
    s = scores.to(v.compute_dtype(scores))
    log_p = torch.log_softmax(s / temperature, dim=-1)  # (N, V, K)
    total = s.new_zeros(())
    for a in range(assigned):
        source = s[:, a].detach() if stop_gradient else s[:, a]
        codes = _sinkhorn(source, epsilon, iterations)  # (N, K)
        cross = -(codes[:, None, :] * log_p).sum(dim=-1).mean(dim=0)  # (V,)
        total = total + (cross.sum() - cross[a]) / (crops - 1)
    return v.check_finite_result(fn, total / assigned, "scores")


class SwAVLoss(nn.Module):
    """Module form of :func:`swav`; ``forward(scores)`` with ``(N, V, K)`` prototype scores."""

    def __init__(
        self,
        *,
        assigned: int = 2,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        iterations: int = 3,
    ) -> None:
        super().__init__()
        self.assigned, self.temperature = assigned, temperature
        self.epsilon, self.iterations = epsilon, iterations

    def forward(self, scores: Tensor) -> Tensor:
        return swav(
            scores,
            assigned=self.assigned,
            temperature=self.temperature,
            epsilon=self.epsilon,
            iterations=self.iterations,
        )
