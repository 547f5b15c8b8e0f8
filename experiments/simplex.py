"""SupCon and CE geometry approach the regular simplex; fitting flipped labels: SupCon vs CE.

Graf, Hofer, Niethammer and Kwitt, "Dissecting Supervised Contrastive Learning" (ICML 2021,
arXiv:2102.08817, abstract) prove that SupCon and cross-entropy (CE) are minimised when
every class collapses to one point and the class points form a regular simplex centred at
the origin, report that trained networks get close to it, and find that the iterations
needed to fit partly flipped labels grow superlinearly with the flipped fraction for SupCon
but about linearly for CE (as Zhang et al. 2017 saw).  This experiment trains both losses
(``supervised=true``) at every flipped fraction ``p`` of ``noise_levels`` (exactly round(pN)
labels, each moved to another class drawn uniformly, as the authors' ``NoisyLabels``;
:func:`amcl_lab.engine.training_set`) and records after every ``eval_every`` steps the
held-out geometry (clean labels) of :func:`amcl_lab.metrics.simplex_report` (``simplex_distance``:
relative Frobenius distance of the centred class-mean Gram matrix to the nearest regular
simplex one; ``nc1``: within- over between-class variability; SupCon on its L2-normalised
projections, CE on its encoder features) and ``train_accuracy`` on the labels training used
(CE's classifier; SupCon's nearest class mean, the authors' "explicit linear" head);
``fit_step`` is the first evaluated step at which it reaches ``fit_accuracy``.

Claims (per seed; geometry from the ``label_noise`` runs, fitting from the sweep):
``supcon-simplex`` / ``ce-simplex``: final held-out simplex distance < 0.2 (iid Gaussian class
means of 10 classes: 0.36 in 64 dimensions; initial networks 0.6); ``supcon-collapse`` /
``ce-collapse``: log10(final / initial ``nc1``) < -0.5; ``supcon-fit-superlinear``: the
exponent ``k`` of ``T(p) - T(0) = c p^k`` (``T`` the fit step, fitted on log-log axes) is > 1;
``ce-fit-about-linear``: CE's ``k`` within 1 +- 0.5; ``supcon-fits-slower-with-noise``:
SupCon's ``k`` exceeds CE's.  A seed that does not fit some level gets NaN (inconclusive).

Data.  ``smoke``, ``cpu`` and ``long`` use the bundled 8x8 digits: a random half of the
training images per seed (721), the 355 held-out images for the geometry.  The engine's MLP
(width 128) trains without augmentation (the authors' label-noise protocol), batch 128, SGD
lr 0.1, momentum 0.9, weight decay 1e-4 as in their code, at a *constant* rate, so that the
fit step does not depend on the schedule's length.  SupCon uses one view per image, tau 0.1
(the authors') and a 64-d head.  With ``geometry_steps`` > 0 (``long``) the geometry runs
are trainings of their own, with ``geometry_schedule`` (the authors' cosine option).  ``gpu``
is the authors' CIFAR-10 setting (CIFAR-stem ResNet-18, batch 256, lr 0.1, wd 1e-4, p in
0.0, 0.1, ..., 1.0, evaluation every 500 iterations) with a 40k-iteration constant-rate
budget instead of their decaying 100k.  What each preset found: docs/results.md, 'simplex'.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from amcl_lab import _validation as v
from amcl_lab import engine, figures

from . import _claims as claims
from ._labelnoise import fit_step, geometry_hook
from ._protocol import Claim, ExperimentConfig, Results, gpu_cifar10, train_config

__all__ = ["CLAIMS", "PRESETS", "Config", "fit_exponents", "fit_step", "plot", "run"]

LOSSES = ("supcon", "ce")
SIMPLEX_THRESHOLD = 0.2  # "close to the simplex": relative Gram distance below this
COLLAPSE_THRESHOLD = -0.5  # "collapse": log10(final / initial nc1) below this
LINEAR_MARGIN = 0.5  # "about linear": exponent within 1 +- this


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The ``cpu`` preset.  ``loss``: the SupCon arm (CE: the same network, no projector);
    ``label_noise``: the geometry runs' flipped fraction (0.9: a negative control)."""

    dataset: str = "digits"
    augment: str = ""  # no augmentation (Graf et al.'s label-noise protocol)
    views: int = 1  # one view per image, as in the authors' batches
    train_fraction: float = 0.5  # a random half of the 1,442 training images per seed
    encoder: str = "mlp"
    width: int = 128
    proj_hidden: int = 128
    proj_dim: int = 64  # SupCon's head; the CE arm has none
    loss: str = "supcon"
    supervised: bool = True
    temperature: float = 0.1  # the authors' SupCon temperature
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 1e-4  # the authors' value
    schedule: str = "constant"  # fit steps must not depend on the budget
    steps: int = 2000  # every seed fits the largest flipped fraction (module docstring)
    eval_every: int = 25  # resolution of the fit step
    checkpoint_every: int = 500
    probe_steps: int = 20
    knn_k: int = 20
    noise_levels: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)  # flipped fractions
    fit_accuracy: float = 0.99  # training accuracy that counts as fitted
    geometry_steps: int = 0  # > 0: separate geometry runs this long (0: the sweep's runs)
    geometry_schedule: str = "cosine"  # of the separate geometry runs (Graf et al.'s option)
    geometry_eval_every: int = 500  # evaluations of the separate geometry runs
    seeds: int = 3
    threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        fn = type(self).__name__
        levels = self.noise_levels
        ordered = len(levels) >= 3 and list(levels) == sorted(set(levels))
        if not ordered or levels[0] != 0.0 or levels[-1] > 1.0:
            raise ValueError(
                f"{fn}: noise_levels must be increasing, distinct, in [0, 1], start at 0 and "
                f"hold at least two positive levels (an exponent needs two), got {levels}"
            )
        if not 0.0 < self.fit_accuracy <= 1.0:
            raise ValueError(f"{fn}: fit_accuracy must be in (0, 1], got {self.fit_accuracy}")
        v.check_int(fn, "geometry_steps", self.geometry_steps, low=0)
        v.check_int(fn, "geometry_eval_every", self.geometry_eval_every, low=0)
        v.check_choice(fn, "geometry_schedule", self.geometry_schedule, engine.SCHEDULES)
        if not self.supervised or engine.OBJECTIVES[self.loss].kind != "labels":
            raise ValueError(
                f"{fn}: the contrastive arm needs supervised=true and a SupCon loss "
                f"(supcon, supcon_in), got loss={self.loss!r}, supervised={self.supervised}"
            )

    @property
    def levels(self) -> tuple[float, ...]:
        """Flipped fractions of the sweep's runs (plus the geometry runs' level if shared)."""
        shared = () if self.geometry_steps else (self.label_noise,)
        return tuple(sorted(set(self.noise_levels) | set(shared)))


def condition(config: Config, loss: str, noise: float, seed: int) -> engine.TrainConfig:
    """The config of one training run: arm ``loss`` ("supcon" or "ce"), flipped fraction, seed."""
    arm = {"loss": "ce", "proj_dim": 0} if loss == "ce" else {}
    return train_config(config, label_noise=noise, seed=seed, **arm)


def smoke() -> Config:
    """A small MLP for a few dozen steps: every code path in seconds."""
    return Config(
        width=32,
        proj_hidden=32,
        proj_dim=16,
        batch_size=64,
        steps=40,
        eval_every=10,
        checkpoint_every=40,
        probe_steps=5,
        noise_levels=(0.0, 0.5, 1.0),
    )


def cpu() -> Config:
    """The cpu preset: 30 trainings of an MLP on half of the digits, three seeds."""
    return Config()


def gpu() -> Config:
    """CIFAR-10, CIFAR-stem ResNet-18, the authors' label-noise runs (batch 256, lr 0.1)."""
    return Config(
        **gpu_cifar10(augment="", checkpoint_every=2_000, probe_steps=200),
        train_fraction=1.0,
        proj_hidden=512,
        proj_dim=128,
        batch_size=256,
        steps=40_000,
        eval_every=500,
        knn_k=200,
        noise_levels=tuple(round(0.1 * i, 1) for i in range(11)),
        fit_accuracy=1.0,
    )


def long() -> Config:
    """The ``cpu`` task, 12 seeds, 20,000-step cosine geometry runs (``--workers 2``).

    Geometry: 10x the ``cpu`` steps, the authors' cosine schedule.  Sweep: the ``cpu`` task,
    3,000 steps, 12 seeds (``cpu`` SD of k 0.25: 10 seeds detect k = 1.25 at 80 % power).
    """
    return Config(
        steps=3000,
        checkpoint_every=1000,
        geometry_steps=20_000,
        geometry_eval_every=1000,
        seeds=12,
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "long": long}


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Train both losses at every flipped fraction and seed; rows are every evaluation."""
    rows: list[dict[str, Any]] = []
    separate = config.geometry_steps > 0
    for loss in LOSSES:
        hook = geometry_hook(normalize=loss != "ce")
        runs = [(noise, False) for noise in config.levels]
        if separate:
            runs = [(config.label_noise, True), *runs]
        for noise, geometry_run in runs:
            for seed in run.seeds:
                cfg = condition(config, loss, noise, seed)
                tag = f"{loss}-noise{noise:g}-seed{seed}"
                if geometry_run:
                    changes = {"schedule": config.geometry_schedule, "steps": config.geometry_steps}
                    cfg = train_config(cfg, **changes, eval_every=config.geometry_eval_every)
                    tag = f"{loss}-geometry-noise{noise:g}-seed{seed}"
                hooks = [hook] if geometry_run or not separate else []
                result = engine.train(cfg, run, tag=tag, hooks=hooks)
                labels = {
                    "dataset": config.dataset,
                    "loss": loss,
                    "label_noise": noise,
                    "sweep": not geometry_run and noise in config.noise_levels,
                    "geometry": geometry_run or (not separate and noise == config.label_noise),
                }
                rows += result.rows(**labels)
                last = {k: result.final[k] for k in ("step", "epoch")}
                step = fit_step(result.history, config.fit_accuracy)
                rows.append({**labels, "seed": seed, **last, "metric": "fit_step", "value": step})
    return rows


def _geometry_change(loss: str, metric: str, effect: Callable[[float, float], float]) -> Any:
    """Measure: ``effect(initial, final)`` of ``metric`` in the geometry runs of ``loss``."""

    def measure(table: pd.DataFrame) -> claims.Effect:
        geometry = table[table["geometry"].astype(bool)]
        return claims.over_training(geometry, metric, effect, {"loss": loss})

    return measure


def _log_ratio(initial: float, final: float) -> float:
    return math.log10(final / initial) if initial > 0 and final > 0 else math.nan


def fit_exponents(table: pd.DataFrame, loss: str) -> dict[int, tuple[float, float, float]]:
    """Per seed ``(k, c, T0)`` of ``T(p) = T0 + c p^k`` fitted to the sweep's fit steps.

    :func:`~amcl_lab.experiments._claims.power_law` of the fit step against the flipped
    fraction ``p``; NaN when a level never fitted or ``T(p) <= T0``.
    """
    sweep = table[(table["loss"] == loss) & table["sweep"].astype(bool)]
    return claims.power_law(claims.final(sweep, "fit_step", ["label_noise"]), "label_noise")


def _exponent(loss: str, offset: float = 0.0) -> claims.Measure:
    """Measure: the fitted exponent ``k`` of ``loss`` minus ``offset``, per seed."""
    return lambda t: {s: k - offset for s, (k, _, _) in fit_exponents(t, loss).items()}


SOURCE = "Graf et al. 2021 (ICML, arXiv:2102.08817)"
_SIMPLEX = "final held-out simplex distance of the class means (relative Gram distance)"
_COLLAPSE = "log10(final / initial held-out nc1) (within- over between-class variability)"
_NAMES = {"supcon": "SupCon", "ce": "CE"}


def _geometry_claims(loss: str, source: str) -> tuple[Claim, Claim]:
    """``<loss>-simplex`` (final simplex distance) and ``<loss>-collapse`` (nc1 log ratio)."""
    name = _NAMES[loss]
    return (
        Claim(
            id=f"{loss}-simplex",
            statement=f"{name} {'features' if loss == 'ce' else 'embeddings'} of the classes "
            "approach a regular simplex",
            source=source,
            effect=_SIMPLEX,
            measure=_geometry_change(loss, "simplex_distance", lambda first, last: last),
            direction="less",
            threshold=SIMPLEX_THRESHOLD,
        ),
        Claim(
            id=f"{loss}-collapse",
            statement=f"{name} collapses each class towards one point",
            source=f"{SOURCE}, abstract",
            effect=_COLLAPSE,
            measure=_geometry_change(loss, "nc1", _log_ratio),
            direction="less",
            threshold=COLLAPSE_THRESHOLD,
        ),
    )


_FITTING = f"{SOURCE}, abstract and the label-noise experiments (flipped fraction p = 0 to 1)"
CLAIMS = (
    *_geometry_claims("supcon", f"{SOURCE}, abstract and Section 2.3"),
    *_geometry_claims("ce", f"{SOURCE}, abstract (the cross-entropy counterpart of the bound)"),
    Claim(
        id="supcon-fit-superlinear",
        statement=(
            "The iterations SupCon needs to fit the training set grow superlinearly with the "
            "fraction of flipped labels"
        ),
        source=_FITTING,
        effect="exponent k of T(p) - T(0) = c p^k (fit steps vs flipped fraction)",
        measure=_exponent("supcon"),
        direction="greater",
        threshold=1.0,
        bootstrap=True,
    ),
    Claim(
        id="ce-fit-about-linear",
        statement=(
            "The iterations CE needs to fit the training set grow about linearly with the "
            "fraction of flipped labels"
        ),
        source=f"{SOURCE}, abstract (after Zhang et al. 2017, arXiv:1611.03530, Fig. 1c)",
        effect=f"CE exponent k minus 1 (about linear: within +-{LINEAR_MARGIN:g})",
        measure=_exponent("ce", offset=1.0),
        direction="within",
        margin=LINEAR_MARGIN,
        expected=0.0,  # k = 1
        bootstrap=True,
    ),
    Claim(
        id="supcon-fits-slower-with-noise",
        statement="SupCon's fitting time grows faster with flipped labels than CE's",
        source=_FITTING,
        effect="exponent k, SupCon minus CE",
        measure=lambda t: claims.combine(
            lambda s, c: s - c, _exponent("supcon")(t), _exponent("ce")(t)
        ),
        bootstrap=True,
    ),
)


# --- figures ------------------------------------------------------------------------------------


def _palette() -> dict[str, Any]:
    return dict(zip(_NAMES.values(), sns.color_palette(), strict=False))


def _geometry_figure(results: Results, out_dir: Path) -> list[Path]:
    table = results.table
    t = table[table["geometry"].astype(bool)].copy()
    t["loss"] = t["loss"].map(_NAMES)
    noise = sorted(t["label_noise"].unique())
    panels = (
        ("simplex_distance", "simplex distance", figures.POSITIVE),
        ("nc1", "nc1 (within / between)", figures.POSITIVE),
        ("train_accuracy", "train accuracy (%)", figures.PERCENT),
    )
    with figures.house_style():
        palette = _palette()
        fig, axes = figures.new_figure(len(panels), width="double", aspect=0.95)
        for ax, (metric, label, bounds) in zip(axes[0], panels, strict=True):
            m = t[t["metric"] == metric].dropna(subset=["value"]).copy()
            if metric == "train_accuracy":
                m["value"] = 100.0 * m["value"]
            if metric == "nc1":
                ax.set_yscale("log")  # before the band, so the limits are autoscaled on it
            figures.seed_band(
                ax, m, "step", "value", hue="loss", markers=False, palette=palette, bounds=bounds
            )
            if metric == "simplex_distance":
                line = {"color": "0.4", "linestyle": ":", "linewidth": 0.8}
                figures.reference_line(ax, SIMPLEX_THRESHOLD, **line)
            ax.set_xlabel("training step")
            ax.set_ylabel(label)
        figures.shared_legend(fig, axes)
        flipped = ", ".join(map(str, noise))
        fig.suptitle(figures.title(results, f"held-out geometry (flipped fraction {flipped})"))
        return figures.save(fig, out_dir / "geometry_over_training")


def _fit_figure(results: Results, out_dir: Path) -> list[Path]:
    table = results.table
    t = table[(table["metric"] == "fit_step") & table["sweep"].astype(bool)].copy()
    t["loss"] = t["loss"].map(_NAMES)
    grid = np.linspace(0.0, float(t["label_noise"].max()), 101)
    with figures.house_style():
        palette = _palette()
        fig, axes = figures.new_figure(1, width="single", aspect=0.8)
        ax = axes[0, 0]
        figures.seed_band(
            ax, t, "label_noise", "value", hue="loss", palette=palette, bounds=figures.POSITIVE
        )
        for loss, name in _NAMES.items():
            fits = [f for f in fit_exponents(table, loss).values() if math.isfinite(f[0])]
            if not fits:
                continue
            k, c, t0 = (float(np.mean(x)) for x in zip(*fits, strict=True))
            label = f"{name} fit: k = {figures.ci_text([f[0] for f in fits])}"
            ax.plot(grid, t0 + c * grid**k, color=palette[name], linestyle="--", label=label)
        if not np.isfinite(t["value"].to_numpy(dtype=float)).any():
            last = int(table.loc[table["sweep"].astype(bool), "step"].max())
            note = f"no run fitted its labels\nwithin its {last:,} steps:\nno fit step to show"
            ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center")
            ax.set_xlim(0.0, grid[-1])
            ax.set_yticks([])
        ax.set_xlabel("fraction of flipped labels")
        ax.set_ylabel("iterations to fit the training set")
        figures.shared_legend(fig, axes)
        fig.suptitle(figures.title(results, "iterations to fit; dashed: T(0) + c p^k"))
        return figures.save(fig, out_dir / "fit_vs_noise")


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Geometry over training (geometry runs) and iterations to fit vs flipped fraction."""
    return _geometry_figure(results, out_dir) + _fit_figure(results, out_dir)
