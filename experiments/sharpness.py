r"""SGD vs SAM, SAF and MESA: Hessian sharpness, accuracy and per-step cost of the final models.

Foret et al. (ICLR 2021, arXiv:2010.01412) train with SAM, which takes the gradient at the
ascent point :math:`w + \rho g/\lVert g\rVert` (two forward/backward passes per step), and
report flatter minima (Hessian spectra, smaller :math:`\lambda_{max}`) and better accuracy.
Du et al. (NeurIPS 2022, arXiv:2205.14083) get "sharpness-aware training for free" with SAF,
a KL term to the logits each sample had :math:`\tilde E` epochs earlier (one pass per step),
and MESA, the same term against an EMA teacher (one extra forward).  Numbers and setups:
``../shared/spec/sharpness.md``.  Every condition is a supervised cross-entropy run of
:func:`amcl_lab.engine.train` with the engine's optimizer choice (``sgd | sam | saf |
mesa``); for each seed all conditions share the initialisation and the batch order, so the
effects are paired differences to SGD.

Measures (:mod:`amcl_lab.sharpness`), taken on the final model of every run on one fixed
evaluation batch, the same for every optimizer and seed: the first ``hessian_samples``
images of the training split, un-augmented, with their labels.  The loss is the mean cross-entropy
without the weight-decay term (adding it would shift every eigenvalue by ``weight_decay``);
BatchNorm is in eval mode (running statistics: the Hessian of the function the model
computes at test time; the SAM paper removed BatchNorm instead, spec section 5.2);
float32; exact Hessian-vector products by double backward.

* ``lambda_max``: top eigenvalue by Lanczos (``hessian_top_k`` eigenvalues, relative
  residual ``1e-3``); ``lambda_ratio`` = :math:`\lambda_1/\lambda_k` (SAM's
  :math:`\lambda_{max}/\lambda_5` for k = 5).
* ``trace``: Hutch++ (sketch ``trace_sketch``), stopped at a relative standard error of
  ``trace_rtol`` (``trace_stderr`` recorded).
* ``ascent_sharpness``: :math:`L(w + \rho g/\lVert g\rVert) - L(w)` with
  ``sharpness_rho`` = 0.05 (SAF Fig. 4b), and ``hessian_batch_loss`` :math:`L(w)`.
* ``density_node`` / ``density_weight``: stochastic Lanczos quadrature of the spectrum
  (``density_runs`` x ``density_steps`` steps), broadened in :func:`plot`.
* ``step_seconds`` / ``step_cost_ratio``: per-step cost.  After training, each seed times
  the engine's optimizer step (SAM's second pass with frozen BatchNorm statistics, SAF's
  buffer and KL term, MESA's teacher forward and EMA update) on freshly built networks of
  every condition and one batch, side by side: in each of ``timing_rounds`` rounds every
  optimizer takes one step, in a rotating order, after ``timing_warmup`` untimed rounds.
  The ratio is the median over rounds of the condition's time over SGD's time in the same
  round, so load from other processes that changes between rounds cancels (the CPU
  numbers were measured on a shared machine).  Data loading and augmentation are not
  timed; on CUDA the device is synchronised around each step.

Claims (effects paired by seed; 95 % Student-t interval over the seeds):

* ``sam-flatter-lambda-max``, ``sam-flatter-trace``, ``sam-lower-ascent-sharpness``: SAM's
  final model is flatter than SGD's (SAM paper, Hessian spectra of WRN-40-10 on CIFAR-10,
  spec section 1; the sharpness bracket of its Eq. 1).  Effect: relative change to SGD, %.
* ``saf-flatter-lambda-max``, ``saf-flatter-trace``, ``saf-lower-ascent-sharpness``: the same
  for SAF.  The SAF paper motivates its trajectory loss as a sharpness proxy (section 3.1)
  and shows the ascent sharpness dropping when it switches on (Fig. 4b); it reports no
  Hessian eigenvalues (spec section 1), so the Hessian claims for SAF are the issue's
  extrapolation of that one.
* ``sam-more-accurate``, ``saf-more-accurate``: higher test accuracy than SGD (SAF paper
  Table 3: ResNet-18 on CIFAR-10, +0.9 / +0.8 points).  Effect: difference in points.
* ``sam-costs-about-2x``: SAM's per-step time over SGD's is 2 within +-0.25 (SAF paper
  Table 1 and 3, throughput 49-51 % of SGD's; spec section 7.4).  Effect: ratio - 2.
* ``saf-costs-about-1x``: SAF's ratio is below 1.10 (spec section 7.4; the paper's 97.6-99.3
  % throughput).  Effect: ratio - 1, claimed below 0.10.

MESA is trained, measured and drawn alongside (the issue states no claim for it).

Data.  ``cpu`` and ``smoke`` use scikit-learn's 8x8 digits (1,442 train / 355 test, bundled):
supervised training of the engine's small CNN (width 16, 24 k parameters) for 30 epochs of
11 steps (batch 128) takes seconds per run, so five seeds of four optimizers, their Hessian
measures and the timing rounds fit the CPU budget; MNIST-5k (28x28) costs about twelve
times more per image and would leave one or two seeds.  Augmentation: random resized crops
of at least half the area (``augment="a"``), the digit analogue of the papers' "basic"
crop-and-flip augmentation (flips change digits).  SAF and MESA are scaled to the small
data in epochs, not steps: :math:`\tilde E` = 3 and :math:`E_{start}` = 5 epochs are the
paper's values (0-based, the term is on from the sixth epoch, for 25 of the 30 epochs,
83 % of training against 97.5 % in the paper's 200 CIFAR epochs), since every sample must be
revisited between the logits it is compared with; one epoch is only 11 steps here, so
MESA's EMA decay follows the spec's rule of thumb (horizon :math:`1/(1-\beta)` steps about
:math:`\tilde E` epochs): :math:`\beta = 0.97` (33 steps) instead of 0.9998 (5,000
ImageNet steps).  SAM's :math:`\rho` = 0.05, SAF's :math:`\lambda` = 0.3 and MESA's 0.8,
:math:`\tau` = 5: the papers' values.

What the ``cpu`` preset found (five seeds on a shared machine; the numbers are in
``docs/results.md``): SAM's final models are flatter than SGD's on all three
measures (about 20 % lower each, intervals excluding zero) and a SAM step costs about twice
an SGD step.  SAF's final models are not flatter: their trace is higher than SGD's (not
reproduced) and their top eigenvalue and ascent sharpness are not distinguishable from
SGD's (inconclusive).  The trajectory term distils the softer predictions of three epochs
earlier, so at the end of a short run the SAF model is less confident on the training
images (its loss on the evaluation batch, ``hessian_batch_loss``, is about three times
SGD's), and the cross-entropy Hessian grows with the probability mass left off the label
(the :math:`\mathrm{diag}(p) - pp^\top` factor of the softmax Hessian, spec section 7.1),
while SGD's nearly saturated final model has a small one.  The paper's evidence is the
ascent sharpness *during* 200-epoch runs, and it reports no Hessian numbers.  SAF is
nevertheless more accurate than SGD here, whereas SAM's accuracy gain is inconclusive at
98 % accuracy on 355 test images.  SAF's step costs about 1.1x SGD's on this small CPU
network, at the claim's bound: SAF adds no pass, but its KL and buffer work is a fixed
millisecond or so next to a step of 15-25 ms, and timings on the shared machine vary
between seeds; the sharpness benchmark (``README.md``, section Benchmarks) shows the
ratio falling to 1.01x on a wider network.

``gpu`` is the SAF paper's CIFAR-10 setting: CIFAR-stem ResNet-18, batch 128, lr 0.1,
momentum 0.9, weight decay 5e-4, cosine schedule, 200 epochs, SAF/MESA hyperparameters as
in the paper (MESA :math:`\beta` = 0.9998), Hessian batch of 2,048 training images,
random resized crops of at least half the area plus flips (the engine has no pad-and-crop);
it needs ``--data-dir``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from amcl_lab import _validation as v
from amcl_lab import engine, figures, sharpness
from amcl_lab.data import Augmentation, Split, load_dataset
from amcl_lab.models import Network, NetworkOutput

from . import _claims as claims
from ._protocol import Claim, ExperimentConfig, Results

__all__ = ["CLAIMS", "CONDITIONS", "PRESETS", "Config", "plot", "run"]

#: Optimizers this experiment compares; ``"sgd"`` is the reference of every effect.
CONDITIONS = ("sgd", "sam", "saf", "mesa")
#: Relative Lanczos residual of the top eigenvalues.
EIGEN_TOL = 1e-3
#: Hutch++ probes before its standard-error rule may stop.
TRACE_MIN_PROBES = 10
#: Claimed per-step cost of SAM over SGD and the +- band of "about 2x".
SAM_COST, SAM_COST_MARGIN = 2.0, 0.25
#: Largest per-step cost of SAF over SGD that counts as "about 1x" (spec section 7.4).
SAF_COST_BOUND = 1.10


@dataclass(frozen=True)
class Config(ExperimentConfig):
    """:class:`ExperimentConfig` for supervised training under several optimizers (``cpu``).

    The training fields apply to every condition; ``optimizer`` and ``optimizer_options``
    are set per condition from ``optimizers`` and the ``saf_*`` / ``mesa_*`` fields (SAM
    uses ``rho``), so they must keep their defaults.
    """

    dataset: str = "digits"
    augment: str = "a"  # random resized crops; flips would change digits
    crop_min_scale: float = 0.5
    views: int = 1
    encoder: str = "cnn"
    width: int = 16
    proj_dim: int = 0  # a linear classifier on the features, no projector
    loss: str = "ce"
    supervised: bool = True
    batch_size: int = 128
    lr: float = 0.1
    steps: int = 330  # 30 epochs of 11 steps (1,442 // 128)
    eval_every: int = 0  # evaluate at the start and the end only
    checkpoint_every: int = 110
    probe_steps: int = 50
    seeds: int = 5
    threads: int = 1  # small CNN: one thread is fastest on shared cores
    # conditions
    optimizers: tuple[str, ...] = CONDITIONS  # subset of CONDITIONS including "sgd"
    saf_lag: int = 3  # E~, epochs between a logit and its target (paper: 3)
    saf_start_epoch: int = 5  # 0-based epoch the trajectory term switches on (paper: 5)
    saf_weight: float = 0.3  # lambda (paper: 0.3)
    saf_temperature: float = 5.0  # tau (paper: 5)
    mesa_decay: float = 0.97  # EMA beta; horizon 1/(1-beta) = 33 steps = 3 epochs here
    mesa_start_epoch: int = 5
    mesa_weight: float = 0.8  # lambda (paper: 0.8)
    mesa_temperature: float = 5.0
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
        if self.optimizer != "sgd" or self.optimizer_options:
            raise ValueError(
                f"{fn}: optimizer and optimizer_options are set per condition; choose the "
                f"conditions with optimizers (a subset of {', '.join(CONDITIONS)})"
            )
        if not self.optimizers or "sgd" not in self.optimizers:
            raise ValueError(f"{fn}: optimizers must include 'sgd' (the reference)")
        for name in self.optimizers:
            v.check_choice(fn, "optimizers entry", name, CONDITIONS)
        if len(set(self.optimizers)) != len(self.optimizers):
            raise ValueError(f"{fn}: optimizers has duplicates: {self.optimizers}")
        if self.loss != "ce":
            raise ValueError(f"{fn}: SAF and MESA distil classifier logits; loss must be 'ce'")
        for name, low in (
            ("saf_lag", 1),
            ("saf_start_epoch", 0),
            ("mesa_start_epoch", 0),
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
        for name in ("saf_temperature", "mesa_temperature", "trace_rtol"):
            v.check_positive_float(fn, name, getattr(self, name))
        for name in ("saf_weight", "mesa_weight", "sharpness_rho"):
            v.check_positive_float(fn, name, getattr(self, name), allow_zero=True)
        if not 0.0 <= self.mesa_decay <= 1.0:
            raise ValueError(f"{fn}: mesa_decay must be in [0, 1], got {self.mesa_decay}")


def smoke() -> Config:
    """A few epochs of a tiny CNN on 10 % of the digits: every code path in seconds."""
    return Config(
        width=4,
        train_fraction=0.1,  # 144 images: 4 steps of 32 per epoch
        batch_size=32,
        steps=16,  # 4 epochs
        checkpoint_every=8,
        probe_steps=5,
        knn_k=20,
        seeds=3,
        saf_lag=1,
        saf_start_epoch=1,
        mesa_decay=0.5,
        mesa_start_epoch=1,
        hessian_samples=64,
        hessian_top_k=2,
        trace_sketch=2,
        trace_rtol=0.5,
        trace_max_hvp=30,
        density_steps=6,
        timing_rounds=3,
        timing_warmup=1,
    )


def cpu() -> Config:
    """Five seeds of four optimizers on the digits; about 4 CPU minutes with one thread."""
    return Config()


def gpu() -> Config:
    """The SAF paper's CIFAR-10 ResNet-18 setting (spec sharpness.md sections 1 and 3.6)."""
    return Config(
        dataset="cifar10",
        augment="ae",  # crop + flip: the engine's closest to pad-and-crop + flip
        crop_min_scale=0.5,
        encoder="resnet18",
        width=64,
        batch_size=128,
        lr=0.1,
        steps=200 * (50_000 // 128),  # 200 epochs
        checkpoint_every=2_000,
        probe_steps=100,
        seeds=3,
        threads=0,
        mesa_decay=0.9998,  # the released code's value
        hessian_samples=2_048,
        hessian_top_k=5,
        trace_rtol=0.02,
        trace_sketch=20,
        trace_max_hvp=500,
        density_runs=3,
        density_steps=80,
        timing_rounds=100,
        timing_warmup=20,
    )


PRESETS = {"smoke": smoke, "cpu": cpu, "gpu": gpu}


# --- one condition -------------------------------------------------------------------------------


def condition(config: Config, name: str, seed: int) -> engine.TrainConfig:
    """The :class:`~amcl_lab.engine.TrainConfig` of optimizer ``name`` at ``seed``."""
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(engine.TrainConfig)}
    options: tuple[str, ...] = ()
    if name == "saf":
        options = (
            f"lag={config.saf_lag}",
            f"start_epoch={config.saf_start_epoch}",
            f"weight={config.saf_weight!r}",
            f"temperature={config.saf_temperature!r}",
        )
    elif name == "mesa":
        options = (
            f"decay={config.mesa_decay!r}",
            f"start_epoch={config.mesa_start_epoch}",
            f"weight={config.mesa_weight!r}",
            f"temperature={config.mesa_temperature!r}",
        )
    return engine.TrainConfig(
        **{**base, "optimizer": name, "optimizer_options": options, "seed": seed}
    )


def _cross_entropy(out: NetworkOutput, labels: torch.Tensor) -> torch.Tensor:
    assert out.logits is not None  # loss "ce" builds a classifier
    return F.cross_entropy(out.logits, labels)


def hessian_batch(
    config: Config, split: Split, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed evaluation batch: the first ``hessian_samples`` training images and labels."""
    n = min(config.hessian_samples, len(split.train))
    index = torch.arange(n)
    return split.train.batch(index, device), split.train.labels[index].to(device)


def measure_sharpness(
    network: torch.nn.Module, batch: tuple[Any, Any], config: Config, seed: int
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
    config: Config, split: Split, seed: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per optimizer step of every condition, timed side by side in rounds.

    Fresh networks of every condition (built as :func:`amcl_lab.engine.train` builds them)
    take ``timing_warmup + timing_rounds`` rounds of one step each on the seed's first
    training batch, in a rotating order; SAF and MESA run at an epoch where their terms are
    on.  Returns the timed rounds: ``{optimizer: [seconds per round]}``.
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
    return times


# --- the experiment ------------------------------------------------------------------------------


def run(config: Config, run: engine.Run) -> list[dict[str, Any]]:
    """Per seed: train every optimizer, measure its final model, then time the steps."""
    split = load_dataset(config.dataset, config.data_dir or None)
    batch = hessian_batch(config, split, run.device)
    rows: list[dict[str, Any]] = []

    def add(name: str, final: dict[str, Any], metric: str, value: float, **extra: Any) -> None:
        rows.append(
            {"dataset": config.dataset, "optimizer": name, **final, **extra}
            | {"metric": metric, "value": value}
        )

    for seed in run.seeds:
        for name in config.optimizers:
            result = engine.train(condition(config, name, seed), run, tag=f"{name}-seed{seed}")
            rows += result.rows(dataset=config.dataset, optimizer=name)
            final = {"seed": seed, "step": result.final["step"], "epoch": result.final["epoch"]}
            for metric, value, extra in measure_sharpness(result.network, batch, config, seed):
                add(name, final, metric, value, **extra)
        times = step_costs(config, split, seed, run.device)
        for name, seconds in times.items():
            ratios = [t / s for t, s in zip(seconds, times["sgd"], strict=True)]
            add(name, final, "step_seconds", statistics.median(seconds))
            add(name, final, "step_cost_ratio", statistics.median(ratios))
    return rows


# --- claims --------------------------------------------------------------------------------------


SGD = {"optimizer": "sgd"}  # the control of every effect


def _final(table: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` at the table's last step, indexed by ``(seed, optimizer)``."""
    return claims.final(table, metric, ["optimizer"], same_step=True)


def _relative(metric: str, optimizer: str) -> claims.Measure:
    return lambda t: claims.relative_change(_final(t, metric), {"optimizer": optimizer}, SGD)


def _points(optimizer: str) -> claims.Measure:
    arm = {"optimizer": optimizer}
    return lambda t: claims.paired_difference(_final(t, "test_accuracy"), arm, SGD, scale=100.0)


def _cost(optimizer: str, minus: float) -> claims.Measure:
    arm = {"optimizer": optimizer}
    return lambda t: claims.paired(_final(t, "step_cost_ratio"), arm, SGD, lambda x, _: x - minus)


_SAM = "Foret et al. 2021 (SAM, arXiv:2010.01412)"
_SAF = "Du et al. 2022 (SAF, arXiv:2205.14083)"
_SAM_SPECTRA = (
    f"{_SAM}, Hessian spectra of the final WRN-40-10 on CIFAR-10 (lambda_max 1.0 vs 24.2 "
    "for SGD); spec sharpness.md section 1"
)
_SAF_PROXY = (
    f"{_SAF}, section 3.1 (the trajectory loss as a free sharpness proxy); the paper "
    "reports no Hessian numbers (spec sharpness.md section 1): the issue's extrapolation"
)
_ASCENT = "ascent sharpness L(w + rho g/|g|) - L(w)"
_SLUGS = {
    "lambda_max": "flatter-lambda-max",
    "trace": "flatter-trace",
    "ascent_sharpness": "lower-ascent-sharpness",
}


def _flatter(optimizer: str, metric: str, what: str, source: str) -> Claim:
    return Claim(
        id=f"{optimizer}-{_SLUGS[metric]}",
        statement=(
            f"Training with {optimizer.upper()} ends at a flatter minimum than SGD: a smaller "
            f"{what}"
        ),
        source=source,
        effect=(
            f"{what} of the final model on the fixed evaluation batch, {optimizer.upper()} "
            "relative to SGD of the same seed (%)"
        ),
        measure=_relative(metric, optimizer),
        direction="less",
    )


def _more_accurate(optimizer: str) -> Claim:
    return Claim(
        id=f"{optimizer}-more-accurate",
        statement=f"{optimizer.upper()} reaches a higher test accuracy than SGD",
        source=f"{_SAF}, Table 3 (ResNet-18, CIFAR-10: SGD 95.61, SAM 96.50, SAF 96.37)",
        effect=(
            f"test accuracy of the final classifier, {optimizer.upper()} minus SGD of the same "
            "seed (percentage points)"
        ),
        measure=_points(optimizer),
    )


CLAIMS = (
    _flatter("sam", "lambda_max", "top Hessian eigenvalue", _SAM_SPECTRA),
    _flatter("sam", "trace", "Hessian trace", _SAM_SPECTRA),
    _flatter("sam", "ascent_sharpness", _ASCENT, f"{_SAM}, Eq. 1 (the sharpness SAM minimises)"),
    _flatter("saf", "lambda_max", "top Hessian eigenvalue", _SAF_PROXY),
    _flatter("saf", "trace", "Hessian trace", _SAF_PROXY),
    _flatter(
        "saf",
        "ascent_sharpness",
        _ASCENT,
        f"{_SAF}, Fig. 4b (the ascent sharpness, rho = 0.05, drops when the trajectory loss "
        "switches on); spec sharpness.md section 1",
    ),
    _more_accurate("sam"),
    _more_accurate("saf"),
    Claim(
        id="sam-costs-about-2x",
        statement="A SAM step costs about twice an SGD step (two forward/backward passes)",
        source=f"{_SAF}, Tables 1 and 3 (SAM throughput 49-51 % of SGD's); spec section 7.4",
        effect=(
            "median over rounds of SAM's step time over SGD's in the same round, minus "
            f"{SAM_COST:g} (ratio units)"
        ),
        measure=_cost("sam", SAM_COST),
        direction="within",
        margin=SAM_COST_MARGIN,
    ),
    Claim(
        id="saf-costs-about-1x",
        statement="A SAF step costs about as much as an SGD step (no extra pass)",
        source=f"{_SAF}, Tables 1 and 3 (SAF throughput 97.6-99.3 % of SGD's); spec section 7.4",
        effect=(
            "median over rounds of SAF's step time over SGD's in the same round, minus 1 "
            f"(claimed below {SAF_COST_BOUND - 1:.2f})"
        ),
        measure=_cost("saf", 1.0),
        direction="less",
        threshold=SAF_COST_BOUND - 1.0,
    ),
)


# --- figures -------------------------------------------------------------------------------------


def _order(table: pd.DataFrame) -> list[str]:
    present = set(table["optimizer"])
    return [name for name in CONDITIONS if name in present]


def _mean_err(values: np.ndarray) -> tuple[float, list[list[float]]]:
    """Mean and the (below, above) error-bar lengths of its 95 % CI (0 when undefined)."""
    mean, low, high = figures.mean_ci(values)
    if not (math.isfinite(low) and math.isfinite(high)):
        return mean, [[0.0], [0.0]]
    return mean, [[mean - low], [high - mean]]


_BARS = (
    ("lambda_max", "top Hessian eigenvalue", 1.0),
    ("trace", "Hessian trace", 1.0),
    ("ascent_sharpness", "ascent sharpness", 1.0),
    ("test_accuracy", "test accuracy (%)", 100.0),
)


def _sharpness_bars(table: pd.DataFrame, title: str, out_dir: Path) -> list[Path]:
    order = _order(table)
    fig, axes = figures.new_figure(len(_BARS), width="double", aspect=1.1)
    for ax, (metric, label, scale) in zip(axes[0], _BARS, strict=True):
        wide = scale * _final(table, metric).unstack("optimizer")
        for i, name in enumerate(order):
            values = wide[name].dropna().to_numpy()
            mean, err = _mean_err(values)
            ax.bar(i, mean, color=f"C{i}", alpha=0.7, width=0.7)
            ax.errorbar(i, mean, yerr=err, color="black", capsize=3, linewidth=0.8)
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
            ax.scatter(i + np.asarray(offsets), values, s=5, color="black", zorder=3)
        ax.set_xticks(range(len(order)), [name.upper() for name in order])
        ax.set_ylabel(label)
        if metric == "test_accuracy":
            low = float(np.nanmin(wide[order].to_numpy()))
            ax.set_ylim(max(0.0, low - 3.0), 100.0)
    fig.suptitle(title)
    return figures.save(fig, out_dir / "sharpness_bars")


def _spectral_density(table: pd.DataFrame, title: str, out_dir: Path) -> list[Path]:
    """SLQ densities per seed (thin) and their mean over seeds (bold), log scale."""
    nodes = table[table["metric"] == "density_node"]
    weights = table[table["metric"] == "density_weight"]
    keys = ["optimizer", "seed", "slq_run", "index"]
    slq = nodes.merge(weights[[*keys, "value"]], on=keys, suffixes=("_node", "_weight"))
    dims = _final(table, "n_parameters").unstack("optimizer")
    low, high = float(slq["value_node"].min()), float(slq["value_node"].max())
    span = max(high - low, 1e-12)
    sigma = 0.02 * span
    grid = torch.linspace(low - 0.1 * span, high + 0.1 * span, 400, dtype=torch.float64)
    floor = 1e-6
    fig, axes = figures.new_figure(1, width="single", aspect=0.8)
    ax = axes[0, 0]
    for i, name in enumerate(_order(table)):
        curves = []
        for seed, part in slq[slq["optimizer"] == name].groupby("seed"):
            runs = [r.sort_values("index") for _, r in part.groupby("slq_run")]
            curves.append(
                sharpness.SpectralDensity(
                    nodes=tuple(torch.tensor(r["value_node"].to_numpy()) for r in runs),
                    weights=tuple(torch.tensor(r["value_weight"].to_numpy()) for r in runs),
                    dim=int(dims.loc[seed, name]),
                    n_hvp=0,
                    method="double-backward",
                    mode="eval",
                )
                .density(grid, sigma)
                .clamp_min(floor)
                .numpy()
            )
        for curve in curves:
            ax.plot(grid.numpy(), curve, color=f"C{i}", alpha=0.3, linewidth=0.5)
        ax.plot(grid.numpy(), np.mean(curves, axis=0), color=f"C{i}", label=name.upper())
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel(f"Hessian eigenvalue (Gaussian broadening sigma = {sigma:.2g})")
    ax.set_ylabel("spectral density")
    ax.legend()
    fig.suptitle(title)
    return figures.save(fig, out_dir / "spectral_density")


def _cost_vs_accuracy(table: pd.DataFrame, title: str, out_dir: Path) -> list[Path]:
    cost = _final(table, "step_cost_ratio").unstack("optimizer")
    accuracy = 100.0 * _final(table, "test_accuracy").unstack("optimizer")
    fig, axes = figures.new_figure(1, width="single", aspect=0.8)
    ax = axes[0, 0]
    for i, name in enumerate(_order(table)):
        x, xerr = _mean_err(cost[name].dropna().to_numpy())
        y, yerr = _mean_err(accuracy[name].dropna().to_numpy())
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=f"C{i}", capsize=3)
        ax.annotate(name.upper(), (x, y), xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("time per step / SGD's (median over rounds)")
    ax.set_ylabel("test accuracy (%)")
    fig.suptitle(title)
    return figures.save(fig, out_dir / "cost_vs_accuracy")


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Sharpness bars, the spectral density and cost vs accuracy, seeds as 95 % CIs."""
    table = results.table
    dataset = ", ".join(sorted(table["dataset"].unique()))
    title = f"{dataset}: mean and 95 % CI over {len(results.seeds)} seeds"
    with figures.house_style():
        return [
            *_sharpness_bars(table, title, out_dir),
            *_spectral_density(
                table, f"{dataset}: SLQ, eval-mode BN, seeds thin, mean bold", out_dir
            ),
            *_cost_vs_accuracy(table, title, out_dir),
        ]
