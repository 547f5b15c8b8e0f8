"""The training recipe options: gradient clipping, the gradient-norm peak, non-finite aborts,
learned-temperature bounds, and the collapse diagnostics of every contrastive run."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from amcl_lab.amcl import PairTemperature, ScalarTemperature
from amcl_lab.engine import HeldOut, Objective, TrainConfig, build_network, train
from amcl_lab.engine.batches import cached_dataset
from amcl_lab.engine.build import build_optimisation
from amcl_lab.engine.evaluation import (
    COLLAPSE_NEGATIVE_COSINE,
    DIAGNOSTIC_ROWS,
    collapse_diagnostics,
)
from amcl_lab.engine.loop import train_step

TINY = TrainConfig(
    encoder="mlp",
    width=16,
    proj_hidden=16,
    proj_dim=8,
    batch_size=32,
    steps=4,
    eval_every=2,
    checkpoint_every=2,
    probe_steps=5,
    knn_k=10,
    augment="ab",
    crop_min_scale=0.5,
    device="cpu",
)


def _one_step(config: TrainConfig) -> tuple[dict, dict, float]:
    """Weights before and after one train_step of ``config``, and the step's gradient norm."""
    split = cached_dataset(config.dataset, config.data_dir)
    torch.manual_seed(config.seed)
    network = build_network(config, split)
    objective = Objective(config, network=network)
    opt = build_optimisation(config, network, objective, len(split.train), split.num_classes)
    before = {k: t.detach().clone() for k, t in network.named_parameters()}
    x = split.train.batch(torch.arange(config.batch_size))
    views = torch.stack([x, x.flip(-1)])
    _, norm = train_step(network, objective, opt, views, split.train.labels[:32], None, 0)
    return before, {k: t.detach() for k, t in network.named_parameters()}, norm


PLAIN_SGD = replace(TINY, momentum=0.0, weight_decay=0.0, lr=0.5, schedule="constant")


def test_clipping_bounds_the_update_to_lr_times_the_clip():
    """With plain SGD the update is -lr * g: clipping the global norm to c bounds it by lr * c."""
    before, after, norm = _one_step(PLAIN_SGD)
    step = math.sqrt(sum(float((after[k] - before[k]).pow(2).sum()) for k in before))
    assert step > 0
    assert step == pytest.approx(PLAIN_SGD.lr * norm, rel=1e-5)  # unclipped: the whole g
    clip = norm / 10
    before, after, norm_c = _one_step(replace(PLAIN_SGD, grad_clip=clip))
    clipped = math.sqrt(sum(float((after[k] - before[k]).pow(2).sum()) for k in before))
    assert norm_c == pytest.approx(norm)  # the reported norm is the one before clipping
    assert clipped == pytest.approx(PLAIN_SGD.lr * clip, rel=1e-4)


def test_a_clip_above_the_norm_changes_nothing():
    before, plain, norm = _one_step(PLAIN_SGD)
    _, loose, _ = _one_step(replace(PLAIN_SGD, grad_clip=10 * norm))
    for key in plain:
        assert torch.allclose(plain[key], loose[key], rtol=0, atol=1e-7), key
    assert before.keys() == plain.keys()


def test_the_peak_gradient_norm_is_recorded_after_every_stretch_of_steps():
    history = train(TINY).history
    assert "grad_norm_peak" not in history[0]  # nothing happened before step 0
    peaks = [r["grad_norm_peak"] for r in history[1:]]
    assert len(peaks) == 2 and all(p > 0 and math.isfinite(p) for p in peaks)


def test_a_non_finite_gradient_aborts_before_the_update(monkeypatch):
    """A finite loss whose gradient is NaN (d sqrt|x - x0| at x0, times 0) stops the run."""
    original, calls = Objective.forward, []

    def poisoned(self, out, views, labels, keys=None):
        loss = original(self, out, views, labels, keys)
        calls.append(1)
        if len(calls) == 2:  # the step after step 0
            z = out.embeddings[0, 0, 0]
            loss = loss + 0.0 * (z - z.detach()).abs().sqrt()
        return loss

    monkeypatch.setattr(Objective, "forward", poisoned)
    weights = {}
    with pytest.raises(FloatingPointError, match=r"at step 1: the gradient norm is nan"):
        result = train(replace(TINY, steps=3, eval_every=0), tag="x")
        weights = result.network.state_dict()
    assert weights == {}


def test_learned_temperatures_take_the_configured_bounds():
    config = replace(TINY, loss="amcl_nt_xent", heads=3, tau_min=0.05, tau_max=1.5)
    temperature = Objective(config).pair_temperature
    assert isinstance(temperature, PairTemperature)
    assert (temperature.tau_min, temperature.tau_max) == (0.05, 1.5)
    with pytest.raises(ValueError, match="tau_min must be < tau_max"):
        replace(config, tau_min=2.0, tau_max=1.0)
    assert Objective(replace(TINY, loss="amcl_barlow_twins", heads=3)).pair_temperature is None


def _held(a: torch.Tensor, b: torch.Tensor) -> HeldOut:
    return HeldOut(a, a, torch.zeros(a.shape[0], dtype=torch.long), lambda: torch.stack([a, b]))


def test_collapse_diagnostics_match_a_numpy_computation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 6, generator=g, dtype=torch.float64)
    b = a + 0.3 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    out = collapse_diagnostics(_held(a, b))
    na, nb = a.numpy(), b.numpy()
    na, nb = na / np.linalg.norm(na, axis=1)[:, None], nb / np.linalg.norm(nb, axis=1)[:, None]
    cos = na @ nb.T
    assert out["diag_pos_cosine"] == pytest.approx(np.trace(cos) / 40, abs=1e-12)
    negatives = (cos.sum() - np.trace(cos)) / (40 * 39)
    assert out["diag_neg_cosine"] == pytest.approx(negatives, abs=1e-12)
    sv = np.linalg.svd(a.numpy() - a.numpy().mean(0), compute_uv=False)
    p = sv / sv.sum()
    assert out["diag_embedding_rank"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)
    assert out["collapsed"] == 0.0


def test_collapse_is_flagged_by_the_negative_cosine_or_the_rank():
    g = torch.Generator().manual_seed(1)
    direction = torch.randn(1, 8, generator=g, dtype=torch.float64)
    cone = direction + 0.05 * torch.randn(50, 8, generator=g, dtype=torch.float64)
    out = collapse_diagnostics(_held(cone, cone))
    assert out["diag_neg_cosine"] > COLLAPSE_NEGATIVE_COSINE and out["collapsed"] == 1.0
    line = torch.randn(50, 1, generator=g, dtype=torch.float64) * torch.ones(1, 8)
    line = line + torch.tensor([[3.0] * 8])  # all on one ray: rank 1
    assert collapse_diagnostics(_held(line, line))["collapsed"] == 1.0
    same = torch.ones(10, 8, dtype=torch.float64)
    assert collapse_diagnostics(_held(same, same))["diag_embedding_rank"] == 0.0


def test_only_the_first_rows_enter_the_pair_diagnostics():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(DIAGNOSTIC_ROWS + 5, 4, generator=g, dtype=torch.float64)
    tail = a.clone()
    tail[DIAGNOSTIC_ROWS:] = 1e3  # beyond the first rows: must not matter
    assert collapse_diagnostics(_held(a, a))["diag_pos_cosine"] == pytest.approx(1.0)
    first = collapse_diagnostics(_held(a, a))["diag_neg_cosine"]
    assert collapse_diagnostics(_held(a, tail))["diag_neg_cosine"] == pytest.approx(first)


def test_saturated_temperatures_are_counted_at_the_bound():
    temperature = PairTemperature(4, hidden=8, tau_min=0.01, tau_max=1.0).double()
    with torch.no_grad():  # a huge positive score: every pair at tau_min
        temperature.phi[2].weight.zero_()
        temperature.phi[2].bias.fill_(100.0)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(20, 4, generator=g, dtype=torch.float64)
    out = collapse_diagnostics(_held(a, a), temperature)
    assert out["tau_at_bound"] == 1.0
    assert out["tau_pos_min"] == pytest.approx(0.01) and out["tau_neg_mean"] == pytest.approx(0.01)
    with torch.no_grad():  # score 0: every pair at the midpoint, none at a bound
        temperature.phi[2].bias.zero_()
    out = collapse_diagnostics(_held(a, a), temperature)
    assert out["tau_at_bound"] == 0.0 and out["tau_pos_mean"] == pytest.approx(0.505)


def test_contrastive_runs_record_the_diagnostics_and_cross_entropy_does_not():
    record = train(replace(TINY, steps=2, eval_every=0)).final
    for key in ("diag_pos_cosine", "diag_neg_cosine", "diag_embedding_rank", "collapsed"):
        assert key in record
    amcl = train(replace(TINY, loss="amcl_nt_xent", heads=3, steps=2, eval_every=0)).final
    assert {"tau_pos_mean", "tau_neg_min", "tau_at_bound"} <= set(amcl)
    ce = replace(TINY, loss="ce", supervised=True, proj_dim=0, views=1, steps=2, eval_every=0)
    assert "collapsed" not in train(ce).final


def test_the_scalar_control_learns_one_temperature_for_every_pair():
    config = replace(
        TINY, loss="amcl_nt_xent", heads=3, temperature_model="scalar", steps=3, eval_every=0
    )
    result = train(config)
    temperature = result.objective.pair_temperature
    assert isinstance(temperature, ScalarTemperature)
    value = float(temperature.value)
    assert value != pytest.approx(config.temperature, abs=1e-9)  # it was trained
    for key in ("tau_pos_mean", "tau_pos_min", "tau_neg_mean", "tau_median"):
        assert result.final[key] == pytest.approx(value, rel=1e-6)
