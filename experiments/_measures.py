r"""The ``sharpness`` experiment's measures of trained networks, as result rows and back.

Beyond the engine's evaluation, :mod:`amcl_lab.experiments.sharpness` measures the Hessian
of every final model (:func:`measure_sharpness`, with :mod:`amcl_lab.sharpness`), times the
optimizers' steps side by side (:func:`step_costs`), and draws the spectral densities back
from the saved rows (:func:`density_curves`); :class:`MeasureConfig` holds their knobs.

The Hessian measures use one fixed batch, the same for every optimizer and seed
(:func:`hessian_batch`): the first ``hessian_samples`` training images, un-augmented, with
their labels.  The loss is the mean cross-entropy without the weight-decay term (adding it
would shift every eigenvalue by ``weight_decay``); BatchNorm is in eval mode (running
statistics: the Hessian of the function the model computes at test time; the SAM paper,
Foret et al. 2021, arXiv:2010.01412, removed BatchNorm for its spectra instead); float32;
exact Hessian-vector products by double backward.

* ``lambda_max``: top eigenvalue by Lanczos (``hessian_top_k`` eigenvalues, relative
  residual ``1e-3``); ``lambda_ratio`` = :math:`\lambda_1/\lambda_k` (SAM's
  :math:`\lambda_{max}/\lambda_5` for k = 5).
* ``trace``: Hutch++ (sketch ``trace_sketch``), stopped at a relative standard error of
  ``trace_rtol`` (``trace_stderr`` recorded).
* ``ascent_sharpness``: :math:`L(w + \rho g/\lVert g\rVert) - L(w)` with ``sharpness_rho``
  (0.05 in the SAF paper's Fig. 4b, Du et al. 2022, arXiv:2205.14083), and
  ``hessian_batch_loss`` :math:`L(w)`.
* ``density_node`` / ``density_weight``: stochastic Lanczos quadrature of the spectrum
  (``density_runs`` x ``density_steps`` steps), broadened by :func:`density_curves`.
* ``step_seconds`` / ``step_cost_ratio``: after training, each seed times the engine's
  optimizer step (SAM's second pass with frozen BatchNorm statistics, SAF's buffer and KL
  term, MESA's teacher forward and EMA update) on freshly built networks of every condition
  and one batch, side by side: in each of ``timing_rounds`` rounds every optimizer takes
  one step, in a rotating order, after ``timing_warmup`` untimed rounds.  The ratio is the
  median over rounds of the condition's time over SGD's time in the same round, so load
  from other processes that changes between rounds cancels.  Data loading and
  augmentation are not timed; on CUDA the device is synchronised around each step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from amcl_lab import _validation as v
from amcl_lab import engine, sharpness
from amcl_lab.data import Augmentation, Split
from amcl_lab.models import Network, NetworkOutput

from ._protocol import ExperimentConfig

__all__ = [
    "DENSITY_FLOOR",
    "GPU_MEASURES",
    "PAPER_EFFECTS",
    "SMOKE_MEASURES",
    "MeasureConfig",
    "density_curves",
    "hessian_batch",
    "measure_sharpness",
    "step_costs",
]

#: The effects the papers report, in the claims' units: SAM's lambda_max 1.0 vs SGD's 24.2
#: (Foret et al. Sec. 4.2, WRN-40-10), the accuracies and throughputs of SAF Table 3
#: (ResNet-18, CIFAR-10: SGD 95.61, SAM 96.50 at 50.4 % of SGD's throughput, SAF 96.37 at
#: 97.6 %).  The papers give no trace or ascent-sharpness numbers, and no SAF Hessian.
PAPER_EFFECTS = {
    ("sam", "lambda_max"): 100.0 * (1.0 - 24.2) / 24.2,
    ("sam", "accuracy"): 96.50 - 95.61,
    ("saf", "accuracy"): 96.37 - 95.61,
    ("sam", "cost"): 1.0 / 0.504 - 2.0,
    ("saf", "cost"): 1.0 / 0.976 - 1.0,
}

#: Relative Lanczos residual of the top eigenvalues.
EIGEN_TOL = 1e-3
#: Hutch++ probes before its standard-error rule may stop.
TRACE_MIN_PROBES = 10


@dataclass(frozen=True)
class MeasureConfig(ExperimentConfig):
    """:class:`ExperimentConfig` plus the knobs of the Hessian measures and the step timing."""

    # sharpness of the final models (one fixed batch of training images, eval-mode BN)
    hessian_samples: int = 512  # the first training images
    hessian_top_k: int = 5  # Lanczos eigenvalues; lambda_ratio = lambda_1 / lambda_k
    trace_rtol: float = 0.05  # Hutch++ stops at this relative standard error
    trace_sketch: int = 10  # Hutch++ sketch columns
    trace_max_hvp: int = 200
    density_runs: int = 1  # SLQ probes
    density_steps: int = 30  # Lanczos steps per SLQ probe
    sharpness_rho: float = 0.05  # radius of the ascent sharpness (SAF Fig. 4b)
    # per-step cost
    timing_rounds: int = 40  # timed rounds of one step per optimizer
    timing_warmup: int = 5  # untimed rounds first

    def __post_init__(self) -> None:
        super().__post_init__()
        fn = type(self).__name__
        for name, low in (
            ("hessian_samples", 2),
            ("hessian_top_k", 1),
            ("trace_sketch", 1),
            ("trace_max_hvp", 2 * self.trace_sketch + TRACE_MIN_PROBES),
            ("density_runs", 1),
            ("density_steps", 1),
            ("timing_rounds", 1),
            ("timing_warmup", 0),
        ):
            v.check_int(fn, name, getattr(self, name), low=low)
        v.check_positive_float(fn, "trace_rtol", self.trace_rtol)
        v.check_positive_float(fn, "sharpness_rho", self.sharpness_rho, allow_zero=True)


#: The measures of the ``smoke`` preset: a small batch, few probes, every code path.
SMOKE_MEASURES: dict[str, Any] = {
    "hessian_samples": 64,
    "hessian_top_k": 2,
    "trace_sketch": 2,
    "trace_rtol": 0.5,
    "trace_max_hvp": 30,
    "density_steps": 6,
    "timing_rounds": 3,
    "timing_warmup": 1,
}
#: The measures of the ``gpu`` preset: a 2,048-image batch, tighter estimates, more rounds.
GPU_MEASURES: dict[str, Any] = {
    "hessian_samples": 2_048,
    "hessian_top_k": 5,
    "trace_rtol": 0.02,
    "trace_sketch": 20,
    "trace_max_hvp": 500,
    "density_runs": 3,
    "density_steps": 80,
    "timing_rounds": 100,
    "timing_warmup": 20,
}


def _cross_entropy(out: NetworkOutput, labels: Tensor) -> Tensor:
    assert out.logits is not None  # loss "ce" builds a classifier
    return F.cross_entropy(out.logits, labels)


def hessian_batch(
    config: MeasureConfig, split: Split, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The fixed evaluation batch: the first ``hessian_samples`` training images and labels."""
    n = min(config.hessian_samples, len(split.train))
    index = torch.arange(n)
    return split.train.batch(index, device), split.train.labels[index].to(device)


def measure_sharpness(
    network: torch.nn.Module, batch: tuple[Any, Any], config: MeasureConfig, seed: int
) -> list[tuple[str, float, dict[str, Any]]]:
    """``(metric, value, extra columns)`` of the Hessian measures of ``network`` on ``batch``."""
    top = sharpness.top_eigenvalues(
        network, _cross_entropy, batch, k=config.hessian_top_k, tol=EIGEN_TOL, seed=seed
    )
    trace = sharpness.hessian_trace(
        network,
        _cross_entropy,
        batch,
        rtol=config.trace_rtol,
        sketch_size=config.trace_sketch,
        min_probes=TRACE_MIN_PROBES,
        max_hvp=config.trace_max_hvp,
        seed=seed,
    )
    ascent = sharpness.ascent_sharpness(network, _cross_entropy, batch, rho=config.sharpness_rho)
    density = sharpness.spectral_density(
        network,
        _cross_entropy,
        batch,
        n_runs=config.density_runs,
        n_steps=config.density_steps,
        seed=seed,
    )
    eig = top.eigenvalues.tolist()
    out: list[tuple[str, float, dict[str, Any]]] = [
        ("lambda_max", eig[0], {}),
        ("trace", trace.estimate, {}),
        ("trace_stderr", trace.stderr, {}),
        ("ascent_sharpness", ascent.sharpness, {}),
        ("hessian_batch_loss", ascent.loss, {}),
        ("n_parameters", float(density.dim), {}),
    ]
    if len(eig) > 1:
        out.append(("lambda_ratio", eig[0] / eig[-1], {}))
    for r, (nodes, weights) in enumerate(zip(density.nodes, density.weights, strict=True)):
        for j, (node, weight) in enumerate(zip(nodes.tolist(), weights.tolist(), strict=True)):
            out.append(("density_node", node, {"slq_run": r, "index": j}))
            out.append(("density_weight", weight, {"slq_run": r, "index": j}))
    return out


def step_costs(
    config: Any,
    split: Split,
    seed: int,
    device: torch.device,
    condition: Callable[[Any, str, int], engine.TrainConfig],
) -> dict[str, dict[str, float]]:
    """Seconds per optimizer step of every condition, timed side by side in rounds.

    Fresh networks of every condition (built as :func:`amcl_lab.engine.train` builds them)
    take ``timing_warmup + timing_rounds`` rounds of one step each on the seed's first
    training batch, in a rotating order; SAF and MESA run at an epoch where their terms are
    on; ``condition(config, optimizer, seed)`` is the training config of each.  Returns
    ``{optimizer: {"step_seconds": median over rounds, "step_cost_ratio": median over rounds
    of the time over SGD's in the same round}}``.
    """
    names = list(config.optimizers)
    first = condition(config, "sgd", seed)
    images, _ = engine.training_set(split, first)
    n = len(images)
    index = engine.batch_indices(n, config.batch_size, seed, 0)
    x = images.batch(index, device)
    labels, index = images.labels[index].to(device), index.to(device)
    aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)
    views = aug.views(x, config.views, torch.Generator().manual_seed(seed))
    epoch = max(config.saf_start_epoch, config.mesa_start_epoch)
    states: dict[str, tuple[Network, engine.Objective, Any]] = {}
    for name in names:
        cfg = condition(config, name, seed)
        torch.manual_seed(seed)
        network = engine.build_network(cfg, split).to(device)
        objective = engine.Objective(cfg).to(device)
        opt = engine.build_optimisation(cfg, network, objective, n, split.num_classes)
        for module in opt.extras().values():
            module.to(device)
        states[name] = (network, objective, opt)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(config.timing_warmup + config.timing_rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            network, objective, opt = states[name]
            sync()
            start = time.perf_counter()
            engine.train_step(network, objective, opt, views, labels, index, epoch)
            sync()
            if r >= config.timing_warmup:
                times[name].append(time.perf_counter() - start)
    costs = {}
    for name, seconds in times.items():
        ratios = [t / s for t, s in zip(seconds, times["sgd"], strict=True)]
        costs[name] = {
            "step_seconds": statistics.median(seconds),
            "step_cost_ratio": statistics.median(ratios),
        }
    return costs


#: Smallest density drawn (the log axis would otherwise reach down to the broadening tails).
DENSITY_FLOOR = 1e-6


def density_curves(
    table: pd.DataFrame, by: str, points: int = 400
) -> tuple[np.ndarray, float, dict[Any, list[np.ndarray]]]:
    """The spectral densities of :func:`measure_sharpness`'s rows, Gaussian-broadened.

    The grid spans the SLQ nodes of every run plus 10 % either side; the broadening is 2 %
    of the span.  Returns ``(grid, sigma, {value of by: [density of each seed]})``, every
    density clamped at :data:`DENSITY_FLOOR`.
    """
    nodes = table[table["metric"] == "density_node"]
    weights = table[table["metric"] == "density_weight"]
    keys = [by, "seed", "slq_run", "index"]
    slq = nodes.merge(weights[[*keys, "value"]], on=keys, suffixes=("_node", "_weight"))
    dims = table[table["metric"] == "n_parameters"].set_index([by, "seed"])["value"]
    low, high = float(slq["value_node"].min()), float(slq["value_node"].max())
    span = max(high - low, 1e-12)
    sigma = 0.02 * span
    grid = torch.linspace(low - 0.1 * span, high + 0.1 * span, points, dtype=torch.float64)
    curves: dict[Any, list[np.ndarray]] = {}
    for (name, seed), part in slq.groupby([by, "seed"]):
        runs = [r.sort_values("index") for _, r in part.groupby("slq_run")]
        density = sharpness.SpectralDensity(
            nodes=tuple(torch.tensor(r["value_node"].to_numpy()) for r in runs),
            weights=tuple(torch.tensor(r["value_weight"].to_numpy()) for r in runs),
            dim=int(dims.loc[(name, seed)]),
            n_hvp=0,
            method="double-backward",
            mode="eval",
        )
        curves.setdefault(name, []).append(
            density.density(grid, sigma).clamp_min(DENSITY_FLOOR).numpy()
        )
    return grid.numpy(), sigma, curves
