"""Hypothesis strategies for embeddings, labels, temperatures and whole loss inputs.

These are public so that users can property-test their own implementations on the same
input domain amcl_lab tests itself on.  Every strategy takes keyword arguments only, draws
small shapes by default, and raises :class:`hypothesis.errors.InvalidArgument` naming the
argument when it is called with bad bounds.

Values are drawn element-wise (so failing examples shrink towards simple ones) in float64
and then cast, which keeps the drawn numbers identical across dtypes.  Embedding rows get a
direction and, separately, a norm drawn log-uniformly between ``min_norm`` and ``max_norm``,
so scales over many decades are reached.

Example:
    >>> from hypothesis import given
    >>> from amcl_lab.testing import strategies as ams
    >>> @given(ams.two_view_samples())
    ... def test_finite(sample):
    ...     z1, z2 = sample.args
    ...     assert z1.shape == z2.shape
    >>> test_finite()
"""

from __future__ import annotations

from ._amcl import (
    amcl_barlow_samples,
    amcl_queue_samples,
    amcl_simsiam_samples,
    amcl_two_view_samples,
    head_stacks,
    pair_temperatures,
)
from ._base import (
    RELATIONS,
    barlow_samples,
    embedding_pairs,
    embeddings,
    hard_negative_samples,
    labels,
    multiview_features,
    query_key_queue_samples,
    supcon_samples,
    temperatures,
    two_view_samples,
)
from ._kernel import (
    augmentation_graphs,
    invariance_orthogonality_samples,
    kernel_samples,
    multiview_barlow_samples,
    multiview_views,
)
from ._ssl import (
    dcl_samples,
    dino_samples,
    moco_v3_samples,
    multiview_vicreg_samples,
    negative_cosine_samples,
    swav_samples,
    vicreg_samples,
)

__all__ = [
    "RELATIONS",
    "amcl_barlow_samples",
    "amcl_queue_samples",
    "amcl_simsiam_samples",
    "amcl_two_view_samples",
    "augmentation_graphs",
    "barlow_samples",
    "dcl_samples",
    "dino_samples",
    "embedding_pairs",
    "embeddings",
    "hard_negative_samples",
    "head_stacks",
    "invariance_orthogonality_samples",
    "kernel_samples",
    "labels",
    "moco_v3_samples",
    "multiview_barlow_samples",
    "multiview_features",
    "multiview_vicreg_samples",
    "multiview_views",
    "negative_cosine_samples",
    "pair_temperatures",
    "query_key_queue_samples",
    "supcon_samples",
    "swav_samples",
    "temperatures",
    "two_view_samples",
    "vicreg_samples",
]
