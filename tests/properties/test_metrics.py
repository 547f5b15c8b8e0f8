"""Properties of the representation-geometry metrics (:mod:`amcl_lab.metrics`).

Each test is named after the statement it checks; the docstring gives the statement and its
source (Wang & Isola 2020; Wang & Liu 2021, Eqs. 4-5, 10-11; Graf et al. 2021; Roy & Vetterli
2007; Stringer et al. 2019; full references in :mod:`amcl_lab.metrics`).  The checks are
functions of the implementation under test, so the mutation test at the end runs the same checks
against deliberately broken metrics and requires each to be caught.  Expected values come from
closed forms or from the float64 NumPy loops in ``tests/metrics/numpy_metrics.py``, never from
amcl_lab.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from metrics import numpy_metrics as ref

from amcl_lab import metrics
from amcl_lab.losses import nt_xent
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks

pytestmark = pytest.mark.props

F64 = torch.float64


def _orthogonal(seed: int, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


# --- strategies -------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
potential_scales = st.sampled_from((0.5, 1.0, 2.0, 5.0))
row_scales = st.lists(st.floats(1e-2, 1e2), min_size=64, max_size=64).map(np.array)


@st.composite
def labelled_embeddings(draw, min_per_class: int = 1, max_classes: int = 4):
    z = draw(ams.embeddings(rows=st.integers(2, 10), dim=st.integers(1, 6)))
    y = draw(
        ams.labels(
            n=z.shape[0], num_classes=st.integers(1, max_classes), min_per_class=min_per_class
        )
    )
    return z, y


@st.composite
def circle_points(draw):
    """N points on the unit circle at arbitrary angles, with arbitrary row norms."""
    n = draw(st.integers(2, 12))
    angles = np.array(draw(st.lists(st.floats(0, 2 * np.pi), min_size=n, max_size=n)))
    return np.stack([np.cos(angles), np.sin(angles)], axis=1) * draw(row_scales)[:n, None]


def regular_simplex(c: int, d: int, radius: float, seed: int) -> np.ndarray:
    """C vertices of a centred regular simplex of the given radius in R^d, randomly rotated."""
    u, s, _ = np.linalg.svd(np.eye(c) - 1.0 / c)
    coords = np.zeros((c, d))
    coords[:, : c - 1] = u[:, : c - 1] * s[: c - 1]
    coords *= radius / np.linalg.norm(coords, axis=1, keepdims=True)
    return coords @ _orthogonal(seed, d)


@st.composite
def simplex_configurations(draw, min_classes: int = 2):
    """(vertices (C, d), labels with 1-3 samples per class in shuffled order, offset)."""
    c = draw(st.integers(min_classes, 6))
    d = draw(st.integers(c - 1, c + 2)) if c > 2 else draw(st.integers(1, 4))
    radius = 10.0 ** draw(st.floats(-2, 2))
    vertices = regular_simplex(c, d, radius, draw(seeds))
    per_class = draw(st.lists(st.integers(1, 3), min_size=c, max_size=c))
    labels = np.repeat(np.arange(c), per_class)
    labels = labels[np.random.default_rng(draw(seeds)).permutation(len(labels))]
    offset = draw(st.sampled_from((0.0, 1.0))) * np.random.default_rng(draw(seeds)).normal(size=d)
    return vertices, labels, offset * radius


def _distinct_top_gap(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Smallest gap between the two hardest negatives over all anchors."""
    _, negs = checks.two_view_similarity_rows(SampleInput((z1, z2)))
    top = np.sort(negs, axis=1)
    return float((top[:, -1] - top[:, -2]).min())


# --- checks, written against an arbitrary implementation ---------------------------------------
# Each takes the metric under test and one drawn input and raises AssertionError on failure.


def check_uniformity_value(uniformity, z: torch.Tensor, t: float, chunk: int) -> None:
    """The value is the log-mean Gaussian potential over distinct pairs (any chunk size)."""
    actual = float(uniformity(z, t, chunk_size=chunk))
    checks.assert_close(actual, ref.uniformity(z.numpy(), t), rtol=1e-10, atol=1e-12, what="L")


def check_polygon_value(uniformity, points: np.ndarray, t: float) -> None:
    """N equally spaced points on the circle give log((1/(N-1)) sum_k e^{-2t(1-cos 2pi k/N)})."""
    n = len(points)
    phase = math.atan2(points[0, 1], points[0, 0])
    angles = phase + 2 * np.pi * np.arange(n) / n
    polygon = (
        np.stack([np.cos(angles), np.sin(angles)], 1) * np.linalg.norm(points, axis=1)[:, None]
    )
    expected = math.log(
        sum(math.exp(-2 * t * (1 - math.cos(2 * math.pi * k / n))) for k in range(1, n)) / (n - 1)
    )
    checks.assert_close(
        float(uniformity(_t(polygon), t)), expected, rtol=1e-12, atol=1e-12, what="N-gon"
    )


def check_polygon_is_minimal(uniformity, points: np.ndarray, t: float) -> None:
    """No configuration of N points on the circle has lower uniformity loss than the N-gon."""
    n = len(points)
    polygon = np.stack(
        [np.cos(2 * np.pi * np.arange(n) / n), np.sin(2 * np.pi * np.arange(n) / n)], 1
    )
    best = float(uniformity(_t(polygon), t))
    value = float(uniformity(_t(points), t))
    assert value >= best - 1e-12, f"{n} points give {value} below the N-gon's {best}"


def check_uniformity_invariances(uniformity, z: torch.Tensor, seed: int, scales) -> None:
    """Rotations z -> zQ, batch permutations and positive row rescaling change nothing."""
    n, d = z.shape
    base = float(uniformity(z))
    q = _t(_orthogonal(seed, d))
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    moved = z[perm] @ q * _t(scales[:n, None])
    checks.assert_close(float(uniformity(moved)), base, rtol=1e-10, atol=1e-12, what="invariance")


def check_tolerance_value(tolerance, z: torch.Tensor, y: torch.Tensor) -> None:
    """Conditional reading: pooled mean over distinct same-class pairs; literal: Eq. 11 / N^2."""
    for reading in ("conditional", "literal"):
        if reading == "conditional" and not bool((torch.bincount(y) > 1).any()):
            continue
        actual = float(tolerance(z, y, reading=reading))
        expected = ref.tolerance(z.numpy(), y.numpy(), reading)
        checks.assert_close(actual, expected, rtol=1e-10, atol=1e-12, what=f"T {reading}")


def check_tolerance_of_collapsed_classes(tolerance, z: torch.Tensor, y: torch.Tensor) -> None:
    """If every class sits on one direction (any norms), the tolerance is exactly 1."""
    directions = ref.unit(z.numpy())[y.numpy()]  # sample i takes the direction of row y_i
    collapsed = directions * np.linspace(0.5, 3.0, len(y))[:, None]
    value = float(tolerance(_t(collapsed), y))
    assert abs(value - 1.0) <= 1e-12, f"collapsed classes give tolerance {value}"


def check_negative_weight_values(negative_weights, z1, z2, tau: float, top_k: int) -> None:
    """Weights, entropy, inverse-Simpson number and top-k share equal the NumPy loops."""
    w = negative_weights(z1, z2, tau, top_k=top_k)
    rows = ref.negative_weights(z1.numpy(), z2.numpy(), tau, top_k)
    for name, got, index in (
        ("weights", w.weights, 0),
        ("entropy", w.entropy, 1),
        ("effective_number", w.effective_number, 2),
        ("top_k_share", w.top_k_share, 3),
    ):
        expected = np.array([row[index] for row in rows])
        checks.assert_close(checks.as_numpy(got), expected, rtol=1e-9, atol=1e-12, what=name)


def check_simplex_is_at_distance_zero(simplex_report, vertices, labels, offset) -> None:
    """A collapsed regular simplex (any C <= d+1, rotation, radius, offset) has distance 0."""
    z = _t(vertices[labels] + offset)
    r = simplex_report(z, torch.from_numpy(labels))
    radius = np.linalg.norm(vertices[0])
    assert float(r.simplex_distance) <= 1e-10, f"distance {float(r.simplex_distance)}"
    assert float(r.max_cosine_gap) <= 1e-10, f"cosine gap {float(r.max_cosine_gap)}"
    checks.assert_close(
        checks.as_numpy(r.centered_norms), radius, rtol=1e-10, atol=0, what="centred norms"
    )
    assert abs(float(r.sample_cosine) - 1.0) <= 1e-12, float(r.sample_cosine)
    assert 0.0 <= float(r.nc1) <= 1e-20, float(r.nc1)


def check_effective_rank_value(effective_rank, z: torch.Tensor) -> None:
    """exp of the entropy of the normalised singular values of the centred batch."""
    checks.assert_close(
        float(effective_rank(z)), ref.effective_rank(z.numpy()), rtol=1e-9, atol=0, what="erank"
    )


def check_isotropic_effective_rank(effective_rank, n: int, r: int, scale: float, seed: int) -> None:
    """r equal non-zero singular values give effective rank exactly r."""
    x = np.random.default_rng(seed).standard_normal((n, r))
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    padded = np.concatenate([q * scale, np.zeros((n, 2))], axis=1) @ _orthogonal(seed, r + 2)
    value = float(effective_rank(_t(padded)))
    assert abs(value - r) <= 1e-9 * r, f"isotropic rank-{r} batch has effective rank {value}"


# --- uniformity and alignment (Wang & Isola 2020; Wang & Liu 2021) -----------------------------


@given(ams.embeddings(rows=st.integers(2, 9), dim=st.integers(1, 6)), potential_scales, st.data())
def test_uniformity_is_the_log_mean_potential_over_distinct_pairs(z, t, data):
    """L(t) = log mean_{i<j} exp(-t |u_i - u_j|^2), the same for every chunk size."""
    check_uniformity_value(metrics.uniformity, z, t, data.draw(st.integers(1, z.shape[0])))


@given(circle_points(), potential_scales)
def test_uniformity_of_equally_spaced_circle_points_is_the_polygon_value(points, t):
    """The regular N-gon on the circle has the closed-form value of its ring distances."""
    check_polygon_value(metrics.uniformity, points, t)


@given(circle_points(), potential_scales)
def test_equally_spaced_points_minimise_uniformity_on_the_circle(points, t):
    """The N-gon is universally optimal on S^1 (Cohn & Kumar 2007): every other set is higher."""
    check_polygon_is_minimal(metrics.uniformity, points, t)


@given(ams.embeddings(rows=st.integers(2, 8), dim=st.integers(1, 8)), potential_scales)
def test_uniformity_lies_between_the_simplex_bound_and_zero(z, t):
    """-2tN/(N-1) <= L <= 0 for N <= d + 1 points (Jensen), and L <= 0 always."""
    n, d = z.shape
    value = float(metrics.uniformity(z, t))
    assert value <= 1e-15
    if n <= d + 1:
        assert value >= -2 * t * n / (n - 1) - 1e-12, (value, n)


@given(st.integers(2, 7), potential_scales, seeds, st.floats(1e-2, 1e2))
def test_regular_simplex_attains_the_uniformity_lower_bound(n, t, seed, radius):
    """Jensen equality: a centred regular simplex of any size and radius has L = -2tN/(N-1)."""
    vertices = regular_simplex(n, n - 1 if n > 2 else 1, radius, seed)
    value = float(metrics.uniformity(_t(vertices), t))
    assert math.isclose(value, -2 * t * n / (n - 1), rel_tol=1e-12), value


@given(ams.embeddings(rows=st.integers(2, 8), dim=st.integers(1, 6)), seeds, row_scales)
def test_uniformity_is_invariant_to_rotation_permutation_and_row_scale(z, seed, scales):
    """Only the directions matter, as a set: z -> P z Q diag(c) leaves L unchanged."""
    check_uniformity_invariances(metrics.uniformity, z, seed, scales)


@given(ams.embedding_pairs(rows=st.integers(1, 8)), st.sampled_from((0.5, 1.0, 2.0, 3.0)))
def test_alignment_is_the_mean_distance_power_of_normalised_views(pair, alpha):
    """L_align = mean_i |u1_i - u2_i|^alpha; for alpha = 2 it is 2 - 2 mean cos (Wang & Isola).

    A squared distance is known to ~1e-15 absolute, so a distance to the power alpha only to
    about (1e-15)^(alpha/2): that is the absolute floor.
    """
    z1, z2 = pair
    value = float(metrics.alignment(z1, z2, alpha))
    expected = ref.alignment(z1.numpy(), z2.numpy(), alpha)
    checks.assert_close(value, expected, rtol=1e-10, atol=1e-15 ** (alpha / 2), what="align")
    if alpha == 2.0:
        cos = (ref.unit(z1.numpy()) * ref.unit(z2.numpy())).sum(axis=1).mean()
        checks.assert_close(value, 2 - 2 * cos, rtol=1e-10, atol=1e-14, what="2 - 2 cos")


@given(ams.embeddings(rows=st.integers(1, 8)), row_scales, st.data())
def test_alignment_is_zero_iff_the_views_coincide(z, scales, data):
    """Views with the same directions (any norms) have alignment 0; moving one row makes it > 0."""
    same = z * _t(scales[: z.shape[0], None])
    assert float(metrics.alignment(z, same)) <= 1e-15
    row = data.draw(st.integers(0, z.shape[0] - 1))
    moved = same.clone()
    moved[row] = -moved[row] if z.shape[1] == 1 else moved[row].roll(1) + moved[row]
    distance = np.linalg.norm(ref.unit(z.numpy())[row] - ref.unit(moved.numpy())[row])
    assume(distance > 1e-6)
    assert float(metrics.alignment(z, moved)) >= distance**2 / z.shape[0] * (1 - 1e-9)


# --- tolerance (Wang & Liu Eq. 11) ---------------------------------------------------------------


@given(labelled_embeddings())
def test_tolerance_is_the_pooled_mean_cosine_of_same_class_pairs(sample):
    """Conditional: mean over distinct same-class pairs; literal: Eq. 11 over all N^2 pairs."""
    check_tolerance_value(metrics.tolerance, *sample)


@given(labelled_embeddings(min_per_class=2))
def test_tolerance_lies_in_minus_one_one(sample):
    """T is a mean of cosines, so -1 <= T <= 1."""
    assert -1 - 1e-12 <= float(metrics.tolerance(*sample)) <= 1 + 1e-12


@given(labelled_embeddings(min_per_class=2))
def test_tolerance_is_one_when_every_class_is_collapsed(sample):
    """Every class on one point gives T = 1: tolerance alone is not a quality measure."""
    check_tolerance_of_collapsed_classes(metrics.tolerance, *sample)


@given(labelled_embeddings(min_per_class=2), seeds)
def test_tolerance_is_invariant_to_relabelling_classes_and_rotations(sample, seed):
    """Renaming classes, permuting samples or rotating embeddings leaves T unchanged."""
    z, y = sample
    rng = np.random.default_rng(seed)
    names = torch.from_numpy(rng.permutation(10) * 7 - 20)  # an injective renaming
    perm = torch.from_numpy(rng.permutation(len(y)))
    moved = z[perm] @ _t(_orthogonal(seed, z.shape[1]))
    for reading in ("conditional", "literal"):
        base = float(metrics.tolerance(z, y, reading=reading))
        other = float(metrics.tolerance(moved, names[y][perm], reading=reading))
        checks.assert_close(other, base, rtol=1e-10, atol=1e-14, what=reading)


@given(labelled_embeddings(min_per_class=2))
def test_literal_tolerance_is_the_conditional_one_scaled_by_the_same_class_share(sample):
    """N^2 T_literal = T_cond * sum_c n_c(n_c - 1) + N: about T_cond / C for C balanced classes."""
    z, y = sample
    n = len(y)
    counts = np.bincount(y.numpy())
    conditional = float(metrics.tolerance(z, y))
    literal = float(metrics.tolerance(z, y, reading="literal"))
    expected = (conditional * (counts * (counts - 1)).sum() + n) / n**2
    checks.assert_close(literal, expected, rtol=1e-10, atol=1e-14, what="literal")


# --- negative weights (Wang & Liu Eqs. 4-5) ------------------------------------------------------


@given(ams.two_view_samples(min_temperature=1e-2, max_temperature=1e2), st.data())
def test_negative_weights_and_summaries_match_the_boltzmann_formula(sample, data):
    """r_ij = softmax over the 2N - 2 negatives of s_ij / tau, with its summaries (Eq. 5)."""
    z1, z2 = sample.args
    k = data.draw(st.integers(1, 2 * z1.shape[0] - 2))
    check_negative_weight_values(metrics.negative_weights, z1, z2, sample.kwargs["temperature"], k)


@given(ams.two_view_samples(min_temperature=1e-2, max_temperature=1e2))
def test_negative_weights_are_the_nt_xent_gradient_shares(sample):
    """r_ij = (dL_i/ds_ij) / sum_k dL_i/ds_ik: the weights nt_xent's gradient applies (Eq. 4-5).

    The similarity gradients are recovered from nt_xent's autograd embedding gradients, with
    the anchors ordered [z1; z2] and each anchor's negatives in increasing row order, which is
    the convention ``negative_weights`` documents.
    """
    tau = sample.kwargs["temperature"]
    w = metrics.negative_weights(*sample.args, tau)
    for i, anchor in enumerate(checks.two_view_gradients(nt_xent, sample)):
        if not anchor.ok_neg.all():
            continue
        shares = anchor.g_neg / anchor.g_neg.sum()
        checks.assert_close(
            checks.as_numpy(w.weights[i]), shares, rtol=1e-6, atol=1e-9, what=f"anchor {i}"
        )


@given(ams.two_view_samples(), st.data())
def test_negative_weights_do_not_depend_on_the_positive(sample, data):
    """Anchor i's weights ignore its positive: replacing z2[i] leaves row i unchanged."""
    z1, z2 = sample.args
    i = data.draw(st.integers(0, z1.shape[0] - 1))
    other = z2.clone()
    other[i] = -3.0 * z2[i] + 0.5
    tau = sample.kwargs["temperature"]
    before = metrics.negative_weights(z1, z2, tau).weights[i]
    after = metrics.negative_weights(z1, other, tau).weights[i]
    assert torch.equal(before, after)


@given(ams.two_view_samples())
def test_entropy_tends_to_log_of_the_negative_count_as_tau_grows(sample):
    """H(r_i) -> log(2N - 2) as tau -> inf; log K - H = Var(s)/(2 tau^2) + ... <= 1e-8 at 1e4."""
    z1, z2 = sample.args
    entropy = checks.as_numpy(metrics.negative_weights(z1, z2, 1e4).entropy)
    assert np.all(np.abs(entropy - math.log(2 * z1.shape[0] - 2)) <= 1e-8), entropy


@given(ams.embedding_pairs(rows=st.integers(2, 6), relations=("independent", "mixed")))
def test_entropy_tends_to_zero_as_tau_goes_to_zero_for_distinct_similarities(pair):
    """A unique hardest negative (gap Delta) gives H(r_i) <= K (1 + Delta/tau) e^{-Delta/tau}.

    At Delta/tau = 60 the bound is below 1e-23; the computed entropy also carries the
    rounding of the log-sum-exp of logits up to 1/tau, a few ulps of 1/tau (float64).
    """
    z1, z2 = pair
    gap = _distinct_top_gap(z1, z2)
    assume(gap > 1e-3)
    tau = gap / 60
    entropy = checks.as_numpy(metrics.negative_weights(z1, z2, tau).entropy)
    negatives = 2 * z1.shape[0] - 2
    bound = negatives * 61 * math.exp(-60) + 8 * np.finfo(np.float64).eps / tau
    assert np.all(entropy <= bound), (entropy, bound)


@given(ams.two_view_samples(), ams.temperatures(min_value=1e-2, max_value=1e2))
def test_entropy_of_negative_weights_is_non_decreasing_in_temperature(sample, other_tau):
    """dH/dtau = Var_r(s)/tau^3 >= 0, so tau1 < tau2 gives H(tau1) <= H(tau2)."""
    z1, z2 = sample.args
    low, high = sorted((sample.kwargs["temperature"], other_tau))
    h_low = checks.as_numpy(metrics.negative_weights(z1, z2, low).entropy)
    h_high = checks.as_numpy(metrics.negative_weights(z1, z2, high).entropy)
    assert np.all(h_low <= h_high + 1e-12), (h_low, h_high)


@given(ams.two_view_samples(), st.data())
def test_weight_summaries_are_ordered_as_renyi_entropies(sample, data):
    """1 <= 1/sum r^2 <= e^H <= K; top-k shares grow from max r to 1 with k (k/K <= share)."""
    z1, z2 = sample.args
    k_neg = 2 * z1.shape[0] - 2
    k = data.draw(st.integers(1, k_neg))
    w = metrics.negative_weights(z1, z2, sample.kwargs["temperature"], top_k=k)
    eff, exp_h = checks.as_numpy(w.effective_number), np.exp(checks.as_numpy(w.entropy))
    assert np.all(
        (eff >= 1 - 1e-12) & (eff <= exp_h * (1 + 1e-12)) & (exp_h <= k_neg * (1 + 1e-12))
    )
    share = checks.as_numpy(w.top_k_share)
    assert np.all((share >= k / k_neg - 1e-12) & (share <= 1 + 1e-12)), share
    top1 = checks.as_numpy(
        metrics.negative_weights(z1, z2, sample.kwargs["temperature"]).top_k_share
    )
    checks.assert_close(
        top1, checks.as_numpy(w.weights.max(dim=1).values), rtol=1e-15, atol=0, what="top-1"
    )
    assert np.all(top1 <= share + 1e-15)


# --- simplex report (Graf et al. 2021; Papyan et al. 2020) ----------------------------------------


@given(simplex_configurations())
def test_simplex_distance_is_zero_on_regular_simplices(config):
    """Any collapsed regular simplex, C <= d + 1, any rotation, radius and offset: distance 0."""
    check_simplex_is_at_distance_zero(metrics.simplex_report, *config)


@given(simplex_configurations(min_classes=3), seeds, st.floats(1e-3, 0.5))
def test_simplex_distance_is_positive_on_perturbed_simplices(config, seed, size):
    """Moving one class by a fraction of the radius inside the simplex's span breaks regularity.

    Within the span the only other position of a vertex equidistant from the rest is its
    mirror image through the opposite face, 2 radius C/(C - 1) away, so the configuration is
    no longer regular and the distance must be > 0 (and equal the eigenvalue formula).
    """
    vertices, labels, offset = config
    c = len(vertices)
    rng = np.random.default_rng(seed)
    step = rng.standard_normal(c) @ vertices
    step *= size * np.linalg.norm(vertices[0]) / np.linalg.norm(step)
    moved = vertices.copy()
    moved[0] += step
    z = _t(moved[labels] + offset)
    distance = float(metrics.simplex_report(z, torch.from_numpy(labels)).simplex_distance)
    assert distance > 1e-10, distance
    checks.assert_close(
        distance, ref.simplex_distance(z.numpy(), labels), rtol=1e-6, atol=1e-12, what="distance"
    )


@st.composite
def generic_classes(draw):
    c = draw(st.integers(2, 5))
    d = draw(st.integers(c - 1, c + 3)) if c > 2 else draw(st.integers(1, 4))
    z = draw(ams.embeddings(rows=st.integers(c, 12), dim=d, min_norm=0.1, max_norm=10.0))
    y = draw(ams.labels(n=z.shape[0], num_classes=c, min_per_class=1))
    assume(len(torch.unique(y)) == c)
    means = ref.class_means(z.numpy(), y.numpy())
    sv = np.linalg.svd(means - means.mean(axis=0), compute_uv=False)[: c - 1]
    assume(sv[-1] > 1e-3 * sv[0])  # well-conditioned between-class geometry
    return z, y


@given(generic_classes())
def test_simplex_report_matches_independent_formulas(sample):
    """Distance = sqrt(1 - (tr G)^2/((C-1)|G|^2)) (eigenvalue form); NC1 = tr(S_W S_B^+)/C."""
    z, y = sample
    r = metrics.simplex_report(z, y)
    checks.assert_close(
        float(r.simplex_distance),
        ref.simplex_distance(z.numpy(), y.numpy()),
        rtol=1e-7,
        atol=1e-10,
        what="distance",
    )
    checks.assert_close(
        float(r.nc1), ref.nc1(z.numpy(), y.numpy()), rtol=1e-7, atol=1e-12, what="nc1"
    )
    means = ref.class_means(z.numpy(), y.numpy())
    checks.assert_close(checks.as_numpy(r.means), means, rtol=1e-12, atol=1e-14, what="means")
    centred = ref.unit(means - means.mean(axis=0))
    checks.assert_close(
        checks.as_numpy(r.cosines), centred @ centred.T, rtol=1e-10, atol=1e-12, what="cos"
    )
    assert r.target_cosine == -1.0 / (len(means) - 1)


@given(generic_classes(), seeds)
def test_simplex_report_is_invariant_to_rotation_translation_and_relabelling(sample, seed):
    """z -> zQ + b with renamed classes: distance, NC1, cosine gap and sample cosine unchanged."""
    z, y = sample
    rng = np.random.default_rng(seed)
    q = _t(_orthogonal(seed, z.shape[1]))
    b = _t(rng.normal(size=z.shape[1]))
    names = torch.from_numpy(rng.permutation(10) + 3)
    base = metrics.simplex_report(z, y)
    moved = metrics.simplex_report(z @ q + b, names[y])
    for field in ("simplex_distance", "nc1", "max_cosine_gap"):
        checks.assert_close(
            float(getattr(moved, field)),
            float(getattr(base, field)),
            rtol=1e-8,
            atol=1e-10,
            what=field,
        )
    moved = metrics.simplex_report(z @ q, names[y])
    checks.assert_close(
        float(moved.sample_cosine), float(base.sample_cosine), rtol=1e-10, atol=1e-12, what="cos"
    )


# --- spectrum (Roy & Vetterli 2007; Stringer et al. 2019) ---------------------------------------


def _has_spread(z: torch.Tensor) -> bool:
    """Rows not all equal: the centred batch has a non-empty spectrum."""
    return bool(np.linalg.norm(z.numpy() - z.numpy().mean(0)) > 1e-6)


@given(ams.embeddings(rows=st.integers(2, 12), dim=st.integers(1, 8), min_norm=0.1, max_norm=10.0))
def test_effective_rank_is_the_exponential_of_the_singular_value_entropy(z):
    """erank = exp(-sum p log p), p = sigma / sum sigma, singular values of the centred batch."""
    assume(_has_spread(z))
    check_effective_rank_value(metrics.effective_rank, z)
    value = float(metrics.effective_rank(z))
    assert 1 - 1e-12 <= value <= min(z.shape) + 1e-12


@given(st.integers(1, 6), st.integers(8, 20), st.floats(1e-3, 1e3), seeds)
def test_effective_rank_of_an_isotropic_rank_r_batch_is_r(r, n, scale, seed):
    """r equal singular values (in any rotation, at any scale) give effective rank r."""
    check_isotropic_effective_rank(metrics.effective_rank, n, r, scale, seed)


@given(
    ams.embeddings(rows=st.integers(3, 10), dim=st.integers(1, 6), min_norm=0.1, max_norm=10.0),
    seeds,
)
def test_effective_rank_is_invariant_to_rotation_scale_and_shift(z, seed):
    """erank(c (z Q + b)) = erank(z) for orthogonal Q, c > 0 and a shared offset b."""
    assume(np.linalg.norm(z.numpy() - z.numpy().mean(0)) > 1e-6)
    rng = np.random.default_rng(seed)
    moved = 3.7 * (z @ _t(_orthogonal(seed, z.shape[1])) + _t(rng.normal(size=z.shape[1])))
    checks.assert_close(
        float(metrics.effective_rank(moved)),
        float(metrics.effective_rank(z)),
        rtol=1e-8,
        atol=0,
        what="erank",
    )


@given(st.floats(0.1, 3.0), st.integers(6, 40), seeds, st.data())
def test_spectrum_decay_recovers_an_exact_power_law(alpha, d, seed, data):
    """Covariance eigenvalues k^-alpha in a random basis give alpha back exactly and R^2 = 1."""
    n = d + 5
    x = np.random.default_rng(seed).standard_normal((n, d))
    q, _ = np.linalg.qr(x - x.mean(axis=0))  # centred orthonormal columns
    lam = np.arange(1, d + 1, dtype=float) ** -alpha
    z = _t(q * np.sqrt(lam) @ _orthogonal(seed, d))
    k_min = data.draw(st.integers(1, d - 2))
    k_max = data.draw(st.integers(k_min + 2, d))
    for k_range in (None, (k_min, k_max)):
        fit = metrics.spectrum_decay(z, k_range=k_range)
        assert abs(float(fit.alpha) - alpha) <= 1e-8, (float(fit.alpha), alpha, k_range)
        assert abs(float(fit.r2) - 1.0) <= 1e-8


@given(ams.embeddings(rows=st.integers(8, 16), dim=st.integers(4, 8), min_norm=0.1, max_norm=10.0))
def test_spectrum_decay_is_the_weighted_least_squares_slope(z):
    """alpha and R^2 equal a 1/k-weighted least-squares fit of log lambda_k on log k (lstsq)."""
    x = z.numpy() - z.numpy().mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    assume(s[-1] > 1e-6 * s[0])
    fit = metrics.spectrum_decay(z, k_range=(1, z.shape[1]))
    alpha, r2 = ref.power_law_fit(s**2, 1, z.shape[1])
    checks.assert_close(float(fit.alpha), alpha, rtol=1e-8, atol=1e-10, what="alpha")
    checks.assert_close(float(fit.r2), r2, rtol=1e-8, atol=1e-10, what="R^2")


# --- mutation: every property must be able to fail ------------------------------------------


def _uniformity_with_self_pairs(z, t=2.0, *, chunk_size=1024):
    u = torch.nn.functional.normalize(z, dim=1)
    return torch.logsumexp((-t * torch.cdist(u, u) ** 2).reshape(-1), 0) - math.log(len(z) ** 2)


def _uniformity_without_normalisation(z, t=2.0, *, chunk_size=1024):
    d2 = torch.cdist(z, z) ** 2
    upper = torch.triu(torch.ones_like(d2, dtype=torch.bool), 1)
    return torch.logsumexp(-t * d2[upper], 0) - math.log(upper.sum())


def _tolerance_with_self_pairs(z, labels, *, reading="conditional"):
    u = torch.nn.functional.normalize(z, dim=1)
    same = labels[:, None] == labels[None, :]
    sim = u @ u.T
    if reading == "literal":
        return sim[same].sum() / len(z) ** 2
    return sim[same].mean()


def _tolerance_of_raw_inner_products(z, labels, *, reading="conditional"):
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(z), dtype=torch.bool)
    sim = z @ z.T
    return sim[same].sum() / len(z) ** 2 if reading == "literal" else sim[same].mean()


def _weights_with_the_positive(z1, z2, temperature, *, top_k=1):
    """P_ij (the positive stays in the softmax) instead of r_ij."""
    good = metrics.negative_weights(z1, z2, temperature, top_k=top_k)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    pos = (z * z.roll(n, 0)).sum(1)
    logits = torch.cat([pos[:, None], good.similarities], dim=1) / temperature
    p = torch.softmax(logits, dim=1)[:, 1:]
    entropy = -(p * torch.log(p)).sum(1)
    return metrics.NegativeWeights(
        p,
        good.negatives,
        good.similarities,
        entropy,
        1 / (p * p).sum(1),
        p.topk(top_k, 1).values.sum(1),
    )


def _simplex_report_uncentred(z, labels, **_):
    """The Gram of the raw class means (no centring) against the simplex target."""
    good = metrics.simplex_report(z, labels)
    g = good.means @ good.means.T
    c = len(g)
    target = (c * torch.eye(c, dtype=g.dtype) - 1) / (c - 1)
    scale = (g * target).sum() / (target * target).sum()
    return good._replace(
        simplex_distance=torch.linalg.matrix_norm(g - scale * target) / torch.linalg.matrix_norm(g)
    )


def _effective_rank_of_eigenvalues(z, *, center=True):
    """Entropy over covariance eigenvalues (sigma^2) instead of singular values."""
    s = torch.linalg.svdvals(z - z.mean(0))
    p = s**2 / (s**2).sum()
    p = p[p > 0]
    return torch.exp(-(p * p.log()).sum())


_SIMPLEX_INPUTS = simplex_configurations()

BATTERY: dict[str, list[tuple[Callable, st.SearchStrategy]]] = {
    "uniformity": [
        (
            lambda f, s: check_uniformity_value(f, s[0], s[1], 1024),
            st.tuples(
                ams.embeddings(rows=st.integers(2, 8), dim=st.integers(1, 4)), potential_scales
            ),
        ),
        (lambda f, s: check_polygon_value(f, *s), st.tuples(circle_points(), potential_scales)),
    ],
    "tolerance": [
        (lambda f, s: check_tolerance_value(f, *s), labelled_embeddings(min_per_class=2)),
        (
            lambda f, s: check_tolerance_of_collapsed_classes(f, *s),
            labelled_embeddings(min_per_class=2),
        ),
    ],
    "negative_weights": [
        (
            lambda f, s: check_negative_weight_values(f, *s.args, s.kwargs["temperature"], 1),
            ams.two_view_samples(min_temperature=1e-2, max_temperature=1e2),
        ),
    ],
    "simplex_report": [(lambda f, s: check_simplex_is_at_distance_zero(f, *s), _SIMPLEX_INPUTS)],
    "effective_rank": [
        (
            check_effective_rank_value,
            ams.embeddings(
                rows=st.integers(3, 10), dim=st.integers(2, 6), min_norm=0.1, max_norm=10.0
            ).filter(_has_spread),
        ),
    ],
}

MUTANTS = [
    ("uniformity", _uniformity_with_self_pairs, "pairs i = j kept in the mean"),
    ("uniformity", _uniformity_without_normalisation, "embeddings not projected to the sphere"),
    ("tolerance", _tolerance_with_self_pairs, "pairs i = j counted as same-class pairs"),
    (
        "tolerance",
        _tolerance_of_raw_inner_products,
        "literal Eq. 11 normaliser, raw inner products",
    ),
    ("negative_weights", _weights_with_the_positive, "P_ij with the positive in the softmax"),
    ("simplex_report", _simplex_report_uncentred, "class means not centred"),
    (
        "effective_rank",
        _effective_rank_of_eigenvalues,
        "entropy of eigenvalues, not singular values",
    ),
]


@pytest.mark.mutation
@pytest.mark.parametrize("target", sorted(BATTERY))
def test_every_metric_passes_its_mutation_battery(target):
    fn = getattr(metrics, target)
    assert not any(
        checks.violates(check, fn, strategy, max_examples=40) for check, strategy in BATTERY[target]
    )


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m[1].__name__.strip("_"))
def test_every_metric_mutant_violates_a_property(mutant):
    target, fn, mistake = mutant
    caught = any(
        checks.violates(check, fn, strategy, max_examples=40) for check, strategy in BATTERY[target]
    )
    assert caught, f"{target} mutant ({mistake}) passed every property"
