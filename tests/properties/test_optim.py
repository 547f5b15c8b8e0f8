"""SAM / ASAM, SAF and MESA against their update rules (Foret et al. 2021; Kwon et al. 2021; Du
et al. 2022; full references in :mod:`amcl_lab.optim`).

Each test is named after the statement it checks; expected values are computed here in
float64 NumPy (or by an explicit plain-optimizer run), never by calling the code under test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from amcl_lab.optim import (
    MESA,
    SAF,
    SAM,
    TrajectoryBuffer,
    ema_update_,
    frozen_bn_stats,
    sam_perturbation,
    trajectory_loss,
)

pytestmark = pytest.mark.props

F64 = torch.float64
seeds = st.integers(0, 2**16)
rhos = st.floats(0.0, 1.0)


def small_net(seed: int, batchnorm: bool = False, momentum: float | None = 0.1) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(3, 5)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(5, momentum=momentum))
    layers += [nn.Tanh(), nn.Linear(5, 2)]
    return nn.Sequential(*layers).double()


def batch(seed: int, n: int = 8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, 2, (n,), generator=g)


def sam_step(model, opt, x, y, *, freeze_bn: bool = True):
    F.cross_entropy(model(x), y).backward()
    opt.first_step(zero_grad=True)
    with frozen_bn_stats(model) if freeze_bn else torch.enable_grad():
        F.cross_entropy(model(x), y).backward()
    opt.second_step(zero_grad=True)


def count_passes(module: nn.Module, counts: dict[str, int], prefix: str) -> None:
    """Count forwards (with or without grad) and backwards reaching the first parameter."""

    def forward_hook(*_):
        key = f"{prefix}_forward_{'grad' if torch.is_grad_enabled() else 'nograd'}"
        counts[key] = counts.get(key, 0) + 1

    def backward_hook(_):
        counts[f"{prefix}_backward"] = counts.get(f"{prefix}_backward", 0) + 1

    module.register_forward_hook(forward_hook)
    first = next(module.parameters())
    if first.requires_grad:
        first.register_post_accumulate_grad_hook(backward_hook)


# --- SAM / ASAM ---------------------------------------------------------------------------------


@given(seed=seeds, steps=st.integers(1, 4), momentum=st.sampled_from([0.0, 0.9]))
def test_rho_zero_reproduces_the_base_optimizer_bitwise(seed, steps, momentum):
    """rho = 0: SAM's trajectory is the base optimizer's, bit for bit."""
    sam_model, plain_model = small_net(seed), small_net(seed)
    sam = SAM(sam_model.parameters(), torch.optim.SGD, rho=0.0, lr=0.1, momentum=momentum)
    plain = torch.optim.SGD(plain_model.parameters(), lr=0.1, momentum=momentum)
    for step in range(steps):
        x, y = batch(seed + step)
        sam_step(sam_model, sam, x, y)
        F.cross_entropy(plain_model(x), y).backward()
        plain.step()
        plain.zero_grad()
    for p, q in zip(sam_model.parameters(), plain_model.parameters(), strict=True):
        assert torch.equal(p, q)


@given(seed=seeds, rho=rhos, adaptive=st.booleans(), eta=st.floats(0.0, 0.1))
def test_ascent_step_has_norm_rho_in_the_sam_or_asam_geometry(seed, rho, adaptive, eta):
    """|w_adv - w| = rho (SAM); |T_w^{-1}(w_adv - w)| = rho, T_w = |w| + eta (ASAM)."""
    model = small_net(seed)
    x, y = batch(seed)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=0.1)
    before = [p.detach().numpy().copy() for p in model.parameters()]
    F.cross_entropy(model(x), y).backward()
    opt.first_step()
    diffs = [p.detach().numpy() - w for p, w in zip(model.parameters(), before, strict=True)]
    if adaptive:
        diffs = [d / (np.abs(w) + eta) for d, w in zip(diffs, before, strict=True)]
    norm = np.sqrt(sum((d**2).sum() for d in diffs))
    assert norm == pytest.approx(rho, rel=1e-9, abs=1e-12)


@given(
    spectrum=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-3.0, 3.0)),
    seed=seeds,
    rho=rhos,
    lr=st.floats(0.01, 1.0),
)
def test_one_sam_sgd_step_on_a_quadratic_has_the_closed_form(spectrum, seed, rho, lr):
    """g_SAM = A(w + rho g/|g|) + b with g = Aw + b; one SGD-SAM step is w - lr g_SAM (7.2)."""
    rng = np.random.default_rng(seed)
    n = spectrum.size
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * spectrum) @ q.T
    b, w0 = rng.standard_normal(n), rng.standard_normal(n)
    w = nn.Parameter(torch.tensor(w0))
    at, bt = torch.tensor(a), torch.tensor(b)
    opt = SAM([w], torch.optim.SGD, rho=rho, lr=lr)
    for stage in (opt.first_step, opt.second_step):
        (0.5 * w @ at @ w + bt @ w).backward()
        stage(zero_grad=True)
    g = a @ w0 + b
    expected = w0 - lr * (a @ (w0 + rho * g / (np.linalg.norm(g) + 1e-12)) + b)
    np.testing.assert_allclose(w.detach().numpy(), expected, rtol=1e-12, atol=1e-12)


@given(seed=seeds, rho=rhos, adaptive=st.booleans())
def test_closure_api_equals_two_call_api(seed, rho, adaptive):
    """step(closure) gives the same weights as first_step / second_step (davda54/sam's API)."""
    a, b = small_net(seed, batchnorm=True), small_net(seed, batchnorm=True)
    kwargs = {"rho": rho, "adaptive": adaptive, "lr": 0.1, "momentum": 0.9}
    opt_a = SAM(a.parameters(), torch.optim.SGD, **kwargs)
    opt_b = SAM(b.parameters(), torch.optim.SGD, **kwargs)
    for step in range(2):
        x, y = batch(seed + step)
        sam_step(a, opt_a, x, y)

        def closure(x=x, y=y):
            with frozen_bn_stats(b):
                loss = F.cross_entropy(b(x), y)
            loss.backward()
            return loss

        F.cross_entropy(b(x), y).backward()
        opt_b.step(closure)
        opt_b.zero_grad()
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("momentum", [0.1, None])
@given(seed=seeds)
def test_bn_statistics_after_a_sam_step_equal_one_plain_forward(momentum, seed):
    """Running mean/var and num_batches_tracked after one SAM step = after one forward (#17)."""
    model = small_net(seed, batchnorm=True, momentum=momentum)
    reference = copy.deepcopy(model)
    x, y = batch(seed)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, opt, x, y)
    with torch.no_grad():
        reference(x)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(model[1], name), getattr(reference[1], name)), name


def test_bn_statistics_are_updated_twice_without_the_context_manager():
    """The pitfall the context manager fixes: without it pass 2 moves the statistics again."""
    model = small_net(0, batchnorm=True)
    reference = copy.deepcopy(model)
    x, y = batch(0)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.5, lr=0.1)
    sam_step(model, opt, x, y, freeze_bn=False)
    with torch.no_grad():
        reference(x)
    assert int(model[1].num_batches_tracked) == 2
    assert not torch.equal(model[1].running_mean, reference[1].running_mean)


def test_sam_step_runs_two_forwards_and_two_backwards():
    """One SAM step = 2 forward + 2 backward passes on the same batch (SAM, Algorithm 1)."""
    model = small_net(0)
    counts: dict[str, int] = {}
    count_passes(model, counts, "model")
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    x, y = batch(0)
    sam_step(model, opt, x, y)
    assert counts == {"model_forward_grad": 2, "model_backward": 2}


@given(
    grads=st.lists(
        hnp.arrays(np.float64, st.integers(1, 4), elements=st.floats(-5, 5)), min_size=1, max_size=4
    ),
    rho=rhos,
)
def test_perturbation_is_rho_times_the_normalised_global_gradient(grads, rho):
    """e = rho g / (|g|_2 + 1e-12) with one norm over all tensors (Foret et al. Eq. 2, p = 2)."""
    flat = np.concatenate(grads)
    expected = rho * flat / (np.linalg.norm(flat) + 1e-12)
    got = np.concatenate(
        [e.numpy() for e in sam_perturbation([torch.tensor(g) for g in grads], rho)]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-300)


# --- SAF / MESA ---------------------------------------------------------------------------------

logit_pairs = st.integers(1, 6).flatmap(
    lambda b: st.integers(1, 7).flatmap(
        lambda c: st.tuples(
            *(hnp.arrays(np.float64, (b, c), elements=st.floats(-20, 20)) for _ in range(2))
        )
    )
)
temperatures = st.floats(0.1, 20.0)


@given(pair=logit_pairs, tau=temperatures, weight=st.floats(0.0, 2.0))
def test_kl_term_is_non_negative(pair, tau, weight):
    """lambda tau^2 KL(p_past || q_now) >= 0 (Du et al. 2022 Eq. 8)."""
    z, past = (torch.tensor(t) for t in pair)
    assert float(trajectory_loss(z, past, tau, weight)) >= -1e-12


@given(pair=logit_pairs, tau=temperatures)
def test_kl_term_and_its_gradient_vanish_when_logits_are_unchanged(pair, tau):
    """Current logits = stored logits: value 0 and gradient 0."""
    z = torch.tensor(pair[0], requires_grad=True)
    loss = trajectory_loss(z, z.detach().clone(), tau, 0.3)
    (grad,) = torch.autograd.grad(loss, z)
    assert abs(float(loss.detach())) <= 1e-12
    assert float(grad.abs().max()) <= 1e-12


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@given(pair=logit_pairs, tau=temperatures)
def test_gradient_is_tau_times_softmax_minus_past_over_batch(pair, tau):
    """d/dz [tau^2 mean_i KL(p_i || softmax(z_i/tau))] = tau (softmax(z/tau) - p)/B."""
    z = torch.tensor(pair[0], requires_grad=True)
    (grad,) = torch.autograd.grad(trajectory_loss(z, torch.tensor(pair[1]), tau, 1.0), z)
    expected = tau * (softmax(pair[0] / tau) - softmax(pair[1] / tau)) / pair[0].shape[0]
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-9, atol=1e-12)


@given(pair=logit_pairs, tau=temperatures, shift=st.floats(-50, 50))
def test_kl_term_is_invariant_to_a_constant_added_to_a_sample_logits(pair, tau, shift):
    """Softmax invariance: adding c to every logit of a row changes nothing."""
    z, past = (torch.tensor(t) for t in pair)
    base = float(trajectory_loss(z, past, tau, 1.0))
    moved = float(trajectory_loss(z + shift, past - shift, tau, 1.0))
    assert moved == pytest.approx(base, rel=1e-9, abs=1e-9)


@given(lag=st.integers(1, 4), epochs=st.integers(1, 9), data=st.data())
def test_ring_buffer_reads_exactly_lag_epochs_back_and_flags_missing_entries(lag, epochs, data):
    """read(i, e) = logits written for i at e - lag; anything else is flagged invalid (7.3).

    Each epoch writes a random subset of the samples (sampler / drop_last), so some targets
    are missing or stale; a dictionary of every write is the independent reference.
    """
    n, c = 6, 3
    buf = TrajectoryBuffer(n, c, lag, dtype=F64)
    written: dict[tuple[int, int], np.ndarray] = {}
    for epoch in range(epochs):
        ids = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n), label="ids")
        if not ids:
            continue
        idx = torch.tensor(ids)
        past, valid = buf.read(idx, epoch)
        for row, i in enumerate(ids):
            expected = written.get((i, epoch - lag))
            assert bool(valid[row]) == (expected is not None), (i, epoch)
            if expected is not None:
                np.testing.assert_array_equal(past[row].numpy(), expected)
        logits = np.random.default_rng(epoch).standard_normal((len(ids), c))
        buf.write(idx, torch.tensor(logits), epoch)
        written.update({(i, epoch): logits[row] for row, i in enumerate(ids)})


def test_writing_before_reading_in_the_same_epoch_is_detected_not_misread():
    """The slot of epoch e is that of e - lag: a write first makes the entry invalid."""
    buf = TrajectoryBuffer(2, 2, lag=2)
    idx = torch.tensor([0, 1])
    buf.write(idx, torch.ones(2, 2), epoch=0)
    buf.write(idx, torch.zeros(2, 2), epoch=2)
    _, valid = buf.read(idx, epoch=2)
    assert not valid.any()


@pytest.mark.parametrize("epoch", [0, 7])
def test_saf_step_is_one_forward_and_one_backward(epoch):
    """SAF adds no pass: a training step is exactly 1 forward + 1 backward (Du et al. Alg. 1)."""
    model = small_net(0)
    saf = SAF(8, 2, lag=3, start_epoch=5)
    counts: dict[str, int] = {}
    count_passes(model, counts, "model")
    x, y = batch(0)
    idx = torch.arange(8)
    saf.buffer.write(idx, torch.randn(8, 2, dtype=F64), epoch - 3 if epoch >= 3 else 0)
    counts.clear()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + saf(logits, idx, epoch)
    loss.backward()
    assert counts == {"model_forward_grad": 1, "model_backward": 1}
    assert (float(loss.detach()) > float(F.cross_entropy(logits, y).detach())) == (epoch >= 5)


@pytest.mark.parametrize("epoch", [0, 7])
def test_mesa_adds_exactly_one_no_grad_teacher_forward_once_active(epoch):
    """MESA: 1 student forward + 1 backward, plus 1 no-grad eval-mode teacher forward when on."""
    model = small_net(0, batchnorm=True)
    mesa = MESA(model, decay=0.9, start_epoch=5)
    counts: dict[str, int] = {}
    count_passes(model, counts, "model")
    count_passes(mesa.teacher, counts, "teacher")
    modes = []
    mesa.teacher.register_forward_hook(lambda m, *_: modes.append(m.training))
    x, y = batch(0)
    logits = model(x)
    (F.cross_entropy(logits, y) + mesa(logits, x, epoch)).backward()
    expected = {"model_forward_grad": 1, "model_backward": 1}
    if epoch >= 5:
        expected["teacher_forward_nograd"] = 1
    assert counts == expected
    assert modes == ([False] if epoch >= 5 else [])


@given(decay=st.floats(0.0, 1.0), seed=seeds)
def test_ema_update_is_beta_v_plus_one_minus_beta_theta_for_params_and_buffers(decay, seed):
    """v <- beta v + (1 - beta) theta for parameters and BN buffers; counters copied (3.5)."""
    student, teacher = small_net(seed, batchnorm=True), small_net(seed + 1, batchnorm=True)
    with torch.no_grad():
        student(batch(seed)[0])  # moves the student's running statistics
    mesa = MESA(teacher, decay=decay)
    before = {k: t.detach().numpy().copy() for k, t in mesa.teacher.state_dict().items()}
    mesa.update(student)
    for key, value in student.state_dict().items():
        got = mesa.teacher.state_dict()[key].numpy()
        if value.dtype.is_floating_point:
            expected = decay * before[key] + (1 - decay) * value.numpy()
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_array_equal(got, value.numpy())


def test_ema_update_matches_formula_on_raw_tensors():
    """ema_update_ alone: floating tensors averaged, integer tensors copied."""
    e = [torch.tensor([1.0, 2.0], dtype=F64), torch.tensor(3)]
    ema_update_(e, [torch.tensor([3.0, -2.0], dtype=F64), torch.tensor(5)], decay=0.25)
    assert e[0].tolist() == [0.25 * 1 + 0.75 * 3, 0.25 * 2 - 0.75 * 2] and int(e[1]) == 5


def test_saf_loss_is_cross_entropy_before_start_and_adds_kl_from_start_epoch():
    """Epoch convention: 0-based epochs, term on for epoch >= start_epoch (paper e > E_start)."""
    saf = SAF(4, 3, lag=1, start_epoch=2, weight=1.0, buffer_dtype=F64)
    idx = torch.arange(4)
    logits = [
        torch.randn(4, 3, dtype=F64, generator=torch.Generator().manual_seed(e)) for e in range(4)
    ]
    terms = [float(saf(logits[e], idx, e)) for e in range(4)]
    assert terms[:2] == [0.0, 0.0]
    for e in (2, 3):
        p, q = softmax(logits[e - 1].numpy() / 5.0), softmax(logits[e].numpy() / 5.0)
        expected = 25.0 * np.mean(np.sum(p * np.log(p / q), axis=1))
        assert terms[e] == pytest.approx(expected, rel=1e-10)
