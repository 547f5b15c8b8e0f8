r"""AMCL losses: multi-head, pair-adaptive-temperature forms of SimCLR, MoCo and InfoNCE
(Wang et al., ECCV 2024, Table 2); SimSiam and Barlow Twins are in :mod:`.amcl_siamese`.

Every function here is a pure function of tensors.  Features come as head stacks
``(C, N, D)`` (head, sample, feature), one per view, and the per-pair temperatures come as a
tensor laid out like the similarities they divide (see each function), so the losses can be
evaluated, differentiated and compared with any temperature source: the shared temperature
network of :class:`amcl_lab.amcl.PairTemperature`, a constant, or a test's hand-made values.

Conventions shared by all losses (Wang, Koniusz, Gedeon, Zheng 2024, arXiv:2310.05615,
Table 2 and its Eqs. (2.1)-(2.4)):

* heads are combined by a plain **sum** (Table 2); anchors are averaged (``reduction="mean"``);
* similarities are cosines of L2-normalised rows (norm floor ``eps``, zero rows become the
  zero vector);
* the hardest negative is chosen by **raw** similarity, never by ``s / tau``; ties go to the
  lowest candidate index; selection carries no gradient;
* the log-sum-exp modes (``mode="softmax"`` and ``mode="nt_xent"``, the "Softmax" variant of
  the paper's Fig. 5, right) select nothing: every candidate enters through
  :func:`torch.logsumexp` of ``s / tau``, each over its own pair temperature;
* the regulariser is :func:`omega` with :math:`d'` the feature dimension ``D`` of the vectors
  whose similarity is taken (``+beta * Omega`` on positive-pair temperatures,
  ``-beta * Omega`` on negative-pair temperatures).

The paper writes no averaging over anchors or symmetrisation over views; both follow the
second official code release and are documented choices.

Data parallelism (:mod:`amcl_lab.distributed`): :func:`amcl_nt_xent` and :func:`amcl_info_nce`
take ``gather_distributed`` (local anchors, hardest negatives searched among the candidates
of every rank, or in the log-sum-exp modes all of those candidates in the log-sum-exp, the
global-batch value on every rank), and so does :func:`amcl_barlow_twins`
(the cross-correlation and its standardisation over the global batch, computed on every
rank).  The two others are means of per-sample terms and need no gather:
:func:`amcl_simsiam` compares each sample's two views only, and :func:`amcl_moco` scores
each query against its own key and a queue that is the same on every rank (the training
loop enqueues the keys of every rank).  On equal shards the mean over ranks of the local
values is the global value and a shard's gradient is W times the global one, the same
convention as the gathered losses, so DDP's gradient average is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validation as v
from .. import distributed
from ._amcl_common import check_stacks, compute_dtype, omega, omega_terms, temperatures
from ._common import NORM_EPS, l2_normalize, reduce_anchors, two_view_similarities

__all__ = [
    "MODES",
    "NEG_REGULARIZERS",
    "amcl_info_nce",
    "amcl_moco",
    "amcl_nt_xent",
    "omega",
]

#: How the negatives enter: the paper's single hardest negative (``"max"``), the mean over the
#: top kappa (``"topk"``), or a log-sum-exp over every candidate without (``"softmax"``) or
#: with (``"nt_xent"``) the positive.
MODES = ("max", "topk", "softmax", "nt_xent")
#: The modes that take a log-sum-exp over every candidate instead of selecting negatives.
_LSE_MODES = ("softmax", "nt_xent")
#: Negative-side regulariser: the paper's Omega averaged like the similarity term, or the
#: second code release's ``sum_k (log tau_k + 1/tau_k)``.
NEG_REGULARIZERS = ("omega", "release2")


def _check_selection(
    fn: str,
    mode: str,
    k: int | None,
    candidates: int,
    regularizer: str,
    *,
    positive_is_candidate: bool = False,
) -> int:
    """Validate the negative selection and return how many candidates each anchor keeps."""
    v.check_choice(fn, "mode", mode, MODES)
    v.check_choice(fn, "neg_regularizer", regularizer, NEG_REGULARIZERS)
    if mode != "topk" and k is not None:
        raise ValueError(f"{fn}: k is only used with mode='topk', got k={k!r} with mode={mode!r}")
    if mode == "max":
        return 1
    if mode in _LSE_MODES:
        if regularizer != "omega":
            raise ValueError(
                f"{fn}: neg_regularizer={regularizer!r} (the second code release's top-kappa "
                f"regulariser) is only defined for mode='max' or 'topk'; mode={mode!r} "
                "averages Omega over every candidate: use neg_regularizer='omega'"
            )
        if mode == "nt_xent" and positive_is_candidate:
            raise ValueError(
                f"{fn}: mode='nt_xent' is not available here: the positive is already one of "
                "the candidates (Eq. (2.4)), so adding it to the log-sum-exp would count it "
                "twice and leaving it as is gives mode='softmax'; use mode='softmax'"
            )
        return candidates
    if k is None:
        raise ValueError(f"{fn}: mode='topk' needs k (the number of hardest negatives kept)")
    v.check_int(fn, "k", k, low=1, high=candidates)
    return k


# --- the shared core ---------------------------------------------------------------------------


def _hardest(scores: Tensor, count: int) -> Tensor:
    """Indices of the ``count`` largest raw scores per row; ties go to the lowest index."""
    scores = scores.detach()
    if count == 1:
        return scores.argmax(dim=-1, keepdim=True)  # first maximal index
    return torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :count]


def _contrastive_terms(
    s_pos: Tensor,
    tau_pos: Tensor,
    s_cand: Tensor,
    tau_cand: Tensor,
    *,
    dim: int,
    beta: float,
    count: int,
    neg_regularizer: str,
) -> Tensor:
    r"""Per-head, per-anchor Eq. (2.1)/(2.4) terms, shape ``(C, A)``.

    ``s_pos, tau_pos``: ``(C, A)``; ``s_cand, tau_cand``: ``(C, A, M)`` candidates.
    """
    chosen = _hardest(s_cand, count)
    s_sel, tau_sel = s_cand.gather(-1, chosen), tau_cand.gather(-1, chosen)
    # 1/tau multiplies outside the max: the pair's own temperature (Table 2).
    data = -s_pos / tau_pos + (s_sel / tau_sel).mean(dim=-1)
    if neg_regularizer == "omega":
        reg_neg = omega_terms(tau_sel, dim).mean(dim=-1)  # kappa = 1 reproduces Eq. (2.1)
    else:
        # Release 2's "Eq. (5)" selected-set regulariser: log coefficient 1, summed over kappa
        # (the second official code release's top-kappa loss, not the paper's Table 2).
        reg_neg = (torch.log(tau_sel) + torch.reciprocal(tau_sel)).sum(dim=-1)
    return data + beta * (omega_terms(tau_pos, dim) - reg_neg)


def _log_sum_exp_terms(
    s_pos: Tensor,
    tau_pos: Tensor,
    s_cand: Tensor,
    tau_cand: Tensor,
    *,
    dim: int,
    beta: float,
    with_positive: bool,
) -> Tensor:
    r"""Per-head, per-anchor terms of the log-sum-exp forms, shape ``(C, A)``.

    ``s_pos, tau_pos``: ``(C, A)``; ``s_cand, tau_cand``: ``(C, A, M)``, every candidate.
    ``with_positive`` adds the positive's logit to the log-sum-exp (``mode="nt_xent"``); the
    negative regulariser is the mean of Omega over the M candidates either way.
    """
    positive = s_pos / tau_pos
    logits = s_cand / tau_cand
    if with_positive:
        logits = torch.cat([logits, positive[..., None]], dim=-1)
    # logsumexp subtracts the row maximum: finite in float32 down to tau = 1e-5
    data = -positive + torch.logsumexp(logits, dim=-1)
    reg_neg = omega_terms(tau_cand, dim).mean(dim=-1)
    return data + beta * (omega_terms(tau_pos, dim) - reg_neg)


def _terms(
    mode: str,
    s_pos: Tensor,
    tau_pos: Tensor,
    s_cand: Tensor,
    tau_cand: Tensor,
    *,
    dim: int,
    beta: float,
    count: int,
    neg_regularizer: str,
) -> Tensor:
    """The per-head, per-anchor terms of ``mode`` (selection or log-sum-exp), ``(C, A)``."""
    if mode in _LSE_MODES:
        return _log_sum_exp_terms(
            s_pos, tau_pos, s_cand, tau_cand, dim=dim, beta=beta, with_positive=mode == "nt_xent"
        )
    return _contrastive_terms(
        s_pos,
        tau_pos,
        s_cand,
        tau_cand,
        dim=dim,
        beta=beta,
        count=count,
        neg_regularizer=neg_regularizer,
    )


def _two_view(
    fn: str,
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor,
    *,
    positive_is_candidate: bool,
    beta: float,
    mode: str,
    k: int | None,
    neg_regularizer: str,
    reduction: str,
    eps: float,
    gather_distributed: bool,
) -> Tensor:
    check_stacks(fn, ("z1", "z2"), (z1, z2), rows=2)
    v.check_positive_float(fn, "beta", beta, allow_zero=True)
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    heads, n, dim = z1.shape
    gathered = gather_distributed and distributed.is_active()
    dtype = compute_dtype((z1, z2), temperature)
    z1, z2 = z1.to(dtype), z2.to(dtype)
    pairs = two_view_similarities(z1, z2, eps, gathered=gathered, fn=fn)  # (C, 2n, 2N)
    total = pairs.sim.shape[-1]
    candidates = total - 1 if positive_is_candidate else total - 2
    count = _check_selection(
        fn, mode, k, candidates, neg_regularizer, positive_is_candidate=positive_is_candidate
    )
    layout = (
        "(C, 2n, 2N): head, local anchor row of [z1; z2], row of [Z1; Z2] gathered over ranks"
        if gathered
        else "(C, 2N, 2N): head, anchor row of [z1; z2], candidate row"
    )
    tau = temperatures(fn, temperature, (heads, 2 * n, total), layout, z1)

    keep = pairs.negatives.clone()
    rows = torch.arange(2 * n, device=keep.device)
    if positive_is_candidate:
        keep[rows, pairs.positive] = True
    # column indices of each row's candidates, in increasing order (the tie-break order)
    columns = torch.arange(total, device=keep.device).expand(2 * n, total)[keep]
    columns = columns.reshape(2 * n, candidates).expand(heads, -1, -1)
    pos_index = pairs.positive.expand(heads, -1)[..., None]
    terms = _terms(
        mode,
        pairs.sim.gather(-1, pos_index)[..., 0],
        tau.gather(-1, pos_index)[..., 0],
        pairs.sim.gather(-1, columns),
        tau.gather(-1, columns),
        dim=dim,
        beta=beta,
        count=count,
        neg_regularizer=neg_regularizer,
    )
    return reduce_anchors(terms.sum(dim=0), reduction, gathered=gathered)


# --- Eq. (2.1) and (2.4) -----------------------------------------------------------------------


def amcl_nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor,
    *,
    beta: float = 1e-4,
    mode: str = "max",
    k: int | None = None,
    neg_regularizer: str = "omega",
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""AMCL form of SimCLR's NT-Xent: hardest negative over its own pair temperature.

    For head :math:`c`, the two views are stacked into 2N rows (as in
    :func:`~amcl_lab.losses.nt_xent`); anchor :math:`i` has the positive :math:`p(i) = i\pm N`
    and the 2N - 2 other rows as negatives.  With cosine similarities :math:`s^c_{ij}`, pair
    temperatures :math:`\tau^c_{ij}` and :math:`n^* = \arg\max_{n} s^c_{in}` over the
    negatives (raw similarity),

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{s^c_{i,p(i)}}{\tau^c_{i,p(i)}}
                 + \frac{s^c_{in^*}}{\tau^c_{in^*}}
                 + \beta\,\Omega(\tau^c_{i,p(i)}) - \beta\,\Omega(\tau^c_{in^*})\Big)

    and the loss is the mean of :math:`\ell_i` over the 2N anchors (both view directions).
    :math:`\tau` is ``temperature``, :math:`\beta` is ``beta``, :math:`\Omega` is
    :func:`omega` with :math:`d' = D`.  With ``mode="topk"`` the negative term and the
    negative regulariser are averaged over the ``k`` negatives of largest raw similarity
    (the practical "Eq. (5)" variant).  Implements Eq. (2.1) of Table 2 of [Wang2024]_.

    ``mode="softmax"`` replaces the hardest negative by a log-sum-exp over all the 2N - 2
    negatives :math:`\mathcal N_i` of anchor :math:`i`, each over its own pair temperature,
    and averages the negative regulariser over them:

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{s^c_{i,p(i)}}{\tau^c_{i,p(i)}}
                 + \log\sum_{n\in\mathcal N_i}\exp\frac{s^c_{in}}{\tau^c_{in}}
                 + \beta\,\Omega(\tau^c_{i,p(i)})
                 - \frac{\beta}{|\mathcal N_i|}\sum_{n\in\mathcal N_i}\Omega(\tau^c_{in})\Big),

    the "Softmax" variant of Fig. 5 (right) of [Wang2024]_, which takes every negative
    similarity into account.  ``mode="nt_xent"`` is the same with the positive's term
    :math:`\exp(s^c_{i,p(i)}/\tau^c_{i,p(i)})` added inside the log-sum-exp (the regulariser
    unchanged).  The log-sum-exp is :func:`torch.logsumexp`, finite in float32 down to
    :math:`\tau = 10^{-5}`.

    With one head and a constant temperature the regulariser cancels (P4, for
    ``neg_regularizer="omega"``, every mode) and the loss is
    :math:`(\max_n s_{in} - s_{i,p(i)})/\tau`, a lower bound of the decoupled NT-Xent within
    :math:`\log(2N-2)` (P5, P6).  With one head, a constant temperature and ``beta=0``,
    ``mode="softmax"`` is :func:`~amcl_lab.losses.nt_xent` with ``decoupled=True`` and
    ``mode="nt_xent"`` is :func:`~amcl_lab.losses.nt_xent`.

    Args:
        z1: ``(C, N, D)`` head stack of the first view (head ``c``, sample ``n``), C >= 1,
            N >= 2, D >= 1, any floating dtype.
        z2: ``(C, N, D)`` head stack of the second view; ``z2[c, n]`` is the positive of
            ``z1[c, n]``.
        temperature: a positive float, or a positive tensor broadcastable to ``(C, 2N, 2N)``:
            ``temperature[c, i, j]`` is the temperature of rows ``i`` and ``j`` of head
            ``c``'s stack ``[z1[c]; z2[c]]`` (row ``i < N`` is ``z1[c, i]``, row ``N + i`` is
            ``z2[c, i]``).  The diagonal is never read.  Build it with
            :meth:`amcl_lab.amcl.PairTemperature.pairwise` on ``cat([z1, z2], dim=1)``.
        beta: regulariser weight, >= 0 (``1e-4`` in the second code release's CLI).
        mode: ``"max"`` (the paper), ``"topk"``, ``"softmax"`` (log-sum-exp over the 2N - 2
            negatives) or ``"nt_xent"`` (log-sum-exp over the negatives and the positive).
        k: number of hardest negatives for ``mode="topk"``, in ``[1, 2N - 2]``; only with
            ``"topk"``.
        neg_regularizer: ``"omega"`` (the paper's :math:`\Omega`, averaged over the selected
            negatives, or over all of them in the log-sum-exp modes) or ``"release2"``
            (:math:`\sum_k(\log\tau_k + 1/\tau_k)`, ``"max"`` and ``"topk"`` only, see the
            note).
        reduction: ``"mean"`` over the 2N anchors, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard (n samples) of a global batch of N = W n: the 2n local anchors
            search their negatives among the 2N rows of every rank, ``temperature`` is then
            laid out ``(C, 2n, 2N)`` (local anchor row of ``[z1; z2]``, row of the gathered
            ``[Z1; Z2]``, ranks in order: local sample ``i`` is global sample ``r n + i``;
            :class:`amcl_lab.amcl.AMCLModel` with ``gather_distributed=True`` builds it from
            a learned temperature), ``k`` is bounded by the global N, and ``"mean"``/``"sum"``
            return the value of the global batch on every rank (conventions in
            :mod:`amcl_lab.distributed`).  No effect without a process group.

    Returns:
        A scalar, or for ``reduction="none"`` the ``(2N,)`` head-summed per-anchor losses
        ordered ``[anchors of z1; anchors of z2]``.  Half-precision inputs are computed, and
        returned, in float32.

    Raises:
        ValueError: wrong shapes or head counts, N < 2, NaN/inf inputs, a non-positive
            temperature, a temperature tensor of the wrong shape, ``beta < 0``, an unknown
            ``mode``/``neg_regularizer``/``reduction``, ``k`` given with a mode other than
            ``"topk"``, missing with ``"topk"`` or outside ``[1, 2N - 2]``,
            ``neg_regularizer="release2"`` with ``"softmax"`` or ``"nt_xent"``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)  # C=3, N=4, D=8
        >>> z2 = z1 + 0.3 * torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        >>> tau = 0.1 + torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
        >>> round(float(amcl_nt_xent(z1, z2, tau, beta=0.01)), 6)
        -2.584859
        >>> round(float(amcl_nt_xent(z1, z2, tau, beta=0.01, mode="topk", k=3)), 6)
        -4.348122
        >>> round(float(amcl_nt_xent(z1, z2, tau, beta=0.01, mode="softmax")), 6)
        0.691527
        >>> round(float(amcl_nt_xent(z1, z2, tau, beta=0.01, mode="nt_xent")), 6)
        3.20586

        With one head, a constant temperature and ``beta=0`` the log-sum-exp modes are the
        baselines:

        >>> from amcl_lab.losses import nt_xent
        >>> soft = amcl_nt_xent(z1[:1], z2[:1], 0.5, beta=0.0, mode="softmax")
        >>> bool(torch.isclose(soft, nt_xent(z1[0], z2[0], 0.5, decoupled=True), rtol=1e-12))
        True
        >>> full = amcl_nt_xent(z1[:1], z2[:1], 0.5, beta=0.0, mode="nt_xent")
        >>> bool(torch.isclose(full, nt_xent(z1[0], z2[0], 0.5), rtol=1e-12))
        True

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        Heads are summed, anchors averaged over both view directions (the second code
        release; the paper's table shows one anchor).  For ``mode="topk"`` the paper's
        :math:`\Omega` is averaged over the selected negatives, so ``k=1`` equals
        ``mode="max"``; the second release instead subtracts
        :math:`\beta\sum_k(\log\tau_k + 1/\tau_k)` (log coefficient 1, summed while the
        similarity term is averaged), available as ``neg_regularizer="release2"``.

    .. note:: Documented choice.
        The paper names the "Softmax" variant (Fig. 5, right) without the equation being
        checked here; ``mode="softmax"`` is the reading that keeps Table 2's per-pair
        temperatures and regularisers and replaces only the hardest negative by the
        log-sum-exp of all of them.  :math:`\Omega` of the negatives is averaged over the
        2N - 2 negatives (as the top-kappa default averages it over the kept ones), so a
        constant temperature still cancels the regulariser.  In ``mode="nt_xent"`` the
        positive enters the log-sum-exp with its own temperature but keeps only its
        positive-role :math:`+\beta\Omega`; the negative regulariser is the same mean over
        the 2N - 2 negatives.  ``neg_regularizer="release2"`` is rejected with both: the
        second release defines it for its top-kappa selection only, and summing it over
        every negative would make its weight grow with the batch.
    """
    return _two_view(
        "amcl_nt_xent",
        z1,
        z2,
        temperature,
        positive_is_candidate=False,
        beta=beta,
        mode=mode,
        k=k,
        neg_regularizer=neg_regularizer,
        reduction=reduction,
        eps=eps,
        gather_distributed=gather_distributed,
    )


def amcl_info_nce(
    z1: Tensor,
    z2: Tensor,
    temperature: float | Tensor,
    *,
    beta: float = 1e-4,
    mode: str = "max",
    k: int | None = None,
    neg_regularizer: str = "omega",
    reduction: str = "mean",
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""AMCL form of InfoNCE: as :func:`amcl_nt_xent`, but the positive is also a candidate.

    The hardest candidate :math:`n^*` is taken over the 2N - 1 rows other than the anchor
    (its 2N - 2 negatives and its positive), by raw similarity:

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{s^c_{i,p(i)}}{\tau^c_{i,p(i)}}
                 + \frac{s^c_{in^*}}{\tau^c_{in^*}}
                 + \beta\,\Omega(\tau^c_{i,p(i)}) - \beta\,\Omega(\tau^c_{in^*})\Big),
        \qquad n^* = \arg\max_{n \ne i} s^c_{in}.

    When the positive is the most similar candidate the head's term is exactly 0; with one
    head and a constant temperature the loss is the zero-margin hinge
    :math:`\max(0, \max_n s_{in} - s_{i,p(i)})/\tau \ge 0` (P5), a lower bound of
    :func:`~amcl_lab.losses.nt_xent` within :math:`\log(2N-1)` (P6).  Implements Eq. (2.4)
    of Table 2 of [Wang2024]_.

    ``mode="softmax"`` takes the log-sum-exp over the same 2N - 1 candidates
    :math:`\mathcal C_i` (the positive included), each over its own pair temperature, and
    averages the negative-role regulariser over them:

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{s^c_{i,p(i)}}{\tau^c_{i,p(i)}}
                 + \log\sum_{n\in\mathcal C_i}\exp\frac{s^c_{in}}{\tau^c_{in}}
                 + \beta\,\Omega(\tau^c_{i,p(i)})
                 - \frac{\beta}{|\mathcal C_i|}\sum_{n\in\mathcal C_i}\Omega(\tau^c_{in})\Big),

    the "Softmax" variant of Fig. 5 (right) of [Wang2024]_ in the InfoNCE form.  With one
    head, a constant temperature and ``beta=0`` it is :func:`~amcl_lab.losses.nt_xent`
    (positive in the denominator).

    Args:
        z1: ``(C, N, D)`` head stack of the first view, N >= 2.
        z2: ``(C, N, D)`` head stack of the second view.
        temperature: a positive float or a tensor broadcastable to ``(C, 2N, 2N)``, laid out
            as for :func:`amcl_nt_xent`.
        beta: regulariser weight, >= 0.
        mode: ``"max"``, ``"topk"`` or ``"softmax"`` (log-sum-exp over the 2N - 1
            candidates); ``"nt_xent"`` is rejected (see the note).
        k: number of hardest candidates for ``mode="topk"``, in ``[1, 2N - 1]``; only with
            ``"topk"``.
        neg_regularizer: ``"omega"`` or ``"release2"`` (as for :func:`amcl_nt_xent`;
            ``"release2"`` not with ``"softmax"``).
        reduction: ``"mean"`` over the 2N anchors, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation.
        gather_distributed: under an initialised process group, ``z1`` and ``z2`` are this
            rank's shard (n samples) of a global batch of N = W n: the 2n local anchors
            search their negatives among the 2N rows of every rank, ``temperature`` is then
            laid out ``(C, 2n, 2N)`` (local anchor row of ``[z1; z2]``, row of the gathered
            ``[Z1; Z2]``, ranks in order: local sample ``i`` is global sample ``r n + i``),
            ``k`` is bounded by the global N, and ``"mean"``/``"sum"`` return the value of the
            global batch on every rank (conventions in :mod:`amcl_lab.distributed`).  No
            effect without a process group.

    Returns:
        A scalar or the ``(2N,)`` head-summed per-anchor losses.

    Raises:
        ValueError: as for :func:`amcl_nt_xent`, with ``k`` bounded by 2N - 1, and
            ``mode="nt_xent"``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> z1 = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        >>> z2 = z1 + 0.3 * torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        >>> float(amcl_info_nce(z1, z2, 0.5))  # every positive is its anchor's nearest row
        0.0
        >>> round(float(amcl_info_nce(z1, z2, 0.5, mode="softmax")), 6)  # 3 heads of NT-Xent
        2.441726

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        When the positive is a candidate its temperature in the negative role is the same
        entry as in the positive role (the table mixes the superscripts :math:`c-` and
        :math:`c\pm`), which is what makes the term vanish when the positive is hardest.

    .. note:: Documented choice.
        In ``mode="softmax"`` the positive is one of the candidates, so it appears both as
        the positive (:math:`-s^+/\tau^+ + \beta\Omega(\tau^+)`) and inside the
        log-sum-exp and the mean of :math:`\Omega` over the 2N - 1 candidates, with the
        same temperature entry.  ``mode="nt_xent"`` (the positive added to the log-sum-exp)
        is rejected with a ``ValueError``: the positive is already inside, so it would
        either be counted twice or be ``mode="softmax"`` under another name.
    """
    return _two_view(
        "amcl_info_nce",
        z1,
        z2,
        temperature,
        positive_is_candidate=True,
        beta=beta,
        mode=mode,
        k=k,
        neg_regularizer=neg_regularizer,
        reduction=reduction,
        eps=eps,
        gather_distributed=gather_distributed,
    )


def amcl_moco(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    temperature: float | Tensor,
    *,
    beta: float = 1e-4,
    mode: str = "max",
    k: int | None = None,
    neg_regularizer: str = "omega",
    reduction: str = "mean",
    eps: float = NORM_EPS,
) -> Tensor:
    r"""AMCL form of MoCo: Eq. (2.1) with each head's queue as the negatives.

    For head :math:`c`, query :math:`q_i`, its key :math:`k_i` and the head's queue rows
    :math:`u_1..u_K`, with :math:`n^* = \arg\max_j \mathrm{sim}(q_i, u_j)`:

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{\mathrm{sim}(q^c_i, k^c_i)}{\tau^c_{i0}}
                 + \frac{\mathrm{sim}(q^c_i, u^c_{n^*})}{\tau^c_{in^*}}
                 + \beta\,\Omega(\tau^c_{i0}) - \beta\,\Omega(\tau^c_{in^*})\Big).

    The temperature columns follow MoCo's logit layout: column 0 is the positive pair, column
    ``j >= 1`` the pair with queue row ``j - 1``.  Implements Eq. (2.1) of Table 2 of
    [Wang2024]_ with a queue of negatives; ``mode="topk"`` is the second release's top-kappa
    variant (kappa = 100, queue 4096).

    ``mode="softmax"`` is the "Softmax" variant of Fig. 5 (right) of [Wang2024]_ with the
    queue as the negatives, :math:`\tau^c_{ij}` the temperature of queue row :math:`j - 1`:

    .. math::

        \ell_i = \sum_{c=1}^{C}\Big(-\frac{\mathrm{sim}(q^c_i, k^c_i)}{\tau^c_{i0}}
                 + \log\sum_{j=1}^{K}\exp\frac{\mathrm{sim}(q^c_i, u^c_j)}{\tau^c_{ij}}
                 + \beta\,\Omega(\tau^c_{i0})
                 - \frac{\beta}{K}\sum_{j=1}^{K}\Omega(\tau^c_{ij})\Big);

    ``mode="nt_xent"`` adds the key's term :math:`\exp(\mathrm{sim}(q^c_i, k^c_i)/\tau^c_{i0})`
    inside the log-sum-exp, MoCo's (K + 1)-way softmax: with one head, a constant
    temperature and ``beta=0`` it is :func:`~amcl_lab.losses.info_nce` with the queue.

    Args:
        query: ``(C, N, D)`` query head stack, N >= 1.
        key: ``(C, N, D)`` key head stack (momentum encoder); ``key[c, i]`` is the positive
            of ``query[c, i]``.
        queue: ``(C, K, D)`` per-head queue of negatives, K >= 1.  Read, never modified.
        temperature: a positive float or a tensor broadcastable to ``(C, N, 1 + K)``.
        beta: regulariser weight, >= 0.
        mode: ``"max"``, ``"topk"``, ``"softmax"`` (log-sum-exp over the queue) or
            ``"nt_xent"`` (over the key and the queue).
        k: number of hardest queue entries for ``mode="topk"``, in ``[1, K]``; only with
            ``"topk"``.
        neg_regularizer: ``"omega"`` or ``"release2"`` (as for :func:`amcl_nt_xent`;
            ``"release2"`` only with ``"max"`` and ``"topk"``).
        reduction: ``"mean"`` over the N queries, ``"sum"``, or ``"none"``.
        eps: floor on the row norm used for normalisation.

    Returns:
        A scalar or the ``(N,)`` head-summed per-query losses.

    Raises:
        ValueError: as for :func:`amcl_nt_xent`; a queue whose head count or feature
            dimension differs from the query's; ``k`` outside ``[1, K]``.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> q = torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        >>> key = q + 0.5 * torch.randn(3, 4, 8, generator=g, dtype=torch.float64)
        >>> bank = torch.randn(3, 16, 8, generator=g, dtype=torch.float64)
        >>> tau = 0.1 + torch.rand(3, 4, 17, generator=g, dtype=torch.float64)
        >>> round(float(amcl_moco(q, key, bank, tau, beta=0.01)), 6)
        -3.60953
        >>> round(float(amcl_moco(q, key, bank, tau, beta=0.01, mode="softmax")), 6)
        2.470355
        >>> round(float(amcl_moco(q, key, bank, tau, beta=0.01, mode="nt_xent")), 6)
        4.681595
        >>> from amcl_lab.losses import info_nce
        >>> moco = amcl_moco(q[:1], key[:1], bank[:1], 0.2, beta=0.0, mode="nt_xent")
        >>> bool(torch.isclose(moco, info_nce(q[0], key[0], bank[0], 0.2), rtol=1e-12))
        True

    References:
        .. [Wang2024] L. Wang, P. Koniusz, T. Gedeon, L. Zheng, "Adaptive Multi-head
           Contrastive Learning", ECCV 2024, arXiv:2310.05615.

    .. note:: Documented choice.
        One direction (query against key), as MoCo's loss; the second release averages
        ``(q1, k2)`` and ``(q2, k1)`` against one per-head queue, which is two calls here.
        The queue is a per-head ``(C, K, D)`` stack (the second release's buffer
        ``[C, D, K]``, transposed).

    .. note:: Documented choice.
        In the log-sum-exp modes :math:`\Omega` of the negatives is averaged over the K
        queue entries (in ``"nt_xent"`` too: the key keeps only its positive-role
        :math:`+\beta\Omega`), and ``neg_regularizer="release2"`` is rejected, as for
        :func:`amcl_nt_xent`.  The queue is the same on every rank, so the new modes need no
        gather either.
    """
    fn = "amcl_moco"
    check_stacks(fn, ("query", "key"), (query, key), rows=1)
    v.check_tensor(fn, "queue", queue, ndim=3)
    heads, n, dim = query.shape
    if queue.shape[0] != heads or queue.shape[2] != dim or queue.shape[1] < 1:
        raise ValueError(
            f"{fn}: queue must be a (C, K, D) = ({heads}, K >= 1, {dim}) per-head stack "
            f"matching query, got shape {tuple(queue.shape)}"
        )
    v.check_same_device(fn, [("query", query), ("queue", queue)])
    v.check_positive_float(fn, "beta", beta, allow_zero=True)
    v.check_reduction(fn, reduction)
    v.check_positive_float(fn, "eps", eps)
    size = queue.shape[1]
    count = _check_selection(fn, mode, k, size, neg_regularizer)
    dtype = compute_dtype((query, key, queue), temperature)
    q, key_, bank = (l2_normalize(t.to(dtype), eps) for t in (query, key, queue))
    layout = "(C, N, 1 + K): head, query, [key, queue rows]"
    tau = temperatures(fn, temperature, (heads, n, 1 + size), layout, q)
    terms = _terms(
        mode,
        (q * key_).sum(dim=-1),
        tau[..., 0],
        q @ bank.transpose(-1, -2),
        tau[..., 1:],
        dim=dim,
        beta=beta,
        count=count,
        neg_regularizer=neg_regularizer,
    )
    return v.reduce(terms.sum(dim=0), reduction)
