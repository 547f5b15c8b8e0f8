"""AMCL vs one head at constant temperature, with controls: pair-similarity overlap and probes.

Wang et al., "Adaptive Multi-head Contrastive Learning" (ECCV 2024, arXiv:2310.05615) motivate
AMCL with Fig. 1(b-g): histograms of the cosine similarities of positive pairs (two views of
one image) and negative pairs (views of different images) for SimCLR's single projection head
with a constant temperature (b-d) and for AMCL, three heads with pair-adaptive temperatures
(e-g), each trained with 1, 3 and 5 augmentation families (read here as the cumulative sets
a, abc, abcde).  With one head, more augmentation pushes positive similarities down into the
negatives; AMCL keeps the two apart, its gains grow with more augmentation, and it improves
the linear probe of SimCLR, MoCo and Barlow Twins (abstract).

The arms (:mod:`amcl_lab.experiments._amcl`): ``baseline`` (the framework's loss, one head,
constant ``temperature``) and ``amcl`` (the framework's AMCL loss, ``heads`` heads, the
shared pair-temperature network) for every prefix ``augment[:n]``, ``n`` in
``family_counts``; at the richest set also the controls ``matched`` (the AMCL loss with one
head at the ``amcl`` arm's median learned temperature) and ``scalar`` (``heads`` heads, one
learned temperature), so that a gain can be attributed to heads and pair temperatures rather
than to a different temperature level.  Measured on the held-out split:

* pair similarity: the cosine of the two embeddings, averaged over heads; positives are
  ``pair_draws`` view pairs of every held-out image, negatives all pairs (i, j), i != j;
* **overlap** (a number the paper does not give: its Fig. 1 is qualitative), the overlap
  coefficient ``sum_b min(p_b, q_b)`` of the binned positive and negative histograms (1 for
  identical histograms, 0 for disjoint ones), and ``auc``, P(positive > negative);
* linear-probe and k-NN accuracy of the encoder features, and the engine's collapse
  diagnostics (:func:`amcl_lab.engine.evaluation.collapse_diagnostics`).

Claims (per seed; "richest"/"poorest" are the sets with most/fewest families).  Every claim
names the arms it rests on: an arm whose run collapsed (held-out negative cosine > 0.9 or
embedding rank < 2) makes the verdict ``setup failed (collapsed)``, never "not reproduced".

* ``amcl-separates-better`` (Fig. 1(d) vs (g)): baseline minus AMCL overlap, richest set;
* ``advantage-grows-with-augmentation`` (abstract):
  ``min(advantage_richest, advantage_richest - advantage_poorest)``, positive only when
  there is an advantage and it grew;
* ``baseline-overlap-grows`` (Fig. 1(b-d)): baseline overlap, richest minus poorest set;
* ``amcl-probe-gain`` (abstract): AMCL minus baseline linear-probe accuracy, richest set;
* ``amcl-beats-temperature-matched`` and ``amcl-beats-scalar-temperature``: AMCL minus the
  ``matched`` / ``scalar`` control's probe accuracy, richest set;
* ``amcl-gain-knn``, ``...-knn``: the three comparisons read with the k-NN monitor (on the
  digits the linear probe of a random network is already at 93-96 %, 1 image = 0.28 points).

Data and recipe.  ``smoke`` and ``cpu`` use the bundled 8x8 digits (1,442 train / 355
held-out images; ``c``, grayscale, is the identity on one channel; crops keep a quarter of
the area).  The ``cpu`` preset trains the log-sum-exp form (``amcl_mode="softmax"``) with
the global gradient norm clipped at 1.0 for every arm, because the other settings collapse
(``amcl_phase``, docs/results.md, "AMCL"): the hardest-negative forms (``max``, ``topk``)
are margin-0 triplet losses, 0 at total collapse, and every cell of the map collapsed
(held-out negative cosine 0.999-1.000); without clipping the log-sum-exp forms collapse by a
temperature runaway (the pair network gives positive and negative pairs the same
temperature, all of them reach ``tau_min`` together, gradient norms of 1e3-1e5).  With the
clip every arm trains, but the pair network still does not tell positives from negatives at
beta = 1e-4 (median learned temperature 0.012-0.085, positive and negative pair means equal
to three digits), so on this scale AMCL acts as one small learned temperature.
``--set framework=moco`` and ``--set framework=barlow_twins`` swap the losses (Barlow
Twins' temperatures are over channel vectors, so it has no ``matched`` control).  ``gpu`` is
CIFAR-10 with the second code release's settings for 200 epochs; it needs ``--data-dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from amcl_lab import engine, figures
from amcl_lab.data import Augmentation, load_dataset

from . import _claims as claims
from ._amcl import AMCLConfig, arm_config
from ._pairs import histogram_grid, pair_rows, separation, similarities
from ._protocol import SIMCLR_CIFAR10, Claim, Results, gpu_cifar10

__all__ = ["CLAIMS", "PRESETS", "Config", "plot", "run", "separation", "similarities"]

METHODS = ("baseline", "amcl")  # trained at every augmentation set
_ROW_TITLES = {"baseline": r"one head, constant $\tau$", "amcl": r"AMCL: heads + pair $\tau$"}


@dataclass(frozen=True)
class Config(AMCLConfig):
    """The ``cpu`` preset.  ``augment`` lists the families in the order they are added."""

    dataset: str = "digits"
    augment: str = "abcde"  # families in the order they are added (prefixes are the sets)
    family_counts: tuple[int, ...] = (1, 3, 5)  # sets augment[:n]: a, abc, abcde (Fig. 1)
    controls: tuple[str, ...] = ("matched", "scalar")  # at the richest set only
    crop_min_scale: float = 0.25  # a 0.08-area crop of 8x8 is ~2 pixels
    encoder: str = "cnn"
    width: int = 16
    proj_hidden: int = 128
    proj_dim: int = 64
    temperature: float = 0.5  # baseline's constant temperature (SimCLR/AMCL code)
    grad_clip: float = 1.0  # every arm (the second code release's default)
    batch_size: int = 128
    lr: float = 0.3  # the demo's rate for this CNN; every arm shares it
    steps: int = 150  # ~13 epochs of the 1,442 training images
    eval_every: int = 0  # probe at the start and the end only
    checkpoint_every: int = 150
    queue_size: int = 1024  # MoCo: about 4 steps of keys (the training set has 1,442 images)
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
        for control in self.controls:
            if control not in ("matched", "scalar"):
                raise ValueError(f"{fn}: controls are 'matched' and 'scalar', got {control!r}")

    @property
    def augment_sets(self) -> tuple[str, ...]:
        """The augmentation sets compared, ``augment[:n]`` for each ``n`` in ``family_counts``."""
        return tuple(self.augment[:n] for n in self.family_counts)


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
        queue_size=64,
        pair_draws=1,
        hist_bins=20,
    )


def cpu() -> Config:
    """The cpu preset: 40 short trainings on digits (2 arms x 3 sets + 2 controls, 5 seeds)."""
    return Config()


def gpu() -> Config:
    """CIFAR-10, CIFAR-stem ResNet-18, the settings of the authors' second code release."""
    return Config(
        **gpu_cifar10(),
        seeds=3,
        **SIMCLR_CIFAR10,
        amcl_mode="topk",  # the second release: top-100 negatives, beta 1e-4, clip 1.0
        amcl_k=100,
        lr=0.06,
        steps=200 * (50_000 // 512),  # 200 epochs (the papers use 800-1000)
        eval_every=20 * (50_000 // 512),
        queue_size=4096,
        pair_draws=1,
        hist_bins=50,
    )


def long() -> Config:
    """The ``cpu`` arms, sets and budget with 60 seeds (about 12 CPU minutes, ``--workers 2``).

    Every arm trains at ``cpu`` scale, but with 5 seeds only the separation claim is decided.
    The probe claims are differences of a few tenths of a point (one held-out image is 0.28)
    with per-seed SDs of 0.4-0.6 points, and the k-NN ones of about 1 point with SDs of 2-3:
    80 % power at the measured means needs 53 (temperature-matched control) and 60 (k-NN
    gain) seeds, and none for the claims whose measured mean is 0 or on the wrong side.  The
    long preset takes 60 seeds and changes nothing else, so each of these claims is either
    decided or shown to be smaller than a fifth of a point.
    """
    return Config(seeds=60)


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu, "long": long}


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Train the arms for every augmentation set and seed, the controls at the richest."""
    rows: list[dict[str, Any]] = []
    images = load_dataset(config.dataset, config.data_dir or None).test.batch(None, run.device)
    richest = config.augment_sets[int(np.argmax(config.family_counts))]
    for augment in config.augment_sets:
        for seed in run.seeds:
            learned = None
            arms = [*METHODS, *(config.controls if augment == richest else ())]
            for method in arms:
                if method == "matched" and learned is None:
                    continue  # no embedding-pair temperatures to match (Barlow Twins)
                cfg = arm_config(config, method, augment=augment, seed=seed, temperature=learned)
                result = engine.train(cfg, run, tag=f"{method}-{augment or 'none'}-seed{seed}")
                if method == "amcl":
                    learned = result.final.get("tau_median")
                condition = {"dataset": config.dataset, "framework": config.framework}
                condition |= {"method": method, "augment": augment, "families": len(augment)}
                rows += result.rows(**condition)
                aug = Augmentation(augment, crop_min_scale=config.crop_min_scale)
                draws, bins = config.pair_draws, config.hist_bins
                rows += pair_rows(result, condition, images, aug, draws=draws, bins=bins)
    return rows


RUNS = ("method", "families")  # what tells the runs of one seed apart
RICHEST, POOREST = {"families": max}, {"families": min}
BASELINE, AMCL = {"method": "baseline"}, {"method": "amcl"}
MATCHED, SCALAR = {"method": "matched"}, {"method": "scalar"}


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
_PROBE = "linear-probe test accuracy, richest set (points)"
_KNN = "weighted k-NN test accuracy, richest set (points)"
#: The k-NN monitor (Wu et al. 2018, k = 200, t = 0.1) the AMCL code releases report.
_MONITOR = "the k-NN monitor of Wu et al. 2018 used by the AMCL code releases"
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
        arms=(BASELINE, AMCL),
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
        arms=(BASELINE, AMCL),
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
        arms=(BASELINE,),
    ),
    Claim(
        id="amcl-probe-gain",
        statement="AMCL improves linear-probe accuracy over the single-head baseline",
        source=f"{SOURCE}, abstract (linear probing results)",
        effect=f"AMCL minus baseline {_PROBE}",
        measure=_points("linear_probe", AMCL | RICHEST, BASELINE | RICHEST),
        arms=(BASELINE, AMCL),
    ),
    Claim(
        id="amcl-beats-temperature-matched",
        statement=(
            "AMCL's gain is not that of a different temperature level: it beats one head at a "
            "constant temperature equal to AMCL's median learned temperature"
        ),
        source=f"{SOURCE}, Section 3 (multiple heads and pair-adaptive temperatures)",
        effect=f"AMCL minus temperature-matched control {_PROBE}",
        measure=_points("linear_probe", AMCL | RICHEST, MATCHED | RICHEST),
        arms=(AMCL, MATCHED),
    ),
    Claim(
        id="amcl-beats-scalar-temperature",
        statement=(
            "Pair-adaptive temperatures beat one learned temperature for every pair, with the "
            "same heads and the same objective"
        ),
        source=f"{SOURCE}, Section 3 and Eq. (3) (the pair-temperature network)",
        effect=f"AMCL minus scalar-temperature control {_PROBE}",
        measure=_points("linear_probe", AMCL | RICHEST, SCALAR | RICHEST),
        arms=(AMCL, SCALAR),
    ),
    *(
        Claim(
            id=f"{claim_id}-knn",
            statement=f"{statement}, read with the k-NN monitor",
            source=f"{SOURCE}, abstract; {_MONITOR}",
            effect=f"AMCL minus {arm['method']} {_KNN}",
            measure=_points("knn", AMCL | RICHEST, arm | RICHEST),
            arms=(AMCL, arm),
        )
        for claim_id, statement, arm in (
            ("amcl-gain", "AMCL improves over the single-head baseline", BASELINE),
            ("amcl-beats-temperature-matched", "AMCL beats the matched control", MATCHED),
            ("amcl-beats-scalar-temperature", "AMCL beats the scalar control", SCALAR),
        )
    ),
)

_PANELS = (
    ("overlap", 1.0, "pos./neg. overlap", figures.PROPORTION),
    ("auc", 1.0, "AUC, P(pos > neg)", figures.PROPORTION),
    ("linear_probe", 100.0, "probe accuracy (%)", figures.PERCENT),
)


def _summary(results: Results, out_dir: Path) -> list[Path]:
    """Overlap, AUC and probe accuracy against the number of families, per arm."""
    table = results.table
    table = table[table["method"].isin(METHODS)]
    with figures.house_style():
        fig, axes = figures.new_figure(len(_PANELS), width="double", aspect=1.0)
        for ax, (metric, scale, label, bounds) in zip(axes[0], _PANELS, strict=True):
            t = _by_arm(table, metric).reset_index()
            t["value"] = scale * t["value"]
            figures.seed_band(ax, t, "families", "value", hue="method", bounds=bounds)
            ax.set_xlabel("augmentation families")
            ax.set_xticks(sorted(t["families"].unique()))
            ax.set_ylabel(label)
        figures.shared_legend(fig, axes, title="method")
        fig.suptitle(figures.title(results, "baseline vs AMCL"))
        return figures.save(fig, out_dir / "separation_vs_augmentation")


def _controls(results: Results, out_dir: Path) -> list[Path]:
    """Probe accuracy and held-out negative cosine of every arm at the richest set."""
    table = results.table
    richest = table["families"].max()
    cells = (("linear_probe", 100.0, "linear-probe accuracy (%)", figures.PERCENT),)
    cells += (("diag_neg_cosine", 1.0, "negative-pair cosine", figures.COSINE),)
    with figures.house_style():
        fig, axes = figures.new_figure(len(cells), width="double", aspect=0.7)
        for ax, (metric, scale, label, bounds) in zip(axes[0], cells, strict=True):
            values = _by_arm(table, metric)
            present = set(values.index.get_level_values("method"))
            groups = {
                method: scale * claims.at(values, {"method": method, "families": richest})
                for method in ("baseline", "matched", "scalar", "amcl")
                if method in present
            }
            figures.seed_bars(ax, {k: v.to_numpy() for k, v in groups.items()}, bounds)
            ax.set_ylabel(label)
        figures.reference_line(axes[0, 1], 0.9, color="0.3", linestyle="--", linewidth=0.8)
        fig.suptitle(
            figures.title(results, "arms and controls at the richest set; dashed: collapse")
        )
        return figures.save(fig, out_dir / "controls")


def plot(results: Results, out_dir: Path) -> list[Path]:
    """The Fig. 1(b-g) histogram grid, the overlap/AUC/probe summary and the controls."""
    grid = histogram_grid(results, METHODS, _ROW_TITLES, out_dir / "similarity_histograms")
    return grid + _summary(results, out_dir) + _controls(results, out_dir)
