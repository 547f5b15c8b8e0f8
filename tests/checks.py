"""Property checks for contrastive losses, written against an arbitrary implementation.

Each ``check_*`` function takes the implementation under test (a callable with the
reference's signature) and one drawn input, and raises ``AssertionError`` when the stated
property fails.  The property tests call them with the library's losses; the mutation tests
call them with deliberately broken losses and require that some check fails, which is how we
know each property can fail.

Expected values are computed here in float64 NumPy from the similarities, never by calling
amcl_lab.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from amcl_lab.samples import SampleInput

Loss = Callable[..., torch.Tensor]

#: Pairs whose cosine is within this of +-1 are skipped when gradients are recovered from
#: embedding gradients (the recovery divides by 1 - s^2).
_MIN_SIN2 = 1e-3


def unit(x: np.ndarray) -> np.ndarray:
    """Row-normalise in float64 (zero rows stay zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-8)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def assert_close(actual, expected, *, rtol: float, atol: float, what: str) -> None:
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(actual - expected)
    if err.size == 0:
        return
    bound = atol + rtol * np.abs(expected)
    if not np.all(np.isfinite(actual)) or np.any(err > bound):
        worst = int(np.argmax(err - bound)) if np.all(np.isfinite(actual)) else -1
        raise AssertionError(
            f"{what}: max abs error {np.nanmax(err):.3e} exceeds the bound "
            f"(rtol={rtol:g}, atol={atol:g}); actual={actual.ravel()[:8]}, "
            f"expected={expected.ravel()[:8]}, worst index {worst}"
        )


def with_kwargs(sample: SampleInput, **kwargs) -> SampleInput:
    return SampleInput(sample.args, {**sample.kwargs, **kwargs}, sample.name)


def per_anchor(loss: Loss, sample: SampleInput, expected_len: int | None = None) -> torch.Tensor:
    """``reduction="none"`` losses; for two-view inputs there must be one per 2N anchors."""
    losses = loss(*sample.args, **{**sample.kwargs, "reduction": "none"})
    if expected_len is None and len(sample.args) == 2:
        expected_len = 2 * sample.args[0].shape[0]
    if expected_len is not None:
        assert losses.shape == (expected_len,), (
            f"expected {expected_len} per-anchor losses, got shape {tuple(losses.shape)}"
        )
    return losses


# --- recovering the gradient with respect to each similarity --------------------------------


@dataclass
class AnchorGradients:
    """dL_i/ds for one anchor's positive and negatives, recovered from embedding gradients."""

    s_pos: float
    s_neg: np.ndarray
    g_pos: float
    g_neg: np.ndarray
    ok_pos: bool
    ok_neg: np.ndarray


def _recover(grad_row: np.ndarray, anchor_unit: np.ndarray, row: np.ndarray, s: float) -> float:
    """Invert ds/dz_j = (u_i - s u_j)/|z_j| along u_i: g = <dL/dz_j, u_i> |z_j| / (1 - s^2)."""
    return float(grad_row @ anchor_unit) * float(np.linalg.norm(row)) / (1.0 - s * s)


def two_view_gradients(loss: Loss, sample: SampleInput) -> list[AnchorGradients]:
    """Per-anchor similarity gradients of a two-view loss (anchors ordered [z1; z2])."""
    z1, z2 = (a.detach().clone().requires_grad_(True) for a in sample.args[:2])
    losses = per_anchor(loss, SampleInput((z1, z2), sample.kwargs))
    z = np.concatenate([as_numpy(z1), as_numpy(z2)])
    u = unit(z)
    s = u @ u.T
    two_n = z.shape[0]
    n = two_n // 2
    out = []
    for i in range(two_n):
        g1, g2 = torch.autograd.grad(losses[i], (z1, z2), retain_graph=True, allow_unused=True)
        grads = np.concatenate(
            [
                as_numpy(g1) if g1 is not None else np.zeros_like(z[:n]),
                as_numpy(g2) if g2 is not None else np.zeros_like(z[n:]),
            ]
        )
        p = (i + n) % two_n
        negs = [j for j in range(two_n) if j not in (i, p)]
        ok = np.array([1 - s[i, j] ** 2 > _MIN_SIN2 and np.linalg.norm(z[j]) > 0 for j in negs])
        g_neg = np.array(
            [
                _recover(grads[j], u[i], z[j], s[i, j]) if ok_j else np.nan
                for j, ok_j in zip(negs, ok, strict=True)
            ]
        )
        ok_pos = bool(1 - s[i, p] ** 2 > _MIN_SIN2 and np.linalg.norm(z[p]) > 0)
        g_pos = _recover(grads[p], u[i], z[p], s[i, p]) if ok_pos else np.nan
        out.append(AnchorGradients(s[i, p], s[i, negs], g_pos, g_neg, ok_pos, ok))
    return out


def queue_gradients(loss: Loss, sample: SampleInput) -> list[AnchorGradients]:
    """Per-query similarity gradients of a MoCo-style loss (positive = key, negatives = queue)."""
    q, k, queue = (a.detach().clone().requires_grad_(True) for a in sample.args[:3])
    losses = per_anchor(loss, SampleInput((q, k, queue), sample.kwargs), q.shape[0])
    qn, kn, bn = as_numpy(q), as_numpy(k), as_numpy(queue)
    uq, uk, ub = unit(qn), unit(kn), unit(bn)
    out = []
    for i in range(qn.shape[0]):
        gk, gb = torch.autograd.grad(losses[i], (k, queue), retain_graph=True, allow_unused=True)
        gk = as_numpy(gk) if gk is not None else np.zeros_like(kn)
        gb = as_numpy(gb) if gb is not None else np.zeros_like(bn)
        s_neg = ub @ uq[i]
        s_pos = float(uk[i] @ uq[i])
        ok = 1 - s_neg**2 > _MIN_SIN2
        g_neg = np.array(
            [_recover(gb[j], uq[i], bn[j], s_neg[j]) if ok[j] else np.nan for j in range(len(ok))]
        )
        ok_pos = bool(1 - s_pos**2 > _MIN_SIN2)
        g_pos = _recover(gk[i], uq[i], kn[i], s_pos) if ok_pos else np.nan
        out.append(AnchorGradients(s_pos, s_neg, g_pos, g_neg, ok_pos, ok))
    return out


def _boltzmann(a: AnchorGradients, tau: float, selected: np.ndarray | None = None):
    """Softmax probabilities of the positive and the (selected) negatives at temperature tau."""
    sel = np.ones_like(a.s_neg, dtype=bool) if selected is None else selected
    logits = np.concatenate([[a.s_pos], a.s_neg[sel]]) / tau
    logits -= logits.max()
    w = np.exp(logits)
    w /= w.sum()
    p_neg = np.zeros_like(a.s_neg)
    p_neg[sel] = w[1:]
    return w[0], p_neg


def hard_selection(a: AnchorGradients, k: int | None) -> np.ndarray:
    """Negatives with similarity >= the k-th largest (all for k=None)."""
    if k is None:
        return np.ones_like(a.s_neg, dtype=bool)
    threshold = np.sort(a.s_neg)[::-1][k - 1]
    return a.s_neg >= threshold - 64 * np.finfo(np.float64).eps


def check_negative_gradient_is_boltzmann_weight(
    anchors: list[AnchorGradients], tau: float, k: int | None = None
) -> None:
    """dL_i/ds_ij = P_ij / tau for each (selected) negative j, 0 for excluded ones (Eq. 4)."""
    scale = max(1.0, 1.0 / tau)
    for i, a in enumerate(anchors):
        sel = hard_selection(a, k)
        _, p_neg = _boltzmann(a, tau, sel)
        expected = np.where(sel, p_neg / tau, 0.0)
        ok = a.ok_neg
        atol = 1e-9 * scale / _MIN_SIN2
        assert_close(
            a.g_neg[ok],
            expected[ok],
            rtol=1e-7,
            atol=atol,
            what=f"anchor {i}: negative-similarity gradient vs P_ij/tau",
        )


def check_positive_gradient(
    anchors: list[AnchorGradients], tau: float, k: int | None = None
) -> None:
    """dL_i/ds_ii = -(1 - P_ii)/tau (Wang & Liu Eq. 4)."""
    scale = max(1.0, 1.0 / tau)
    for i, a in enumerate(anchors):
        if not a.ok_pos:
            continue
        p_pos, _ = _boltzmann(a, tau, hard_selection(a, k))
        assert_close(
            a.g_pos,
            -(1.0 - p_pos) / tau,
            rtol=1e-7,
            atol=1e-9 * scale / _MIN_SIN2,
            what=f"anchor {i}: positive-similarity gradient vs -(1 - P_ii)/tau",
        )


def check_negative_gradient_ratio(anchors: list[AnchorGradients], tau: float) -> None:
    """g_a / g_b = exp((s_a - s_b)/tau) for two negatives a, b (hardness-awareness)."""
    for i, a in enumerate(anchors):
        usable = np.flatnonzero(a.ok_neg & (a.g_neg > 1e-250))
        for x, y in itertools.pairwise(usable):
            log_ratio = math.log(a.g_neg[x] / a.g_neg[y])
            expected = (a.s_neg[x] - a.s_neg[y]) / tau
            assert_close(
                log_ratio,
                expected,
                rtol=1e-7,
                atol=1e-6,
                what=f"anchor {i}: log gradient ratio of negatives {x}, {y}",
            )


def check_weights_uniform_at_large_temperature(anchors: list[AnchorGradients], tau: float) -> None:
    """Negative weights r_j = g_j / sum(g) lie in [e^{-2/tau}, e^{2/tau}] / K (uniform limit)."""
    for i, a in enumerate(anchors):
        if not a.ok_neg.all() or a.s_neg.size == 0:
            continue
        r = a.g_neg / a.g_neg.sum()
        count = a.s_neg.size
        low, high = math.exp(-2.0 / tau) / count, math.exp(2.0 / tau) / count
        assert np.all(r >= low * (1 - 1e-9)) and np.all(r <= high * (1 + 1e-9)), (
            f"anchor {i}: weights {r} not within [{low}, {high}] at tau={tau}"
        )


# --- value-level checks -----------------------------------------------------------------------


def two_view_similarity_rows(sample: SampleInput) -> tuple[np.ndarray, np.ndarray]:
    """(positive similarity, negative similarities) per anchor of a two-view sample."""
    z = unit(np.concatenate([as_numpy(sample.args[0]), as_numpy(sample.args[1])]))
    s = z @ z.T
    two_n = s.shape[0]
    n = two_n // 2
    pos = np.array([s[i, (i + n) % two_n] for i in range(two_n)])
    negs = np.array(
        [[s[i, j] for j in range(two_n) if j not in (i, (i + n) % two_n)] for i in range(two_n)]
    )
    return pos, negs


def check_zero_temperature_hinge(loss: Loss, sample: SampleInput) -> None:
    """hinge <= tau L_i <= hinge + tau log(M), hinge = max(max_neg s - s_pos, 0) (Eq. 6)."""
    pos, negs = two_view_similarity_rows(sample)
    hinge = np.maximum(negs.max(axis=1) - pos, 0.0)
    terms = negs.shape[1] + 1
    for tau in (1e-2, 1e-3):
        tl = tau * as_numpy(per_anchor(loss, with_kwargs(sample, temperature=tau)))
        assert np.all(tl >= hinge - 1e-9), f"tau={tau}: tau*L {tl} below hinge {hinge}"
        assert np.all(tl <= hinge + tau * math.log(terms) + 1e-9), (
            f"tau={tau}: tau*L {tl} above hinge + tau log M {hinge + tau * math.log(terms)}"
        )


def check_view_swap_symmetry(loss: Loss, sample: SampleInput, tol) -> None:
    """L(z1, z2) = L(z2, z1) for the symmetric two-view losses."""
    z1, z2 = sample.args[:2]
    tau = sample.kwargs.get("temperature")
    a = float(loss(z1, z2, **sample.kwargs))
    b = float(loss(z2, z1, **sample.kwargs))
    assert_close(a, b, rtol=tol.rtol, atol=tol.atol_for(tau), what="view swap")


def check_permutation_equivariance(loss: Loss, sample: SampleInput, perm, tol) -> None:
    """Permuting the samples of both views permutes the per-anchor losses the same way."""
    z1, z2 = sample.args[:2]
    p = torch.as_tensor(perm)
    base = as_numpy(per_anchor(loss, sample))
    moved = as_numpy(per_anchor(loss, SampleInput((z1[p], z2[p]), sample.kwargs)))
    n = z1.shape[0]
    index = np.concatenate([np.asarray(perm), n + np.asarray(perm)])
    tau = sample.kwargs.get("temperature")
    assert_close(
        moved,
        base[index],
        rtol=tol.rtol,
        atol=tol.atol_for(tau),
        what="per-anchor losses under a batch permutation",
    )


def check_rotation_invariance(loss: Loss, sample: SampleInput, rotation: np.ndarray, tol) -> None:
    """Rotating every embedding by one orthogonal matrix leaves the loss unchanged."""
    q = torch.as_tensor(rotation, dtype=sample.args[0].dtype)
    rotated = tuple(
        a @ q if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in sample.args
    )
    tau = sample.kwargs.get("temperature")
    assert_close(
        float(loss(*rotated, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=tol.rtol,
        atol=tol.atol_for(tau),
        what="global rotation",
    )


def check_rescaling_invariance(
    loss: Loss, sample: SampleInput, arg: int, row: int, factor: float, tol
) -> None:
    """Multiplying one embedding row by a positive factor leaves the loss unchanged."""
    args = list(sample.args)
    scaled = args[arg].clone()
    scaled[row] = scaled[row] * factor
    args[arg] = scaled
    tau = sample.kwargs.get("temperature")
    assert_close(
        float(loss(*args, **sample.kwargs)),
        float(sample.call(loss)),
        rtol=tol.rtol,
        atol=tol.atol_for(tau),
        what=f"rescaling row {row} by {factor:g}",
    )


def check_finite_value_and_gradient(loss: Loss, sample: SampleInput) -> None:
    """The loss and its gradient with respect to every floating input are finite."""
    leaves = sample.to(requires_grad=True)
    value = leaves.call(loss)
    assert torch.isfinite(value).all(), f"non-finite value {value} for {sample.summary()}"
    inputs = [leaves.args[i] for i in leaves.floating_indices()]
    grads = torch.autograd.grad(value.sum(), inputs, allow_unused=True)
    for i, g in zip(leaves.floating_indices(), grads, strict=True):
        assert g is not None, f"input {i} receives no gradient"
        assert torch.isfinite(g).all(), f"non-finite gradient for input {i}: {sample.summary()}"


def violates(
    check: Callable[[Callable[..., object], object], None],
    fn: Callable[..., object],
    strategy: st.SearchStrategy,
    *,
    max_examples: int = 30,
) -> bool:
    """True when some drawn sample makes ``check(fn, sample)`` fail an assertion.

    The runner of every mutation battery: a deliberately broken ``fn`` must make some check
    fail, and the reference must make none fail.  Derandomized (the same examples on every
    run, whatever the Hypothesis profile) and stopped at the first failing example without
    shrinking it: a mutant only has to be caught, not explained.  Any exception other than
    ``AssertionError`` is a bug in the check (or a crash of ``fn``) and propagates.
    """

    @settings(
        max_examples=max_examples,
        database=None,
        derandomize=True,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(strategy)
    def run(sample: object) -> None:
        check(fn, sample)

    try:
        run()
    except AssertionError:
        return True
    return False
