"""Properties of the kernel losses (Ghosh, Agrawal et al. 2024, arXiv:2312.10725).

Each test is named after the statement it checks: agreement with independent NumPy float64
formulas, the exact equivalence (K1)-(K2) between the idealized loss and the
invariance + orthogonality loss (the identities of the :mod:`amcl_lab.losses.kernel`
docstring), rotation invariance, the m = 2 reductions, and the statistical claims about
multiple views (the 1/m bias of mean-of-views statistics, the unbiased m/(m-1) within-image
variance, kernel estimates that improve with m).  Deliberately
broken versions at the end must each violate at least one of these checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.data.synthetic import random_augmentation_graph
from amcl_lab.losses import (
    barlow_twins,
    invariance_orthogonality_loss,
    kernel_loss,
    multiview_barlow_twins,
)
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks

pytestmark = pytest.mark.props

#: Relative tolerance of float64 identities (the issue asks for < 1e-10).
RTOL = 1e-10
BT_RTOL = registry.get("multiview_barlow_twins").tolerance(torch.float64).rtol


# --- independent NumPy float64 references ---------------------------------------------------


def np_kernel_loss(f, k, p, c: float) -> float:
    """sum_{a,b} p(a) p(b) (k_c(a, b) - f(a).f(b))^2 with k_c = (1 - c) diag(1/p) + c k."""
    m = len(p)
    total = 0.0
    for a in range(m):
        for b in range(m):
            kc = c * k[a, b] + ((1.0 - c) / p[a] if a == b else 0.0)
            total += p[a] * p[b] * (kc - float(f[a] @ f[b])) ** 2
    return total


def np_sampled_invariance_orthogonality(z, beta: float) -> float:
    """Mean over images of the unbiased variance across views, plus beta ||G - I||^2."""
    n, m, d = z.shape
    inv = sum(float(z[x, :, i].var(ddof=1)) for x in range(n) for i in range(d)) / n
    gram = sum(np.outer(z[x, a], z[x, a]) for x in range(n) for a in range(m)) / (n * m)
    return inv + beta * float(((gram - np.eye(d)) ** 2).sum())


def np_population_invariance_orthogonality(f, prior, cond, beta: float) -> float:
    """E_x sum_i (E_{a|x} f_i^2 - (E_{a|x} f_i)^2) + beta ||E_a f f^T - I||^2 on a graph."""
    n, m = cond.shape
    d = f.shape[1]
    inv = 0.0
    for x in range(n):
        for i in range(d):
            first = sum(cond[x, a] * f[a, i] for a in range(m))
            second = sum(cond[x, a] * f[a, i] ** 2 for a in range(m))
            inv += prior[x] * (second - first**2)
    p = prior @ cond
    gram = sum(p[a] * np.outer(f[a], f[a]) for a in range(m))
    return inv + beta * float(((gram - np.eye(d)) ** 2).sum())


def np_multiview_barlow(z, lam, standardize="per_view", normalize=False, eps=1e-5, ddof=0):
    """Multi-view Barlow Twins as the paper's code computes it (fastssl's ``BarlowTwinLoss``)."""
    z = np.array(z, dtype=np.float64)
    n, m, d = z.shape
    if normalize:  # rows of norm below 1e-8 become zero (the library's documented choice)
        norms = np.linalg.norm(z, axis=2, keepdims=True)
        z = np.where(norms < 1e-8, 0.0, z / np.maximum(norms, 1e-8))
    if standardize == "joint":
        flat = z.reshape(n * m, d)
        z = ((flat - flat.mean(0)) / np.sqrt(flat.var(0, ddof=ddof) + eps)).reshape(n, m, d)
    else:
        z = (z - z.mean(0)) / np.sqrt(z.var(0, ddof=ddof) + eps)

    def bt(c):
        return sum(
            (1 - c[i, i]) ** 2 if i == j else lam * c[i, j] ** 2 for i in range(d) for j in range(d)
        )

    if m == 2:  # the code's symmetric two-direction loop
        c12 = sum(np.outer(z[s, 0], z[s, 1]) for s in range(n)) / n
        c21 = sum(np.outer(z[s, 1], z[s, 0]) for s in range(n)) / n
        return (bt(c12) + bt(c21)) / 2
    mean = z.mean(1)
    on = (
        sum(
            (1 - sum(z[s, a, i] * mean[s, i] for s in range(n)) / n) ** 2
            for a in range(m)
            for i in range(d)
        )
        / m
    )
    cbar = mean.T @ mean / n
    return on + lam * sum(cbar[i, j] ** 2 for i in range(d) for j in range(d) if i != j)


def np_operator_eigenvalues(prior, cond, c: float) -> np.ndarray:
    """Eigenvalues of T_c from p(x), p(a|x): D^(1/2) K D^(1/2) = D^(-1/2) W D^(-1/2)."""
    p = prior @ cond
    w = np.einsum("x,xa,xb->ab", prior, cond, cond)
    a = w / np.sqrt(np.outer(p, p))
    return (1 - c) + c * np.linalg.eigvalsh(a)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _orthogonal(seed: int, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


# --- checks (take the implementation under test, raise AssertionError) -----------------------


def check_kernel_value(loss, sample: SampleInput) -> None:
    f, k, p = (_np(a) for a in sample.args)
    checks.assert_close(
        float(sample.call(loss)),
        np_kernel_loss(f, k, p, sample.kwargs.get("c", 1.0)),
        rtol=RTOL,
        atol=1e-12,
        what="kernel_loss vs NumPy",
    )


def check_sampled_value(loss, sample: SampleInput) -> None:
    checks.assert_close(
        float(sample.call(loss)),
        np_sampled_invariance_orthogonality(_np(sample.args[0]), sample.kwargs["beta"]),
        rtol=RTOL,
        atol=1e-12,
        what="invariance_orthogonality_loss vs NumPy",
    )


def check_population_value(loss, graph, features: torch.Tensor, beta: float) -> None:
    views, weights = graph.population_views(features)
    checks.assert_close(
        float(loss(views, beta, weights=weights)),
        np_population_invariance_orthogonality(
            _np(features), _np(graph.prior), _np(graph.conditional), beta
        ),
        rtol=RTOL,
        atol=1e-12,
        what="population invariance_orthogonality_loss vs NumPy",
    )


def check_equivalence(kernel, efficient, graph, features: torch.Tensor, c: float) -> None:
    """(K2): ||T_c - FF*||^2 = ||T_c||^2 - d + 2c L_{1/(2c)}(F)."""
    hs = float((np_operator_eigenvalues(_np(graph.prior), _np(graph.conditional), c) ** 2).sum())
    d = features.shape[1]
    views, weights = graph.population_views(features)
    l_beta = float(efficient(views, 1.0 / (2.0 * c), weights=weights))
    lhs = float(kernel(features, graph.kernel, graph.marginal, c=c))
    checks.assert_close(
        lhs,
        hs - d + 2.0 * c * l_beta,
        rtol=0.0,
        atol=RTOL * (hs + d + 2.0 * c * abs(l_beta)),
        what=f"(K2) at c={c}",
    )


def check_multiview_barlow_value(loss, sample: SampleInput) -> None:
    kw = sample.kwargs
    expected = np_multiview_barlow(
        _np(sample.args[0]),
        kw.get("lambda_offdiag", 5e-3),
        kw.get("standardize", "per_view"),
        kw.get("normalize", False),
        ddof=1 if kw.get("variance") == "unbiased" else 0,
    )
    checks.assert_close(
        float(sample.call(loss)), expected, rtol=BT_RTOL, atol=1e-12, what="vs NumPy v3"
    )


def check_two_view_barlow(loss, views: torch.Tensor, lam: float, variance: str) -> None:
    """m = 2 with per-view standardisation is standard Barlow Twins."""
    checks.assert_close(
        float(loss(views, lam, variance=variance)),
        float(barlow_twins(views[:, 0], views[:, 1], lam, variance=variance)),
        rtol=1e-12,
        atol=1e-12,
        what="multiview_barlow_twins(m=2) vs barlow_twins",
    )


def check_two_view_invariance_orthogonality(loss, views: torch.Tensor, beta: float) -> None:
    """m = 2: (1/2N) sum ||z1 - z2||^2 + beta ||(Z1'Z1 + Z2'Z2)/2N - I||^2."""
    z1, z2 = _np(views[:, 0]), _np(views[:, 1])
    n, d = z1.shape
    gram = (z1.T @ z1 + z2.T @ z2) / (2 * n)
    expected = ((z1 - z2) ** 2).sum() / (2 * n) + beta * ((gram - np.eye(d)) ** 2).sum()
    checks.assert_close(
        float(loss(views, beta)), expected, rtol=RTOL, atol=1e-12, what="two-view form"
    )


# --- 1. values against NumPy ------------------------------------------------------------------


@given(ams.kernel_samples())
def test_kernel_loss_equals_the_hs_norm_in_l2_p(sample):
    """||T_c - FF*||_HS^2 = sum p(a)p(b)(k_c(a,b) - f(a).f(b))^2 (left side of (K2))."""
    check_kernel_value(kernel_loss, sample)


@given(ams.invariance_orthogonality_samples())
def test_sampled_loss_is_unbiased_variance_plus_beta_gram_penalty(sample):
    """L_beta estimated from m i.i.d. views: unbiased within-image variance + beta||G - I||^2."""
    check_sampled_value(invariance_orthogonality_loss, sample)


@given(ams.augmentation_graphs(), st.integers(1, 4), st.sampled_from((0.0, 0.5, 3.0)), st.data())
def test_population_loss_is_expected_variance_plus_beta_gram_penalty(graph, d, beta, data):
    """With weights p(x)p(a|x) the loss is the exact L_beta(F) of the graph ((K2))."""
    f = data.draw(ams.embeddings(rows=graph.num_augmentations, dim=d, min_norm=0.1, max_norm=10))
    check_population_value(invariance_orthogonality_loss, graph, f, beta)


@given(ams.multiview_barlow_samples())
def test_multiview_barlow_twins_matches_the_papers_code(sample):
    """m > 2: each view vs the mean of all views + lambda * off-diagonal of the mean's C (4.2)."""
    check_multiview_barlow_value(multiview_barlow_twins, sample)


# --- 2. the equivalence (K1)-(K2) -------------------------------------------------------------


def test_equivalence_is_declared_by_both_losses():
    assert set(registry.names("equivalence")) == {"kernel_loss", "invariance_orthogonality"}


@given(
    ams.augmentation_graphs(),
    st.integers(1, 5),
    st.sampled_from((0.1, 0.5, 1.0, 2.0)),
    st.data(),
)
def test_idealized_loss_is_invariance_plus_beta_orthogonality_up_to_a_constant(graph, d, c, data):
    """(K2): ||T_c - FF*||^2 = ||T_c||^2 - d + 2c (Inv + ||G - I||^2 / (2c)), rel. 1e-10."""
    f = data.draw(ams.embeddings(rows=graph.num_augmentations, dim=d, min_norm=0.1, max_norm=10))
    check_equivalence(kernel_loss, invariance_orthogonality_loss, graph, f, c)


# --- 3. invariance to orthogonal maps of the feature space ------------------------------------


@pytest.mark.parametrize("name", registry.names("rotation"))
@given(data=st.data())
def test_loss_is_invariant_to_an_orthogonal_map_of_the_features(name, data):
    """L(FQ) = L(F): FF* and the within-image variances and ||G - I|| are rotation invariant."""
    spec = registry.get(name)
    sample = data.draw(spec.strategy())
    first, *rest = sample.args
    q = torch.as_tensor(_orthogonal(data.draw(st.integers(0, 2**32 - 1)), first.shape[-1]))
    rotated = SampleInput((first @ q, *rest), sample.kwargs)
    checks.assert_close(
        float(rotated.call(spec)), float(sample.call(spec)), rtol=1e-10, atol=1e-12, what=name
    )


# --- 4. two views reduce to the two-view losses -----------------------------------------------


@given(
    ams.multiview_views(views=2),
    st.sampled_from((0.0, 5e-3, 1.0)),
    st.sampled_from(("biased", "unbiased")),
)
def test_multiview_barlow_twins_with_two_views_is_barlow_twins(views, lam, variance):
    """For m = 2 the multi-view loss is standard Barlow Twins."""
    check_two_view_barlow(multiview_barlow_twins, views, lam, variance)


@given(ams.multiview_views(views=2), st.sampled_from((0.0, 0.5, 2.0)))
def test_invariance_orthogonality_with_two_views_is_the_two_view_form(views, beta):
    """m = 2: the unbiased variance of two views is |z1 - z2|^2 / 2 per feature."""
    check_two_view_invariance_orthogonality(invariance_orthogonality_loss, views, beta)


# --- 5. more views, better kernel estimates (statistical, seeded) ------------------------------

#: z-score beyond which a Monte-Carlo discrepancy counts as real (two-sided, many comparisons).
Z_CRIT = 4.5


def _spec_graph(seed: int = 0):
    return random_augmentation_graph(generator=torch.Generator().manual_seed(seed))


def test_multiview_kernel_estimate_is_unbiased_and_converges_as_views_grow():
    """The kernel estimated from m views per image approaches k; the error falls with m.

    Every image of the graph gets m views (stratified, weighted by p(x)); the estimate's
    HS error sum p p (k_hat - k)^2 must fall significantly at every doubling of m, and the
    estimate must be unbiased: averaging R estimates divides the error by R.
    """
    graph = _spec_graph()
    gen = torch.Generator().manual_seed(1)
    k, pp = _np(graph.kernel), np.outer(_np(graph.marginal), _np(graph.marginal))
    reps, means, ses = 60, [], []
    for m in (2, 4, 8, 16):
        estimates = np.stack(
            [
                _np(graph.empirical_kernel(graph.sample_views(m, generator=gen).augmentations))
                for _ in range(reps)
            ]
        )
        errors = (pp * (estimates - k) ** 2).sum(axis=(1, 2))
        means.append(errors.mean())
        ses.append(errors.std(ddof=1) / math.sqrt(reps))
        # unbiased: the average of R estimates has 1/R of their mean squared error
        ratio = (pp * (estimates.mean(axis=0) - k) ** 2).sum() / (errors.mean() / reps)
        assert 0.5 < ratio < 1.5, f"m={m}: averaging does not remove the error ({ratio:.2f})"
    for a in range(3):
        drop = (means[a] - means[a + 1]) / math.hypot(ses[a], ses[a + 1])
        assert drop > Z_CRIT, f"HS errors {means} do not fall significantly (z={drop:.1f})"


def _monte_carlo(graph, f: np.ndarray, m: int, batch: int, reps: int, gen, stat):
    """``reps`` draws of ``stat(views)`` for batches of ``batch`` images with m views each."""
    table = torch.from_numpy(f)
    out = []
    for _ in range(reps):
        sample = graph.sample_views(m, batch_size=batch, generator=gen)
        out.append(stat(table[sample.augmentations]))
    return np.array(out)


def _conditional_moments(graph, f: np.ndarray):
    """E_x (E_{a|x} f)(E_{a|x} f)^T = F^T T F and E_x Cov_{a|x}[f], from p(x), p(a|x)."""
    prior, cond = _np(graph.prior), _np(graph.conditional)
    means = cond @ f
    t_gram = np.einsum("x,xi,xj->ij", prior, means, means)
    second = np.einsum("x,xa,ai,aj->ij", prior, cond, f, f)
    return t_gram, second - t_gram


def test_mean_of_views_correlation_has_a_one_over_m_bias():
    """Mean-of-views bias: E[Zbar^T Zbar / B] = F^T T F + E_x Cov_{a|x}[f] / m for m views.

    Zbar is the mean embedding over m i.i.d. views (the statistic multi-view Barlow Twins
    decorrelates): it estimates the T-weighted Gram with a bias that decays as 1/m.
    """
    graph = _spec_graph()
    f = np.random.default_rng(2).standard_normal((graph.num_augmentations, 3))
    t_gram, cov = _conditional_moments(graph, f)
    gen = torch.Generator().manual_seed(3)
    for m in (2, 4, 8):
        draws = _monte_carlo(
            graph, f, m, 64, 300, gen, lambda z: _np(z.mean(1).T @ z.mean(1) / z.shape[0])
        )
        predicted = t_gram + cov / m
        se = draws.std(axis=0, ddof=1) / math.sqrt(len(draws))
        z = np.abs(draws.mean(axis=0) - predicted) / se
        assert np.all(z < Z_CRIT), f"m={m}: max z {z.max():.1f} against F'TF + Cov/m"
        unbiased = np.abs(np.diag(draws.mean(axis=0) - t_gram)) / se.diagonal()
        assert unbiased.max() > Z_CRIT, f"m={m}: too few draws to see the Cov/m bias"


def test_sampled_invariance_term_is_unbiased_for_every_number_of_views():
    """The m/(m-1)-corrected within-image variance is unbiased for Inv(F).

    With beta = 0 the sampled loss is the invariance estimate; its mean over batches must
    match E_x sum_i Var_{a|x} f_i for m = 2, 4, 8 (a 1/m variance would miss by (m-1)/m).
    """
    graph = _spec_graph()
    f = np.random.default_rng(4).standard_normal((graph.num_augmentations, 3))
    exact = float(np.trace(_conditional_moments(graph, f)[1]))
    gen = torch.Generator().manual_seed(5)
    for m in (2, 4, 8):
        draws = _monte_carlo(
            graph, f, m, 32, 300, gen, lambda z: float(invariance_orthogonality_loss(z, 0.0))
        )
        se = draws.std(ddof=1) / math.sqrt(len(draws))
        assert abs(draws.mean() - exact) < Z_CRIT * se, (m, draws.mean(), exact, se)
        assert exact / m > Z_CRIT * se, "too few draws to see a 1/m variance bias"


# --- 6. every property can fail: broken implementations ---------------------------------------


def kernel_without_sqrt_p(features, kernel, marginal, *, c=1.0):
    """Plain Frobenius norm of K_c - FF^T: the L2(p) weighting forgotten."""
    m = features.shape[0]
    target = c * kernel + (1 - c) * torch.eye(m, dtype=kernel.dtype)
    return (target - features @ features.T).pow(2).sum()


def kernel_ignoring_c(features, kernel, marginal, *, c=1.0):
    """Always the loss of T itself."""
    return kernel_loss(features, kernel, marginal)


def _weighted_io(views, beta, weights, correction, centred):
    n, m, d = views.shape
    w = torch.full((n, m), 1.0 / (n * m), dtype=views.dtype) if weights is None else weights
    centre = (w[..., None] * views).sum(1) / w.sum(1, keepdim=True)
    inv = correction * (w * (views - centre[:, None]).pow(2).sum(2)).sum()
    mean = (w[..., None] * views).sum((0, 1))
    gram = torch.einsum("na,nai,naj->ij", w, views, views)
    if centred:
        gram = gram - torch.outer(mean, mean)
    return inv + beta * (gram - torch.eye(d, dtype=views.dtype)).pow(2).sum()


def io_biased_variance(views, beta=0.5, *, weights=None):
    """The within-image variance divided by m instead of m - 1 for sampled views."""
    return _weighted_io(views, beta, weights, 1.0, centred=False)


def io_centred_gram(views, beta=0.5, *, weights=None):
    """A covariance where the identity needs the uncentred Gram E[f f^T]."""
    correction = 1.0 if weights is not None else views.shape[1] / (views.shape[1] - 1)
    return _weighted_io(views, beta, weights, correction, centred=True)


def io_ignoring_weights(views, beta=0.5, *, weights=None):
    """Population weights dropped: every (image, point) pair counted alike."""
    return invariance_orthogonality_loss(views, beta)


def mvbt_leave_one_out(views, lambda_offdiag=5e-3, **kw):
    """Each view against the mean of the *other* views (fastssl's earlier 'v1' reading)."""
    m = views.shape[1]
    if m == 2:
        return multiview_barlow_twins(views, lambda_offdiag, **kw)
    z = (views - views.mean(0)) / torch.sqrt(views.var(0, unbiased=False) + 1e-5)
    others = (z.sum(1, keepdim=True) - z) / (m - 1)
    diag = (z * others).mean(0)
    mean = z.mean(1)
    corr = mean.T @ mean / z.shape[0]
    off = corr.pow(2).sum() - torch.diagonal(corr).pow(2).sum()
    return (1 - diag).pow(2).sum(1).mean() + lambda_offdiag * off


def mvbt_always_joint(views, lambda_offdiag=5e-3, *, standardize="per_view", **kw):
    """Ignores ``standardize`` and always standardises all rows jointly."""
    return multiview_barlow_twins(views, lambda_offdiag, standardize="joint", **kw)


def mvbt_unnormalised(views, lambda_offdiag=5e-3, *, normalize=False, **kw):
    """Ignores ``normalize`` (no L2 normalisation)."""
    return multiview_barlow_twins(views, lambda_offdiag, **kw)


def _kernel_battery(loss) -> None:
    for sample in registry.get("kernel_loss").sample_inputs(torch.float64, torch.device("cpu")):
        check_kernel_value(loss, sample)
    graph = _spec_graph()
    f = torch.from_numpy(np.random.default_rng(6).standard_normal((graph.num_augmentations, 4)))
    for c in (0.5, 1.0, 2.0):
        check_equivalence(loss, invariance_orthogonality_loss, graph, f, c)


def _io_battery(loss) -> None:
    spec = registry.get("invariance_orthogonality")
    for sample in spec.sample_inputs(torch.float64, torch.device("cpu")):
        check_sampled_value(loss, sample)
        if sample.args[0].shape[1] == 2:
            check_two_view_invariance_orthogonality(loss, sample.args[0], sample.kwargs["beta"])
    graph = _spec_graph()
    f = torch.from_numpy(np.random.default_rng(7).standard_normal((graph.num_augmentations, 3)))
    check_population_value(loss, graph, f, 0.5)
    check_equivalence(kernel_loss, loss, graph, f, 1.0)


def _mvbt_battery(loss) -> None:
    spec = registry.get("multiview_barlow_twins")
    for sample in spec.sample_inputs(torch.float64, torch.device("cpu")):
        check_multiview_barlow_value(loss, sample)
        if sample.args[0].shape[1] == 2:
            check_two_view_barlow(loss, sample.args[0], 5e-3, "biased")


BATTERIES = {
    "kernel_loss": (kernel_loss, _kernel_battery),
    "invariance_orthogonality": (invariance_orthogonality_loss, _io_battery),
    "multiview_barlow_twins": (multiview_barlow_twins, _mvbt_battery),
}

KERNEL_MUTANTS = [
    ("kernel_loss", kernel_without_sqrt_p),
    ("kernel_loss", kernel_ignoring_c),
    ("invariance_orthogonality", io_biased_variance),
    ("invariance_orthogonality", io_centred_gram),
    ("invariance_orthogonality", io_ignoring_weights),
    ("multiview_barlow_twins", mvbt_leave_one_out),
    ("multiview_barlow_twins", mvbt_always_joint),
    ("multiview_barlow_twins", mvbt_unnormalised),
]


@pytest.mark.parametrize("target", sorted(BATTERIES))
def test_reference_passes_its_battery(target):
    reference, battery = BATTERIES[target]
    battery(reference)


@pytest.mark.mutation
@pytest.mark.parametrize(
    ("target", "mutant"), KERNEL_MUTANTS, ids=lambda x: getattr(x, "__name__", x)
)
def test_every_kernel_mutant_violates_its_battery(target, mutant):
    _, battery = BATTERIES[target]
    with pytest.raises(AssertionError):
        battery(mutant)
