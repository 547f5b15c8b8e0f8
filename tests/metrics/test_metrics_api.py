"""Unit tests of :mod:`amcl_lab.metrics`: bad input, conventions, dtypes, regression values.

Bad input must raise a ``ValueError`` (``TypeError`` for a non-tensor) whose message names the
function and the argument (``_validation`` contract).  Regression values cite their source
(a paper, or the closed form they are computed from).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import amcl_lab
from amcl_lab import metrics

F64 = torch.float64
GEN_SEED = 1234


def _randn(*shape: int, seed: int = GEN_SEED) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


Z = _randn(6, 3)
Y = torch.tensor([0, 0, 1, 1, 2, 2])
NAN = Z.clone()
NAN[2, 1] = float("nan")
INF = Z.clone()
INF[0, 0] = float("inf")

# (function, args, kwargs, message regex): every case names the function and the argument.
ERROR_CASES = [
    ("alignment", (Z, Z[:5]), {}, r"alignment: z1 and z2 must have the same shape"),
    ("alignment", (Z, Z), {"alpha": 0.0}, r"alignment: alpha must be finite and > 0"),
    ("alignment", (Z, NAN), {}, r"alignment: z2 contains NaN or inf"),
    ("alignment", (Z[0], Z[0]), {}, r"alignment: z1 must be a 2-D tensor"),
    ("uniformity", (Z[:1],), {}, r"uniformity: z must have at least 2 rows"),
    ("uniformity", (Z,), {"t": -1.0}, r"uniformity: t must be finite and > 0"),
    ("uniformity", (Z,), {"chunk_size": 0}, r"uniformity: chunk_size must be >= 1"),
    ("uniformity", (INF,), {}, r"uniformity: z contains NaN or inf"),
    ("uniformity", (Z.long(),), {}, r"uniformity: z must have a floating dtype"),
    ("tolerance", (Z, Y[:5]), {}, r"tolerance: labels must be a 1-D tensor of length 6"),
    ("tolerance", (Z, Y.double()), {}, r"tolerance: labels must have an integer dtype"),
    ("tolerance", (Z, torch.arange(6)), {}, r"tolerance: no class has two samples"),
    ("tolerance", (Z, Y), {"reading": "pairs"}, r"tolerance: reading must be one of"),
    ("tolerance", (NAN, Y), {}, r"tolerance: z contains NaN or inf"),
    ("negative_weights", (Z[:1], Z[:1]), {}, r"negative_weights: z1 must have at least 2 rows"),
    ("negative_weights", (Z, Z), {"top_k": 0}, r"negative_weights: top_k must be in \[1, 10\]"),
    ("negative_weights", (Z, Z), {"top_k": 11}, r"negative_weights: top_k must be in \[1, 10\]"),
    ("negative_weights", (Z, Z, 0.0), {}, r"negative_weights: temperature must be finite and > 0"),
    ("negative_weights", (Z, INF), {}, r"negative_weights: z2 contains NaN or inf"),
    ("simplex_report", (Z, Y[:4]), {}, r"simplex_report: labels must be a 1-D tensor of length 6"),
    (
        "simplex_report",
        (Z, torch.zeros(6, dtype=torch.long)),
        {},
        r"simplex_report: labels .*at least 2 distinct classes",
    ),
    (
        "simplex_report",
        (Z[:, :1], Y),
        {},
        r"simplex_report: 3 classes cannot form a regular simplex in dimension D = 1",
    ),
    (
        "simplex_report",
        (torch.ones(6, 3, dtype=F64), Y),
        {},
        r"simplex_report: all class means are equal",
    ),
    ("simplex_report", (NAN, Y), {}, r"simplex_report: z contains NaN or inf"),
    (
        "effective_rank",
        (torch.ones(4, 3, dtype=F64),),
        {},
        r"effective_rank: z has an empty spectrum \(all rows are identical\)",
    ),
    ("effective_rank", (NAN,), {}, r"effective_rank: z contains NaN or inf"),
    ("effective_rank", (Z[0],), {}, r"effective_rank: z must be a 2-D tensor"),
    ("spectrum_decay", (Z,), {"k_range": (2, 3)}, r"spectrum_decay: k_range must satisfy"),
    ("spectrum_decay", (Z,), {"k_range": [1, 3]}, r"spectrum_decay: k_range must be a tuple"),
    (
        "spectrum_decay",
        (Z,),
        {"k_range": (1, 4)},
        r"spectrum_decay: k_range \(1, 4\) reaches rank 4 but z has only 3",
    ),
    (
        "spectrum_decay",
        (_randn(6, 2),),
        {},
        r"spectrum_decay: z has only 2 non-zero covariance eigenvalue",
    ),
]


@pytest.mark.parametrize(
    ("name", "args", "kwargs", "match"),
    ERROR_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ERROR_CASES)],
)
def test_bad_input_raises_a_value_error_naming_function_and_argument(name, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        getattr(metrics, name)(*args, **kwargs)


def test_a_non_tensor_is_a_type_error():
    with pytest.raises(TypeError, match=r"uniformity: z must be a torch\.Tensor"):
        metrics.uniformity(np.ones((3, 2)))


def test_every_metric_is_exported_from_the_package():
    for name in metrics.__all__:
        assert getattr(amcl_lab, name) is getattr(metrics, name)
        assert name in amcl_lab.__all__


def test_negative_weights_use_the_nt_xent_anchor_and_negative_order():
    """2N anchors [z1; z2]; anchor i's negatives are the rows other than i and i +- N, ascending."""
    w = metrics.negative_weights(_randn(2, 3), _randn(2, 3, seed=7))
    assert w.negatives.tolist() == [[1, 3], [0, 2], [1, 3], [0, 2]]
    assert w.weights.shape == w.similarities.shape == (4, 2)


@pytest.mark.parametrize(
    ("classes", "angular"),
    [(10, 0.4646), (100, 0.4968)],
)
def test_regular_simplex_class_means_have_the_spec_angular_similarity(classes, angular):
    """Regular simplex: angular similarity 1 - arccos(-1/(K-1))/pi = 0.4646 (K = 10), 0.4968 (100).

    The measure of Graf et al.'s notebooks (``plus-rkwitt/py_supcon_vs_ce``); the values follow
    from the class-mean cosine -1/(K-1) of a regular simplex.
    """
    vertices = torch.eye(classes, dtype=F64) * 2.5 + 1.0  # a simplex off the origin
    labels = torch.arange(classes).repeat(2)
    report = metrics.simplex_report(vertices[labels], labels)
    off = ~torch.eye(classes, dtype=torch.bool)
    similarity = 1 - torch.arccos(report.cosines[off]) / math.pi
    assert torch.allclose(similarity, torch.full_like(similarity, angular), atol=5e-5)
    assert float(report.simplex_distance) < 1e-12


def test_uniformity_blocks_agree_with_one_similarity_matrix():
    """The chunked path is the same sum as the one-matrix path (N = 2500, 1024-row blocks)."""
    z = _randn(2500, 8)
    one = metrics.uniformity(z, chunk_size=2500)
    chunked = metrics.uniformity(z)
    assert math.isclose(float(one), float(chunked), rel_tol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_are_computed_in_at_least_float32(dtype):
    z = _randn(8, 4).to(dtype)
    assert metrics.uniformity(z).dtype == torch.float32
    assert metrics.alignment(z, z.flip(0)).dtype == torch.float32
    assert metrics.negative_weights(z, z.flip(0)).weights.dtype == torch.float32
    assert metrics.effective_rank(z).dtype == torch.float32


def test_metrics_are_differentiable_where_used_as_objectives():
    """uniformity, alignment and tolerance pass float64 gradcheck on small inputs."""
    z1 = _randn(5, 3).requires_grad_(True)
    z2 = _randn(5, 3, seed=3).requires_grad_(True)
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert torch.autograd.gradcheck(lambda a: metrics.uniformity(a, chunk_size=2), (z1,))
    assert torch.autograd.gradcheck(lambda a, b: metrics.alignment(a, b), (z1, z2))
    assert torch.autograd.gradcheck(lambda a: metrics.tolerance(a, labels), (z1,))


def test_zero_rows_have_zero_cosine_and_stay_finite():
    """A row below eps is the zero vector (as in the losses): cosine 0, finite metrics."""
    z = _randn(4, 3)
    z[1] = 0.0
    labels = torch.tensor([0, 0, 1, 1])
    cos_23 = float(torch.nn.functional.cosine_similarity(z[2], z[3], dim=0))
    assert math.isclose(float(metrics.tolerance(z, labels)), cos_23 / 2, rel_tol=1e-12)
    assert math.isfinite(float(metrics.uniformity(z)))


def test_spectrum_decay_default_range_follows_the_rank():
    """Ranks 4..min(100, rank), or 1..rank when that leaves fewer than three points."""
    wide = metrics.spectrum_decay(_randn(300, 150))
    assert (wide.k_min, wide.k_max) == (4, 100)
    narrow = metrics.spectrum_decay(_randn(50, 5))
    assert (narrow.k_min, narrow.k_max) == (1, 5)
    assert narrow.spectrum.shape == (5,)
    assert math.isclose(float(narrow.spectrum.sum()), 1.0, rel_tol=1e-14)


def test_effective_rank_uncentred_reading_is_rankme():
    """center=False uses the raw matrix (RankMe): the identity has 4 equal singular values."""
    eye = torch.eye(4, dtype=F64)
    assert math.isclose(float(metrics.effective_rank(eye, center=False)), 4.0, rel_tol=1e-14)
    # centred, the identity's rows lose one direction: 3 equal singular values
    assert math.isclose(float(metrics.effective_rank(eye)), 3.0, rel_tol=1e-12)


def test_flat_spectrum_fits_alpha_zero_with_r2_one():
    """Equal eigenvalues in a random basis: log-eigenvalues equal up to rounding, alpha = 0 and
    R^2 = 1 as documented (a regression: the rounding-level spread once gave arbitrary R^2)."""
    x = _randn(13, 8)
    q, _ = torch.linalg.qr(x - x.mean(dim=0))  # centred orthonormal columns: a flat spectrum
    rotation, _ = torch.linalg.qr(_randn(8, 8, seed=5))
    fit = metrics.spectrum_decay(q @ rotation, k_range=(1, 8))
    assert abs(float(fit.alpha)) <= 1e-12
    assert float(fit.r2) == 1.0


def test_nc1_is_stable_under_rotation_and_translation():
    """Rotating by 2 rad and shifting by (5, -3) leaves NC1 = 10.5 (a regression: the
    pseudo-inverse once inverted rounding noise in the known null direction of the centred
    means and returned 68.7 here)."""
    z = torch.tensor([[0.5, 0.5]] * 7 + [[1.25, 1.25]], dtype=F64)
    labels = torch.tensor([0, 1, 0, 0, 0, 0, 0, 0])
    # closed form: S_W = (378/784)/8 J and S_B = (3/56)^2 J / 2 with J the all-ones 2 x 2,
    # so tr(S_W S_B^+)/C = 10.5
    assert math.isclose(float(metrics.simplex_report(z, labels).nc1), 10.5, rel_tol=1e-12)
    c, s = math.cos(2.0), math.sin(2.0)
    rotation = torch.tensor([[c, -s], [s, c]], dtype=F64)
    moved = z @ rotation + torch.tensor([5.0, -3.0], dtype=F64)
    assert math.isclose(float(metrics.simplex_report(moved, labels).nc1), 10.5, rel_tol=1e-9)
