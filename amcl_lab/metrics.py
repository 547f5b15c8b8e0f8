"""Representation-geometry metrics: pure functions of embedding tensors (and labels).

* :func:`alignment` and :func:`uniformity` (Wang & Isola 2020) and :func:`tolerance`
  (Wang & Liu 2021) describe where normalised embeddings sit on the hypersphere;
* :func:`negative_weights` is the per-anchor Boltzmann distribution over negatives that the
  NT-Xent gradient applies (Wang & Liu's hardness-awareness), with summaries;
* :func:`simplex_report` measures how close class means are to the regular simplex that
  minimises SupCon and cross-entropy (Graf et al. 2021), plus neural-collapse NC1;
* :func:`effective_rank` and :func:`spectrum_decay` summarise the covariance spectrum.

Every function validates its inputs with :mod:`amcl_lab._validation` (bad input is a
``ValueError`` naming the function and the argument) and computes in the inputs' dtype
(float16/bfloat16 promoted to float32), so float64 inputs give float64-exact results.  The
functions are differentiable where the quantity is, so they can serve as objectives.
Each function's docstring gives its formula, the paper and equation it implements and its
documented choices: Wang & Isola (ICML 2020, arXiv:2005.10242) for alignment and uniformity;
Wang & Liu (CVPR 2021, arXiv:2012.09740) Eq. 5 for the negative weights and Eqs. 10-11 for
uniformity and tolerance; Graf et al. (ICML 2021, arXiv:2102.08817) and Papyan et al. (PNAS
2020, arXiv:2008.08186) for the simplex report; Roy & Vetterli (EUSIPCO 2007) and Stringer
et al. (Nature 2019) for the spectrum metrics.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from . import _validation as v
from .losses._common import NORM_EPS, check_two_views, l2_normalize, two_view_similarities

__all__ = [
    "NegativeWeights",
    "SimplexReport",
    "SpectrumDecay",
    "alignment",
    "effective_rank",
    "negative_weights",
    "simplex_report",
    "spectrum_decay",
    "tolerance",
    "uniformity",
]

#: Default number of rows per block in :func:`uniformity` (a block holds
#: ``chunk_size * N`` pair distances).
UNIFORMITY_CHUNK = 1024


def _unit_rows(z: Tensor, eps: float) -> Tensor:
    return l2_normalize(z.to(v.compute_dtype(z)), eps)


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2.0, *, eps: float = NORM_EPS) -> Tensor:
    r"""Alignment of positive pairs: mean distance between the normalised views, to a power.

    With :math:`\hat z = z / \lVert z\rVert` (row-wise):

    .. math::

        L_{align}(\alpha) = \frac{1}{N}\sum_{i=1}^{N}
            \lVert \hat z^{(1)}_i - \hat z^{(2)}_i \rVert_2^{\alpha}

    Implements the alignment loss :math:`L_{align}` of [Wang2020]_ (as in their reference
    code ``ssnl/align_uniform``: the expectation over positive pairs as a batch mean), where
    :math:`\alpha` is ``alpha``.  For unit vectors and :math:`\alpha = 2` it equals
    :math:`2 - 2\,\overline{\cos}`; it is 0 exactly when every pair of views points the same
    way.  Memory is O(N D).

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 1, finite, floating.
        z2: ``(N, D)``; row ``i`` is the positive of ``z1[i]``.
        alpha: exponent ``> 0`` (default 2, as in Wang & Isola's code).
        eps: floor on the row norm; a row with smaller norm becomes the zero vector.

    Returns:
        A 0-d tensor in the compute dtype, in ``[0, 2**alpha]``; smaller is better aligned.

    Raises:
        ValueError: non-2-D or non-floating inputs, a shape or device mismatch, NaN/inf
            values, or a non-positive ``alpha`` or ``eps``.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> float(alignment(z, -z))  # antipodal views: distance 2, squared 4
        4.0
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(8, 4, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.3 * torch.randn(8, 4, generator=g, dtype=torch.float64)
        >>> round(float(alignment(z1, z2)), 6)
        0.191054

    References:
        .. [Wang2020] T. Wang, P. Isola, "Understanding Contrastive Representation Learning
           through Alignment and Uniformity on the Hypersphere", ICML 2020,
           arXiv:2005.10242.

    .. note:: Documented choice.
        Rows are L2-normalised here (Wang & Isola's code expects unit inputs and does not
        normalise); for unit inputs this is a no-op, and it makes the metric depend only on
        directions, like every loss in amcl_lab.
    """
    fn = "alignment"
    v.check_tensor(fn, "z1", z1, ndim=2, min_rows=1)
    v.check_tensor(fn, "z2", z2, ndim=2, min_rows=1)
    v.check_same_shape(fn, "z1", z1, "z2", z2)
    v.check_same_device(fn, [("z1", z1), ("z2", z2)])
    v.check_positive_float(fn, "alpha", alpha)
    v.check_positive_float(fn, "eps", eps)
    dtype = v.compute_dtype(z1, z2)
    u1, u2 = l2_normalize(z1.to(dtype), eps), l2_normalize(z2.to(dtype), eps)
    squared = ((u1 - u2) ** 2).sum(dim=1)
    return squared.pow(alpha / 2.0).mean()


def uniformity(
    z: Tensor, t: float = 2.0, *, chunk_size: int = UNIFORMITY_CHUNK, eps: float = NORM_EPS
) -> Tensor:
    r"""Uniformity loss: log of the mean Gaussian potential over distinct pairs on the sphere.

    With :math:`\hat z = z / \lVert z\rVert` (row-wise):

    .. math::

        L_{uniform}(t) = \log \frac{2}{N(N-1)} \sum_{i<j}
            e^{-t \lVert \hat z_i - \hat z_j \rVert_2^2}

    Implements Eq. (10) of [Wang2021]_, the uniformity loss :math:`L_{uniform}` of
    [Wang2020]_, with the expectation over independent pairs estimated over distinct pairs
    (Wang & Isola's ``pdist`` estimator); :math:`t` is ``t``.  :math:`L \le 0`, with 0 exactly
    when all points coincide; lower is more uniform.  For N <= D + 1 points
    :math:`L \ge -2tN/(N-1)`, with equality exactly for a regular simplex centred at 0.
    The sum is a log-sum-exp over row blocks of ``chunk_size`` rows, so memory is
    O(``chunk_size`` * N) and N in the tens of thousands is fine.

    Args:
        z: ``(N, D)`` embeddings, N >= 2, finite, floating.
        t: potential scale ``> 0`` (default 2, the value Wang & Liu's numbers imply).
        chunk_size: rows per block (>= 1); with N <= ``chunk_size`` the whole upper
            triangle is one similarity matrix.
        eps: floor on the row norm; a row with smaller norm becomes the zero vector.

    Returns:
        A 0-d tensor in the compute dtype, :math:`\le 0`.

    Raises:
        ValueError: not a 2-D floating tensor, N < 2, NaN/inf values, or a non-positive
            ``t``, ``chunk_size`` or ``eps``.

    Example:
        >>> import math, torch
        >>> z = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
        >>> float(uniformity(z))  # one pair at squared distance 4: log(exp(-8))
        -8.0
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(500, 3, generator=g, dtype=torch.float64)
        >>> round(-float(uniformity(z)), 6)  # 500 points; the uniform law on S^2 has 2.0798
        2.086235

    References:
        .. [Wang2020] (see :func:`alignment`).
        .. [Wang2021] F. Wang, H. Liu, "Understanding the Behaviour of Contrastive Loss",
           CVPR 2021, arXiv:2012.09740.

    .. note:: Documented choice.
        This returns the *loss* :math:`L_{uniform}` (minimised by evenly spread points), as
        Wang & Isola define it; Wang & Liu's Table 1 and figures report
        :math:`-L_{uniform}` ("larger is more uniform"), i.e. ``-uniformity(z)``.  Pairs
        ``i = j`` are excluded (including them biases :math:`L` up by O(1/N)).  Rows are
        L2-normalised, which is a no-op on unit inputs.
    """
    fn = "uniformity"
    v.check_tensor(fn, "z", z, ndim=2, min_rows=2)
    v.check_positive_float(fn, "t", t)
    v.check_int(fn, "chunk_size", chunk_size, low=1)
    v.check_positive_float(fn, "eps", eps)
    u = _unit_rows(z, eps)
    sq = (u * u).sum(dim=1)  # 1, or 0 for a row below eps
    n = u.shape[0]
    blocks = []
    for start in range(0, n - 1, chunk_size):
        stop = min(start + chunk_size, n - 1)
        rows = stop - start
        # rows i = start..stop-1 against columns j = start+1..n-1, as one matrix of
        # -t |u_i - u_j|^2 = 2t u_i.u_j - t |u_i|^2 - t |u_j|^2 (clamped: distances are >= 0)
        offset = sq[start:stop, None] + sq[None, start + 1 :]
        log_kernel = torch.addmm(offset, u[start:stop], u[start + 1 :].T, beta=-t, alpha=2 * t)
        log_kernel = log_kernel.clamp_max(0.0)
        # pairs j > i: the leading rows x rows square keeps its upper triangle, the rest all
        lower = torch.ones(rows, rows, dtype=torch.bool, device=u.device).tril(-1)
        blocks.append(torch.logsumexp(log_kernel[:, :rows].masked_fill(lower, -math.inf), (0, 1)))
        if n - 1 - start > rows:
            blocks.append(torch.logsumexp(log_kernel[:, rows:], dim=(0, 1)))
    return torch.logsumexp(torch.stack(blocks), dim=0) - math.log(n * (n - 1) / 2)


def tolerance(
    z: Tensor, labels: Tensor, *, reading: str = "conditional", eps: float = NORM_EPS
) -> Tensor:
    r"""Tolerance: mean cosine similarity between samples of the same class.

    With :math:`\hat z = z / \lVert z\rVert`, labels :math:`l_i` and classes of sizes
    :math:`n_c`, the default (``reading="conditional"``) is the mean over ordered pairs of
    distinct same-class samples:

    .. math::

        T = \frac{\sum_{i \ne j} \hat z_i^\top \hat z_j \,\mathbb{1}\{l_i = l_j\}}
                 {\sum_c n_c (n_c - 1)}

    ``reading="literal"`` is Eq. (11) of [Wang2021]_ read literally with :math:`x, y` drawn
    independently from the batch, :math:`\frac{1}{N^2}\sum_{i,j}\hat z_i^\top\hat z_j\,
    \mathbb{1}\{l_i = l_j\}` (pairs ``i = j`` included), which is about :math:`1/C` times the
    conditional value for C balanced classes.  Computed from per-class sums,
    :math:`\sum_{i,j \in c}\hat z_i^\top\hat z_j = \lVert\sum_{i \in c}\hat z_i\rVert^2`, so memory
    is O(N D).  The conditional value lies in :math:`[-1, 1]`, equals 1 exactly when every
    class is collapsed to one direction, and does not depend on how classes are named.

    Args:
        z: ``(N, D)`` embeddings, finite, floating.
        labels: ``(N,)`` integer class labels.
        reading: ``"conditional"`` (default) or ``"literal"``.
        eps: floor on the row norm; a row with smaller norm becomes the zero vector
            (cosine 0 with everything).

    Returns:
        A 0-d tensor in the compute dtype.

    Raises:
        ValueError: bad ``z``, labels of the wrong dtype or length, an unknown ``reading``,
            or (conditional reading) no class with two samples, where T is undefined.

    Example:
        >>> import torch
        >>> z = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
        >>> y = torch.tensor([0, 0, 1])
        >>> round(float(tolerance(z, y)), 10)  # one same-class pair at 45 degrees
        0.7071067812
        >>> round(float(tolerance(z, y, reading="literal")), 10)  # (2 cos + 3) / 9
        0.4904681736

    References:
        .. [Wang2021] (see :func:`uniformity`).

    .. note:: Documented choice.
        The conditional reading is the default because Wang & Liu describe T as "the mean
        similarities of samples belonging to the same class" and their CIFAR-100 values
        (0.10-0.34) are as large as CIFAR-10's, which the literal all-pairs expectation
        (scaled by P(same class), about 1/C) cannot give; pairs ``i = j`` are excluded, like
        the third-party ``uniformity_tolerance`` code that pools all same-class pairs.
    """
    fn = "tolerance"
    v.check_tensor(fn, "z", z, ndim=2, min_rows=1)
    v.check_labels(fn, labels, z.shape[0])
    v.check_same_device(fn, [("z", z), ("labels", labels)])
    v.check_choice(fn, "reading", reading, ("conditional", "literal"))
    v.check_positive_float(fn, "eps", eps)
    u = _unit_rows(z, eps)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    sums = torch.zeros(counts.numel(), u.shape[1], dtype=u.dtype, device=u.device)
    sums.index_add_(0, inverse, u)
    same_class = (sums * sums).sum()  # sum over ordered same-class pairs, i = j included
    if reading == "literal":
        return same_class / u.shape[0] ** 2
    pairs = int((counts * (counts - 1)).sum())
    if pairs == 0:
        raise ValueError(
            f"{fn}: no class has two samples (labels are all distinct), so there is no "
            "same-class pair and the tolerance is undefined; pass labels with repeated classes"
        )
    return (same_class - (u * u).sum()) / pairs


class NegativeWeights(NamedTuple):
    """Result of :func:`negative_weights`; rows are the 2N anchors ``[z1; z2]``.

    ``weights[i, m]`` is the Boltzmann weight of negative ``negatives[i, m]`` (a row index
    of the stacked ``[z1; z2]``, increasing along ``m``), whose cosine similarity with anchor
    ``i`` is ``similarities[i, m]``.  ``entropy`` (nats), ``effective_number`` and
    ``top_k_share`` summarise each row.
    """

    weights: Tensor
    negatives: Tensor
    similarities: Tensor
    entropy: Tensor
    effective_number: Tensor
    top_k_share: Tensor


def negative_weights(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor = 0.5,
    *,
    top_k: int = 1,
    eps: float = NORM_EPS,
) -> NegativeWeights:
    r"""Per-anchor Boltzmann distribution over negatives that the NT-Xent gradient applies.

    Anchors and negatives follow :func:`~amcl_lab.losses.nt_xent`: the views are stacked into
    2N rows; anchor :math:`i` has positive :math:`p(i) = i \pm N` and the 2N - 2 other rows as
    negatives :math:`k`.  With cosine similarities :math:`s_{ik}` and :math:`\tau` =
    ``temperature``:

    .. math::

        r_i(s_{ij}) = \frac{e^{s_{ij}/\tau}}{\sum_{k \notin \{i, p(i)\}} e^{s_{ik}/\tau}}
            = \frac{\lvert\partial \ell_i/\partial s_{ij}\rvert}
                   {\lvert\partial \ell_i/\partial s_{i,p(i)}\rvert}

    Implements Eq. (5) of [Wang2021]_ (the relative penalty on negative :math:`j`; by their
    Eq. (4) the NT-Xent gradient on :math:`s_{ij}` is :math:`P_{ij}/\tau` and the negative
    gradients sum to the positive's magnitude).  The weights do not depend on the positive
    similarity.  Summaries per anchor: the entropy :math:`H(r_i) = -\sum_j r_{ij}\log r_{ij}`
    (non-decreasing in :math:`\tau`, :math:`\to \log(2N-2)` as :math:`\tau\to\infty` and
    :math:`\to \log(\#\text{hardest})` as :math:`\tau\to 0`), the effective number of
    negatives :math:`1/\sum_j r_{ij}^2`, and the share of the ``top_k`` hardest negatives.

    Args:
        z1: ``(N, D)`` embeddings of the first view, N >= 2; normalised inside.
        z2: ``(N, D)``; row ``i`` is the positive of ``z1[i]``.
        temperature: finite ``tau > 0`` (float or 0-d tensor).
        top_k: how many of the hardest negatives ``top_k_share`` sums, in ``[1, 2N - 2]``.
        eps: floor on the row norm used for normalisation (as in ``nt_xent``).

    Returns:
        :class:`NegativeWeights` with ``weights``, ``negatives`` and ``similarities`` of
        shape ``(2N, 2N - 2)`` and the summaries of shape ``(2N,)``.

    Raises:
        ValueError: shape or device mismatch, N < 2, NaN/inf inputs, a bad temperature,
            ``top_k`` out of range.

    Example:
        >>> import torch
        >>> z = torch.ones(3, 2, dtype=torch.float64)  # every similarity equal
        >>> w = negative_weights(z, z, temperature=0.1)
        >>> w.weights[0].tolist(), round(float(w.entropy[0]), 10)  # uniform over 4
        ([0.25, 0.25, 0.25, 0.25], 1.3862943611)
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(4, 3, generator=g, dtype=torch.float64)
        >>> w = negative_weights(z1, z1.flip(0), temperature=0.2, top_k=2)
        >>> round(float(w.effective_number[0]), 6), round(float(w.top_k_share[0]), 6)
        (3.363231, 0.657932)

    References:
        .. [Wang2021] (see :func:`uniformity`).

    .. note:: Documented choice.
        The effective number of negatives is the inverse Simpson index
        :math:`1/\sum_j r_{ij}^2` (Kish's effective sample size of importance weights); the
        other common choice, :math:`e^{H(r_i)}`, is ``entropy.exp()``.  Both lie in
        ``[1, 2N - 2]`` and equal 2N - 2 for uniform weights.
    """
    fn = "negative_weights"
    check_two_views(fn, z1, z2, eps)
    v.check_temperature(fn, temperature)
    n_neg = 2 * z1.shape[0] - 2
    v.check_int(fn, "top_k", top_k, low=1, high=n_neg)
    pairs = two_view_similarities(z1, z2, eps)
    # nonzero() is row-major, so each row lists its negatives in increasing column order
    negatives = pairs.negatives.nonzero()[:, 1].reshape(-1, n_neg)
    sim = pairs.sim.gather(1, negatives)
    log_r = torch.log_softmax(sim / temperature, dim=1)
    r = log_r.exp()
    entropy = -(r * log_r).sum(dim=1)  # log_r is finite, so r = 0 contributes exactly 0
    effective = 1.0 / (r * r).sum(dim=1)
    top = r.topk(top_k, dim=1).values.sum(dim=1)
    return NegativeWeights(r, negatives, sim, entropy, effective, top)


class SimplexReport(NamedTuple):
    """Result of :func:`simplex_report`; class ``c`` is ``classes[c]`` (sorted labels).

    ``means`` ``(C, D)`` and ``mean_norms`` ``(C,)`` are the raw class means and their
    norms; ``centered_norms`` ``(C,)`` and ``cosines`` ``(C, C)`` describe the class means
    minus their average; ``target_cosine`` is the regular-simplex value ``-1/(C-1)`` and
    ``max_cosine_gap`` the largest off-diagonal ``|cosine - target|``; ``simplex_distance``,
    ``sample_cosine`` and ``nc1`` are 0-d (see :func:`simplex_report`).
    """

    classes: Tensor
    means: Tensor
    mean_norms: Tensor
    centered_norms: Tensor
    cosines: Tensor
    target_cosine: float
    max_cosine_gap: Tensor
    simplex_distance: Tensor
    sample_cosine: Tensor
    nc1: Tensor


def simplex_report(z: Tensor, labels: Tensor, *, eps: float = NORM_EPS) -> SimplexReport:
    r"""How close the class means of ``z`` are to a regular simplex, and how collapsed classes are.

    With class means :math:`\mu_c` (C classes), their average :math:`\bar\mu`, centred
    means :math:`M_c = \mu_c - \bar\mu` and Gram matrix :math:`G = MM^\top`: a configuration
    is a regular simplex centred at 0 (any radius :math:`\rho`, any rotation) exactly when
    :math:`G = \rho^2 T` with

    .. math::

        T = \tfrac{C}{C-1} I_C - \tfrac{1}{C-1}\mathbf{1}\mathbf{1}^\top
        \quad(\text{unit norms, pairwise cosines } -\tfrac{1}{C-1}),
        \qquad
        d_{simplex} = \min_{c \ge 0} \frac{\lVert G - cT\rVert_F}{\lVert G\rVert_F}.

    :math:`d_{simplex} \in [0, 1]` is the relative Frobenius distance from :math:`G` to the
    Gram matrix of the nearest regular simplex; it is 0 exactly on regular simplices, and
    invariant to rotations, to the radius and to relabelling classes.  This is the
    minimiser geometry of SupCon and of cross-entropy with a norm-bounded linear head
    (Graf et al. [Graf2021]_; class points :math:`\zeta_y` with
    :math:`\langle\zeta_y,\zeta_{y'}\rangle = -\rho^2/(K-1)`).  Also reported:
    ``sample_cosine``, the mean cosine between each sample and its class mean (1 when
    classes are collapsed), and ``nc1`` = :math:`\operatorname{tr}(\Sigma_W\Sigma_B^{+})/C`,
    the neural-collapse within/between variability ratio of [Papyan2020]_ with
    :math:`\Sigma_W = \frac1N\sum_i (z_i - \mu_{y_i})(z_i - \mu_{y_i})^\top` and
    :math:`\Sigma_B = \frac1C\sum_c M_c M_c^\top` (0 when classes are collapsed).

    Args:
        z: ``(N, D)`` embeddings, used as given (normalise first for sphere geometry).
        labels: ``(N,)`` integer labels with at least 2 distinct classes and at most D + 1.
        eps: floor on norms in the cosines (a zero centred mean has cosine 0).

    Returns:
        :class:`SimplexReport`.

    Raises:
        ValueError: bad ``z`` or ``labels``; fewer than 2 classes; more than D + 1 classes
            (C points spanning a regular simplex need C - 1 dimensions, so none fits); or
            all class means equal (no between-class geometry).

    Example:
        >>> import torch
        >>> y = torch.tensor([0, 0, 1, 1, 2, 2])
        >>> c, s = -0.5, 0.75**0.5
        >>> v = torch.tensor([[1.0, 0.0], [c, s], [c, -s]], dtype=torch.float64)
        >>> r = simplex_report(3.0 * v[y], y)  # collapsed triangle of radius 3
        >>> r.target_cosine, round(r.cosines[0, 1].item(), 12), float(r.simplex_distance)
        (-0.5, -0.5, 0.0)
        >>> g = torch.Generator().manual_seed(0)
        >>> z = v[y] + 0.1 * torch.randn(6, 2, generator=g, dtype=torch.float64)
        >>> r = simplex_report(z, y)
        >>> round(float(r.simplex_distance), 6), round(float(r.nc1), 6)
        (0.045897, 0.012171)

    References:
        .. [Graf2021] F. Graf, C. Hofer, M. Niethammer, R. Kwitt, "Dissecting Supervised
           Contrastive Learning", ICML 2021, arXiv:2102.08817.
        .. [Papyan2020] V. Papyan, X. Y. Han, D. L. Donoho, "Prevalence of neural collapse
           during the terminal phase of deep learning training", PNAS 2020,
           arXiv:2008.08186.

    .. note:: Documented choice.
        Means are centred by the average of the class means, not by the global sample mean
        that Papyan et al. use; the two agree for balanced classes, and this one keeps an
        imbalanced but collapsed simplex at distance 0.  The distance compares Gram matrices
        (so no vertex matching is needed) with the best radius; Graf et al.'s own notebooks
        plot angular similarities :math:`1 - \arccos(\cos)/\pi` of the means, a function
        of ``cosines``.
    """
    fn = "simplex_report"
    v.check_tensor(fn, "z", z, ndim=2, min_rows=1)
    v.check_labels(fn, labels, z.shape[0])
    v.check_same_device(fn, [("z", z), ("labels", labels)])
    v.check_positive_float(fn, "eps", eps)
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    c, d = classes.numel(), z.shape[1]
    if c < 2:
        raise ValueError(
            f"{fn}: labels must contain at least 2 distinct classes for a simplex, got {c}"
        )
    if c > d + 1:
        raise ValueError(
            f"{fn}: {c} classes cannot form a regular simplex in dimension D = {d}: the C "
            f"vertices of a centred regular simplex span C - 1 dimensions, so C <= D + 1 = "
            f"{d + 1} is needed; use embeddings of dimension >= {c - 1} or fewer classes"
        )
    x = z.to(v.compute_dtype(z))
    # the Frobenius norm of the Gram matrix squares squares: above max^(1/4) (about 1e9 in
    # float32) it would overflow, below tiny^(1/4) (about 1e-9) underflow, so such inputs
    # are computed on z / max|z| and the three scale-carrying results multiplied back (every
    # other result is scale-invariant)
    peak = float(x.detach().abs().max())
    room = 2.0 * math.sqrt(max(c, d) * c)
    info = torch.finfo(x.dtype)
    rescaled = peak > info.max**0.25 / room or 0.0 < peak < info.tiny**0.25 * room
    if rescaled:  # and eps with it: the same rows fall below the floor
        x, eps = x / peak, eps / peak
    sums = torch.zeros(c, d, dtype=x.dtype, device=x.device).index_add_(0, inverse, x)
    means = sums / counts[:, None].to(x.dtype)
    centered = means - means.mean(dim=0, keepdim=True)
    gram = centered @ centered.T
    gram_norm = torch.linalg.matrix_norm(gram)
    if not bool(gram_norm > 0):
        raise ValueError(
            f"{fn}: all class means are equal, so there is no between-class geometry to "
            "compare with a simplex"
        )
    eye = torch.eye(c, dtype=x.dtype, device=x.device)
    target = (c * eye - 1.0) / (c - 1)
    scale = (gram * target).sum() / (target * target).sum()
    distance = torch.linalg.matrix_norm(gram - scale * target) / gram_norm
    unit = l2_normalize(centered, eps)
    cosines = unit @ unit.T
    target_cosine = -1.0 / (c - 1)
    off = ~eye.bool()
    gap = (cosines[off] - target_cosine).abs().max()
    sample_cos = (l2_normalize(x, eps) * l2_normalize(means, eps)[inverse]).sum(dim=1).mean()
    residual = x - means[inverse]
    # tr(S_W S_B^+)/C with S_W = R^T R/N, S_B = M^T M/C equals ||R M^+||_F^2 / N.  The rows of
    # M sum to 0, so M = U U^T M with U an orthonormal basis of the complement of 1, and
    # ||R M^+|| = ||R (U^T M)^+||: inverting U^T M ((C-1) x D) never sees the known null
    # direction, which rounding would otherwise turn into a spurious tiny singular value
    # when the means are large compared with their spread.  Singular values below the
    # rounding level of the centring (C eps max|mu_c|) count as zero.
    basis = torch.linalg.qr(eye - 1.0 / c)[0][:, : c - 1]
    floor = c * torch.finfo(x.dtype).eps * float(torch.linalg.vector_norm(means, dim=1).max())
    inverse_means = torch.linalg.pinv(
        basis.T @ centered, atol=floor, rtol=c * torch.finfo(x.dtype).eps
    )
    nc1 = (residual @ inverse_means).pow(2).sum() / x.shape[0]
    mean_norms = torch.linalg.vector_norm(means, dim=1)
    centered_norms = torch.linalg.vector_norm(centered, dim=1)
    if rescaled:
        means, mean_norms, centered_norms = (t * peak for t in (means, mean_norms, centered_norms))
    return SimplexReport(
        classes,
        means,
        mean_norms,
        centered_norms,
        cosines,
        target_cosine,
        gap,
        distance,
        sample_cos,
        nc1,
    )


#: Default rank range of :func:`spectrum_decay`: ranks 4..100, the window fastssl's
#: Stringer-Pachitariu fit uses (``trange = arange(3, 100)`` on 0-based indices).
SPECTRUM_K_RANGE = (4, 100)


def _spectrum(fn: str, z: Tensor, center: bool) -> Tensor:
    """Eigenvalues of ``Z^T Z / (N - 1)`` (centred ``Z``) in decreasing order, zeros removed.

    Computed as squared singular values of the (centred) data matrix, which is more accurate
    than an eigendecomposition of the covariance.  Singular values below the matrix-rank
    tolerance ``max(N, D) * eps * sigma_max`` are dropped; a matrix with none left raises.
    Where the squares overflow or underflow the dtype, the spectrum of ``z / max|z|`` is
    returned instead (both callers normalise it).
    """
    x = z.to(v.compute_dtype(z))
    if center:
        x = x - x.mean(dim=0, keepdim=True)
    plain = bool(torch.isfinite(x).all())  # the mean of entries near the range overflows
    sigma = torch.linalg.svdvals(x) if plain else x.new_full((1,), math.inf)
    total = (sigma**2).sum()
    if not bool(torch.isfinite(total) & (total > 0)) and bool(torch.isfinite(z).all()):
        # finite entries whose squares overflow (float32 above ~1e19) or underflow: both
        # callers are scale-invariant, so take the spectrum of z / max|z| (computed only then)
        x = z.to(v.compute_dtype(z))
        scale = x.detach().abs().amax()
        if bool(scale > 0):
            x = x / scale
            if center:
                x = x - x.mean(dim=0, keepdim=True)
            sigma = torch.linalg.svdvals(x)
    tol = max(x.shape) * torch.finfo(x.dtype).eps * sigma[0]
    sigma = sigma[sigma > tol]
    if sigma.numel() == 0:
        what = "all rows are identical" if center else "z is all zeros"
        raise ValueError(f"{fn}: z has an empty spectrum ({what}); the metric is undefined")
    return sigma**2 / max(x.shape[0] - 1, 1) if center else sigma**2


def effective_rank(z: Tensor, *, center: bool = True) -> Tensor:
    r"""Effective rank: the exponential of the entropy of the normalised singular values.

    With :math:`\sigma_1 \ge \dots \ge \sigma_r > 0` the non-zero singular values of the
    (column-centred) embedding matrix :math:`Z \in \mathbb{R}^{N \times D}` and
    :math:`p_k = \sigma_k / \sum_j \sigma_j`:

    .. math::

        \operatorname{erank}(Z) = \exp\Big(-\sum_{k=1}^{r} p_k \log p_k\Big)

    Implements the effective rank of [Roy2007]_ (the exponential of the Shannon entropy of
    the singular-value distribution; applied to embeddings by RankMe [Garrido2023]_).  It
    lies in :math:`[1, r]`, equals :math:`r` exactly when the :math:`r` non-zero singular values are
    equal (an isotropic batch), and is invariant to rotations :math:`Z \mapsto ZQ`, to
    permutations of the rows and to rescaling :math:`Z \mapsto cZ`.

    Args:
        z: ``(N, D)`` embeddings, N >= 2 (N >= 1 with ``center=False``), finite, floating.
        center: subtract the column mean first (default), so the singular values are the
            square roots of the scaled covariance eigenvalues used by :func:`spectrum_decay`.

    Returns:
        A 0-d tensor in the compute dtype, in ``[1, min(N, D)]``.

    Raises:
        ValueError: not a 2-D floating tensor, too few rows, NaN/inf values, or a spectrum
            with no non-zero singular value (all rows equal, or ``z`` zero with
            ``center=False``).

    Example:
        >>> import torch
        >>> z = torch.eye(4, dtype=torch.float64)
        >>> round(float(effective_rank(z, center=False)), 12)  # 4 equal singular values
        4.0
        >>> g = torch.Generator().manual_seed(0)
        >>> z = torch.randn(200, 8, generator=g, dtype=torch.float64) * torch.arange(1.0, 9.0)
        >>> round(float(effective_rank(z)), 6)
        6.865594

    References:
        .. [Roy2007] O. Roy, M. Vetterli, "The effective rank: a measure of effective
           dimensionality", EUSIPCO 2007.
        .. [Garrido2023] Q. Garrido, R. Balestriero, L. Najman, Y. LeCun, "RankMe: Assessing
           the Downstream Performance of Pretrained Self-Supervised Representations by Their
           Rank", ICML 2023, arXiv:2210.02885.

    .. note:: Documented choice.
        The entropy is taken over *singular values* (Roy & Vetterli), not over covariance
        eigenvalues (their squares), and over the centred matrix so that a shared offset of
        all embeddings does not count as a dimension.  ``center=False`` is RankMe's reading
        [Garrido2023]_ (which also adds 1e-7 to each :math:`p_k`; here :math:`0\log 0 = 0`
        is exact and numerically-zero singular values are dropped with the matrix-rank
        tolerance ``max(N, D) * eps * sigma_max``).
    """
    fn = "effective_rank"
    v.check_bool(fn, "center", center)
    v.check_tensor(fn, "z", z, ndim=2, min_rows=2 if center else 1)
    sigma = _spectrum(fn, z, center).sqrt()
    p = sigma / sigma.sum()
    return torch.exp(-(p * torch.log(p)).sum())


class SpectrumDecay(NamedTuple):
    """Result of :func:`spectrum_decay`.

    ``alpha`` and ``r2`` are 0-d tensors; ``spectrum`` is the full explained-variance ratio
    (eigenvalues over their sum, decreasing, zeros removed); the fit used ranks
    ``k_min..k_max`` (1-based, inclusive).
    """

    alpha: Tensor
    r2: Tensor
    spectrum: Tensor
    k_min: int
    k_max: int


def spectrum_decay(
    z: Tensor, *, k_range: tuple[int, int] | None = None, center: bool = True
) -> SpectrumDecay:
    r"""Power-law exponent of the covariance eigenspectrum, :math:`\lambda_k \propto k^{-\alpha}`.

    With :math:`\lambda_1 \ge \lambda_2 \ge \dots` the eigenvalues of the covariance of the
    centred embeddings (normalised to explained-variance ratios), fit
    :math:`\log\lambda_k \approx c - \alpha\log k` by weighted least squares with weights
    :math:`w_k = 1/k` over the ranks :math:`k_{min} \le k \le k_{max}`:

    .. math::

        (\hat c, \hat\alpha) = \arg\min_{c,\alpha} \sum_{k=k_{min}}^{k_{max}}
            \frac{1}{k}\big(\log\lambda_k - c + \alpha\log k\big)^2

    and report the weighted coefficient of determination :math:`R^2 = 1 - \sum_k w_k
    (y_k - \hat y_k)^2 / \sum_k w_k (y_k - \bar y_w)^2` of the same fit
    (:math:`y_k = \log\lambda_k`, :math:`\bar y_w` the :math:`w`-weighted mean).  The
    :math:`1/k` weights compensate for the log-spaced density of ranks.  This is the
    eigenspectrum-decay estimator of [Stringer2019]_ as used for [Agrawal2022]_ by the
    authors' code (``kumarkrishna/fastssl``, ``fastssl/utils/powerlaw.py``).

    Args:
        z: ``(N, D)`` embeddings, N >= 2, finite, floating.
        k_range: ``(k_min, k_max)`` 1-based inclusive ranks to fit, ``k_min >= 1``,
            ``k_max - k_min >= 2`` (three points at least) and ``k_max`` at most the number
            of non-zero eigenvalues.  ``None`` (default) fits ranks 4 to
            ``min(100, #non-zero eigenvalues)``, falling back to 1 to that number when it
            is below 6.
        center: subtract the column mean first (default; PCA).

    Returns:
        :class:`SpectrumDecay` ``(alpha, r2, spectrum, k_min, k_max)``.  For an exact power
        law :math:`\lambda_k = k^{-\alpha}` in the range, ``alpha`` is recovered to rounding
        and ``r2`` is 1 (also for a flat spectrum, where the fit is exact with
        :math:`\alpha = 0`).

    Raises:
        ValueError: bad ``z`` (as :func:`effective_rank`), a malformed ``k_range``, or fewer
            non-zero eigenvalues than ``k_max`` (or than 3 with the default range).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(500, 64, generator=g, dtype=torch.float64)
        >>> q, _ = torch.linalg.qr(x - x.mean(0))  # centred orthonormal columns
        >>> lam = torch.arange(1.0, 65.0, dtype=torch.float64) ** -1.5
        >>> fit = spectrum_decay(q * lam.sqrt())  # covariance eigenvalues proportional to lam
        >>> round(float(fit.alpha), 10), round(float(fit.r2), 10), fit.k_min, fit.k_max
        (1.5, 1.0, 4, 64)
        >>> sample = torch.randn(4000, 64, generator=g, dtype=torch.float64) * lam.sqrt()
        >>> round(float(spectrum_decay(sample).alpha), 3)  # finite-sample estimate
        1.507

    References:
        .. [Stringer2019] C. Stringer, M. Pachitariu, N. Steinmetz, M. Carandini, K. Harris,
           "High-dimensional geometry of population responses in visual cortex", Nature 2019.
        .. [Agrawal2022] K. K. Agrawal, A. K. Mondal, A. Ghosh, B. A. Richards, "alpha-ReQ:
           Assessing Representation Quality in Self-Supervised Learning by measuring
           eigenspectrum decay", NeurIPS 2022.

    .. note:: Documented choice.
        fastssl reports an *unweighted* :math:`R^2` over a wider rank range (up to 500);
        here :math:`R^2` uses the fit's own weights and range, so it measures the fit that
        produced :math:`\alpha`.  The default range avoids the first few eigenvalues (often
        dominated by a few directions) and the tail beyond rank 100, which a finite sample
        biases downward.
    """
    fn = "spectrum_decay"
    v.check_bool(fn, "center", center)
    v.check_tensor(fn, "z", z, ndim=2, min_rows=2 if center else 1)
    lam = _spectrum(fn, z, center)
    lam = lam / lam.sum()
    rank = lam.numel()
    if k_range is None:
        k_min, k_max = SPECTRUM_K_RANGE
        k_max = min(k_max, rank)
        if k_max - k_min < 2:
            k_min = 1
        if k_max - k_min < 2:
            raise ValueError(
                f"{fn}: z has only {rank} non-zero covariance eigenvalue(s); fitting a power "
                "law needs at least 3"
            )
    else:
        if (
            not isinstance(k_range, tuple)
            or len(k_range) != 2
            or not all(isinstance(k, int) and not isinstance(k, bool) for k in k_range)
        ):
            raise ValueError(
                f"{fn}: k_range must be a tuple (k_min, k_max) of ints, got {k_range!r}"
            )
        k_min, k_max = k_range
        if k_min < 1 or k_max - k_min < 2:
            raise ValueError(
                f"{fn}: k_range must satisfy 1 <= k_min and k_max >= k_min + 2 (three ranks at "
                f"least), got {k_range!r}"
            )
        if k_max > rank:
            raise ValueError(
                f"{fn}: k_range {k_range!r} reaches rank {k_max} but z has only {rank} non-zero "
                "covariance eigenvalues; lower k_max"
            )
    k = torch.arange(k_min, k_max + 1, dtype=lam.dtype, device=lam.device)
    w = 1.0 / k
    x = torch.log(k)
    y = torch.log(lam[k_min - 1 : k_max])
    xm = (w * x).sum() / w.sum()
    ym = (w * y).sum() / w.sum()
    slope = (w * (x - xm) * (y - ym)).sum() / (w * (x - xm) ** 2).sum()
    resid = y - (ym + slope * (x - xm))
    ss_tot = (w * (y - ym) ** 2).sum()
    # log-eigenvalues equal up to rounding (a flat spectrum): the fit alpha = 0 is exact, and
    # the ratio below would only compare rounding errors
    flat = (y - ym).abs().max() <= 64 * torch.finfo(y.dtype).eps * (1.0 + y.abs().max())
    r2 = torch.ones_like(ss_tot) if bool(flat) else 1.0 - (w * resid**2).sum() / ss_tot
    return SpectrumDecay(-slope, r2, lam, k_min, k_max)
