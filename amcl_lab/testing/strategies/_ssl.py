"""Strategies for the self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV).

Private module of :mod:`amcl_lab.testing.strategies`.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ...samples import SampleInput
from ._base import _check_dtype, _check_range, _log_uniform, _tensor, embedding_pairs, temperatures
from ._kernel import multiview_views

__all__ = [
    "dcl_samples",
    "dino_samples",
    "moco_v3_samples",
    "multiview_vicreg_samples",
    "negative_cosine_samples",
    "swav_samples",
    "vicreg_samples",
]

# --- self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV) ------------------

_SSL_RELATIONS = ("independent", "near_duplicate", "mixed")
_LOGIT_ELEMENTS = st.floats(-3.0, 3.0, allow_nan=False, allow_subnormal=False, width=64)
_SCORE_ELEMENTS = st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False, width=64)


@st.composite
def _vicreg_samples(draw, dtype, device):
    z1, z2 = draw(
        embedding_pairs(
            rows=st.integers(2, 12),
            dim=st.integers(1, 8),
            dtype=dtype,
            device=device,
            min_norm=0.1,
            max_norm=10.0,
            relations=_SSL_RELATIONS,
        )
    )
    kwargs = {
        "lambda_invariance": draw(st.sampled_from((0.0, 1.0, 25.0))),
        "mu_variance": draw(st.sampled_from((0.0, 1.0, 25.0))),
        "nu_covariance": draw(st.sampled_from((0.0, 1.0))),
        "gamma": draw(st.sampled_from((0.5, 1.0, 2.0))),
    }
    return SampleInput((z1, z2), kwargs, name="vicreg")


def vicreg_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` (N 2-12, D 1-8, row norms 0.1 to 10) and coefficients for VICReg."""
    _check_dtype(dtype)
    return _vicreg_samples(dtype, device)


@st.composite
def _multiview_vicreg_samples(draw, dtype, device):
    views = draw(multiview_views(rows=st.integers(2, 8), dtype=dtype, device=device))
    kwargs = {
        "lambda_invariance": draw(st.sampled_from((1.0, 25.0))),
        "mu_variance": draw(st.sampled_from((0.0, 25.0))),
        "nu_covariance": draw(st.sampled_from((0.0, 1.0))),
    }
    return SampleInput((views,), kwargs, name="multiview_vicreg")


def multiview_vicreg_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(views,)`` (``(N, m, D)``, N 2-8, m 2-4) and coefficients for multi-view VICReg."""
    _check_dtype(dtype)
    return _multiview_vicreg_samples(dtype, device)


@st.composite
def _four_embeddings(draw, dtype, device, min_rows, min_norm, max_norm):
    """Two positive pairs ``(a, b)`` and ``(c, d)`` of one shape (each pair with a relation)."""
    n, d = draw(st.integers(min_rows, 8)), draw(st.integers(1, 16))
    pairs = [
        draw(
            embedding_pairs(
                rows=n, dim=d, dtype=dtype, device=device, min_norm=min_norm, max_norm=max_norm
            )
        )
        for _ in range(2)
    ]
    return pairs[0], pairs[1]


@st.composite
def _negative_cosine_samples(draw, dtype, device):
    (p1, z2), (p2, z1) = draw(_four_embeddings(dtype, device, 1, 1e-3, 1e3))
    kwargs = {"convention": draw(st.sampled_from(("simsiam", "byol")))}
    return SampleInput((p1, p2, z1, z2), kwargs, name="negative_cosine")


def negative_cosine_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(p1, p2, z1, z2)`` (N 1-8, D 1-16) and ``convention``; ``p1`` is drawn
    against ``z2`` and ``p2`` against ``z1`` with the relations of :func:`embedding_pairs`."""
    _check_dtype(dtype)
    return _negative_cosine_samples(dtype, device)


@st.composite
def _dcl_samples(draw, dtype, device, min_temperature, max_temperature, weighted):
    z1, z2 = draw(embedding_pairs(rows=st.integers(2, 8), dtype=dtype, device=device))
    kwargs: dict[str, object] = {
        "temperature": draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    }
    if weighted:
        kwargs["sigma"] = draw(_log_uniform(0.05, 10.0))
    return SampleInput((z1, z2), kwargs, name="dclw" if weighted else "dcl")


def dcl_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
    weighted: bool = False,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(z1, z2)`` plus ``temperature`` (and, ``weighted``, a von Mises-Fisher
    ``sigma`` in [0.05, 10]) for DCL / DCLW."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _dcl_samples(dtype, device, min_temperature, max_temperature, weighted)


@st.composite
def _moco_v3_samples(draw, dtype, device, min_temperature, max_temperature):
    (q1, k2), (q2, k1) = draw(_four_embeddings(dtype, device, 2, 1e-3, 1e3))
    tau = draw(temperatures(min_value=min_temperature, max_value=max_temperature))
    return SampleInput((q1, q2, k1, k2), {"temperature": tau}, name="moco_v3")


def moco_v3_samples(
    *,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    min_temperature: float = 1e-3,
    max_temperature: float = 1e3,
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(q1, q2, k1, k2)`` (N 2-8) plus ``temperature`` for MoCo v3; ``q1`` is drawn
    against its positive ``k2`` and ``q2`` against ``k1``."""
    _check_dtype(dtype)
    _check_range("temperature", min_temperature, max_temperature)
    return _moco_v3_samples(dtype, device, min_temperature, max_temperature)


def _array(draw, shape, elements, dtype, device) -> torch.Tensor:
    return _tensor(draw(hnp.arrays(np.float64, shape, elements=elements)), dtype, device)


@st.composite
def _dino_samples(draw, dtype, device):
    n, crops, k = draw(st.integers(1, 5)), draw(st.integers(2, 4)), draw(st.integers(1, 6))
    teacher_crops = draw(st.integers(1, min(2, crops)))
    student = _array(draw, (n, crops, k), _LOGIT_ELEMENTS, dtype, device)
    teacher = _array(draw, (n, teacher_crops, k), _LOGIT_ELEMENTS, dtype, device)
    center = _array(draw, (k,), _LOGIT_ELEMENTS, dtype, device) * draw(st.sampled_from((0, 1)))
    kwargs = {
        "student_temperature": draw(_log_uniform(0.05, 1.0)),
        "teacher_temperature": draw(_log_uniform(0.02, 1.0)),
    }
    return SampleInput((student, teacher, center), kwargs, name="dino")


def dino_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(student (N, V_s, K), teacher (N, V_t, K), center (K,))``, logits in [-3, 3]
    (N 1-5, V_s 2-4, V_t 1-2, K 1-6; the centre zero or drawn), and the two temperatures
    (student 0.05 to 1, teacher 0.02 to 1) for DINO."""
    _check_dtype(dtype)
    return _dino_samples(dtype, device)


@st.composite
def _swav_samples(draw, dtype, device):
    n, crops, k = draw(st.integers(1, 6)), draw(st.integers(2, 4)), draw(st.integers(1, 6))
    scores = _array(draw, (n, crops, k), _SCORE_ELEMENTS, dtype, device)
    kwargs = {
        "assigned": draw(st.integers(1, min(2, crops))),
        "temperature": draw(_log_uniform(0.05, 1.0)),
        "epsilon": draw(st.sampled_from((0.05, 0.1, 0.5))),
        "iterations": draw(st.sampled_from((1, 3, 10))),
    }
    return SampleInput((scores,), kwargs, name="swav")


def swav_samples(
    *, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> st.SearchStrategy[SampleInput]:
    """Inputs ``(scores,)`` (``(N, V, K)`` prototype cosines in [-1, 1], N 1-6, V 2-4, K 1-6)
    and the keywords of SwAV (``assigned`` 1-2, ``temperature``, ``epsilon``, ``iterations``)."""
    _check_dtype(dtype)
    return _swav_samples(dtype, device)
