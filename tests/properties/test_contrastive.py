"""Properties of NT-Xent, InfoNCE and the hard/simple losses (Wang & Liu, CVPR 2021).

Each test is named after the statement it checks; the statement and its source are in the
docstring.  The checks themselves live in ``tests/checks.py`` so that the mutation tests can
run them against broken implementations.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from amcl_lab import registry
from amcl_lab.losses import hard_contrastive, info_nce, nt_xent, simple_contrastive
from amcl_lab.samples import SampleInput
from amcl_lab.testing import strategies as ams

import checks
import numpy_reference as ref

pytestmark = pytest.mark.props

F64 = registry.get("nt_xent").tolerance(torch.float64)

# Moderate domain for gradient recovery: similarities are recovered by dividing by 1 - s^2.
two_view = ams.two_view_samples(min_temperature=1e-2, max_temperature=1e2)
queue_samples = ams.query_key_queue_samples(min_temperature=1e-2, max_temperature=1e2)


def _orthogonal(seed: int, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


# --- 1. value agreement with the NumPy transcription (every registered loss) ----------------

NUMPY = {
    "nt_xent": lambda s: ref.nt_xent(*_np(s.args), s.kwargs["temperature"]).mean(),
    "nt_xent_decoupled": lambda s: ref.nt_xent(*_np(s.args), s.kwargs["temperature"], True).mean(),
    "info_nce": lambda s: ref.info_nce(*_np(s.args), s.kwargs["temperature"]).mean(),
    "hard_contrastive": lambda s: ref.hard_contrastive(
        *_np(s.args), s.kwargs["temperature"], s.kwargs.get("k")
    ).mean(),
    "simple_contrastive": lambda s: ref.simple_contrastive(
        *_np(s.args), s.kwargs.get("lam"), s.kwargs.get("k")
    ).mean(),
    "supcon": lambda s: _supcon_ref(s, "out"),
    "supcon_in": lambda s: _supcon_ref(s, "in"),
    "barlow_twins": lambda s: ref.barlow_twins(*_np(s.args), s.kwargs.get("lambda_offdiag", 5e-3)),
    # AMCL (issue 3): the keyword hyperparameters map one to one onto the references
    "amcl_nt_xent": lambda s: ref.amcl_two_view(*_np(s.args), **s.kwargs).mean(),
    "amcl_info_nce": lambda s: ref.amcl_two_view(
        *_np(s.args), **s.kwargs, positive_is_candidate=True
    ).mean(),
    "amcl_moco": lambda s: ref.amcl_moco(*_np(s.args), **s.kwargs).mean(),
    "amcl_simsiam": lambda s: ref.amcl_simsiam(*_np(s.args), s.kwargs.get("beta", 1e-4)).mean(),
    "amcl_barlow_twins": lambda s: ref.amcl_barlow_twins(
        *_np(s.args),
        lam=s.kwargs.get("lambda_offdiag", 5e-3),
        beta=s.kwargs.get("beta", 1e-6),
        omega_dim=s.kwargs.get("omega_dim", "features"),
    ),
}


def _np(args):
    return [None if a is None else a.detach().double().numpy() for a in args]


def _supcon_ref(sample, variant):
    losses, has_pos = ref.supcon(*_np(sample.args), sample.kwargs["temperature"], variant)
    return losses[has_pos].mean()


# Self-supervised losses (VICReg, BYOL/SimSiam, DCL, MoCo v3, DINO, SwAV); their own
# statements are in test_vicreg.py, test_byol.py, test_dcl.py, test_moco_v3.py, test_dino.py
# and test_swav.py.
NUMPY.update(
    {
        "vicreg": lambda s: ref.vicreg(
            *_np(s.args),
            s.kwargs["lambda_invariance"],
            s.kwargs["mu_variance"],
            s.kwargs["nu_covariance"],
            s.kwargs["gamma"],
        ),
        "multiview_vicreg": lambda s: ref.multiview_vicreg(*_np(s.args), **_vicreg_kwargs(s)),
        "negative_cosine": lambda s: ref.negative_cosine(
            *_np(s.args), s.kwargs["convention"]
        ).mean(),
        "dcl": lambda s: ref.dcl(*_np(s.args), s.kwargs["temperature"]).mean(),
        "dclw": lambda s: ref.dcl(
            *_np(s.args), s.kwargs["temperature"], "vmf", s.kwargs["sigma"]
        ).mean(),
        "moco_v3": lambda s: ref.moco_v3(*_np(s.args), s.kwargs["temperature"]),
        "dino": lambda s: ref.dino(
            *_np(s.args), s.kwargs["student_temperature"], s.kwargs["teacher_temperature"]
        ),
        "swav": lambda s: ref.swav(
            *_np(s.args),
            s.kwargs["assigned"],
            s.kwargs["temperature"],
            s.kwargs["epsilon"],
            s.kwargs["iterations"],
        ),
    }
)


def _vicreg_kwargs(sample) -> dict:
    names = {"lambda_invariance": "lam", "mu_variance": "mu", "nu_covariance": "nu"}
    return {names.get(k, k): v for k, v in sample.kwargs.items()}


def test_every_loss_claiming_value_agreement_has_a_numpy_reference():
    """Registry coverage: each loss that claims the 'value' property is checked below."""
    assert set(registry.names("value")) <= set(NUMPY), set(registry.names("value")) - set(NUMPY)


@pytest.mark.parametrize("name", registry.names("value"))
@given(data=st.data())
def test_value_matches_independent_numpy_formula(name, data):
    """The float64 value equals a loop transcription of the paper's formula (rtol 1e-10).

    The absolute floor grows like 1/tau: a loss that is a difference of two numbers of size
    1/tau cannot be more accurate than their rounding.
    """
    spec = registry.get(name)
    sample = data.draw(spec.strategy(dtype=torch.float64))
    actual = float(spec(*sample.args, **sample.kwargs))
    tol = spec.tolerance(torch.float64)
    checks.assert_close(
        actual,
        NUMPY[name](sample),
        rtol=1e-10,
        atol=tol.atol_for(sample.kwargs.get("temperature")),
        what=f"{name} vs NumPy on {sample.summary()}",
    )


# --- 2. hardness-awareness (Wang & Liu Eq. 4-5) ------------------------------------------------


@given(two_view)
def test_negative_gradient_equals_boltzmann_weight_over_tau(sample):
    """dL_i/ds_ij = P_ij / tau for every negative j of NT-Xent (Wang & Liu Eq. 4)."""
    anchors = checks.two_view_gradients(nt_xent, sample)
    checks.check_negative_gradient_is_boltzmann_weight(anchors, sample.kwargs["temperature"])


@given(two_view)
def test_positive_gradient_equals_minus_one_minus_p_pos_over_tau(sample):
    """dL_i/ds_ii = -(1 - P_ii) / tau for NT-Xent (Wang & Liu Eq. 4)."""
    anchors = checks.two_view_gradients(nt_xent, sample)
    checks.check_positive_gradient(anchors, sample.kwargs["temperature"])


@given(two_view)
def test_gradient_ratio_of_two_negatives_is_exp_of_similarity_gap(sample):
    """g_a / g_b = exp((s_a - s_b) / tau): harder negatives are penalised more (Observation 1)."""
    anchors = checks.two_view_gradients(nt_xent, sample)
    checks.check_negative_gradient_ratio(anchors, sample.kwargs["temperature"])


@given(queue_samples)
def test_info_nce_gradients_are_boltzmann_weights(sample):
    """For MoCo's InfoNCE, queue-negative gradients are P_j/tau, the key's is -(1-P_pos)/tau."""
    anchors = checks.queue_gradients(info_nce, sample)
    tau = sample.kwargs["temperature"]
    checks.check_negative_gradient_is_boltzmann_weight(anchors, tau)
    checks.check_positive_gradient(anchors, tau)


@given(ams.hard_negative_samples(min_temperature=1e-2, max_temperature=1e2))
def test_hard_loss_gradient_is_boltzmann_on_hard_set_and_zero_elsewhere(sample):
    """Eq. 8-9: selected negatives get P_ij/tau (softmax over the hard set), excluded ones 0."""
    k = sample.kwargs["k"]
    anchors = checks.two_view_gradients(hard_contrastive, sample)
    assume(_no_near_ties(sample))
    checks.check_negative_gradient_is_boltzmann_weight(anchors, sample.kwargs["temperature"], k)
    checks.check_positive_gradient(anchors, sample.kwargs["temperature"], k)


@given(ams.hard_negative_samples(temperature=False))
def test_simple_loss_gradient_does_not_depend_on_similarity(sample):
    """Eq. 3: every selected negative gets the same gradient lambda (not hardness-aware)."""
    assume(sample.kwargs["k"] is None)
    anchors = checks.two_view_gradients(simple_contrastive, sample)
    for i, a in enumerate(anchors):
        expected = np.full(a.s_neg.shape, 1.0 / a.s_neg.size)
        checks.assert_close(
            a.g_neg[a.ok_neg],
            expected[a.ok_neg],
            rtol=1e-7,
            atol=1e-6,
            what=f"anchor {i}: simple-loss negative gradient",
        )


# --- 3. temperature limits (Eq. 6-7) -------------------------------------------------------------


@given(ams.two_view_samples())
def test_tau_times_loss_tends_to_hinge_as_tau_goes_to_zero(sample):
    """max(s_max - s_pos, 0) <= tau L <= that + tau log(2N-1): tau L -> the hinge (Eq. 6)."""
    checks.check_zero_temperature_hinge(nt_xent, sample)


@given(ams.two_view_samples(min_temperature=1.0, max_temperature=1.0))
def test_negative_weights_tend_to_uniform_as_tau_goes_to_infinity(sample):
    """At tau = 1e3 every negative weight is within exp(+-2/tau)/K of uniform (Eq. 7)."""
    tau = 1e3
    anchors = checks.two_view_gradients(nt_xent, checks.with_kwargs(sample, temperature=tau))
    checks.check_weights_uniform_at_large_temperature(anchors, tau)


@given(ams.two_view_samples(min_temperature=1.0, max_temperature=1.0))
def test_large_temperature_limit_is_the_simple_loss(sample):
    """(M tau/(M-1)) (L - log M) -> L_simple with lambda = 1/(M-1), M = 2N-1 (Eq. 7)."""
    z1, z2 = sample.args
    m = 2 * z1.shape[0] - 1
    simple = float(simple_contrastive(z1, z2))
    for tau in (1e2, 1e3, 1e4):
        rescaled = (m * tau / (m - 1)) * (float(nt_xent(z1, z2, tau)) - math.log(m))
        assert abs(rescaled - simple) <= 2.0 / tau, (tau, rescaled, simple)


# --- 4. invariances ---------------------------------------------------------------------------

_INVARIANT_TWO_VIEW = [
    n for n in registry.names("invariance") if registry.get(n).inputs == ("z1", "z2")
]


def _no_near_ties(sample) -> bool:
    """Hard-negative selection is discontinuous at ties; rounding must not flip it."""
    if sample.kwargs.get("k") is None:
        return True
    _, negs = checks.two_view_similarity_rows(sample)
    gaps = np.diff(np.sort(negs, axis=1), axis=1)
    # ties (within rounding) are kept alike by every implementation; clear gaps are safe
    return bool(np.all((gaps < 1e-15) | (gaps > 1e-11)))


def _draw_two_view(spec, data):
    sample = data.draw(spec.strategy(dtype=torch.float64))
    assume(_no_near_ties(sample))
    return sample


@pytest.mark.parametrize("name", _INVARIANT_TWO_VIEW)
@given(data=st.data())
def test_per_anchor_losses_are_permutation_equivariant(name, data):
    """Permuting the batch (both views alike) permutes the per-anchor losses."""
    spec = registry.get(name)
    sample = _draw_two_view(spec, data)
    perm = data.draw(st.permutations(range(sample.args[0].shape[0])))
    checks.check_permutation_equivariance(spec, sample, perm, spec.tolerance(torch.float64))


@pytest.mark.parametrize("name", _INVARIANT_TWO_VIEW)
@given(data=st.data())
def test_loss_is_invariant_to_a_global_rotation(name, data):
    """Cosine similarities, hence the loss, do not change under z -> zQ with Q orthogonal."""
    spec = registry.get(name)
    sample = _draw_two_view(spec, data)
    q = _orthogonal(data.draw(st.integers(0, 2**32 - 1)), sample.args[0].shape[1])
    checks.check_rotation_invariance(spec, sample, q, spec.tolerance(torch.float64))


@pytest.mark.parametrize("name", _INVARIANT_TWO_VIEW)
@given(data=st.data())
def test_loss_is_invariant_to_rescaling_one_embedding(name, data):
    """Multiplying one row by c in [1e-3, 1e3] changes nothing (inputs are normalised)."""
    spec = registry.get(name)
    sample = _draw_two_view(spec, data)
    arg = data.draw(st.sampled_from((0, 1)))
    row = data.draw(st.integers(0, sample.args[0].shape[0] - 1))
    factor = data.draw(ams.temperatures(min_value=1e-3, max_value=1e3))
    checks.check_rescaling_invariance(spec, sample, arg, row, factor, spec.tolerance(torch.float64))


@pytest.mark.parametrize("name", _INVARIANT_TWO_VIEW)
@given(data=st.data())
def test_two_view_loss_is_symmetric_in_the_views(name, data):
    """L(z1, z2) = L(z2, z1): both views act as anchors."""
    spec = registry.get(name)
    sample = _draw_two_view(spec, data)
    checks.check_view_swap_symmetry(spec, sample, spec.tolerance(torch.float64))


@given(queue_samples, st.data())
def test_info_nce_is_invariant_to_permuting_the_queue(sample, data):
    """The queue is a set of negatives: its order does not matter."""
    q, k, queue = sample.args
    perm = torch.as_tensor(data.draw(st.permutations(range(queue.shape[0]))))
    a = float(info_nce(q, k, queue[perm], **sample.kwargs))
    checks.assert_close(
        a,
        float(sample.call(info_nce)),
        rtol=1e-12,
        atol=F64.atol_for(sample.kwargs["temperature"]),
        what="queue permutation",
    )


@given(queue_samples)
def test_info_nce_does_not_modify_its_inputs(sample):
    """The queue (and query/key) are read-only for the loss."""
    before = [a.clone() for a in sample.args]
    sample.call(info_nce)
    for a, b in zip(sample.args, before, strict=True):
        assert torch.equal(a, b)


# --- 5. reductions and closed forms -------------------------------------------------------------


@given(st.integers(2, 8), st.integers(1, 6), ams.temperatures())
def test_collinear_embeddings_give_log_2n_minus_1(n, d, tau):
    """If every cosine is 1 the softmax is uniform over 2N-1 candidates: L = log(2N-1)."""
    z = torch.ones(n, d, dtype=torch.float64)
    assert math.isclose(float(nt_xent(z, z, tau)), math.log(2 * n - 1), rel_tol=1e-12)


@given(ams.hard_negative_samples())
def test_hard_loss_never_exceeds_nt_xent_and_equals_it_with_all_negatives(sample):
    """L_hard <= L (fewer denominator terms), with equality for k = all negatives."""
    z1, z2 = sample.args
    tau = sample.kwargs["temperature"]
    full = checks.as_numpy(nt_xent(z1, z2, tau, reduction="none"))
    hard = checks.as_numpy(hard_contrastive(z1, z2, tau, k=sample.kwargs["k"], reduction="none"))
    assert np.all(hard <= full + F64.atol_for(tau)), (hard, full)
    everything = checks.as_numpy(
        hard_contrastive(z1, z2, tau, k=2 * z1.shape[0] - 2, reduction="none")
    )
    checks.assert_close(everything, full, rtol=1e-12, atol=F64.atol_for(tau), what="k = all")


@given(ams.two_view_samples())
def test_decoupled_loss_is_below_the_coupled_one_by_the_positive_share(sample):
    """L_dcl = L + log(1 - P_pos) <= L: dropping the positive lowers every anchor's loss."""
    z1, z2 = sample.args
    tau = sample.kwargs["temperature"]
    full = checks.as_numpy(nt_xent(z1, z2, tau, reduction="none"))
    dcl = checks.as_numpy(nt_xent(z1, z2, tau, decoupled=True, reduction="none"))
    assert np.all(dcl <= full + F64.atol_for(tau))


# --- 7. numerical stability --------------------------------------------------------------------

_STABLE = registry.names("stability")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", _STABLE)
@given(data=st.data())
def test_finite_value_and_gradient_over_the_whole_domain(name, dtype, data):
    """tau in [1e-3, 1e3] and row norms in [1e-6, 1e6] give a finite value and gradient."""
    spec = registry.get(name)
    sample = data.draw(spec.strategy(dtype=torch.float64))
    factor = data.draw(st.sampled_from((1e-3, 1.0, 1e3)))  # stretch norms to 1e-6 ... 1e6
    args = tuple(
        a * factor if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in sample.args
    )
    checks.check_finite_value_and_gradient(spec, SampleInput(args, sample.kwargs).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", _STABLE)
@given(data=st.data())
def test_half_precision_inputs_are_computed_in_float32(name, dtype, data):
    """float16/bfloat16 inputs give a finite float32 result, down to tau = 1e-3.

    The gradient of a half-precision input comes back in that dtype, so it is finite
    wherever the exact gradient fits the dtype: entries whose float32 gradient (same rounded
    inputs) exceeds its largest value, about 1/(tau |z|) for a row of tiny norm |z| (2e6 at
    tau = 1e-3, |z| = 1e-3, beyond float16's 65504), overflow by necessity and are not
    checked.
    """
    spec = registry.get(name)
    sample = data.draw(spec.strategy(dtype=torch.float64)).to(dtype)
    value = sample.call(spec)
    assert value.dtype == torch.float32 and torch.isfinite(value).all(), value
    half, wide = sample.to(requires_grad=True), sample.to(torch.float32, requires_grad=True)
    floating = half.floating_indices()
    grads = [
        torch.autograd.grad(s.call(spec).sum(), [s.args[i] for i in floating], allow_unused=True)
        for s in (half, wide)
    ]
    for i, g_half, g_wide in zip(floating, *grads, strict=True):
        assert g_half is not None, f"input {i} receives no gradient"
        fits = g_wide.abs() < torch.finfo(dtype).max
        assert torch.isfinite(g_half[fits]).all(), f"non-finite gradient of input {i}"
