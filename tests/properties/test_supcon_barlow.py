"""Properties of SupCon (Khosla et al. 2020) and Barlow Twins (Zbontar et al. 2021)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import barlow_twins, nt_xent, supcon
from amcl_lab.testing import strategies as ams

import checks

pytestmark = pytest.mark.props

F64 = registry.get("supcon").tolerance(torch.float64)


def _orthogonal(seed: int, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


@given(ams.two_view_samples())
def test_supcon_with_distinct_labels_and_two_views_equals_nt_xent(sample):
    """With V = 2 and every label unique, SupCon's anchors are exactly NT-Xent's."""
    z1, z2 = sample.args
    tau = sample.kwargs["temperature"]
    features = torch.stack([z1, z2], dim=1)
    labels = torch.arange(z1.shape[0])
    per_item = supcon(features, labels, tau, reduction="none")  # (N, 2)
    reference = nt_xent(z1, z2, tau, reduction="none").reshape(2, -1).T
    checks.assert_close(
        checks.as_numpy(per_item),
        checks.as_numpy(reference),
        rtol=1e-12,
        atol=F64.atol_for(tau),
        what="supcon(unique labels) vs nt_xent",
    )
    for variant in ("out", "in"):
        total = float(supcon(features, None, tau, variant=variant))
        checks.assert_close(
            total,
            float(nt_xent(z1, z2, tau)),
            rtol=1e-12,
            atol=F64.atol_for(tau),
            what=f"labels=None, variant={variant}",
        )


@given(ams.supcon_samples())
def test_l_out_dominates_l_in_which_dominates_log_positive_count(sample):
    """Per anchor, L_out >= L_in >= log|P(i)| (Jensen; Khosla et al. Eq. 2-3)."""
    features, labels = sample.args
    tau = sample.kwargs["temperature"]
    out = checks.as_numpy(supcon(features, labels, tau, reduction="none")).ravel(order="F")
    inn = checks.as_numpy(supcon(features, labels, tau, variant="in", reduction="none"))
    inn = inn.ravel(order="F")
    items = np.tile(labels.numpy(), features.shape[1])
    counts = np.array([(items == y).sum() - 1 for y in items])
    slack = F64.atol_for(tau)
    has = counts > 0
    assert np.all(out[has] >= inn[has] - slack), (out, inn)
    assert np.all(inn[has] >= np.log(counts[has]) - slack), (inn, counts)


@given(ams.supcon_samples(), st.data())
def test_supcon_is_invariant_to_permuting_samples_views_and_relabelling(sample, data):
    """Permuting samples with their labels, permuting views, renaming classes: same loss."""
    features, labels = sample.args
    tau = sample.kwargs["temperature"]
    base = float(supcon(features, labels, tau))
    perm = torch.as_tensor(data.draw(st.permutations(range(features.shape[0]))))
    views = torch.as_tensor(data.draw(st.permutations(range(features.shape[1]))))
    classes = int(labels.max()) + 1
    rename = torch.as_tensor(data.draw(st.permutations(range(classes))))
    moved = float(supcon(features[perm][:, views], rename[labels[perm]], tau))
    checks.assert_close(moved, base, rtol=1e-12, atol=F64.atol_for(tau), what="supcon symmetries")


@given(ams.supcon_samples(), st.integers(0, 2**32 - 1))
def test_supcon_is_invariant_to_a_global_rotation(sample, seed):
    """A common orthogonal map of all features leaves every cosine, hence the loss, fixed."""
    features, labels = sample.args
    q = torch.as_tensor(_orthogonal(seed, features.shape[2]))
    tau = sample.kwargs["temperature"]
    checks.assert_close(
        float(supcon(features @ q, labels, tau)),
        float(supcon(features, labels, tau)),
        rtol=1e-12,
        atol=F64.atol_for(tau),
        what="supcon rotation",
    )


@given(ams.supcon_samples())
def test_supcon_one_mode_is_the_mean_over_view_zero_anchors(sample):
    """contrast_mode='one' equals the 'all'-mode per-anchor losses restricted to view 0."""
    features, labels = sample.args
    tau = sample.kwargs["temperature"]
    per_item = supcon(features, labels, tau, reduction="none")
    one = supcon(features, labels, tau, contrast_mode="one", reduction="none")
    checks.assert_close(
        checks.as_numpy(one),
        checks.as_numpy(per_item[:, 0]),
        rtol=1e-12,
        atol=F64.atol_for(tau),
        what="contrast_mode='one'",
    )


@given(ams.multiview_features(views=1), ams.temperatures())
def test_anchors_without_positive_are_excluded_from_the_mean(features, tau):
    """Documented choice: a singleton class adds nothing and does not count in the mean."""
    n = features.shape[0]
    labels = torch.tensor([0, 0, *range(1, n - 1)])  # only the first two share a class
    per_item = supcon(features, labels, tau, reduction="none")
    assert torch.all(per_item[2:] == 0)
    expected = float(per_item[:2].mean())
    checks.assert_close(
        float(supcon(features, labels, tau)),
        expected,
        rtol=1e-12,
        atol=1e-12,
        what="mean over anchors with a positive",
    )


@given(ams.multiview_features())
def test_supcon_tends_to_log_candidates_as_tau_goes_to_infinity(features):
    """As tau -> infinity every probability -> 1/|A(i)|, so L_out -> log(NV - 1).

    Logits lie in [-1/tau, 1/tau], so the error is at most 2/tau.
    """
    n, v, _ = features.shape
    labels = torch.zeros(n, dtype=torch.long)
    for tau in (1e2, 1e4, 1e6):
        value = float(supcon(features, labels, tau))
        assert abs(value - math.log(n * v - 1)) <= 2.0 / tau, (tau, value)


# --- Barlow Twins ----------------------------------------------------------------------------

_HADAMARD = np.array(
    [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, -1, 1, -1, 1, -1, 1, -1],
        [1, 1, -1, -1, 1, 1, -1, -1],
        [1, -1, -1, 1, 1, -1, -1, 1],
        [1, 1, 1, 1, -1, -1, -1, -1],
        [1, -1, 1, -1, -1, 1, -1, 1],
        [1, 1, -1, -1, -1, -1, 1, 1],
        [1, -1, -1, 1, -1, 1, 1, -1],
    ],
    dtype=float,
)


@given(ams.barlow_samples())
def test_barlow_twins_is_non_negative(sample):
    """L = sum (1 - C_ii)^2 + lambda sum C_ij^2 >= 0 for every input."""
    assert float(sample.call(barlow_twins)) >= 0.0


@given(st.integers(1, 7), st.data())
def test_barlow_twins_is_zero_exactly_at_identity_cross_correlation(dim, data):
    """C = I gives L = 0: two identical views whose standardised features are orthonormal.

    Columns of a Hadamard matrix (without the constant one) have mean 0, biased variance 1
    and are mutually orthogonal; any positive per-feature affine map keeps C = I.
    """
    base = _HADAMARD[:, 1 : dim + 1]
    scale = np.array(data.draw(st.lists(st.floats(0.1, 10.0), min_size=dim, max_size=dim)))
    shift = np.array(data.draw(st.lists(st.floats(-5.0, 5.0), min_size=dim, max_size=dim)))
    z = torch.as_tensor(base * scale + shift)
    lam = data.draw(st.sampled_from((0.0, 5e-3, 1.0)))
    assert abs(float(barlow_twins(z, z, lam, eps=0.0))) < 1e-12
    # and strictly positive once the identity is broken (permute the second view's rows)
    shuffled = z[torch.roll(torch.arange(8), 1)]
    assert float(barlow_twins(z, shuffled, lam, eps=0.0)) > 1e-6


@given(ams.barlow_samples(), st.data())
def test_barlow_twins_is_invariant_to_positive_per_feature_affine_maps(sample, data):
    """Standardisation removes any per-feature a*z + b with a > 0 (eps = 0)."""
    z1, z2 = sample.args
    assume(bool((z1.std(0) > 1e-3).all() and (z2.std(0) > 1e-3).all()))
    d = z1.shape[1]
    a = torch.tensor(data.draw(st.lists(st.floats(0.1, 10.0), min_size=d, max_size=d)))
    b = torch.tensor(data.draw(st.lists(st.floats(-5.0, 5.0), min_size=d, max_size=d)))
    lam = sample.kwargs["lambda_offdiag"]
    moved = float(barlow_twins(z1 * a + b, z2, lam, eps=0.0))
    checks.assert_close(
        moved,
        float(barlow_twins(z1, z2, lam, eps=0.0)),
        rtol=1e-8,
        atol=1e-8,
        what="per-feature affine map",
    )
