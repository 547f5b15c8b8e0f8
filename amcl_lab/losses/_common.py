"""Small numerical helpers shared by the loss modules."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .. import _validation as v

#: Default floor on the L2 norm used when embeddings are normalised (see :func:`l2_normalize`).
NORM_EPS = 1e-8


def l2_normalize(z: Tensor, eps: float = NORM_EPS) -> Tensor:
    r"""Row-wise :math:`z / \lVert z\rVert_2`, with rows of norm below ``eps`` mapped to zero.

    A row whose norm is below ``eps`` (in particular an all-zero row) becomes the zero vector
    and receives zero gradient: its cosine similarity with everything is 0.  Normalisation is
    discontinuous at the origin, so any gradient there is a convention; the alternative
    ``z / max(|z|, eps)`` (``torch.nn.functional.normalize``) returns gradients of order
    ``1/eps``, which overflow float16.  Rows with norm >= ``eps`` are normalised exactly,
    which is what makes every loss invariant to positive rescaling of a row.
    """
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    tiny = norm < eps
    return torch.where(tiny, torch.zeros_like(z), z / norm.clamp_min(eps))


def masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """Row-wise log-sum-exp over the entries where ``keep`` is true.

    Masked entries are set to ``-inf`` *before* the reduction (never subtracted after), so the
    result is exact for any finite logits; ``torch.logsumexp`` subtracts the row maximum
    internally, which keeps temperatures down to 1e-3 finite in float32.
    """
    return torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=-1)


class TwoViewSimilarities(NamedTuple):
    """Cosine similarities of the 2N stacked rows ``[z1; z2]`` and their roles.

    ``positive[i]`` is the index of anchor ``i``'s other view (``i + N`` modulo ``2N``);
    ``negatives[i, j]`` is true for the 2N - 2 rows that are neither ``i`` nor its positive.
    """

    sim: Tensor
    positive: Tensor
    negatives: Tensor


def check_two_views(fn: str, z1: Tensor, z2: Tensor, eps: float) -> None:
    """Validate a pair of ``(N, D)`` view embeddings, N >= 2, and the norm floor ``eps``."""
    v.check_tensor(fn, "z1", z1, ndim=2, min_rows=2)
    v.check_tensor(fn, "z2", z2, ndim=2, min_rows=2)
    v.check_same_shape(fn, "z1", z1, "z2", z2)
    v.check_same_device(fn, [("z1", z1), ("z2", z2)])
    v.check_positive_float(fn, "eps", eps)


def two_view_similarities(z1: Tensor, z2: Tensor, eps: float) -> TwoViewSimilarities:
    """Normalise ``[z1; z2]`` (in the compute dtype) and return :class:`TwoViewSimilarities`."""
    n = z1.shape[0]
    z = l2_normalize(torch.cat([z1, z2]).to(v.compute_dtype(z1, z2)), eps)
    rows = torch.arange(2 * n, device=z.device)
    positive = (rows + n) % (2 * n)
    negatives = (rows[:, None] != rows[None, :]) & (rows[None, :] != positive[:, None])
    return TwoViewSimilarities(z @ z.T, positive, negatives)
