"""Every ``gpu`` preset builds and takes two optimisation steps on CPU.

Each experiment's ``gpu`` config gets the smallest overrides a CPU test needs (:data:`SHRINK`:
``steps=2``, one seed, the CPU, a batch of 8, a tiny generated copy of the preset's data set
in its distributed format; the top-k negatives of ``amcl`` and ``amcl_phase`` shrink with the
batch) and is otherwise the preset unchanged: architecture, loss, optimizer, augmentations and
options.  The experiment's own mapping from its config to a training config
(:data:`FIRST`) then gives the training run, and :func:`amcl_lab.engine.train` takes its two
steps with the evaluations at step 0 and 2, so a typo'd option, an unknown data set or a
shape mismatch of a ``gpu`` preset fails here.

A whole ``run()`` over a ``gpu`` grid takes minutes on CPU, so each experiment trains one
condition: the one with the preset's most specific options (``amcl``: the AMCL arm on the
richest augmentation set; ``amcl_phase``: the first cell of the map; ``hardness``: the
hard-negative loss at the lowest temperature; ``projector``: the smallest projector;
``sharpness``: SAF; ``simplex``: SupCon on clean labels; ``temperature``: the lowest
temperature; ``views``: two views on all of the data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from data_files import make_cifar10

from amcl_lab import engine
from amcl_lab.experiments import load, names, resolve_config
from amcl_lab.experiments._amcl import arm_config
from amcl_lab.experiments._protocol import train_config

#: Images per CIFAR training batch (five batches): more than one batch of 8.
PER_BATCH = 4
#: Test images: two per class (the tolerance needs same-class pairs).
TEST_LABELS = tuple(i % 10 for i in range(20))

#: Overrides every CPU run needs: two steps, one seed, the CPU, a small batch.
SHRINK = ("steps=2", "seeds=1", "device=cpu", "batch_size=8")
#: Overrides that must follow the batch: top-k negatives at most 2 * 8 - 2.
FOLLOW_BATCH = {"amcl": ("amcl_k=14",), "amcl_phase": ("topk=14",), "views": ("rows=16",)}


def _hard(module: Any, config: Any) -> engine.TrainConfig:
    options = (*config.loss_options, f"k={module.hard_k(config)}")
    tau = config.grid[0]
    return train_config(config, loss=module.HARD, loss_options=options, temperature=tau)


#: Experiment -> (module, its gpu config) -> the training config of its first condition.
FIRST: dict[str, Callable[[Any, Any], engine.TrainConfig]] = {
    "amcl": lambda m, c: arm_config(c, "amcl", augment=c.augment_sets[-1], seed=c.seed),
    "amcl_phase": lambda m, c: m.cell_config(c, *c.cells[0], c.seed),
    "hardness": _hard,
    "projector": lambda m, c: m.condition(c, min(c.dims), c.beta_times_dim / min(c.dims), c.seed),
    "sharpness": lambda m, c: m.condition(c, "saf", c.seed),
    "simclr_digits": lambda m, c: c,
    "simplex": lambda m, c: m.condition(c, "supcon", 0.0, c.seed),
    "temperature": lambda m, c: dataclasses.replace(c, temperature=c.grid[0]),
    "views": lambda m, c: m.condition(c, 2, 1.0, c.seed),
}

#: The tiny data sets the ``gpu`` presets can name, written in their distributed formats.
WRITERS = {"cifar10": lambda root: make_cifar10(root, PER_BATCH, TEST_LABELS)}


def test_every_experiment_has_a_first_condition():
    assert set(FIRST) == set(names())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for write in WRITERS.values():
        write(root)
    return root


@pytest.mark.parametrize("name", names())
def test_gpu_preset_takes_two_steps_on_cpu(name, data_dir):
    module = load(name)
    preset = module.PRESETS["gpu"]()
    assert preset.dataset in WRITERS, f"no tiny {preset.dataset} is written for the gpu preset"
    overrides = (f"data_dir={data_dir}", *SHRINK, *FOLLOW_BATCH.get(name, ()))
    config = FIRST[name](module, resolve_config(module, name, "gpu", overrides))
    assert (config.encoder, config.width) == (preset.encoder, preset.width)
    result = engine.train(config)
    assert [r["step"] for r in result.history] == [0, 2]
