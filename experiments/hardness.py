"""Hardness awareness: negative weights concentrate as tau falls; the hard loss flattens uniformity.

Wang & Liu (CVPR 2021, arXiv:2012.09740, Eqs. 4-9 and Table 1) show that the contrastive
loss weights each negative's gradient by a Boltzmann distribution
:math:`r_i(s_{ij}) \\propto e^{s_{ij}/\\tau}` (Eq. 5) whose entropy shrinks as tau
decreases, so a small tau concentrates the penalty on the hardest negatives; and that an
explicit hard contrastive loss (Eq. 9: the denominator keeps only the top alpha fraction of
negatives) gives that behaviour at any tau: in Table 1 its uniformity stays at the small-tau
value (3.86-3.89 on CIFAR-10 for tau from 0.07 to 1.0) while the ordinary loss's drops from
3.86 to 2.96.  This experiment trains, for every tau of Table 1 (0.07, 0.3, 0.7, 1.0) and
every seed, the ordinary loss (:func:`amcl_lab.losses.nt_xent`) and the hard loss
(:func:`amcl_lab.losses.hard_contrastive` with ``k = alpha * (2B - 2)``, the paper's upper
alpha quantile of the negatives (Eq. 9) as ``k = alpha * #negatives`` with the 2B - 2
in-batch negatives of a batch of B images), with :func:`amcl_lab.engine.train`.  On the
held-out split it measures the uniformity and tolerance of the embeddings and, for the
ordinary loss, the per-anchor weights :func:`amcl_lab.metrics.negative_weights` of two
augmented views of every held-out image at the model's own training tau (so the weights are
the ones training applied, on a model trained at that tau: their entropy mixes the explicit
1/tau with the geometry the tau produced, and is not fixed by the paper's monotonicity
statement alone).

Claims (effects per seed, computed from the results table):

* ``weights-concentrate-as-tau-falls`` (Eq. 5, Section 3.2: the entropy of the weights
  decreases with tau, Fig. 3): Spearman's rank correlation between tau and the mean entropy
  of the anchors' negative weights, for the ordinary loss; the claim is a positive
  correlation.  The table also holds the effective number of negatives (inverse Simpson
  index) and the share of the weight on the k hardest negatives, which the figure draws per
  tau.
* ``hard-loss-flattens-uniformity`` (Table 1, Figs. 6-7): the least-squares slope of the
  uniformity :math:`-L_{uniformity}` against log10 tau for the hard loss minus that of the
  ordinary loss, in nats per decade of tau (the ordinary loss's slope is negative; a flat
  hard loss makes the difference positive).
* ``hard-loss-uniform-at-large-tau`` (Table 1, hard 1.0 against ordinary 1.0): at the
  largest tau of the grid, the hard loss's uniformity minus the ordinary loss's, in nats.

``hard_fraction = 1`` keeps every negative, which makes the hard loss exactly NT-Xent (the
same computation, bit for bit): both hard-loss claims then measure an effect of exactly
zero and are not reproduced, the broken condition the tests run.

Data.  ``cpu`` trains on the bundled 8x8 digits (1,442 train / 355 test images) with the
engine's two-layer MLP encoder: the claims concern the geometry of the embedding and the
gradient weights, not accuracy, so the cheapest real images will do, and the experiment
needs twice as many training runs as the temperature sweep (two losses per tau).  Batches
of 512 images give 1,022 in-batch negatives, of which the hard loss keeps k = 84 (alpha =
0.0819, the paper's 4,095 of CIFAR-10's 50,000); the weights are measured over all 708
other held-out views.  Augmentations are crop, blur and brightness/contrast jitter, no flip.
Two settings differ from the temperature sweep, for reasons measured here:

* crops keep at least 0.6 of the image (not 0.25).  With 0.25-area crops of 8x8 digits a
  view is often farther from its positive than from other images of the same digit, and a
  batch of 512 holds about 51 images per digit, fewer than k: the hard loss, which sees
  only the 84 nearest negatives, is then minimised by the collapsed embedding (loss
  log(1 + k), uniformity -0.01 at every tau, the probe at its initial value), the false-
  negative failure of hard-negative mining.  With milder crops the positive is the nearest
  view again and the hard loss learns;
* the learning rate is 0.02 (not 0.05): from the nearly collapsed random initialisation the
  hard loss at tau = 0.07 sits on that collapsed plateau for a while, and at 0.05 two of
  three seeds had not left it after 120 steps (uniformity -0.02 and -0.5) while the
  ordinary loss spreads out at once.

``smoke`` is a tiny network for speed only.  ``gpu`` is the paper's CIFAR-10 setting with
the training recipe of ``temperature.gpu`` (CIFAR-stem ResNet-18, 200 epochs, SGD with
momentum 0.9 and weight decay 5e-4, crops down to 0.08 as in the paper, in-batch negatives
of 512 images with the hard loss keeping alpha = 0.0819 of them); it needs ``--data-dir``.

Result of the ``cpu`` preset (``docs/results.md``): all three claims
reproduce.  The weight entropy rises with tau in every seed (2.75 nats at 0.07, about 9
effective negatives, to 6.46 at 1.0, near the 6.56 of uniform weights over 708); the
ordinary loss's uniformity falls from 3.40 to 2.50 across the grid while the hard loss's
stays between 3.24 and 3.45 (Table 1's pattern, at lower absolute values: 64-d embeddings
of 355 images).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from amcl_lab import _validation as v
from amcl_lab import engine, figures, metrics

from . import _claims as claims
from . import temperature
from ._protocol import Claim, ExperimentConfig, Results, train_config
from .temperature import TAU_LABEL, UNIFORMITY, tolerance_hook

__all__ = ["CLAIMS", "PRESETS", "Config", "hard_k", "plot", "run", "weights_hook"]

ORDINARY, HARD = "nt_xent", "hard_contrastive"
#: The paper's alpha on CIFAR-10: 4,095 of 50,000 memory-bank negatives (its Sec. 5.1).
PAPER_ALPHA = 0.0819


@dataclass(frozen=True)
class Config(temperature.SweepConfig):
    """:class:`~amcl_lab.experiments.temperature.SweepConfig` with the hard loss's fraction of
    negatives; the defaults are the ``cpu`` preset.  ``loss`` is the ordinary loss (NT-Xent)
    whose hard counterpart is trained beside it."""

    temperatures: tuple[float, ...] = (0.07, 0.3, 0.7, 1.0)  # Table 1's tau columns
    hard_fraction: float = PAPER_ALPHA  # alpha: share of in-batch negatives the hard loss keeps
    weight_ranks: tuple[int, ...] = (1, 4, 16, 64, 256)  # k of "weight share on the k hardest"
    dataset: str = "digits"
    crop_min_scale: float = 0.6  # at 0.25 the hard loss collapses (module docstring)
    lr: float = 0.02  # at 0.05 the hard loss lingers collapsed at tau = 0.07
    steps: int = 150  # 75 epochs of the 1,442 training images

    def __post_init__(self) -> None:
        super().__post_init__()
        fn = type(self).__name__
        v.check_choice(fn, "loss", self.loss, (ORDINARY,))  # the hard loss is its variant
        if len(set(self.temperatures)) < 2:
            raise ValueError(
                f"{fn}: temperatures needs two distinct values, got {self.temperatures}"
            )
        for tau in self.temperatures:
            v.check_positive_float(fn, "temperatures", tau)
        if not 0.0 < self.hard_fraction <= 1.0:
            raise ValueError(f"{fn}: hard_fraction must be in (0, 1], got {self.hard_fraction}")
        for k in self.weight_ranks:
            v.check_int(fn, "weight_ranks", k, low=1)
        if "uniformity" not in self.geometry:
            raise ValueError(f"{fn}: geometry must include 'uniformity' (two claims use it)")


def smoke() -> Config:
    """Three temperatures, a tiny MLP, a few steps: every code path in seconds."""
    return Config(**temperature.SMOKE, hard_fraction=0.1, weight_ranks=(1, 8, 64))


def cpu() -> Config:
    """8x8 digits, Table 1's temperatures 0.07 / 0.3 / 0.7 / 1.0, both losses, three seeds."""
    return Config()


def gpu() -> Config:
    """CIFAR-10, CIFAR-stem ResNet-18: the training setting of :func:`temperature.gpu`."""
    shared = temperature.gpu()
    setting = {f.name: getattr(shared, f.name) for f in dataclasses.fields(ExperimentConfig)}
    return Config(
        **setting,
        temperatures=(0.07, 0.3, 0.7, 1.0),
        weight_ranks=(1, 4, 16, 64, 256, 1024, 4096),
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


def hard_k(config: Config) -> int | None:
    """Negatives the hard loss keeps per anchor: ``alpha * (2B - 2)``, ``None`` for all."""
    negatives = 2 * config.batch_size - 2
    return None if config.hard_fraction >= 1.0 else max(1, round(config.hard_fraction * negatives))


def weights_hook(tau: float, ranks: tuple[int, ...]) -> engine.EvalHook:
    """Summaries of the NT-Xent negative weights at ``tau`` on two views of the held-out set.

    ``weight_entropy`` (nats) and ``weight_effective_number`` are means over the anchors of
    :func:`amcl_lab.metrics.negative_weights`; ``weight_negatives`` is the number M of
    negatives per anchor (2N - 2), so ``log M`` is the entropy of uniform weights;
    ``weight_share@k`` is the mean share of the weight on the k hardest negatives, for each
    k of ``ranks`` up to M.
    """

    def hook(held: engine.HeldOut) -> dict[str, float]:
        w = metrics.negative_weights(held.view_pair[0], held.view_pair[1], tau)
        m = w.weights.shape[1]
        cumulative = w.weights.sort(dim=1, descending=True).values.cumsum(dim=1).mean(dim=0)
        out = {
            "weight_entropy": float(w.entropy.mean()),
            "weight_effective_number": float(w.effective_number.mean()),
            "weight_negatives": float(m),
        }
        out.update({f"weight_share@{k}": float(cumulative[k - 1]) for k in ranks if k <= m})
        return out

    return hook


def _tidy(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``metric = "name@k"`` becomes ``metric = "name"`` with a ``rank`` column ``k``."""
    for row in rows:
        name, at, rank = row["metric"].partition("@")
        if at:
            row["metric"], row["rank"] = name, int(rank)
    return rows


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Train both losses once per (tau, seed); rows are the start and end evaluations."""
    k = hard_k(config)
    hard_options = (*config.loss_options, f"k={k}") if k is not None else config.loss_options
    rows: list[dict[str, Any]] = []
    for seed in run.seeds:
        tolerance = tolerance_hook(seed)
        for tau in config.grid:
            for loss, options in ((ORDINARY, config.loss_options), (HARD, hard_options)):
                cell = train_config(
                    config, loss=loss, loss_options=options, temperature=tau, seed=seed
                )
                hooks = (
                    (tolerance, weights_hook(tau, config.weight_ranks))
                    if loss == ORDINARY
                    else (tolerance,)
                )
                result = engine.train(cell, run, tag=f"{loss}-tau{tau:g}-seed{seed}", hooks=hooks)
                rows += result.rows(
                    dataset=config.dataset,
                    loss=loss,
                    temperature=tau,
                    hard_k=k if loss == HARD else None,
                )
    return _tidy(rows)


# --- claims ------------------------------------------------------------------------------


RUNS = ("loss", "temperature")  # what tells the runs of one seed apart


def _by_loss(table: pd.DataFrame, metric: str, by: tuple[str, ...] = RUNS) -> pd.Series:
    return temperature.final_values(table, metric, by)


def _entropy_trend(table: pd.DataFrame) -> claims.Effect:
    entropy = claims.at(_by_loss(table, "weight_entropy"), {"loss": ORDINARY})
    return claims.rank_correlation(entropy, "temperature")


def _uniformity(table: pd.DataFrame) -> pd.Series:
    """Final ``-L_uniformity`` (higher is more uniform, as Table 1 reports it)."""
    return -_by_loss(table, "uniformity")


def _flattening(table: pd.DataFrame) -> claims.Effect:
    unif = _uniformity(table)
    hard = claims.log_slope(claims.at(unif, {"loss": HARD}), "temperature")
    ordinary = claims.log_slope(claims.at(unif, {"loss": ORDINARY}), "temperature")
    return claims.combine(lambda h, o: h - o, hard, ordinary)


def _large_tau_gap(table: pd.DataFrame) -> claims.Effect:
    largest = {"temperature": max}
    hard, ordinary = {"loss": HARD, **largest}, {"loss": ORDINARY, **largest}
    return claims.paired_difference(_uniformity(table), hard, ordinary, drop_nan=False)


SOURCE = "Wang & Liu 2021 (CVPR, arXiv:2012.09740)"
CLAIMS = (
    Claim(
        id="weights-concentrate-as-tau-falls",
        statement=(
            "The contrastive loss's gradient weight on negatives concentrates on the hardest "
            "ones as the temperature decreases (the entropy of the weights decreases with tau)"
        ),
        source=f"{SOURCE}, Eq. 5, Section 3.2 and Fig. 3",
        effect=(
            "Spearman rank correlation between tau and the mean entropy of the held-out "
            "anchors' negative weights, NT-Xent models each at their training tau"
        ),
        measure=_entropy_trend,
        expected=1.0,  # the entropy decreases strictly with tau (Sec. 3.2)
        bootstrap=True,
    ),
    Claim(
        id="hard-loss-flattens-uniformity",
        statement=(
            "With the explicit hard contrastive loss the uniformity hardly depends on the "
            "temperature, while the ordinary loss's uniformity drops as tau grows"
        ),
        source=f"{SOURCE}, Table 1 and Figs. 6-7",
        effect=(
            "slope of -L_uniformity against log10 tau, hard loss minus ordinary loss "
            "(nats per decade of tau)"
        ),
        measure=_flattening,
    ),
    Claim(
        id="hard-loss-uniform-at-large-tau",
        statement=(
            "At a large temperature the hard contrastive loss keeps the small-tau uniformity "
            "that the ordinary loss loses"
        ),
        source=f"{SOURCE}, Table 1 (hard vs ordinary loss at tau = 1.0)",
        effect="-L_uniformity at the grid's largest tau, hard loss minus ordinary loss (nats)",
        measure=_large_tau_gap,
    ),
)


# --- figures -----------------------------------------------------------------------------


def _weights_figure(table: pd.DataFrame, title: str, out_dir: Path) -> list[Path]:
    """The ordinary loss's weight shares on the k hardest negatives and their entropy."""
    fig, axes = figures.new_figure(2, width="double", aspect=0.7)
    share = _by_loss(table, "weight_share", (*RUNS, "rank")).reset_index()
    share = share[share["loss"] == ORDINARY].copy()
    share["tau"] = share["temperature"].map(lambda t: f"{t:g}")
    share["value"] = 100.0 * share["value"]
    figures.seed_band(axes[0, 0], share, "rank", "value", hue="tau", bounds=figures.PERCENT)
    figures.log_axis(axes[0, 0], share["rank"].unique(), "k (hardest negatives, by similarity)")
    axes[0, 0].set_ylabel("weight on the k hardest negatives (%)")
    axes[0, 0].legend(title=r"$\tau$")
    entropy = claims.at(_by_loss(table, "weight_entropy"), {"loss": ORDINARY}).reset_index()
    m = claims.at(_by_loss(table, "weight_negatives"), {"loss": ORDINARY}).max()
    uniform = (0.0, math.log(m))  # the entropy of weights over m negatives
    figures.seed_band(axes[0, 1], entropy, "temperature", "value", bounds=uniform)
    line = {"color": "0.5", "linestyle": ":", "label": f"uniform over {m:g}"}
    figures.reference_line(axes[0, 1], math.log(m), **line)
    axes[0, 1].legend()
    figures.log_axis(axes[0, 1], entropy["temperature"].unique(), TAU_LABEL)
    axes[0, 1].set_ylabel("entropy of the weights (nats)")
    fig.suptitle(title)
    return figures.save(fig, out_dir / "negative_weights")


def _uniformity_figure(table: pd.DataFrame, title: str, out_dir: Path) -> list[Path]:
    """Uniformity and tolerance of both losses against tau."""
    fig, axes = figures.new_figure(2, width="double", aspect=0.8)
    names = {ORDINARY: "ordinary (NT-Xent)", HARD: "hard contrastive"}
    unif = _uniformity(table).reset_index()
    unif["objective"] = unif["loss"].map(names)
    figures.seed_band(axes[0, 0], unif, "temperature", "value", hue="objective", bounds=UNIFORMITY)
    axes[0, 0].set_ylabel(r"uniformity $-L_{\mathrm{uniformity}}$ (t = 2, nats)")
    tol = _by_loss(table, "tolerance").reset_index()
    tol["objective"] = tol["loss"].map(names)
    figures.seed_band(
        axes[0, 1], tol, "temperature", "value", hue="objective", bounds=figures.COSINE
    )
    axes[0, 1].set_ylabel("tolerance (same-class cosine)")
    for ax in axes[0]:
        figures.log_axis(ax, unif["temperature"].unique(), TAU_LABEL)
    figures.shared_legend(fig, axes)
    fig.suptitle(title)
    return figures.save(fig, out_dir / "uniformity_vs_tau")


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Negative-weight distributions per tau; uniformity and tolerance of both losses."""
    table = results.table
    weights = figures.title(
        results, r"NT-Xent weights on held-out negatives at the training $\tau$"
    )
    geometry = figures.title(results, "held-out geometry")
    with figures.house_style():
        return _weights_figure(table, weights, out_dir) + _uniformity_figure(
            table, geometry, out_dir
        )
