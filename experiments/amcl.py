"""AMCL vs one head at constant temperature: overlap of positive and negative pair similarities.

Wang et al., "Adaptive Multi-head Contrastive Learning" (ECCV 2024, arXiv:2310.05615)
motivate AMCL with Fig. 1(b-g): histograms of
the cosine similarities of positive pairs (two views of one image) and negative pairs (views
of different images) for SimCLR's single projection head with a constant temperature (b-d)
and for AMCL, three heads with pair-adaptive temperatures (e-g), each trained with 1, 3 and 5
augmentation families (read here as the cumulative sets a, abc, abcde).  With one head,
more augmentation pushes positive similarities down into the negatives; AMCL keeps the two
apart, and the abstract says its gains grow with more augmentation methods.  This
experiment trains both arms with the engine (baseline: ``nt_xent`` with one head and
``temperature``; AMCL: ``amcl_nt_xent``, Eq. (2.1), three heads, the shared
:class:`~amcl_lab.amcl.PairTemperature`) for every prefix ``augment[:n]``, ``n`` in
``family_counts``, and measures on the held-out split:

* the similarity of a pair: the cosine of the two projection-head embeddings, averaged over
  the heads (for one head, the cosine); positives are ``pair_draws`` independent view pairs
  of every held-out image (drawn with the run's augmentation families), negatives are all
  pairs (first view of image i, second view of image j), i != j, of the same draws;
* **overlap** (a number the paper does not give: its Fig. 1 is qualitative): the overlap coefficient
  ``sum_b min(p_b, q_b)`` of the positive and negative histograms, ``p_b`` and ``q_b`` being
  the fractions of positive and negative pairs in bin ``b`` of ``hist_bins`` equal bins of
  [-1, 1]: 1 for identical histograms, 0 for disjoint ones (it equals one minus the total
  variation distance of the binned distributions, so it is unchanged by any monotone
  relabelling of the similarity axis that keeps the bins);
* ``auc``, P(positive similarity > negative similarity) (ties count one half), the bin-free
  separation, recorded alongside;
* the linear-probe and k-NN accuracy of the encoder features (engine evaluation).

Claims (per seed; "richest" and "poorest" are the sets with most and fewest families):

* ``amcl-separates-better`` (Fig. 1(d) vs (g) and the README text): baseline overlap minus
  AMCL overlap at the richest set > 0 (overlap points, x100);
* ``advantage-grows-with-augmentation`` (abstract: gains grow with more augmentation): the
  AMCL advantage (baseline minus AMCL overlap) at the richest set minus the advantage at the
  poorest set, taken as ``min(advantage_richest, advantage_richest - advantage_poorest)`` so
  that it is positive only when there *is* an advantage and it grew: a collapsed AMCL whose
  overlap is 1 at every set must not count as a "growing advantage" merely because the
  baseline's overlap grows;
* ``baseline-overlap-grows`` (Fig. 1(b-d)): the baseline's overlap at the richest minus the
  poorest set > 0;
* ``amcl-probe-gain`` (abstract, linear probing): AMCL minus baseline linear-probe accuracy
  at the richest set > 0 (percentage points).

Data.  ``smoke`` and ``cpu`` use the bundled 8x8 digits (1,442 train / 355 held-out
images): 30 contrastive trainings (2 arms x 3 sets x 5 seeds) must fit in four CPU minutes,
which rules out MNIST-5k's 28x28 images for a CNN.  On one channel the ablation degenerates
as :mod:`amcl_lab.data.augment` documents: ``c`` (grayscale) is the identity, so abc is
effectively crop + blur, and ``d`` keeps brightness and contrast; ``e`` (flip) turns some
digits into others, a strong augmentation.  The three sets still add families of increasing
strength, and the baseline's overlap does grow with them, which is what the comparison
needs.  The crop's minimum area is 0.25 instead of 0.08 (a 0.08 crop of 8x8 pixels is about
two pixels).  ``gpu`` is CIFAR-10 with the settings of the authors' released code (CIFAR-stem
ResNet-18, 512-512-128 heads, batch 512, SGD lr 0.06, baseline tau 0.5, AMCL top-100
negatives and beta 1e-4) for 200 epochs instead of 800-1000; it needs ``--data-dir``.  The
engine has no gradient clipping, which the second code release adds (norm 1).

Result of the ``cpu`` preset (see docs/results.md, 'amcl'): trained from scratch, AMCL's
Eq. (2.1) collapses.  Its per-anchor loss ``(s_hardest_negative / tau_n - s_positive /
tau_p)`` plus regularisers is 0 when every embedding is the same vector, and from a random
network, where the hardest of 2N - 2 negatives is usually more similar than the positive,
gradient descent reaches that point within a few hundred steps (the hardest-negative
collapse Schroff et al., FaceNet, 2015, describe for triplet losses): both similarities go
to 1, the overlap to 1, at every set, with hardest or top-k negatives, constant or adaptive
temperatures, SGD or AdamW and learning rates 0.003 to 0.3, while the baseline's overlap
grows from 0.22 (a) to 0.43 (abcde).  So the AMCL claims are not reproduced here; whether
the paper's 800-epoch ResNet-18 runs avoid the collapse needs the ``gpu`` preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns

from amcl_lab import engine, figures
from amcl_lab.data import Augmentation, load_dataset

from . import _claims as claims
from ._pairs import separation, similarities
from ._protocol import SIMCLR_CIFAR10, Claim, ExperimentConfig, Results, gpu_cifar10, train_config

__all__ = ["CLAIMS", "PRESETS", "Config", "plot", "run", "separation", "similarities"]

METHODS = ("baseline", "amcl")


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """The ``cpu`` preset.  The inherited objective fields (``loss``, ``heads``,
    ``adaptive_temperature``, ``loss_options``) describe the AMCL arm; ``temperature`` is
    the baseline's constant temperature; ``augment`` lists the families in the order they
    are added."""

    dataset: str = "digits"
    augment: str = "abcde"  # families in the order they are added (prefixes are the sets)
    family_counts: tuple[int, ...] = (1, 3, 5)  # sets augment[:n]: a, abc, abcde (Fig. 1)
    crop_min_scale: float = 0.25  # a 0.08-area crop of 8x8 is ~2 pixels
    encoder: str = "cnn"
    width: int = 16
    proj_hidden: int = 128
    proj_dim: int = 64
    loss: str = "amcl_nt_xent"  # AMCL arm: Eq. (2.1), hardest negative
    heads: int = 3  # AMCL arm: three heads (the paper's C)
    adaptive_temperature: bool = True  # AMCL arm: the shared PairTemperature network
    baseline_loss: str = "nt_xent"  # baseline arm: SimCLR's NT-Xent
    baseline_heads: int = 1  # baseline arm: one projection head
    temperature: float = 0.5  # baseline's constant temperature (SimCLR/AMCL code)
    batch_size: int = 128
    lr: float = 0.3  # the demo's rate for this CNN; both arms share it
    steps: int = 150  # ~13 epochs of the 1,442 training images
    eval_every: int = 0  # probe at the start and the end only
    checkpoint_every: int = 150
    pair_draws: int = 4  # independent view pairs of every held-out image
    hist_bins: int = 40  # equal bins of [-1, 1] for the histograms and the overlap
    seeds: int = 5  # a 95 % CI over 3 seeds is +-4.3 standard errors; 5 halve it
    threads: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        fn = type(self).__name__
        if not self.family_counts or any(
            not 0 <= n <= len(self.augment) for n in self.family_counts
        ):
            raise ValueError(
                f"{fn}: family_counts must be prefix lengths of augment={self.augment!r} "
                f"(0..{len(self.augment)}), got {self.family_counts}"
            )
        for name in ("pair_draws", "hist_bins"):
            if getattr(self, name) < 1:
                raise ValueError(f"{fn}: {name} must be >= 1, got {getattr(self, name)}")
        for method in METHODS:  # both arms must be valid training configs
            arm(self, method, self.augment)

    @property
    def augment_sets(self) -> tuple[str, ...]:
        """The augmentation sets compared, ``augment[:n]`` for each ``n`` in ``family_counts``."""
        return tuple(self.augment[:n] for n in self.family_counts)


def arm(config: Config, method: str, augment: str, seed: int | None = None) -> engine.TrainConfig:
    """The training config of one arm (``"baseline"`` or ``"amcl"``) with one augmentation set."""
    changes: dict[str, Any] = {"augment": augment, "seed": config.seed if seed is None else seed}
    if method == "baseline":
        changes.update(loss=config.baseline_loss, heads=config.baseline_heads, loss_options=())
    return train_config(config, **changes)


def smoke() -> Config:
    """A few steps of a tiny network on two sets: every code path in seconds."""
    return Config(
        seeds=3,
        family_counts=(1, 5),
        width=4,
        proj_hidden=16,
        proj_dim=8,
        batch_size=32,
        steps=3,
        checkpoint_every=3,
        probe_steps=5,
        knn_k=20,
        pair_draws=1,
        hist_bins=20,
    )


def cpu() -> Config:
    """The cpu preset: 30 short trainings on digits (2 arms x 3 sets x 5 seeds)."""
    return Config()


def gpu() -> Config:
    """CIFAR-10, CIFAR-stem ResNet-18, the settings of the authors' released code."""
    return Config(
        **gpu_cifar10(),
        seeds=3,
        **SIMCLR_CIFAR10,
        loss_options=("mode='topk'", "k=100", "beta=1e-4"),  # second release: top-100
        lr=0.06,
        steps=200 * (50_000 // 512),  # 200 epochs (the papers use 800-1000)
        eval_every=20 * (50_000 // 512),
        pair_draws=1,
        hist_bins=50,
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Train both arms for every augmentation set and seed; measure the held-out pairs."""
    rows: list[dict[str, Any]] = []
    split = load_dataset(config.dataset, config.data_dir or None)
    images = split.test.batch(None, run.device)
    for augment in config.augment_sets:
        families = len(augment)
        for method in METHODS:
            for seed in run.seeds:
                cfg = arm(config, method, augment, seed)
                result = engine.train(cfg, run, tag=f"{method}-{augment or 'none'}-seed{seed}")
                condition = {"dataset": config.dataset, "method": method, "augment": augment}
                condition["families"] = families
                rows += result.rows(**condition)
                aug = Augmentation(augment, crop_min_scale=config.crop_min_scale)
                pos, neg = similarities(result.network, images, aug, config.pair_draws, seed)
                sep = separation(pos, neg, config.hist_bins)
                final = {**condition, "seed": seed, "step": cfg.steps, "epoch": None}
                for metric in ("overlap", "auc"):
                    rows.append({**final, "metric": metric, "value": sep[metric]})
                rows.append({**final, "metric": "positive_mean", "value": float(pos.mean())})
                rows.append({**final, "metric": "negative_mean", "value": float(neg.mean())})
                for kind in ("positive", "negative"):
                    rows += [
                        {**final, "metric": f"{kind}_fraction", "bin": float(c), "value": float(f)}
                        for c, f in zip(sep["centers"], sep[kind], strict=True)
                    ]
    return rows


RUNS = ("method", "families")  # what tells the runs of one seed apart
RICHEST, POOREST = {"families": max}, {"families": min}
BASELINE, AMCL = {"method": "baseline"}, {"method": "amcl"}


def _by_arm(table: pd.DataFrame, metric: str) -> pd.Series:
    """The last value of ``metric`` per (seed, method, families), NaN values left out first."""
    return claims.final(table.dropna(subset=["value"]), metric, RUNS)


def _points(metric: str, arm: claims.Condition, control: claims.Condition) -> claims.Measure:
    """Measure: ``100 * (arm - control)`` of the final ``metric`` (points)."""
    return lambda t: claims.paired_difference(_by_arm(t, metric), arm, control, scale=100.0)


def separates_better(table: pd.DataFrame) -> claims.Effect:
    """Baseline minus AMCL overlap at the richest set (overlap points)."""
    return _points("overlap", BASELINE | RICHEST, AMCL | RICHEST)(table)


def advantage_grows(table: pd.DataFrame) -> claims.Effect:
    """``min(advantage_richest, advantage_richest - advantage_poorest)`` (overlap points)."""
    if _by_arm(table, "overlap").index.get_level_values("families").nunique() < 2:
        return {}
    richest = separates_better(table)
    poorest = _points("overlap", BASELINE | POOREST, AMCL | POOREST)(table)
    return claims.combine(lambda r, p: min(r, r - p), richest, poorest)


SOURCE = "Wang et al. 2024 (AMCL, arXiv:2310.05615)"
CLAIMS = (
    Claim(
        id="amcl-separates-better",
        statement=(
            "With all augmentation families, AMCL's positive and negative pair similarities "
            "overlap less than those of a single head with a constant temperature"
        ),
        source=f"{SOURCE}, Fig. 1(d) vs 1(g) and the README",
        effect="histogram overlap, baseline minus AMCL, richest set (overlap points, x100)",
        measure=separates_better,
    ),
    Claim(
        id="advantage-grows-with-augmentation",
        statement="AMCL's advantage over the baseline grows with more augmentation families",
        source=f"{SOURCE}, abstract and Fig. 1(b-g)",
        effect=(
            "min(advantage at the richest set, its growth from the poorest set); advantage = "
            "baseline minus AMCL overlap (overlap points)"
        ),
        measure=advantage_grows,
    ),
    Claim(
        id="baseline-overlap-grows",
        statement=(
            "With one head and a constant temperature, more augmentation families increase "
            "the overlap of positive and negative similarities"
        ),
        source=f"{SOURCE}, Fig. 1(b-d) and the README",
        effect="baseline overlap, richest minus poorest set (overlap points, x100)",
        measure=_points("overlap", BASELINE | RICHEST, BASELINE | POOREST),
    ),
    Claim(
        id="amcl-probe-gain",
        statement="AMCL improves linear-probe accuracy over the single-head baseline",
        source=f"{SOURCE}, abstract (linear probing results)",
        effect="linear-probe test accuracy, AMCL minus baseline, richest set (points)",
        measure=_points("linear_probe", AMCL | RICHEST, BASELINE | RICHEST),
    ),
)

_LETTERS = "bcdefg"
_ROW_TITLES = {"baseline": "one head, constant tau", "amcl": "AMCL: 3 heads, adaptive tau"}


def _histograms(results: Results, out_dir: Path) -> list[Path]:
    """The 2 x 3 grid of Fig. 1(b-g): seed-averaged histograms, overlap with its 95 % CI."""
    table = results.table
    overlap = table[table["metric"] == "overlap"]
    families = sorted(overlap["families"].unique())
    with figures.house_style():
        negative_color, positive_color = sns.color_palette()[:2]
        fig, axes = figures.new_figure(len(families), len(METHODS), width="double", aspect=0.8)
        for r, method in enumerate(METHODS):
            for c, n in enumerate(families):
                ax, index = axes[r, c], r * len(families) + c
                cell = table[(table["method"] == method) & (table["families"] == n)]
                for kind, color in (("negative", negative_color), ("positive", positive_color)):
                    hist = cell[cell["metric"] == f"{kind}_fraction"].groupby("bin")["value"]
                    mean = hist.mean().sort_index()
                    edges = np.linspace(-1.0, 1.0, len(mean) + 1)
                    ax.stairs(
                        100.0 * mean.to_numpy(),
                        edges,
                        fill=True,
                        alpha=0.55,
                        color=color,
                        label=f"{kind} pairs",
                    )
                values = overlap[(overlap["method"] == method) & (overlap["families"] == n)]
                m, low, high = figures.mean_ci(values["value"].to_numpy())
                letter = f"({_LETTERS[index]}) " if index < len(_LETTERS) else ""
                augment = values["augment"].iloc[0] if len(values) else ""
                ax.set_title(
                    f"{letter}{_ROW_TITLES[method]}, {augment or 'none'}\n"
                    f"overlap {m:.2f} [{low:.2f}, {high:.2f}]"
                )
                ax.set_xlabel("pair cosine similarity")
                ax.set_ylabel("pairs (%)")
        axes[0, 0].legend(loc="upper left")
        fig.suptitle(
            f"Held-out pair similarities on {figures.datasets(table)}: "
            f"mean over {len(results.seeds)} seeds; overlap mean and 95 % CI"
        )
        return figures.save(fig, out_dir / "similarity_histograms")


_PANELS = (
    ("overlap", 1.0, "positive/negative overlap"),
    ("auc", 1.0, "AUC, P(pos > neg)"),
    ("linear_probe", 100.0, "linear-probe accuracy (%)"),
)


def _summary(results: Results, out_dir: Path) -> list[Path]:
    """Overlap, AUC and probe accuracy against the number of families, per arm."""
    table = results.table
    with figures.house_style():
        fig, axes = figures.new_figure(len(_PANELS), width="double", aspect=0.85)
        for ax, (metric, scale, label) in zip(axes[0], _PANELS, strict=True):
            t = _by_arm(table, metric).reset_index()
            t["value"] = scale * t["value"]
            figures.seed_band(ax, t, "families", "value", hue="method")
            ax.set_xlabel("augmentation families")
            ax.set_xticks(sorted(t["families"].unique()))
            ax.set_ylabel(label)
        fig.suptitle(f"Baseline vs AMCL: mean and 95 % CI over {len(results.seeds)} seeds")
        return figures.save(fig, out_dir / "separation_vs_augmentation")


def plot(results: Results, out_dir: Path) -> list[Path]:
    """The Fig. 1(b-g) histogram grid and the overlap / AUC / probe summary."""
    return _histograms(results, out_dir) + _summary(results, out_dir)
