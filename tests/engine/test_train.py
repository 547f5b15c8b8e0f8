"""The engine: objectives, data order, evaluation, the training loop and run folders."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F

from amcl_lab import losses
from amcl_lab.engine import (
    Objective,
    TrainConfig,
    batch_indices,
    config_dict,
    derive_seed,
    knn_accuracy,
    linear_probe,
    lr_factor,
    open_run,
    train,
)
from amcl_lab.io import atomic_path
from amcl_lab.models import NetworkOutput

# A tiny, fast training run on the bundled digits.
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


def _embeddings(heads, views, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(heads, views * n, d, generator=g, dtype=torch.float64)


def _out(z, logits=None):
    return NetworkOutput(torch.zeros(z.shape[1], 1), z, logits)


# --- objectives ----------------------------------------------------------------------------


def test_supcon_with_instance_labels_is_nt_xent():
    """Khosla et al.: SupCon with one positive per anchor equals NT-Xent (view-major rows)."""
    z = _embeddings(1, 2, 6, 5)
    cfg = TrainConfig(loss="supcon", temperature=0.3)
    value = Objective(cfg)(_out(z), 2, torch.zeros(6, dtype=torch.int64))
    torch.testing.assert_close(value, losses.nt_xent(z[0, :6], z[0, 6:], 0.3))


def test_pairwise_losses_average_view_pairs_and_sum_heads():
    z = _embeddings(2, 3, 5, 4)
    value = Objective(TrainConfig(temperature=0.7, views=3, heads=2))(_out(z), 3, None)
    per_view = z.reshape(2, 3, 5, 4)
    pairs = list(itertools.combinations(range(3), 2))
    expected = sum(
        losses.nt_xent(per_view[h, a], per_view[h, b], 0.7) for h in range(2) for a, b in pairs
    ) / len(pairs)
    torch.testing.assert_close(value, expected)


def test_supervised_supcon_uses_class_labels_and_loss_options():
    z = _embeddings(1, 2, 6, 5)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    cfg = TrainConfig(loss="supcon", supervised=True, temperature=0.2, loss_options=("variant=in",))
    value = Objective(cfg)(_out(z), 2, labels)
    features = z[0].reshape(2, 6, 5).transpose(0, 1)
    torch.testing.assert_close(value, losses.supcon(features, labels, 0.2, variant="in"))


def test_multiview_loss_sees_images_by_views():
    z = _embeddings(1, 4, 8, 3)
    value = Objective(TrainConfig(loss="multiview_barlow_twins", views=4))(_out(z), 4, None)
    views = z[0].reshape(4, 8, 3).transpose(0, 1)
    torch.testing.assert_close(value, losses.multiview_barlow_twins(views))


def test_amcl_objective_learns_a_pair_temperature():
    cfg = TrainConfig(loss="amcl_nt_xent", heads=3, proj_dim=4, loss_options=("beta=0.01",))
    objective = Objective(cfg).double()
    z = _embeddings(3, 2, 5, 4)
    value = objective(_out(z), 2, None)
    rows = z  # (C, 2N, D): [view 1; view 2]
    tau = objective.amcl.temperature.pairwise(rows, rows)
    expected = losses.amcl_nt_xent(z[:, :5], z[:, 5:], tau, beta=0.01)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert all(p.grad is not None for p in objective.parameters())
    constant = Objective(dataclass_replace(cfg, adaptive_temperature=False, temperature=0.4))
    assert not list(constant.parameters())


def dataclass_replace(cfg, **changes):
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def test_cross_entropy_covers_every_view():
    logits = torch.randn(6, 3, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1])
    cfg = TrainConfig(loss="ce", supervised=True, proj_dim=0)
    value = Objective(cfg)(NetworkOutput(torch.zeros(6, 1), None, logits), 2, labels)
    torch.testing.assert_close(value, F.cross_entropy(logits, labels.repeat(2)))


def test_bad_loss_options_name_the_valid_keywords():
    with pytest.raises(ValueError, match=r"bad loss_options for 'nt_xent'.*decoupled"):
        Objective(TrainConfig(loss_options=("kappa=3",)))


# --- data order, schedule, seeds -------------------------------------------------------------


def test_batches_walk_a_fresh_permutation_each_epoch():
    n, b = 23, 5  # 4 batches per epoch, 3 images dropped
    epoch0 = torch.cat([batch_indices(n, b, seed=1, step=s) for s in range(4)])
    epoch1 = torch.cat([batch_indices(n, b, seed=1, step=s) for s in range(4, 8)])
    assert epoch0.unique().numel() == 20 and epoch1.unique().numel() == 20
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(batch_indices(n, b, seed=1, step=6), epoch1[10:15])
    assert not torch.equal(batch_indices(n, b, seed=2, step=0), epoch0[:5])
    assert len({derive_seed(0, s, 1) for s in range(100)}) == 100


def test_learning_rate_warms_up_then_follows_a_cosine():
    cfg = TrainConfig(steps=10, warmup_steps=2)
    factors = [lr_factor(s, cfg) for s in range(11)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[-1] == pytest.approx(0.0, abs=1e-12)
    assert factors[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    constant = TrainConfig(steps=10, schedule="constant")
    assert {lr_factor(s, constant) for s in range(10)} == {1.0}


# --- evaluation -----------------------------------------------------------------------------


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    return centres[y] + 0.5 * torch.randn(n, 2, generator=g), y


def test_linear_probe_separates_blobs_and_fails_on_permuted_labels():
    x, y = _blobs(60, 0)
    xt, yt = _blobs(30, 1)
    assert linear_probe(x, y, xt, yt) == 1.0
    assert linear_probe(x, y, xt, (yt + 1) % 3) == 0.0


def test_knn_matches_a_loop_over_test_points():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 4, (40,), generator=g)
    xt, yt = torch.randn(17, 5, generator=g), torch.randint(0, 4, (17,), generator=g)
    k, t = 7, 0.2
    correct = 0
    for i in range(17):
        sims = [float(F.cosine_similarity(xt[i], x[j], dim=0)) for j in range(40)]
        top = sorted(range(40), key=lambda j: -sims[j])[:k]
        votes = [sum(math.exp(sims[j] / t) for j in top if y[j] == c) for c in range(4)]
        correct += int(max(range(4), key=lambda c: votes[c]) == int(yt[i]))
    assert knn_accuracy(x, y, xt, yt, k=k, temperature=t, chunk=5) == pytest.approx(correct / 17)


# --- training ------------------------------------------------------------------------------


def test_train_records_evaluations_and_tidy_rows():
    cfg = dataclass_replace(TINY, geometry=("alignment", "uniformity", "effective_rank"))
    result = train(cfg)
    assert [r["step"] for r in result.history] == [0, 2, 4]
    assert math.isnan(result.history[0]["train_loss"])
    final = result.final
    for key in ("train_loss", "linear_probe", "knn", "alignment", "uniformity", "effective_rank"):
        assert math.isfinite(final[key]), key
    assert 0.0 <= final["linear_probe"] <= 1.0
    rows = result.rows(condition="x")
    assert {"condition", "seed", "step", "epoch", "metric", "value"} == set(rows[0])
    assert {r["metric"] for r in rows} >= {"linear_probe", "knn", "train_loss"}
    again = train(cfg)  # same seed, same numbers (NaN-aware comparison through JSON)
    assert json.dumps(again.history) == json.dumps(result.history)


def test_supervised_training_reports_classifier_accuracy():
    cfg = dataclass_replace(
        TINY, loss="ce", supervised=True, proj_dim=0, views=1, geometry=("simplex",)
    )
    final = train(cfg).final
    assert 0.0 <= final["test_accuracy"] <= 1.0 and 0.0 <= final["train_accuracy"] <= 1.0
    assert math.isfinite(final["simplex_distance"])


def test_amcl_training_runs_with_three_heads():
    cfg = dataclass_replace(TINY, loss="amcl_nt_xent", heads=3, steps=2, eval_every=0)
    result = train(cfg)
    assert math.isfinite(result.final["train_loss"])
    assert result.network.projector.num_heads == 3


def test_a_diverging_loss_stops_training_before_a_checkpoint(tmp_path, monkeypatch):
    run = open_run(tmp_path, "exp", TINY, preset="t", seeds=(0,), run_id="r")
    monkeypatch.setattr(
        Objective,
        "forward",
        lambda self, out, views, labels, keys=None: out.embeddings.sum() * math.nan,
    )
    message = r"train 's' \(seed 0\) at step 0: the loss is nan; the step was not taken"
    with pytest.raises(FloatingPointError, match=message):
        train(TINY, run, tag="s")
    assert not run.checkpoint("s").exists()


def test_weights_overflowed_by_a_huge_learning_rate_are_a_diverged_run_not_a_bad_input():
    """Before: lr=1e30 ended in "nt_xent: z1 contains NaN or inf values", blaming the loss."""
    cfg = dataclass_replace(TINY, lr=1e30, steps=3, eval_every=0)
    message = r"at step 1: the network's outputs are NaN or infinite .*lower the learning rate"
    with pytest.raises(FloatingPointError, match=message):
        train(cfg)


# --- run folders and files -----------------------------------------------------------------


def test_run_folder_records_config_versions_and_refuses_to_overwrite(tmp_path):
    run = open_run(tmp_path, "exp", TINY, preset="p", overrides=["steps=4"], seeds=(0, 1))
    stored = json.loads(run.config_path.read_text())
    assert run.dir.parent == tmp_path / "exp" and run.run_id.startswith("p-")
    assert stored["config"] == config_dict(TINY) and stored["seeds"] == [0, 1]
    assert stored["device"] == "cpu" and stored["overrides"] == ["steps=4"]
    assert stored["versions"]["torch"] == torch.__version__.split("+")[0] or stored["versions"][
        "torch"
    ].startswith(torch.__version__.split("+")[0])
    assert "git_revision" in stored
    with pytest.raises(ValueError, match="already exists; pass --resume"):
        open_run(tmp_path, "exp", TINY, preset="p", seeds=(0,), run_id=run.run_id)
    resumed = open_run(tmp_path, "exp", TINY, preset="p", seeds=(0, 1), resume=True)
    assert resumed.dir == run.dir and resumed.resume
    other = dataclass_replace(TINY, lr=0.5)
    with pytest.raises(ValueError, match=r"no run under .* has this resolved config"):
        open_run(tmp_path, "exp", other, preset="p", seeds=(0,), resume=True)
    with pytest.raises(ValueError, match=r"differing keys: lr \(stored 0.1, now 0.5\)"):
        open_run(tmp_path, "exp", other, preset="p", seeds=(0,), resume=True, run_id=run.run_id)


def test_truncating_metrics_drops_later_steps_and_partial_lines(tmp_path):
    run = open_run(tmp_path, "exp", TINY, preset="p", seeds=(0,), run_id="r")
    for step in (0, 2, 4):
        run.log({"run": "a", "step": step, "value": float("nan")})
        run.log({"run": "b", "step": step})
    with run.metrics_path.open("a") as f:
        f.write('{"run": "a", "st')  # a kill in the middle of a write
    run.truncate_metrics("a", 2)
    lines = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [(r["run"], r["step"]) for r in lines] == [
        ("a", 0),
        ("b", 0),
        ("a", 2),
        ("b", 2),
        ("b", 4),
    ]
    assert lines[0]["value"] is None  # NaN is written as null: standard JSON


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_checkpoint_holds_everything_needed_to_resume(tmp_path):
    run = open_run(tmp_path, "exp", TINY, preset="p", seeds=(0,), run_id="r")
    train(TINY, run, tag="s0")
    state = torch.load(run.checkpoint("s0"), weights_only=True)
    assert state["done"] and state["step"] == 4
    for key in ("network", "objective", "optimizer", "scheduler", "rng", "history", "config"):
        assert key in state
    assert state["scheduler"]["last_epoch"] == 4
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    # a finished checkpoint is returned as is when the run is resumed
    resumed = open_run(tmp_path, "exp", TINY, preset="p", seeds=(0,), run_id="r", resume=True)
    assert json.dumps(train(TINY, resumed, tag="s0").history) == json.dumps(state["history"])


SUPERVISED = dataclass_replace(
    TINY, loss="ce", supervised=True, proj_dim=0, views=1, batch_size=512, steps=8, eval_every=4
)


@pytest.mark.parametrize(
    ("optimizer", "options"),
    [
        ("sgd", ()),
        ("adamw", ()),
        ("sam", ()),
        ("asam", ("eta=0.01",)),
        ("saf", ("lag=1", "start_epoch=1")),
        ("mesa", ("start_epoch=1", "decay=0.9")),
    ],
)
def test_resuming_a_mid_run_checkpoint_reproduces_every_number(tmp_path, optimizer, options):
    """Optimiser, scheduler, SAF buffer and MESA teacher all come back from the checkpoint."""
    cfg = dataclass_replace(SUPERVISED, optimizer=optimizer, optimizer_options=options)
    clean = train(cfg, tag="t")
    run = open_run(tmp_path, "exp", cfg, preset="p", seeds=(0,), run_id="r")
    calls = []

    def crash(held):  # interrupts the step-4 evaluation, after the step-2 checkpoint
        calls.append(held)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {}

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, tag="t", hooks=[crash])
    assert torch.load(run.checkpoint("t"), weights_only=True)["step"] == 2
    resumed = open_run(tmp_path, "exp", cfg, preset="p", seeds=(0,), run_id="r", resume=True)
    result = train(cfg, resumed, tag="t")
    assert json.dumps(result.history) == json.dumps(clean.history)
    for key, tensor in clean.network.state_dict().items():
        assert torch.equal(result.network.state_dict()[key], tensor), key


def test_sharpness_terms_need_a_classifier():
    with pytest.raises(ValueError, match="optimizer 'saf' distils classifier logits"):
        train(dataclass_replace(TINY, optimizer="saf"))
    with pytest.raises(ValueError, match="bad optimizer_options for 'sam'"):
        train(dataclass_replace(SUPERVISED, optimizer="sam", optimizer_options=("radius=1",)))


def test_unlabelled_images_train_but_only_labelled_ones_are_probed(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = torch.Generator().manual_seed(0)

    def images(n):
        return torch.randint(0, 256, (n * 3 * 96 * 96,), generator=rng, dtype=torch.uint8)

    (folder / "train_X.bin").write_bytes(images(4).numpy().tobytes())
    (folder / "train_y.bin").write_bytes(bytes([1, 2, 1, 2]))
    (folder / "test_X.bin").write_bytes(images(2).numpy().tobytes())
    (folder / "test_y.bin").write_bytes(bytes([1, 2]))
    (folder / "unlabeled_X.bin").write_bytes(images(4).numpy().tobytes())
    cfg = dataclass_replace(
        TINY, dataset="stl10_unlabeled", data_dir=str(tmp_path), batch_size=8, steps=2
    )
    result = train(cfg)  # 8 training images, half unlabelled; probes see the 4 labelled ones
    assert 0.0 <= result.final["linear_probe"] <= 1.0
    with pytest.raises(ValueError, match="supervised training needs labels"):
        train(dataclass_replace(cfg, loss="supcon", supervised=True))


def test_training_subset_and_flipped_labels_are_seeded_and_exact():
    from amcl_lab.data import load_digits
    from amcl_lab.engine import training_set

    split = load_digits()
    cfg = dataclass_replace(SUPERVISED, train_fraction=0.5, label_noise=0.3)
    data, clean = training_set(split, cfg)
    assert len(data) == round(0.5 * len(split.train))
    flipped = data.labels != clean
    assert int(flipped.sum()) == round(0.3 * len(data))  # every chosen label really changes
    assert bool((data.labels[flipped] >= 0).all() and (data.labels[flipped] < 10).all())
    again, _ = training_set(split, cfg)
    assert torch.equal(again.images, data.images) and torch.equal(again.labels, data.labels)
    other, _ = training_set(split, dataclass_replace(cfg, seed=1))
    assert not torch.equal(other.images, data.images)
    full, full_clean = training_set(split, SUPERVISED)
    assert full is split.train and full_clean is split.train.labels
    with pytest.raises(ValueError, match="label_noise only affects supervised training"):
        dataclass_replace(TINY, label_noise=0.1)
    with pytest.raises(ValueError, match=r"train_fraction must be in \(0, 1\]"):
        dataclass_replace(TINY, train_fraction=0.0)


def test_train_accuracy_uses_training_labels_and_probes_use_clean_ones():
    from amcl_lab.engine import evaluate, training_set
    from amcl_lab.engine.batches import cached_dataset

    cfg = dataclass_replace(SUPERVISED, steps=20, eval_every=0, lr=0.5, batch_size=128)
    result = train(cfg)
    split = cached_dataset(cfg.dataset, cfg.data_dir)
    device = torch.device("cpu")
    clean = evaluate(result.network, split, cfg, device, 0)
    noisy_cfg = dataclass_replace(cfg, label_noise=1.0)
    noisy = evaluate(
        result.network, split, noisy_cfg, device, 0, (), training_set(split, noisy_cfg)
    )
    assert clean["train_accuracy"] > 0.5
    assert noisy["train_accuracy"] < 1.0 - clean["train_accuracy"] + 1e-6  # every label moved
    for key in ("linear_probe", "knn", "test_accuracy"):
        assert noisy[key] == clean[key], key
