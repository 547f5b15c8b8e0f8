r"""MoCo v3's loss (Chen, Xie, He, ICCV 2021): symmetric InfoNCE with in-batch keys, times 2 tau."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _validation as v
from .. import distributed
from ._common import NORM_EPS, l2_normalize

__all__ = ["MoCoV3Loss", "moco_v3"]


def _ctr(q: Tensor, k: Tensor, temperature: float | Tensor, gathered: bool) -> Tensor:
    """2 tau times the mean over queries of -log softmax_j(q_i . k_j / tau)[i]."""
    logits = q @ k.T / temperature
    offset = distributed.rank() * q.shape[0] if gathered else 0
    rows = torch.arange(q.shape[0], device=q.device)
    losses = torch.logsumexp(logits, dim=1) - logits[rows, rows + offset]
    total = losses.sum()
    count = losses.numel()
    if gathered:
        total, count = distributed.all_reduce_sum(total), count * distributed.world_size()
    return 2.0 * temperature * total / count


def moco_v3(
    q1: Tensor,
    q2: Tensor,
    k1: Tensor,
    k2: Tensor,
    temperature: float | Tensor = 0.2,
    *,
    stop_gradient: bool = True,
    eps: float = NORM_EPS,
    gather_distributed: bool = False,
) -> Tensor:
    r"""MoCo v3: each view's queries against the other view's keys of the batch, scaled by 2 tau.

    With cosine similarities :math:`s_{ij} = \hat q_i^\top \hat k_j` of the queries (online
    predictor outputs) and keys (momentum encoder outputs) of one batch,

    .. math::

        \mathrm{ctr}(q, k) = 2\tau \cdot \frac1N \sum_{i=1}^N
            \Big(-\frac{s_{ii}}{\tau} + \log \sum_{j=1}^N e^{s_{ij}/\tau}\Big),
        \qquad
        L = \mathrm{ctr}(q_1, k_2) + \mathrm{ctr}(q_2, k_1)

    (``temperature`` :math:`\tau`; the N keys of the batch are the candidates, the own key the
    positive).  Implements the loss of Algorithm 1 of [Chen2021v3]_ (``ctr`` and its
    ``2 * tau`` factor, the two directions summed).  Each direction is
    :math:`2\tau` times :func:`~amcl_lab.losses.info_nce` with ``queue=None``.  The factor
    makes the loss tend to twice the margin hinge, :math:`2\max(0, \max_{j \ne i} s_{ij} -
    s_{ii})` per query and direction, as :math:`\tau \to 0` instead of diverging.

    Args:
        q1: ``(N, D)`` queries from the first view, N >= 2, D >= 1.
        q2: ``(N, D)`` queries from the second view.
        k1: ``(N, D)`` keys of the first view (scored against ``q2``).
        k2: ``(N, D)`` keys of the second view (scored against ``q1``).
        temperature: finite ``tau > 0`` (float or 0-d tensor).
        stop_gradient: detach the keys (the momentum encoder gets no gradient).  ``False``
            gives the full derivative (same value), for gradient checks.
        eps: floor on the row norm used for normalisation (a zero row is the zero vector).
        gather_distributed: under an initialised process group, the keys of every rank are
            the candidates of the local queries (the official code's ``concat_all_gather``)
            and every rank returns the loss of the global batch, with the gradient
            conventions of :mod:`amcl_lab.distributed`.  No effect without a process group.

    Returns:
        A scalar in the compute dtype (float32 for half inputs).

    Raises:
        ValueError: shape or device mismatch, N < 2, NaN/inf inputs, a bad temperature, a
            non-positive ``eps``, or (gathered) shards of different sizes.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(8, 16, generator=g, dtype=torch.float64)  # 8 images
        >>> q1, q2, k1, k2 = x + 0.5 * torch.randn(4, 8, 16, generator=g, dtype=torch.float64)
        >>> round(float(moco_v3(q1, q2, k1, k2, 0.2)), 6)
        0.215937

    References:
        .. [Chen2021v3] X. Chen, S. Xie, K. He, "An Empirical Study of Training
           Self-Supervised Vision Transformers", ICCV 2021, arXiv:2104.02057.

    .. note:: Documented choice.
        The two directions are summed, not averaged, and each carries the factor
        :math:`2\tau`, as Algorithm 1 and the official code (``facebookresearch/moco-v3``,
        ``contrastive_loss``) do.  Only the keys are candidates: other queries are not
        negatives (lightly's ``NTXentLoss(q, k)`` is SimCLR's loss on ``[q; k]``, which
        adds them and the key-side anchors; see ``docs/conventions.md``).  The default
        ``tau = 0.2`` is the official ViT recipe's; its ResNet-50 recipe keeps the script
        default 1.0.
    """
    fn = "moco_v3"
    tensors = (("q1", q1), ("q2", q2), ("k1", k1), ("k2", k2))
    for name, t in tensors:
        v.check_tensor(fn, name, t, ndim=2, min_rows=2)
    for name, t in tensors[1:]:
        v.check_same_shape(fn, "q1", q1, name, t)
    v.check_same_device(fn, tensors)
    temperature = v.check_temperature(fn, temperature)
    v.check_positive_float(fn, "eps", eps)
    v.check_bool(fn, "stop_gradient", stop_gradient)
    v.check_bool(fn, "gather_distributed", gather_distributed)
    if stop_gradient:
        k1, k2 = k1.detach(), k2.detach()
    gathered = gather_distributed and distributed.is_active()
    dtype = v.compute_dtype(q1, q2, k1, k2)
    a1, a2, b1, b2 = (l2_normalize(t.to(dtype), eps) for t in (q1, q2, k1, k2))
    if gathered:
        b1 = distributed.gather(b1, fn=fn, name="k1")
        b2 = distributed.gather(b2, fn=fn, name="k2")
    return _ctr(a1, b2, temperature, gathered) + _ctr(a2, b1, temperature, gathered)


class MoCoV3Loss(nn.Module):
    """Module form of :func:`moco_v3`; ``forward(q1, q2, k1, k2)``."""

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q1: Tensor, q2: Tensor, k1: Tensor, k2: Tensor) -> Tensor:
        return moco_v3(q1, q2, k1, k2, self.temperature)
