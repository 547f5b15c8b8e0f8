"""Properties P1-P16 of AMCL (Wang, Koniusz, Gedeon, Zheng, ECCV 2024, arXiv:2310.05615: the
losses of its Table 2, the regulariser Omega, the temperature network of its Eq. (3)), and
those of the log-sum-exp modes (the "Softmax" variant of its Fig. 5, right).

Each test is named after the statement it checks and cites it.  Expected values are computed
here in float64 NumPy from the similarities (never by calling the code under test); the
``check_p*`` functions take the implementation as an argument so that the mutation test at
the end can run them against the broken versions in ``tests/mutants.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from amcl_lab import (
    MultiHeadProjector,
    PairTemperature,
    amcl_barlow_twins,
    amcl_info_nce,
    amcl_moco,
    amcl_nt_xent,
    amcl_simsiam,
    barlow_twins,
    info_nce,
    nt_xent,
    omega,
    registry,
)
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref
from mutants import AMCL_MUTANTS

pytestmark = pytest.mark.props

F64 = registry.get("amcl_nt_xent").tolerance(torch.float64)

two_view = ams.amcl_two_view_samples()
max_form = ams.amcl_two_view_samples(modes=("max",))
_TWO_VIEW_LOSSES = [
    pytest.param(amcl_nt_xent, two_view, id="amcl_nt_xent"),
    pytest.param(
        amcl_info_nce, ams.amcl_two_view_samples(positive_is_candidate=True), id="amcl_info_nce"
    ),
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def _similarities(z1: torch.Tensor, z2: torch.Tensor):
    """Per head: (positive similarity (C, 2N), candidate similarities (C, 2N, 2N - 2), the
    candidates' column indices (2N, 2N - 2)), in float64 NumPy."""
    c, n, _ = z1.shape
    z = _unit(torch.cat([z1, z2], dim=1).detach().double().numpy())
    sim = z @ z.transpose(0, 2, 1)
    rows = np.arange(2 * n)
    pos = (rows + n) % (2 * n)
    cols = np.array([[j for j in rows if j not in (i, pos[i])] for i in rows])
    return sim[:, rows, pos], np.take_along_axis(sim, cols[None].repeat(c, 0), -1), cols


def _scale(tau: torch.Tensor | float) -> float:
    """Absolute tolerances grow like the largest 1/tau (rounding of s is amplified)."""
    smallest = float(tau.min()) if isinstance(tau, torch.Tensor) else float(tau)
    return max(1.0, 1.0 / smallest)


def _constant(sample: SampleInput) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Head 0 of a two-view sample and one of its temperatures, used as a constant."""
    z1, z2, tau = sample.args
    return z1[:1], z2[:1], float(tau[0, 0, 1])


# --- checks shared with the mutation test ------------------------------------------------------


def check_p3_heads_are_summed(loss, sample: SampleInput) -> None:
    """P3: the loss of C heads is the sum of the per-head losses; C identical heads give
    exactly C times the single-head loss (Table 2 sums over c)."""
    z1, z2, tau = sample.args
    kw = sample.kwargs
    total = float(loss(z1, z2, tau, **kw))
    parts = sum(
        float(loss(z1[c : c + 1], z2[c : c + 1], tau[c : c + 1], **kw)) for c in range(len(z1))
    )
    atol = F64.atol * _scale(tau)
    checks.assert_close(total, parts, rtol=1e-10, atol=atol, what="C heads vs sum of heads")
    one = float(loss(z1[:1], z2[:1], tau[:1], **kw))
    three = float(
        loss(z1[:1].repeat(3, 1, 1), z2[:1].repeat(3, 1, 1), tau[:1].repeat(3, 1, 1), **kw)
    )
    checks.assert_close(three, 3 * one, rtol=1e-10, atol=atol, what="3 identical heads")


def check_p4_regularizer_cancels(loss, sample: SampleInput) -> None:
    """P4: with every temperature equal, the regulariser of Eq. (2.1) vanishes for any beta."""
    z1, z2, tau = sample.args
    tau0 = float(tau[0, 0, 1])
    kw = {**sample.kwargs, "neg_regularizer": "omega"}
    with_beta = float(loss(z1, z2, tau0, **{**kw, "beta": 1.0}))
    without = float(loss(z1, z2, tau0, **{**kw, "beta": 0.0}))
    checks.assert_close(
        with_beta, without, rtol=1e-10, atol=F64.atol * _scale(tau0), what="beta=1 vs beta=0"
    )


def check_p5_constant_temperature_reduction(loss, sample: SampleInput) -> None:
    """P5: C = 1 and a constant tau give l_i = (max_n s_in - s_i+) / tau for every anchor, any
    beta (the paper's regulariser; release 2's ``log tau + 1/tau`` does not cancel)."""
    z1, z2, tau0 = _constant(sample)
    s_pos, s_neg, _ = _similarities(z1, z2)
    expected = (s_neg[0].max(axis=1) - s_pos[0]) / tau0
    kw = {**sample.kwargs, "mode": "max", "k": None, "neg_regularizer": "omega"}
    kw["reduction"] = "none"
    actual = checks.as_numpy(loss(z1, z2, tau0, **kw))
    assert actual.shape == expected.shape, f"per-anchor shape {actual.shape}, not {expected.shape}"
    checks.assert_close(
        actual, expected, rtol=1e-9, atol=F64.atol * _scale(tau0), what="(max - pos)/tau"
    )


def check_p8_topk(loss, sample: SampleInput) -> None:
    """P8: kappa = 1 is the max form; with a constant tau the loss does not increase with
    kappa and kappa = 2N - 2 is the mean over all negatives."""
    z1, z2, tau = sample.args
    kw = {**sample.kwargs, "reduction": "none"}
    kw.pop("k", None)
    top1 = checks.as_numpy(loss(z1, z2, tau, **{**kw, "mode": "topk", "k": 1}))
    top0 = checks.as_numpy(loss(z1, z2, tau, **{**kw, "mode": "max"}))
    assert top1.shape == (2 * z1.shape[1],), f"per-anchor shape {top1.shape}"
    atol = F64.atol * _scale(tau)
    checks.assert_close(top1, top0, rtol=1e-12, atol=atol, what="k=1 vs max")
    a, b, tau0 = _constant(sample)
    kw["neg_regularizer"] = "omega"
    m = 2 * a.shape[1] - 2
    values = [
        checks.as_numpy(loss(a, b, tau0, **{**kw, "mode": "topk", "k": k})) for k in range(1, m + 1)
    ]
    steps = np.diff(np.stack(values), axis=0)
    assert np.all(steps <= F64.atol * _scale(tau0)), f"loss increases with kappa: {steps}"
    s_pos, s_neg, _ = _similarities(a, b)
    checks.assert_close(
        values[-1],
        (s_neg[0].mean(axis=1) - s_pos[0]) / tau0,
        rtol=1e-9,
        atol=F64.atol * _scale(tau0),
        what="k = 2N - 2 vs mean over negatives",
    )


def check_p9_max_form_gradients(loss, sample: SampleInput) -> None:
    """P9: with fixed temperatures, dl/ds+ = -1/tau+, dl/ds_k = 1/(kappa tau_k) for each
    selected negative (kappa = 1: the hardest by raw similarity) and 0 for the others."""
    z1, z2, tau = sample.args
    tau0 = tau[:1]
    kappa = int(sample.kwargs.get("k") or 1)

    def one_head(a, b, **kw):
        return loss(a[None], b[None], tau0, **kw)

    anchors = checks.two_view_gradients(one_head, SampleInput((z1[0], z2[0]), sample.kwargs))
    _, s_neg, cols = _similarities(z1[:1], z2[:1])
    t = tau0[0].numpy()
    n = z1.shape[1]
    for i, a in enumerate(anchors):
        chosen = np.argsort(-s_neg[0, i], kind="stable")[:kappa]
        expected = np.zeros(s_neg.shape[-1])
        expected[chosen] = 1.0 / (kappa * t[i, cols[i, chosen]])
        scale = _scale(tau0)
        atol = 1e-9 * scale / checks._MIN_SIN2
        checks.assert_close(
            a.g_neg[a.ok_neg],
            expected[a.ok_neg],
            rtol=1e-7,
            atol=atol,
            what=f"anchor {i} negatives",
        )
        if a.ok_pos:
            expected_pos = -1.0 / t[i, (i + n) % (2 * n)]
            checks.assert_close(
                a.g_pos, expected_pos, rtol=1e-7, atol=atol, what=f"anchor {i} positive"
            )


def _omega_derivative(tau: np.ndarray, dim: int) -> np.ndarray:
    return dim / (2 * tau) - 1 / tau**2


def check_p10_temperature_gradients(loss, sample: SampleInput) -> None:
    """P10 (and the regulariser): dL/dtau+ = (s+/tau+^2 + beta Omega'(tau+))/A and, for each
    selected negative, (-s_k/tau_k^2 - beta Omega'(tau_k))/(kappa A) (Omega regulariser) or
    -s_k/(kappa tau_k^2 A) - beta (1/tau_k - 1/tau_k^2)/A (release 2); 0 elsewhere."""
    z1, z2, tau = sample.args
    c, n, d = z1.shape
    kw = sample.kwargs
    beta = float(kw.get("beta", 1e-4))
    kappa = int(kw.get("k") or 1)
    leaf = tau.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(z1, z2, leaf, **kw), leaf)
    s_pos, s_neg, cols = _similarities(z1, z2)
    t = tau.detach().numpy()
    expected = np.zeros_like(t)
    anchors = 2 * n
    rows = np.arange(anchors)
    pos = (rows + n) % anchors
    tp = t[:, rows, pos]
    expected[:, rows, pos] = (s_pos / tp**2 + beta * _omega_derivative(tp, d)) / anchors
    for h in range(c):
        for i in range(anchors):
            hardest = np.argsort(-s_neg[h, i], kind="stable")[:kappa]
            chosen = cols[i, hardest]
            tk, sk = t[h, i, chosen], s_neg[h, i, hardest]
            data = -sk / (kappa * tk**2)
            if kw.get("neg_regularizer", "omega") == "omega":
                reg = -beta * _omega_derivative(tk, d) / kappa
            else:
                reg = -beta * (1 / tk - 1 / tk**2)
            expected[h, i, chosen] = (data + reg) / anchors
    scale = _scale(tau) ** 2
    checks.assert_close(
        checks.as_numpy(grad), expected, rtol=1e-8, atol=1e-12 * scale, what="dL/dtau"
    )


# --- P1, P2: the temperature network -----------------------------------------------------------


@given(
    st.floats(-20, 20),
    st.floats(1e-2, 1.0),
    st.floats(1e-6, 0.1),
    st.floats(1e-3, 10.0),
)
def test_p1_temperature_range_and_direction(r, dr, tau_min, width):
    """P1: tau_min < T < tau_max, T strictly decreasing in the score, T(0) is the midpoint,
    T -> the bounds as r -> -+inf (Eq. (3): T = eta + iota sigmoid(-r))."""
    net = PairTemperature(2, hidden=2, tau_min=tau_min, tau_max=tau_min + width)
    scores = torch.tensor([r, r + dr, 0.0, -1e4, 1e4], dtype=torch.float64)
    t = net.from_score(scores)
    assert tau_min < t[0] < tau_min + width and tau_min < t[1] < tau_min + width
    assert t[1] < t[0], "a larger score must give a smaller temperature"
    assert math.isclose(float(t[2]), tau_min + width / 2, rel_tol=1e-15)
    assert math.isclose(float(t[3]), tau_min + width, rel_tol=1e-15)
    assert math.isclose(float(t[4]), tau_min, rel_tol=1e-15)


@given(ams.embedding_pairs(rows=4, dim=6, min_norm=1e-3, max_norm=1e3), st.integers(0, 2**16))
def test_p1_network_temperatures_stay_in_range(pair, seed):
    """P1 through the network: every T(a, b) of a float32 network lies in [tau_min, tau_max]
    and equals the squash of the inner product of phi(a/|a|) and phi(b/|b|)."""
    torch.manual_seed(seed)
    net = PairTemperature(6, hidden=8)
    a, b = (t.float() for t in pair)
    t = net.pairwise(a, b)
    assert torch.all((t >= 1e-5) & (t <= 2.0))
    phi_a = net.phi(a / a.norm(dim=1, keepdim=True))
    phi_b = net.phi(b / b.norm(dim=1, keepdim=True))
    expected = 1e-5 + (2.0 - 1e-5) * torch.sigmoid(-(phi_a @ phi_b.T))
    assert torch.allclose(t, expected, rtol=1e-5, atol=1e-7)


@given(
    ams.embedding_pairs(rows=5, dim=4),
    ams.temperatures(min_value=1e-3, max_value=1e3),
    ams.temperatures(min_value=1e-3, max_value=1e3),
    st.integers(0, 2**16),
)
def test_p2_temperature_is_symmetric_and_scale_invariant(pair, alpha, gamma, seed):
    """P2: T(a, b) = T(b, a) and T(alpha a, gamma b) = T(a, b) for alpha, gamma > 0."""
    torch.manual_seed(seed)
    net = PairTemperature(4, hidden=16).double()
    a, b = pair
    with torch.no_grad():
        base = net(a, b)
        checks.assert_close(net(b, a), base, rtol=1e-12, atol=0, what="T(b, a) vs T(a, b)")
        checks.assert_close(net(alpha * a, gamma * b), base, rtol=1e-9, atol=0, what="rescaled")
        checks.assert_close(
            net.pairwise(b, a).T, net.pairwise(a, b), rtol=1e-12, atol=0, what="pairwise swap"
        )


@given(max_form, st.data())
def test_p2_adaptive_loss_is_invariant_to_rescaling_a_feature(sample, data):
    """P2: sim and T are both scale-invariant, so the AMCL loss with network temperatures
    does not change when one feature vector is multiplied by c > 0."""
    z1, z2, _ = sample.args
    c, n, d = z1.shape
    torch.manual_seed(data.draw(st.integers(0, 2**16)))
    net = PairTemperature(d, hidden=8).double()

    @torch.no_grad()
    def value(a, b):
        rows = torch.cat([a, b], dim=1)
        return float(amcl_nt_xent(a, b, net.pairwise(rows, rows), **sample.kwargs))

    head, row = data.draw(st.integers(0, c - 1)), data.draw(st.integers(0, n - 1))
    factor = data.draw(ams.temperatures(min_value=1e-3, max_value=1e3))
    scaled = z2.clone()
    scaled[head, row] *= factor
    base = value(z1, z2)
    checks.assert_close(value(z1, scaled), base, rtol=1e-8, atol=1e-6, what="rescaled feature")


def _orthogonal(seed: int, dim: int) -> torch.Tensor:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return torch.from_numpy(q * np.sign(np.diag(r)))


@pytest.mark.parametrize(
    ("loss", "strategy"),
    [*_TWO_VIEW_LOSSES, pytest.param(amcl_moco, ams.amcl_queue_samples(), id="amcl_moco")],
)
@given(data=st.data())
def test_p2_loss_is_invariant_to_rotation_and_rescaling_at_fixed_temperatures(loss, strategy, data):
    """P2: only cosines enter, so a common rotation of every feature and a positive rescaling
    of one feature vector leave the loss unchanged (temperatures held fixed)."""
    sample = data.draw(strategy)
    *features, tau = sample.args
    q = _orthogonal(data.draw(st.integers(0, 2**32 - 1)), features[0].shape[-1])
    moved = [f @ q for f in features]
    which = data.draw(st.integers(0, len(moved) - 1))
    head = data.draw(st.integers(0, moved[which].shape[0] - 1))
    row = data.draw(st.integers(0, moved[which].shape[1] - 1))
    moved[which][head, row] *= data.draw(ams.temperatures(min_value=1e-3, max_value=1e3))
    checks.assert_close(
        float(loss(*moved, tau, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=1e-9,
        atol=1e-9 * _scale(tau),
        what="rotated and rescaled features",
    )


# --- P3: heads -------------------------------------------------------------------------------


@given(two_view)
def test_p3_heads_are_summed(sample):
    """P3: Table 2 sums over heads: C heads = sum of per-head losses, C copies = C x one."""
    check_p3_heads_are_summed(amcl_nt_xent, sample)


@given(two_view, st.data())
def test_p3_loss_is_invariant_to_permuting_heads(sample, data):
    """P3: the head index carries no meaning; permuting heads (with their temperatures)
    leaves the loss unchanged."""
    z1, z2, tau = sample.args
    perm = torch.as_tensor(data.draw(st.permutations(range(z1.shape[0]))))
    checks.assert_close(
        float(amcl_nt_xent(z1[perm], z2[perm], tau[perm], **sample.kwargs)),
        float(sample.call(amcl_nt_xent)),
        rtol=1e-12,
        atol=F64.atol * _scale(tau),
        what="permuted heads",
    )


def test_p3_identical_projection_heads_give_c_times_one_head():
    """P3 through the modules: three heads with one head's weights and a shared temperature
    network give exactly three times the single-head loss."""
    torch.manual_seed(0)
    three = MultiHeadProjector(6, 12, 5, heads=3).double()
    for head in three.heads[1:]:
        head.load_state_dict(three.heads[0].state_dict())
    one = MultiHeadProjector(6, 12, 5, heads=1).double()
    one.heads[0].load_state_dict(three.heads[0].state_dict())
    net = PairTemperature(5, hidden=8).double()
    x1, x2 = torch.randn(2, 4, 6, dtype=torch.float64)

    @torch.no_grad()
    def loss(projector):
        z1, z2 = projector(x1), projector(x2)
        rows = torch.cat([z1, z2], dim=1)
        return float(amcl_nt_xent(z1, z2, net.pairwise(rows, rows), beta=0.1))

    assert math.isclose(loss(three), 3 * loss(one), rel_tol=1e-12)


# --- P4-P7: reductions and bounds ---------------------------------------------------------------


@given(two_view)
def test_p4_regularizer_cancels_with_constant_temperature(sample):
    """P4: if every temperature equals tau0, beta has no effect on Eq. (2.1)."""
    check_p4_regularizer_cancels(amcl_nt_xent, sample)


@given(ams.amcl_two_view_samples(positive_is_candidate=True))
def test_p4_regularizer_cancels_in_the_info_nce_form(sample):
    """P4 for Eq. (2.4): the regulariser vanishes with a constant temperature."""
    check_p4_regularizer_cancels(amcl_info_nce, sample)


@given(max_form)
def test_p5_constant_temperature_reduces_to_max_negative_minus_positive(sample):
    """P5: C = 1, constant tau: l_i = (max_n s_in - s_i+) / tau (any beta)."""
    check_p5_constant_temperature_reduction(amcl_nt_xent, sample)


@given(ams.amcl_two_view_samples(positive_is_candidate=True, modes=("max",)))
def test_p5_info_nce_form_is_a_zero_margin_hinge(sample):
    """P5 for Eq. (2.4): l_i = max(0, max_n s_in - s_i+) / tau >= 0."""
    z1, z2, tau0 = _constant(sample)
    s_pos, s_neg, _ = _similarities(z1, z2)
    expected = np.maximum(0.0, s_neg[0].max(axis=1) - s_pos[0]) / tau0
    kw = {**sample.kwargs, "neg_regularizer": "omega", "reduction": "none"}
    actual = checks.as_numpy(amcl_info_nce(z1, z2, tau0, **kw))
    checks.assert_close(actual, expected, rtol=1e-9, atol=F64.atol * _scale(tau0), what="hinge")
    assert np.all(actual >= 0.0)


@given(ams.two_view_samples())
def test_p6_amcl_sandwiches_the_decoupled_nt_xent(sample):
    """P6: per anchor, AMCL <= NT-Xent (decoupled, Eq. (1.1)) <= AMCL + log(2N - 2), and
    AMCL-InfoNCE <= NT-Xent (Eq. (1.4)) <= AMCL-InfoNCE + log(2N - 1) (C = 1, constant tau):
    max <= log-sum-exp <= max + log(count)."""
    z1, z2 = sample.args
    tau = sample.kwargs["temperature"]
    n = z1.shape[0]
    tol = registry.get("nt_xent").tolerance(torch.float64).atol_for(tau)
    for amcl, decoupled, count in (
        (amcl_nt_xent, True, 2 * n - 2),
        (amcl_info_nce, False, 2 * n - 1),
    ):
        low = checks.as_numpy(amcl(z1[None], z2[None], tau, reduction="none"))
        mid = checks.as_numpy(nt_xent(z1, z2, tau, decoupled=decoupled, reduction="none"))
        assert np.all(low <= mid + tol), (amcl.__name__, low, mid)
        assert np.all(mid <= low + math.log(count) + tol), (amcl.__name__, low, mid)


@given(ams.two_view_samples(min_temperature=1.0, max_temperature=1.0))
def test_p7_zero_temperature_limit_of_nt_xent_is_the_amcl_loss(sample):
    """P7: tau l_1.1(tau) -> max_n s_n - s+ = tau l_2.1 as tau -> 0, with the gap bounded by
    tau log(2N - 2)."""
    z1, z2 = sample.args
    count = 2 * z1.shape[0] - 2
    s_pos, s_neg, _ = _similarities(z1[None], z2[None])
    hinge = s_neg[0].max(axis=1) - s_pos[0]
    for tau in (1.0, 1e-1, 1e-2, 1e-3):
        scaled_amcl = tau * checks.as_numpy(amcl_nt_xent(z1[None], z2[None], tau, reduction="none"))
        checks.assert_close(scaled_amcl, hinge, rtol=1e-9, atol=1e-12, what=f"tau l_2.1, tau={tau}")
        scaled = tau * checks.as_numpy(nt_xent(z1, z2, tau, decoupled=True, reduction="none"))
        gap = scaled - hinge
        assert np.all(gap >= -1e-12) and np.all(gap <= tau * math.log(count) + 1e-12), (tau, gap)


# --- P8-P10: selection and gradients -------------------------------------------------------------


@given(two_view)
def test_p8_topk_is_monotone_and_reduces_to_max_and_mean(sample):
    """P8: kappa = 1 equals the max form; non-increasing in kappa; kappa = all is the mean."""
    check_p8_topk(amcl_nt_xent, sample)


@pytest.mark.parametrize(("loss", "strategy"), _TWO_VIEW_LOSSES)
@given(data=st.data())
def test_p8_reordering_the_batch_permutes_the_per_anchor_losses(loss, strategy, data):
    """P8: the negatives are a set: permuting the samples (and the temperature rows and
    columns alike) permutes the per-anchor losses and nothing else."""
    sample = data.draw(strategy)
    z1, z2, tau = sample.args
    n = z1.shape[1]
    perm = np.array(data.draw(st.permutations(range(n))))
    rows = torch.as_tensor(np.concatenate([perm, n + perm]))
    moved = loss(
        z1[:, perm], z2[:, perm], tau[:, rows][:, :, rows], **sample.kwargs, reduction="none"
    )
    base = loss(*sample.args, **sample.kwargs, reduction="none")
    checks.assert_close(
        checks.as_numpy(moved),
        checks.as_numpy(base)[rows.numpy()],
        rtol=1e-12,
        atol=F64.atol * _scale(tau),
        what="permuted batch",
    )


@given(ams.amcl_queue_samples(), st.data())
def test_p8_moco_loss_is_invariant_to_reordering_the_queue(sample, data):
    """P8 for MoCo: permuting the queue (and its temperature columns) changes nothing."""
    q, k, queue, tau = sample.args
    perm = np.array(data.draw(st.permutations(range(queue.shape[1]))))
    columns = torch.as_tensor(np.concatenate([[0], 1 + perm]))
    moved = float(amcl_moco(q, k, queue[:, perm], tau[..., columns], **sample.kwargs))
    checks.assert_close(
        moved,
        float(sample.call(amcl_moco)),
        rtol=1e-12,
        atol=F64.atol * _scale(tau),
        what="permuted queue",
    )


@given(two_view)
def test_p9_similarity_gradients_of_the_max_and_topk_forms(sample):
    """P9: dl/ds+ = -1/tau+; dl/ds_k = 1/(kappa tau_k) on the selected negatives, 0 else."""
    check_p9_max_form_gradients(amcl_nt_xent, sample)


def test_p9_heads_are_coupled_only_through_the_encoder_and_phi():
    """P9: head c's loss has zero gradient w.r.t. head c' projection weights; the shared
    temperature network and the encoder receive gradient from every head."""
    torch.manual_seed(1)
    encoder = torch.nn.Linear(6, 10).double()
    projector = MultiHeadProjector(10, 12, 5, heads=3).double()
    net = PairTemperature(5, hidden=8).double()
    x1, x2 = torch.randn(2, 4, 6, dtype=torch.float64)
    z1, z2 = projector(encoder(x1)), projector(encoder(x2))
    for c in range(3):
        a, b = z1[c : c + 1], z2[c : c + 1]
        rows = torch.cat([a, b], dim=1)
        head_loss = amcl_nt_xent(a, b, net.pairwise(rows, rows), beta=0.1)
        params = [*projector.parameters(), *net.parameters(), *encoder.parameters()]
        grads = torch.autograd.grad(head_loss, params, retain_graph=True, allow_unused=True)
        by_param = dict(zip(params, grads, strict=True))
        for other, head in enumerate(projector.heads):
            for p in head.parameters():
                g = by_param[p]
                if other == c:
                    assert g is not None and g.abs().sum() > 0
                else:
                    assert g is None or torch.all(g == 0)
        for p in [*net.parameters(), *encoder.parameters()]:
            assert by_param[p] is not None and by_param[p].abs().sum() > 0


@given(two_view)
def test_p10_temperature_gradients_are_exact(sample):
    """P10: the exact gradient with respect to every pair temperature (regulariser included);
    0 for unselected negatives."""
    check_p10_temperature_gradients(amcl_nt_xent, sample)


@given(max_form)
def test_p10_data_terms_are_monotone_in_the_temperatures(sample):
    """P10 (beta = 0): a larger positive temperature raises the loss when s+ > 0 (weaker
    pull); a larger temperature on a positive-similarity hardest negative lowers it."""
    z1, z2, tau = sample.args
    kw = {**sample.kwargs, "beta": 0.0}
    leaf = tau.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(amcl_nt_xent(z1, z2, leaf, **kw), leaf)
    s_pos, s_neg, cols = _similarities(z1, z2)
    n = z1.shape[1]
    rows = np.arange(2 * n)
    g = grad.numpy()
    g_pos = g[:, rows, (rows + n) % (2 * n)]
    assert np.all(g_pos[s_pos > 0] > 0) and np.all(g_pos[s_pos < 0] < 0)
    hardest = cols[rows[None, :], s_neg.argmax(axis=-1)]
    g_neg = np.take_along_axis(g, hardest[..., None], -1)[..., 0]
    s_max = s_neg.max(axis=-1)
    assert np.all(g_neg[s_max > 0] < 0) and np.all(g_neg[s_max < 0] > 0)


# --- P11, P14: the regulariser and the likelihood ------------------------------------------------


@given(st.floats(-1.0, 1.0), st.floats(1e-4, 1.0), st.integers(1, 4096))
def test_p11_optimal_positive_temperature_has_a_closed_form(s, beta, dim):
    """P11: -s/tau + beta Omega(tau) is stationary at tau* = 2(beta - s)/(beta d') when s < beta,
    a minimum; when s >= beta its derivative is positive, so the argmin is the floor."""
    assume(abs(s - beta) > 1e-6)

    def objective(tau):
        return -s / tau + beta * omega(tau, dim)

    if s < beta:
        closed = 2 * (beta - s) / (beta * dim)
        tau_star = torch.tensor(closed, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(objective(tau_star), tau_star, create_graph=True)
        (h,) = torch.autograd.grad(g, tau_star)
        scale = abs(beta - s) / closed**2
        assert abs(g.item()) <= 1e-9 * scale, (g.item(), scale)
        assert float(h) > 0
    else:
        grid = torch.logspace(-5, math.log10(2.0), 50, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(objective(grid).sum(), grid)
        assert torch.all(g > 0)


@given(
    ams.embedding_pairs(rows=3, dim=st.integers(1, 64), min_norm=1.0, max_norm=1.0),
    ams.temperatures(min_value=1e-5, max_value=2.0),
)
def test_p14_gaussian_identity(pair, tau):
    """P14: for unit vectors, |a - b|^2/(2 tau) + (d'/2) log tau = -sim(a, b)/tau + Omega(tau)
    (the maximum-likelihood reading of the loss): Omega is the Gaussian normaliser."""
    a, b = (_unit(t.numpy()) for t in pair)
    dim = a.shape[1]
    lhs = ((a - b) ** 2).sum(axis=1) / (2 * tau) + dim / 2 * math.log(tau)
    rhs = -(a * b).sum(axis=1) / tau + float(omega(tau, dim))
    checks.assert_close(rhs, lhs, rtol=1e-12, atol=1e-12 / tau, what="Gaussian identity")


# --- P12, P13: Barlow Twins and SimSiam ----------------------------------------------------------


@given(ams.barlow_samples(), st.sampled_from((0.0, 1e-6, 0.5)))
def test_p12_barlow_twins_reduction(sample, beta):
    """P12: C = 1 and tau = 1: Eq. (2.3) = Barlow Twins + beta D (2 - D); equal for beta = 0."""
    z1, z2 = sample.args
    lam = sample.kwargs["lambda_offdiag"]
    d = z1.shape[1]
    value = float(amcl_barlow_twins(z1[None], z2[None], 1.0, lambda_offdiag=lam, beta=beta))
    expected = float(barlow_twins(z1, z2, lam)) + beta * d * (2 - d)
    checks.assert_close(value, expected, rtol=1e-10, atol=1e-10, what="Barlow reduction")


def check_p13_simsiam_reduction(loss, sample: SampleInput) -> None:
    """P13: C = 1 and tau = 1: Eq. (2.2) = -(sim(p1, h2) + sim(p2, h1))/2 + 2 beta."""
    p1, p2, h1, h2, _ = (a[:1] for a in sample.args)
    beta = sample.kwargs["beta"]
    sims = [
        (_unit(a.numpy()[0]) * _unit(b.numpy()[0])).sum(axis=1) for a, b in ((p1, h2), (p2, h1))
    ]
    expected = -(sims[0] + sims[1]) / 2 + 2 * beta
    actual = checks.as_numpy(loss(p1, p2, h1, h2, 1.0, beta=beta, reduction="none"))
    checks.assert_close(actual, expected, rtol=1e-10, atol=1e-12, what="SimSiam reduction")


def check_p13_target_receives_no_gradient(loss, sample: SampleInput) -> None:
    """P13: the stop-gradient: h1, h2 get no gradient; p1, p2 and the temperatures do."""
    leaves = sample.to(requires_grad=True)
    value = leaves.call(loss)
    grads = torch.autograd.grad(value, leaves.args, allow_unused=True)
    for name, g in zip(("h1", "h2"), grads[2:4], strict=True):
        assert g is None or torch.all(g == 0), f"{name} receives gradient"
    for name, g in zip(("p1", "p2", "temperature"), (grads[0], grads[1], grads[4]), strict=True):
        assert g is not None, f"{name} receives no gradient"


@given(ams.amcl_simsiam_samples())
def test_p13_simsiam_reduction(sample):
    """P13: Eq. (2.2) with one head and unit temperatures is SimSiam's loss plus 2 beta."""
    check_p13_simsiam_reduction(amcl_simsiam, sample)


@given(ams.amcl_simsiam_samples())
def test_p13_simsiam_target_branch_receives_no_gradient(sample):
    """P13: the target branch is stop-gradient; the value does not depend on the switch."""
    check_p13_target_receives_no_gradient(amcl_simsiam, sample)
    kw = sample.kwargs
    assert float(amcl_simsiam(*sample.args, **kw)) == float(
        amcl_simsiam(*sample.args, **kw, stop_gradient=False)
    )


# --- P15: bookkeeping -------------------------------------------------------------------------


@given(two_view)
def test_p15_each_simclr_anchor_has_2b_minus_2_negatives_and_both_directions(sample):
    """P15: k may be 2B - 2 (all negatives) but not 2B - 1 for Eq. (2.1), 2B - 1 for Eq. (2.4);
    there is one loss per anchor of both views, and swapping the views swaps the halves."""
    z1, z2, tau = sample.args
    n = z1.shape[1]
    kw = {k: v for k, v in sample.kwargs.items() if k not in ("mode", "k")}
    amcl_nt_xent(z1, z2, tau, **kw, mode="topk", k=2 * n - 2)
    amcl_info_nce(z1, z2, tau, **kw, mode="topk", k=2 * n - 1)
    with pytest.raises(ValueError, match=rf"k must be in \[1, {2 * n - 2}\]"):
        amcl_nt_xent(z1, z2, tau, **kw, mode="topk", k=2 * n - 1)
    per_anchor = amcl_nt_xent(*sample.args, **sample.kwargs, reduction="none")
    assert per_anchor.shape == (2 * n,)
    swap = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    swapped = amcl_nt_xent(z2, z1, tau[:, swap][:, :, swap], **sample.kwargs, reduction="none")
    checks.assert_close(
        checks.as_numpy(swapped),
        checks.as_numpy(per_anchor)[swap.numpy()],
        rtol=1e-12,
        atol=F64.atol * _scale(tau),
        what="view swap",
    )


@given(ams.amcl_queue_samples())
def test_p15_moco_loss_does_not_modify_the_queue(sample):
    """P15: computing the MoCo loss (and its gradient) leaves the queue and inputs untouched."""
    before = [a.clone() for a in sample.args]
    leaves = sample.to(requires_grad=True)
    leaves.call(amcl_moco).backward()
    for a, b in zip(leaves.args, before, strict=True):
        assert torch.equal(a.detach(), b)


# --- P16: finiteness ------------------------------------------------------------------------------

_ALL = {
    "amcl_nt_xent": ams.amcl_two_view_samples,
    "amcl_info_nce": lambda **kw: ams.amcl_two_view_samples(positive_is_candidate=True, **kw),
    "amcl_moco": ams.amcl_queue_samples,
    "amcl_simsiam": ams.amcl_simsiam_samples,
    "amcl_barlow_twins": ams.amcl_barlow_samples,
}


@pytest.mark.parametrize("name", sorted(_ALL))
@given(data=st.data())
def test_p16_finite_over_the_whole_temperature_range_in_float32(name, data):
    """P16: with tau in [1e-5, 2] every term is finite in float32: 1/tau <= 1e5, |log tau| <=
    11.6 (value and gradient, temperatures pushed to both ends of the range)."""
    sample = data.draw(_ALL[name](dtype=torch.float32))
    end = data.draw(st.sampled_from((None, 1e-5, 2.0)))
    if end is not None:
        args = list(sample.args)
        args[-1] = torch.full_like(args[-1], end)
        sample = SampleInput(tuple(args), sample.kwargs, sample.name)
    checks.check_finite_value_and_gradient(registry.get(name), sample)


def test_p16_omega_range_for_d_128():
    """P16: for d' = 128, Omega ranges from 64 (1 - ln 64) ~ -202.17 at tau = 2/d' to
    ~ 9.9e4 at tau = 1e-5; Omega(2) ~ 44.86; Omega is negative on [3e-3, 0.9] (so Omega >= 0
    must not be assumed)."""
    tau = torch.logspace(-5, math.log10(2.0), 2001, dtype=torch.float32)
    values = omega(tau, 128).double()
    assert torch.isfinite(values).all()
    assert math.isclose(float(values.min()), 64 * (1 - math.log(64)), rel_tol=1e-4)
    assert math.isclose(float(omega(2.0, 128)), 64 * math.log(2.0) + 0.5, rel_tol=1e-12)
    assert math.isclose(float(omega(1e-5, 128)), 64 * math.log(1e-5) + 1e5, rel_tol=1e-12)
    assert torch.all(values[(tau >= 3e-3) & (tau <= 0.9)] < 0)


# --- the log-sum-exp modes: the "Softmax" variant of Fig. 5 (right) ------------------------------
# mode="softmax": -s+/tau+ + log sum_n exp(s_n/tau_n) + beta Omega(tau+) - beta mean_n Omega(tau_n)
# over each loss's candidates (Wang et al. 2024, arXiv:2310.05615, Fig. 5 right, read with the
# pair temperatures and regularisers of Table 2); mode="nt_xent" also puts the positive inside
# the log-sum-exp.  The samples are the max-form strategies moved to these modes.

LSE_MODES = ("softmax", "nt_xent")


@st.composite
def _log_sum_exp_form(draw, base, modes):
    """A sample of the AMCL strategy ``base`` moved to one of the log-sum-exp ``modes`` (no
    ``k``; the paper's Omega, the only negative regulariser these modes take)."""
    sample = draw(base)
    kwargs = {key: value for key, value in sample.kwargs.items() if key != "k"}
    kwargs.update(mode=draw(st.sampled_from(modes)), neg_regularizer="omega")
    return SampleInput(sample.args, kwargs, sample.name)


def _lse_strategies(**kw):
    """(amcl_nt_xent, amcl_info_nce, amcl_moco) samples in their log-sum-exp modes."""
    return (
        _log_sum_exp_form(ams.amcl_two_view_samples(modes=("max",), **kw), LSE_MODES),
        _log_sum_exp_form(
            ams.amcl_two_view_samples(positive_is_candidate=True, modes=("max",), **kw),
            ("softmax",),
        ),
        _log_sum_exp_form(ams.amcl_queue_samples(modes=("max",), **kw), LSE_MODES),
    )


lse_form, lse_info_nce, lse_moco = _lse_strategies()
_LSE_LOSSES = [
    pytest.param(amcl_nt_xent, lse_form, id="amcl_nt_xent"),
    pytest.param(amcl_info_nce, lse_info_nce, id="amcl_info_nce"),
    pytest.param(amcl_moco, lse_moco, id="amcl_moco"),
]


def _log_sum_exp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def check_lse_reduces_to_nt_xent(loss, sample: SampleInput) -> None:
    """C = 1, a constant tau and beta = 0: mode="softmax" is nt_xent(decoupled=True) (Eq. (1.1)
    of Table 1) and mode="nt_xent" is nt_xent (Eq. (1.4)), per anchor, to float64 rounding."""
    z1, z2, tau0 = _constant(sample)
    mode = sample.kwargs["mode"]
    kw = {**sample.kwargs, "beta": 0.0, "reduction": "none"}
    actual = checks.as_numpy(loss(z1, z2, tau0, **kw))
    decoupled = mode == "softmax"
    expected = checks.as_numpy(nt_xent(z1[0], z2[0], tau0, decoupled=decoupled, reduction="none"))
    checks.assert_close(
        actual, expected, rtol=1e-12, atol=1e-13 * _scale(tau0), what=f"mode={mode!r} vs nt_xent"
    )


def check_lse_regularizer_cancels(loss, sample: SampleInput) -> None:
    """P4 for the log-sum-exp modes: with every temperature equal, +beta Omega(tau) on the
    positive and -beta times the mean of Omega(tau) over the negatives cancel for any beta."""
    z1, z2, tau = sample.args
    tau0 = float(tau[0, 0, 1])
    with_beta = float(loss(z1, z2, tau0, **{**sample.kwargs, "beta": 1.0}))
    without = float(loss(z1, z2, tau0, **{**sample.kwargs, "beta": 0.0}))
    checks.assert_close(
        with_beta, without, rtol=1e-10, atol=F64.atol * _scale(tau0), what="beta=1 vs beta=0"
    )


def check_lse_temperature_gradients(loss, sample: SampleInput) -> None:
    """The exact temperature gradient of the log-sum-exp modes: with w_n the softmax weight of
    candidate n in the log-sum-exp and M the number of negatives, dL/dtau_n =
    (-w_n s_n/tau_n^2 - beta Omega'(tau_n)/M)/A and dL/dtau+ = ((1 - w+) s+/tau+^2 +
    beta Omega'(tau+))/A, with w+ = 0 for mode="softmax"; 0 for every unread entry."""
    z1, z2, tau = sample.args
    c, n, d = z1.shape
    beta, mode = float(sample.kwargs.get("beta", 1e-4)), sample.kwargs["mode"]
    leaf = tau.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(z1, z2, leaf, **sample.kwargs), leaf)
    s_pos, s_neg, cols = _similarities(z1, z2)
    t = tau.detach().numpy()
    anchors = 2 * n
    rows = np.arange(anchors)
    pos = (rows + n) % anchors
    t_pos, t_neg = t[:, rows, pos], np.take_along_axis(t, cols[None].repeat(c, 0), -1)
    logits = s_neg / t_neg
    if mode == "nt_xent":
        logits = np.concatenate([logits, (s_pos / t_pos)[..., None]], axis=-1)
    weights = np.exp(logits - _log_sum_exp(logits)[..., None])
    w_pos = weights[..., -1] if mode == "nt_xent" else 0.0
    m = s_neg.shape[-1]
    expected = np.zeros_like(t)
    expected[:, rows, pos] = (
        (1 - w_pos) * s_pos / t_pos**2 + beta * _omega_derivative(t_pos, d)
    ) / anchors
    g_neg = -weights[..., :m] * s_neg / t_neg**2 - beta * _omega_derivative(t_neg, d) / m
    np.put_along_axis(expected, cols[None].repeat(c, 0), g_neg / anchors, -1)
    checks.assert_close(
        checks.as_numpy(grad), expected, rtol=1e-8, atol=1e-12 * _scale(tau) ** 2, what="dL/dtau"
    )


@given(lse_form)
def test_log_sum_exp_modes_with_one_head_constant_tau_and_no_regulariser_are_nt_xent(sample):
    """C = 1, constant tau, beta = 0: mode="softmax" = nt_xent(..., decoupled=True) (Table 1,
    Eq. (1.1)) and mode="nt_xent" = nt_xent(...) (Eq. (1.4)), exactly in float64."""
    check_lse_reduces_to_nt_xent(amcl_nt_xent, sample)


@given(lse_info_nce)
def test_info_nce_softmax_mode_is_info_nce_with_each_anchors_negatives_as_its_queue(sample):
    """C = 1, constant tau, beta = 0: Eq. (2.4) in mode="softmax" is, for each anchor i,
    info_nce(anchor i, its positive, queue = its 2N - 2 negatives) (MoCo's (K + 1)-way
    softmax, He et al. 2020, Eq. 1), and over the batch nt_xent with the positive kept."""
    z1, z2, tau0 = _constant(sample)
    n = z1.shape[1]
    kw = {**sample.kwargs, "beta": 0.0, "reduction": "none"}
    actual = checks.as_numpy(amcl_info_nce(z1, z2, tau0, **kw))
    rows = torch.cat([z1[0], z2[0]])
    expected = []
    for i in range(2 * n):
        p = (i + n) % (2 * n)
        negatives = rows[[j for j in range(2 * n) if j not in (i, p)]]
        expected.append(float(info_nce(rows[i : i + 1], rows[p : p + 1], negatives, tau0)))
    atol = 1e-13 * _scale(tau0)
    checks.assert_close(actual, expected, rtol=1e-12, atol=atol, what="per-anchor info_nce")
    batch = checks.as_numpy(nt_xent(z1[0], z2[0], tau0, reduction="none"))
    checks.assert_close(actual, batch, rtol=1e-12, atol=atol, what="nt_xent")


@given(lse_moco)
def test_moco_nt_xent_mode_is_info_nce_with_the_queue(sample):
    """C = 1, constant tau, beta = 0: amcl_moco(mode="nt_xent") is info_nce(query, key,
    queue) (He et al. 2020, Eq. 1: the key inside the log-sum-exp), exactly in float64."""
    q, key, queue, tau = sample.args
    tau0 = float(tau[0, 0, 0])
    kw = {**sample.kwargs, "mode": "nt_xent", "beta": 0.0, "reduction": "none"}
    actual = checks.as_numpy(amcl_moco(q[:1], key[:1], queue[:1], tau0, **kw))
    expected = checks.as_numpy(info_nce(q[0], key[0], queue[0], tau0, reduction="none"))
    checks.assert_close(
        actual, expected, rtol=1e-12, atol=1e-13 * _scale(tau0), what="info_nce with a queue"
    )


@given(lse_moco)
def test_moco_softmax_mode_is_info_nce_with_the_key_left_out_of_the_denominator(sample):
    """C = 1, constant tau, beta = 0: amcl_moco(mode="softmax") is -s(q, k)/tau + log sum_j
    exp(s(q, u_j)/tau), the decoupled (Table 1, Eq. (1.1)) form of info_nce.  Checked against
    nt_xent(decoupled=True) on z1 = [q_i; U], z2 = [k_i; U]: the negatives of anchor 0 are the
    queue U twice, so its loss is the MoCo term plus log 2."""
    q, key, queue, tau = sample.args
    tau0 = float(tau[0, 0, 0])
    kw = {**sample.kwargs, "mode": "softmax", "beta": 0.0, "reduction": "none"}
    actual = checks.as_numpy(amcl_moco(q[:1], key[:1], queue[:1], tau0, **kw))
    expected = [
        float(
            nt_xent(
                torch.cat([q[0, i : i + 1], queue[0]]),
                torch.cat([key[0, i : i + 1], queue[0]]),
                tau0,
                decoupled=True,
                reduction="none",
            )[0]
        )
        - math.log(2.0)
        for i in range(q.shape[1])
    ]
    checks.assert_close(
        actual, expected, rtol=1e-12, atol=1e-13 * _scale(tau0), what="decoupled info_nce"
    )


def _negatives(loss, features) -> int:
    """How many negatives an anchor has: 2N - 2 (Eq. (2.1)), 2N - 1 candidates (Eq. (2.4),
    the positive one of them) or the K queue rows (MoCo)."""
    if loss is amcl_moco:
        return features[2].shape[1]
    n = features[0].shape[1]
    return 2 * n - 1 if loss is amcl_info_nce else 2 * n - 2


@pytest.mark.parametrize(("loss", "strategy"), _LSE_LOSSES)
@given(data=st.data())
def test_softmax_mode_lies_between_the_max_form_and_the_max_form_plus_c_log_m(loss, strategy, data):
    """For one constant tau (every pair, every head) and any beta, per anchor: l_max <=
    l_softmax <= l_max + C log M, and l_softmax <= l_nt_xent (MoCo, NT-Xent).  These are loss
    values, each with its 1/tau: l_max = sum_c (max_n s_n - s+)/tau (the regulariser cancels,
    P4) and l_softmax = sum_c (log sum_n exp(s_n/tau) - s+/tau); the bound C log M (M
    negatives, C heads) is not scaled by 1/tau, since max_n x_n <= log sum_n exp(x_n) <= max_n
    x_n + log M for x_n = s_n/tau.  Fig. 5 (right) against Table 2 Eq. (2.1)/(2.4)."""
    sample = data.draw(strategy)
    *features, tau = sample.args
    tau0 = float(tau.flatten()[-1])
    kw = {**sample.kwargs, "reduction": "none"}
    soft, hard = (
        checks.as_numpy(loss(*features, tau0, **{**kw, "mode": mode}))
        for mode in ("softmax", "max")
    )
    tol = F64.atol * _scale(tau0)
    bound = features[0].shape[0] * math.log(_negatives(loss, features))
    assert np.all(hard <= soft + tol), (hard, soft)
    assert np.all(soft <= hard + bound + tol), (hard, soft, bound)
    if loss is not amcl_info_nce:
        full = checks.as_numpy(loss(*features, tau0, **{**kw, "mode": "nt_xent"}))
        assert np.all(soft <= full + tol), (soft, full)


@given(lse_form)
def test_log_sum_exp_modes_regularizer_cancels_with_constant_temperature(sample):
    """P4 for Fig. 5's form: a constant tau makes beta irrelevant (Omega of the negatives is
    averaged, so it equals Omega of the positive)."""
    check_lse_regularizer_cancels(amcl_nt_xent, sample)


@given(lse_form)
def test_log_sum_exp_modes_temperature_gradients_are_softmax_weights(sample):
    """dL/dtau_n = (-w_n s_n/tau_n^2 - beta Omega'(tau_n)/M)/A for every negative, with w_n its
    softmax weight; dL/dtau+ = ((1 - w+) s+/tau+^2 + beta Omega'(tau+))/A."""
    check_lse_temperature_gradients(amcl_nt_xent, sample)


@given(lse_form)
def test_log_sum_exp_modes_heads_are_summed(sample):
    """P3 in the log-sum-exp modes: C heads = the sum of the per-head losses."""
    check_p3_heads_are_summed(amcl_nt_xent, sample)


def _numpy_value(loss, sample: SampleInput) -> np.ndarray:
    args = [a.detach().double().numpy() for a in sample.args]
    if loss is amcl_moco:
        return ref.amcl_moco(*args, **sample.kwargs)
    return ref.amcl_two_view(*args, **sample.kwargs, positive_is_candidate=loss is amcl_info_nce)


@pytest.mark.parametrize(("loss", "strategy"), _LSE_LOSSES)
@given(data=st.data())
def test_log_sum_exp_modes_match_the_independent_numpy_reference(loss, strategy, data):
    """The per-anchor float64 value equals the loop transcription in tests/numpy_reference.py
    (written apart from the library): -s+/tau+ + log sum exp(s_n/tau_n) (+ the positive for
    "nt_xent") + beta Omega(tau+) - beta mean Omega(tau_n), summed over heads."""
    sample = data.draw(strategy)
    actual = checks.as_numpy(loss(*sample.args, **sample.kwargs, reduction="none"))
    checks.assert_close(
        actual,
        _numpy_value(loss, sample),
        rtol=1e-10,
        atol=F64.atol * _scale(sample.args[-1]),
        what=f"{loss.__name__} vs NumPy",
    )


_GRADCHECK = _lse_strategies(min_temperature=0.05)


@pytest.mark.parametrize(
    ("loss", "strategy"),
    [
        pytest.param(fn, s, id=fn.__name__)
        for fn, s in zip((amcl_nt_xent, amcl_info_nce, amcl_moco), _GRADCHECK, strict=True)
    ],
)
@given(data=st.data())
def test_log_sum_exp_modes_gradients_pass_gradcheck_in_float64(loss, strategy, data):
    """Autograd's gradient with respect to the features and the pair temperatures equals
    central finite differences (torch.autograd.gradcheck, float64, tau >= 0.05).  The rows
    are rescaled to unit norm first (the loss does not change, P2): at a norm of 1e-3 the
    third derivative ~ 1/|z|^3 makes the finite differences, not autograd, wrong by ~1e-5."""
    sample = data.draw(strategy)
    *features, tau = (a.detach().clone() for a in sample.args)
    features = [f / torch.linalg.vector_norm(f, dim=-1, keepdim=True) for f in features]
    inputs = [a.requires_grad_(True) for a in (*features, tau)]
    assert torch.autograd.gradcheck(
        lambda *xs: loss(*xs, **sample.kwargs), inputs, eps=1e-7, atol=1e-6, rtol=1e-4
    )


_FLOAT32 = _lse_strategies(dtype=torch.float32)


@pytest.mark.parametrize(
    ("loss", "strategy"),
    [
        pytest.param(fn, s, id=fn.__name__)
        for fn, s in zip((amcl_nt_xent, amcl_info_nce, amcl_moco), _FLOAT32, strict=True)
    ],
)
@given(data=st.data())
def test_log_sum_exp_modes_are_finite_in_float32_at_tau_1e_minus_5(loss, strategy, data):
    """P16 for the log-sum-exp modes: at tau = 1e-5, s/tau reaches 1e5 (exp would overflow
    float32 past ~88), yet the value and the gradients of the features and temperatures are
    finite in float32 (torch.logsumexp subtracts the maximum); also with every temperature at
    the floor but one at 2."""
    sample = data.draw(strategy)
    *features, tau = sample.args
    floor = torch.full_like(tau, 1e-5)
    if data.draw(st.booleans()):
        floor.view(-1)[data.draw(st.integers(0, floor.numel() - 1))] = 2.0
    checks.check_finite_value_and_gradient(loss, SampleInput((*features, floor), sample.kwargs))


# --- every property can fail: AMCL mutants -------------------------------------------------

# Each entry is a check that a property test above runs on the reference (test_p3_..., test_p4_,
# test_p5_..., test_p8_..., test_p9_..., test_p10_..., test_p13_...), so the reference passing
# the battery is those tests passing.  Ordered so that the most discriminating checks run first.
BATTERY = {
    "amcl_nt_xent": (
        (check_p10_temperature_gradients, two_view),
        (check_p3_heads_are_summed, two_view),
        (check_p5_constant_temperature_reduction, two_view),
        (check_p4_regularizer_cancels, two_view),
        (check_p8_topk, two_view),
        (check_p9_max_form_gradients, two_view),
        # the log-sum-exp modes (Fig. 5, right)
        (check_lse_reduces_to_nt_xent, lse_form),
        (check_lse_regularizer_cancels, lse_form),
        (check_lse_temperature_gradients, lse_form),
    ),
    "amcl_simsiam": (
        (check_p13_simsiam_reduction, ams.amcl_simsiam_samples()),
        (check_p13_target_receives_no_gradient, ams.amcl_simsiam_samples()),
    ),
}


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", AMCL_MUTANTS, ids=lambda m: m.name)
def test_every_amcl_mutant_violates_at_least_one_property(mutant):
    """Every broken variant fails at least one of the checks the reference passes above."""
    caught = any(
        checks.violates(check, mutant.fn, strategy) for check, strategy in BATTERY[mutant.target]
    )
    assert caught, f"mutant {mutant.name!r} ({mutant.mistake}) passed every AMCL property"


#: The property aimed at each mistake (a mutant may also fail others).
TARGETED = {
    "amcl_heads_averaged": check_p3_heads_are_summed,
    "amcl_scaled_selection": check_p9_max_form_gradients,
    "amcl_regularizer_sign_flipped": check_p4_regularizer_cancels,
    "amcl_positive_temperature_for_negative": check_p9_max_form_gradients,
    "amcl_positive_as_candidate": check_p5_constant_temperature_reduction,
    "amcl_one_view_direction": check_p5_constant_temperature_reduction,
    "amcl_topk_summed": check_p8_topk,
    "amcl_omega_log_coefficient_one": check_p10_temperature_gradients,
    "amcl_softmax_positive_in_lse": check_lse_reduces_to_nt_xent,
    "amcl_nt_xent_mode_positive_left_out": check_lse_reduces_to_nt_xent,
    "amcl_softmax_regularizer_sign_flipped": check_lse_regularizer_cancels,
    "amcl_softmax_omega_summed": check_lse_temperature_gradients,
    "amcl_simsiam_target_not_detached": check_p13_target_receives_no_gradient,
    "amcl_simsiam_halves_dropped": check_p13_simsiam_reduction,
}


@pytest.mark.mutation
@pytest.mark.parametrize("mutant", AMCL_MUTANTS, ids=lambda m: m.name)
def test_each_amcl_property_catches_the_mistake_it_targets(mutant):
    """P3 catches averaged heads, P9 the wrong hardest negative or its temperature, P4 the
    flipped regulariser, P5 the InfoNCE form and a missing view direction, P8 a summed top-k,
    P10 a wrong Omega, P13 a missing stop-gradient or halving; in the log-sum-exp modes the
    reduction to NT-Xent catches a positive wrongly in or out of the log-sum-exp, the
    cancellation at constant tau a flipped negative regulariser, and the exact temperature
    gradient a summed one."""
    check = TARGETED[mutant.name]
    strategy = next(s for c, s in BATTERY[mutant.target] if c is check)
    assert checks.violates(check, mutant.fn, strategy), f"{check.__name__} misses {mutant.name}"


def test_amcl_mutants_cover_the_mistakes_named_in_the_issue():
    """Heads averaged, hardest negative by tau-scaled similarity, regulariser sign flipped."""
    assert {
        "amcl_heads_averaged",
        "amcl_scaled_selection",
        "amcl_regularizer_sign_flipped",
    } <= {m.name for m in AMCL_MUTANTS}


#: The mistakes in the log-sum-exp modes, each right in the max and top-kappa modes.
LSE_MUTANTS = (
    "amcl_softmax_positive_in_lse",
    "amcl_nt_xent_mode_positive_left_out",
    "amcl_softmax_regularizer_sign_flipped",
    "amcl_softmax_omega_summed",
)


@pytest.mark.mutation
@pytest.mark.parametrize("name", LSE_MUTANTS)
def test_log_sum_exp_mutants_are_caught_only_by_the_log_sum_exp_properties(name):
    """Each log-sum-exp mutant passes every max/top-kappa check above (P3, P4, P5, P8, P10):
    only the properties of the new modes catch it."""
    mutant = next(m for m in AMCL_MUTANTS if m.name == name)
    for check, strategy in BATTERY["amcl_nt_xent"]:
        if strategy is two_view and check is not check_p9_max_form_gradients:
            assert not checks.violates(check, mutant.fn, strategy), (name, check.__name__)


def test_amcl_mutants_cover_the_log_sum_exp_mistakes_named_in_the_issue():
    """Positive left in (softmax) or out (nt_xent) of the log-sum-exp, the negative Omega's
    sign flipped, and Omega summed instead of averaged over the negatives."""
    assert set(LSE_MUTANTS) <= {m.name for m in AMCL_MUTANTS}
