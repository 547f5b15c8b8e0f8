"""SimCLR on the bundled 8x8 digits, evaluated by a linear probe and k-NN (the demo).

The demonstration of the engine: a small CNN is trained with NT-Xent (Chen et al. 2020,
arXiv:2002.05709) on two augmented views per image, and its frozen features are evaluated
before training (random initialisation) and during it.  Data: the ``cpu`` and ``smoke``
presets use scikit-learn's 8x8 digits (1,442 train / 355 test images, bundled in the
wheel): the only real images small enough for several seeds of contrastive training
within two minutes on two CPU cores.  Augmentations are crop (min area 0.25 instead of
0.08: a 0.08-area crop of an 8x8 image is about two pixels), blur, and brightness/contrast
jitter; flips are left out because a mirrored digit can be another digit, and grayscale is
the identity on one channel.  The ``gpu`` preset is SimCLR on CIFAR-10 with the CIFAR-stem
ResNet-18 and the settings of the AMCL authors' released code (Wang et al. 2024,
arXiv:2310.05615: batch 512, SGD lr 0.06, tau 0.5); it needs ``--data-dir``.

Claims: the paper's premise that contrastive pretraining learns features that are better
than those of the same network at initialisation, measured per seed as the accuracy gain
of the linear probe and of the k-NN classifier between step 0 and the last step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from amcl_lab import engine, figures

from . import _claims as claims
from ._protocol import SIMCLR_CIFAR10, Claim, ExperimentConfig, Results, gpu_cifar10

__all__ = ["CLAIMS", "PRESETS", "Config", "plot", "run"]


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """:class:`ExperimentConfig` with the demo's defaults (the ``cpu`` preset)."""

    dataset: str = "digits"
    augment: str = "abd"  # crop, blur, brightness/contrast; no flip for digits
    crop_min_scale: float = 0.25  # a 0.08-area crop of 8x8 is ~2 pixels
    encoder: str = "cnn"
    width: int = 16
    proj_hidden: int = 128
    proj_dim: int = 64
    loss: str = "nt_xent"
    temperature: float = 0.2  # 0.5 (SimCLR's CIFAR value) learns slower on 8x8 digits
    batch_size: int = 256
    lr: float = 0.3
    steps: int = 300  # ~53 epochs of the 1,442 training images
    eval_every: int = 50
    checkpoint_every: int = 50
    seeds: int = 3
    threads: int = 1  # small CNN: one thread is fastest on shared cores


def smoke() -> Config:
    """A few steps of a tiny network: exercises every code path in seconds."""
    return Config(
        width=4,
        proj_hidden=16,
        proj_dim=8,
        batch_size=64,
        steps=6,
        eval_every=3,
        checkpoint_every=3,
        probe_steps=10,
        knn_k=20,
    )


def cpu() -> Config:
    """The README's main job: three seeds, well under two minutes on two CPU cores."""
    return Config()


def gpu() -> Config:
    """SimCLR on CIFAR-10, CIFAR-stem ResNet-18, the AMCL authors' released code settings."""
    return Config(
        **gpu_cifar10(),
        **SIMCLR_CIFAR10,
        temperature=0.5,
        lr=0.06,
        steps=200 * (50_000 // 512),  # 200 epochs (the papers use 800-1000)
        eval_every=20 * (50_000 // 512),
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Train once per seed; the rows are every evaluation of every seed."""
    rows: list[dict[str, Any]] = []
    for seed in run.seeds:
        result = engine.train(replace(config, seed=seed), run, tag=f"seed{seed}")
        rows += result.rows(dataset=config.dataset)
    return rows


def _gain(metric: str) -> claims.Measure:
    """Measure: ``metric`` at the last step minus at step 0, per seed (points)."""

    def measure(table: pd.DataFrame) -> claims.Effect:
        first = claims.initial(table, metric, same_step=True)
        last = claims.final(table, metric, same_step=True)
        return claims.per_seed(100.0 * (last - first))

    return measure


EVERY_RUN: claims.Condition = {}  # both claims rest on every seed's run: a collapse fails them

CLAIMS = (
    Claim(
        id="probe-gain",
        statement=(
            "Contrastive pretraining yields features on which a linear classifier is more "
            "accurate than on the same network's features at initialisation"
        ),
        source="Chen et al. 2020 (SimCLR), Section 4 linear evaluation protocol",
        effect="linear-probe test accuracy, last step minus step 0 (percentage points)",
        measure=_gain("linear_probe"),
        arms=(EVERY_RUN,),
    ),
    Claim(
        id="knn-gain",
        statement=(
            "Contrastive pretraining makes same-class images nearest neighbours more often "
            "than at initialisation"
        ),
        source="Wu et al. 2018 (k-NN monitor, k = 200, t = 0.1), as used by contrastive2021",
        effect="weighted k-NN test accuracy, last step minus step 0 (percentage points)",
        measure=_gain("knn"),
        arms=(EVERY_RUN,),
    ),
)

_PANELS = (
    ("train_loss", "NT-Xent loss (nats)", figures.POSITIVE),
    ("linear_probe", "probe accuracy (%)", figures.PERCENT),
    ("knn", "k-NN accuracy (%)", figures.PERCENT),
)


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Loss, linear-probe and k-NN accuracy against the training step, seeds as 95 % bands."""
    table = results.table
    with figures.house_style():
        fig, axes = figures.new_figure(3, width="double", aspect=0.9)
        for ax, (metric, label, bounds) in zip(axes[0], _PANELS, strict=True):
            t = table[table["metric"] == metric].dropna(subset=["value"]).copy()
            if metric != "train_loss":
                t["value"] = 100.0 * t["value"]
            figures.seed_band(ax, t, "step", "value", bounds=bounds)
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
        fig.suptitle(figures.title(results, "SimCLR training curves"))
        return figures.save(fig, out_dir / "training_curves")
