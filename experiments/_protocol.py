"""The experiment protocol's shared machinery: config base, claims, results, the runner.

See the package docstring (:mod:`amcl_lab.experiments`) for what a module must define.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import torch

from amcl_lab import _validation as v
from amcl_lab import engine
from amcl_lab.figures import mean_ci
from amcl_lab.io import write_json

from . import _claims, _parallel, _stats

__all__ = [
    "SETUP_FAILED",
    "SIMCLR_CIFAR10",
    "VERDICTS",
    "Claim",
    "ClaimResult",
    "ExperimentConfig",
    "Results",
    "derive_loss",
    "describe",
    "evaluate_claim",
    "evaluate_claims",
    "gpu_cifar10",
    "load",
    "names",
    "resolve_config",
    "run_experiment",
    "train_config",
]

#: The verdicts a claim can get.  ``setup failed (collapsed)``: an arm the claim rests on
#: collapsed, so the run says nothing about the paper (it is the setup that failed).
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "setup failed (collapsed)")
SETUP_FAILED = VERDICTS[3]
DIRECTIONS = ("greater", "less", "within")
MIN_SEEDS = 3
REQUIRED_PRESETS = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class ExperimentConfig(engine.TrainConfig):
    """:class:`amcl_lab.engine.TrainConfig` plus how an experiment is executed.

    The seeds are ``seed, seed + 1, ..., seed + seeds - 1``; claims need at least 3.
    ``threads`` fixes PyTorch's intra-op CPU threads for the run (0 keeps PyTorch's
    default): small models gain little from more threads, lose a lot when the cores are
    shared, and a fixed count keeps CPU results reproducible bit for bit.
    """

    seeds: int = 3  # independent runs; claims need >= 3
    threads: int = 0  # torch.set_num_threads for the run; 0 = PyTorch's default

    def __post_init__(self) -> None:
        super().__post_init__()
        v.check_int(type(self).__name__, "seeds", self.seeds, low=1)
        v.check_int(type(self).__name__, "threads", self.threads, low=0)

    @property
    def seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.seed, self.seed + self.seeds))


@dataclass(frozen=True)
class Claim:
    """A paper statement checked by measuring one effect per seed.

    Attributes:
        id: short slug, unique within the module (``"probe-beats-random-init"``).
        statement: the claim in one sentence, as the paper makes it.
        source: where the paper makes it (authors, year, section / figure / table).
        effect: what one seed's number is, with its unit ("probe accuracy after training
            minus at initialisation, percentage points").
        measure: ``measure(table) -> {seed: effect}``, computed from the tidy results table
            only (never a constant).
        direction: ``"greater"`` (the claim says effect > ``threshold``), ``"less"`` (effect
            < ``threshold``) or ``"within"`` (``|effect| <= margin``: an equivalence claim such
            as "a small projector matches a large one").
        threshold: the boundary for ``"greater"`` / ``"less"``.
        margin: the equivalence margin for ``"within"``, > 0.
        arms: the conditions (``{column: value}``) of the training arms the claim rests on.
            If a run of one of them ended collapsed (held-out mean negative cosine above
            0.9 or embedding rank below 2 at its last evaluation,
            :func:`amcl_lab.engine.evaluation.collapse_diagnostics`), the verdict is
            ``setup failed (collapsed)``: the effect is still measured and shown, but it
            is no evidence about the paper.
        expected: the effect the paper reports, in the units of ``effect`` (NaN when it
            reports none): what the power analysis aims at (``seeds_for_expected`` of the
            result is the number of seeds that detect it with 80 % power).
        bootstrap: the effect is not normal across seeds (a rank correlation, a ratio, a
            fitted exponent), so the result also carries the BCa bootstrap interval over
            seeds (:func:`amcl_lab.experiments._stats.bootstrap_ci`) and its verdict.
    """

    id: str
    statement: str
    source: str
    effect: str
    measure: Callable[[pd.DataFrame], Mapping[int, float]]
    direction: str = "greater"
    threshold: float = 0.0
    margin: float = 0.0
    arms: tuple[Mapping[str, Any], ...] = ()
    expected: float = math.nan
    bootstrap: bool = False

    def __post_init__(self) -> None:
        v.check_choice("Claim", "direction", self.direction, DIRECTIONS)
        if self.direction == "within" and not self.margin > 0:
            raise ValueError(f"Claim {self.id!r}: direction 'within' needs a margin > 0")


@dataclass(frozen=True)
class ClaimResult:
    """A claim's measured effect over seeds, its confidence interval and the verdict.

    The fields after ``reason`` are the statistics of :mod:`amcl_lab.experiments._stats`:
    ``level`` of the interval (0.95, or ``1 - 0.05 / K`` for ``--seeds auto`` with ``K``
    looks); the per-seed standard deviation ``sd``; the decision p-values
    ``p_reproduced`` / ``p_not_reproduced`` (the verdict is ``reproduced`` exactly when
    ``p_reproduced < 1 - level``); ``holm_p`` and ``holm_verdict``, the verdict after Holm's
    correction over the claims of the run (the ``verdict`` itself is unadjusted);
    ``expected`` (the paper's effect), ``seeds_for_expected`` and ``seeds_for_observed``
    (seeds for 80 % power if the true effect were the paper's or the measured mean, at this
    ``sd``; None when no number of seeds would do); ``boot_low`` / ``boot_high`` /
    ``boot_verdict``, the BCa bootstrap interval and its verdict for a claim with
    ``bootstrap`` (NaN / "" otherwise, and below 8 seeds).
    """

    id: str
    statement: str
    source: str
    effect: str
    direction: str
    threshold: float
    margin: float
    per_seed: dict[str, float]
    n_seeds: int
    mean: float
    ci_low: float
    ci_high: float
    verdict: str
    reason: str
    level: float = 0.95
    sd: float = math.nan
    p_reproduced: float = math.nan
    p_not_reproduced: float = math.nan
    holm_p: float = math.nan
    holm_verdict: str = ""
    expected: float = math.nan
    seeds_for_expected: int | None = None
    seeds_for_observed: int | None = None
    boot_low: float = math.nan
    boot_high: float = math.nan
    boot_verdict: str = ""


def _verdict(claim: Claim, low: float, high: float) -> tuple[str, str]:
    if claim.direction == "greater":
        if low > claim.threshold:
            return "reproduced", f"the whole CI is above {claim.threshold:g}"
        if high <= claim.threshold:
            return "not reproduced", f"the whole CI is at or below {claim.threshold:g}"
        return "inconclusive", f"the CI contains {claim.threshold:g}"
    if claim.direction == "less":
        if high < claim.threshold:
            return "reproduced", f"the whole CI is below {claim.threshold:g}"
        if low >= claim.threshold:
            return "not reproduced", f"the whole CI is at or above {claim.threshold:g}"
        return "inconclusive", f"the CI contains {claim.threshold:g}"
    m = claim.margin
    if -m <= low and high <= m:
        return "reproduced", f"the whole CI is within +-{m:g}"
    if low > m or high < -m:
        return "not reproduced", f"the whole CI is outside +-{m:g}"
    return "inconclusive", f"the CI straddles the margin +-{m:g}"


def evaluate_claim(claim: Claim, table: pd.DataFrame, level: float = 0.95) -> ClaimResult:
    """Measure ``claim`` on ``table`` and decide the verdict from the confidence interval.

    The per-seed effects get a Student-t interval (:func:`amcl_lab.figures.mean_ci`).
    ``"greater"``: reproduced when the whole interval lies above the threshold, not
    reproduced when it lies at or below it, inconclusive when it contains it (``"less"``
    mirrors this).  ``"within"``: reproduced when the interval lies inside
    ``[-margin, margin]``, not reproduced when it lies entirely outside, inconclusive
    otherwise.  Fewer than 3 seeds, or a non-finite effect, is always inconclusive.  A
    collapsed run of one of the claim's ``arms`` overrides all of these:
    ``setup failed (collapsed)``.
    """
    per_seed = {int(k): float(val) for k, val in claim.measure(table).items()}
    values = list(per_seed.values())
    mean, low, high = mean_ci(values, level) if values else (math.nan, math.nan, math.nan)
    collapsed = [
        f"{_describe(arm)} (seeds {', '.join(map(str, seeds))})"
        for arm in claim.arms
        if (seeds := _claims.collapsed_seeds(table, arm))
    ]
    if collapsed:
        verdict = SETUP_FAILED
        reason = (
            f"collapsed: {'; '.join(collapsed)} ended with held-out negative cosine > 0.9 or "
            "embedding rank < 2"
        )
    elif len(values) < MIN_SEEDS:
        verdict, reason = "inconclusive", f"{len(values)} seeds; a verdict needs {MIN_SEEDS}"
    elif not all(math.isfinite(x) for x in (mean, low, high)):
        verdict, reason = "inconclusive", "the effect is not finite for every seed"
    else:
        verdict, reason = _verdict(claim, low, high)
    return ClaimResult(
        claim.id,
        claim.statement,
        claim.source,
        claim.effect,
        claim.direction,
        claim.threshold,
        claim.margin,
        {str(k): val for k, val in sorted(per_seed.items())},
        len(values),
        mean,
        low,
        high,
        verdict,
        reason,
        level,
        **_statistics(claim, values, level),
    )


def _statistics(claim: Claim, values: list[float], level: float) -> dict[str, Any]:
    """The fields of :class:`ClaimResult` that :mod:`._stats` computes from the effects."""
    where = {"direction": claim.direction, "threshold": claim.threshold, "margin": claim.margin}
    finite = len(values) >= 2 and all(math.isfinite(x) for x in values)
    sd = float(np.std(values, ddof=1)) if finite else math.nan
    p_r, p_n = _stats.decision_p_values(values, **where) if finite else (math.nan, math.nan)
    alpha = 1.0 - level
    out: dict[str, Any] = {"sd": sd, "p_reproduced": p_r, "p_not_reproduced": p_n}
    out["expected"] = claim.expected
    for key, target in (("seeds_for_expected", claim.expected), ("seeds_for_observed", None)):
        mean = float(np.mean(values)) if target is None and finite else target
        out[key] = (
            _stats.seeds_for_power(mean, sd, **where, alpha=alpha)
            if finite and mean is not None and math.isfinite(mean) and sd > 0
            else None
        )
    if claim.bootstrap and finite and len(values) >= _stats.BOOTSTRAP_MIN_SEEDS:
        low, high = _stats.bootstrap_ci(values, level)
        out |= {"boot_low": low, "boot_high": high, "boot_verdict": _verdict(claim, low, high)[0]}
    return out


def _describe(arm: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in arm.items())


def evaluate_claims(
    claims: Sequence[Claim], table: pd.DataFrame, level: float = 0.95
) -> list[ClaimResult]:
    """:func:`evaluate_claim` for every claim, in order, plus Holm over them.

    ``holm_p`` / ``holm_verdict``: :func:`amcl_lab.experiments._stats.holm_verdicts` over the
    claims of the table (the family of one run) at the error rate ``1 - level``.
    """
    results = [evaluate_claim(c, table, level) for c in claims]
    adjusted = _stats.holm_verdicts(results, alpha=1.0 - level)
    return [
        dataclasses.replace(r, holm_p=p, holm_verdict=verdict)
        for r, (p, verdict) in zip(results, adjusted, strict=True)
    ]


@dataclass(frozen=True)
class Results:
    """The saved outcome of a run, as ``plot`` functions and the report read it.

    ``rows``: the tidy results table (one measurement per row); ``claims``: the evaluated
    claims as dicts (fields of :class:`ClaimResult`); ``sequential``: for ``--seeds auto``,
    the plan (``start``, ``cap``, planned ``looks``, ``alpha_per_look``, ``level``) and the
    seed counts of the looks that ran (``looks_run``), else None; ``session_seconds``: the
    wall time of each session that wrote the results (the first run, then every
    ``--resume`` of it), ``wall_seconds`` their sum.  A session that ended before writing
    ``results.json`` (killed, interrupted) is not counted.
    """

    experiment: str
    run_id: str
    preset: str
    seeds: tuple[int, ...]
    rows: tuple[dict[str, Any], ...]
    claims: tuple[dict[str, Any], ...]
    wall_seconds: float
    sequential: dict[str, Any] | None = None  # the looks of a --seeds auto run
    session_seconds: tuple[float, ...] = ()

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows))

    @classmethod
    def load(cls, run_dir: str | Path) -> Results:
        """Read ``<run_dir>/results.json``."""
        data = json.loads((Path(run_dir) / "results.json").read_text())
        return cls(
            data["experiment"],
            data["run_id"],
            data["preset"],
            tuple(data["seeds"]),
            tuple(data["rows"]),
            tuple(data["claims"]),
            data["wall_seconds"],
            data.get("sequential"),
            tuple(data.get("session_seconds", [data["wall_seconds"]])),
        )

    def save(self, run_dir: str | Path) -> None:
        """Write ``<run_dir>/results.json`` atomically (non-finite numbers become null)."""
        write_json(Path(run_dir) / "results.json", dataclasses.asdict(self))


_PACKAGE = __name__.rpartition(".")[0]


def names() -> list[str]:
    """Names of the experiment modules of this package, sorted."""
    folder = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(folder) if not m.name.startswith("_"))


def load(name: str) -> ModuleType:
    """Import the experiment ``name`` and check that it follows the protocol.

    Raises:
        ValueError: an unknown name (the message lists the valid ones) or a module that
            breaks the protocol (the message names what is missing).
    """
    if name not in names():
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(names())}")
    module = importlib.import_module(f"{_PACKAGE}.{name}")
    check_module(name, module)
    return module


def describe(name: str) -> str:
    """The first line of the experiment's docstring (what ``amcl-lab list`` prints)."""
    return (load(name).__doc__ or "").strip().splitlines()[0]


def check_module(name: str, module: ModuleType) -> None:
    """Raise unless ``module`` follows the experiment protocol (names the missing parts)."""
    missing = [a for a in ("Config", "PRESETS", "run", "plot", "CLAIMS") if not hasattr(module, a)]
    if missing:
        raise ValueError(f"experiment {name!r} lacks {', '.join(missing)} (see the protocol)")
    presets = [p for p in REQUIRED_PRESETS if p not in module.PRESETS]
    if presets:
        raise ValueError(f"experiment {name!r} lacks the presets {', '.join(presets)}")
    if not issubclass(module.Config, ExperimentConfig):
        raise ValueError(f"experiment {name!r}: Config must subclass ExperimentConfig")
    if not module.__doc__:
        raise ValueError(f"experiment {name!r} has no module docstring (its description)")


def derive_loss(config: engine.TrainConfig, losses: Mapping[str, str]) -> None:
    """Set ``config.loss`` to ``losses[config.framework]``: the loss follows the framework.

    For experiment configs with a ``framework`` field (call first in ``__post_init__``, before
    :class:`~amcl_lab.engine.TrainConfig` validates the loss).  ``loss`` may be empty or any
    framework's loss (as :func:`dataclasses.replace` passes it on after ``--set
    framework=...``); anything else is an error, since it would be ignored.
    """
    fn = type(config).__name__
    framework = config.framework  # type: ignore[attr-defined]
    v.check_choice(fn, "framework", framework, tuple(losses))
    if config.loss not in ("", *losses.values()):
        raise ValueError(
            f"{fn}: loss is derived from framework={framework!r} ({losses[framework]!r}); "
            f"got loss={config.loss!r}: set framework instead"
        )
    object.__setattr__(config, "loss", losses[framework])  # frozen: set once, derived


def train_config(config: engine.TrainConfig, **changes: Any) -> engine.TrainConfig:
    """The :class:`~amcl_lab.engine.TrainConfig` fields of ``config``, with ``changes``.

    For experiments that train arms their own ``Config`` would reject (a cross-entropy arm
    beside a SupCon config, a baseline loss beside an AMCL one): the result is validated as
    a plain training config, and the experiment-only fields are left out.
    """
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(engine.TrainConfig)}
    return engine.TrainConfig(**{**fields, **changes})


#: SimCLR's CIFAR-10 projection head (512-512-128) and batch (512), for ``gpu`` presets.
SIMCLR_CIFAR10: dict[str, Any] = {"proj_hidden": 512, "proj_dim": 128, "batch_size": 512}


def gpu_cifar10(**fields: Any) -> dict[str, Any]:
    """The fields the ``gpu`` presets share, as keyword arguments of a ``Config``.

    CIFAR-10 (from ``--data-dir``) with the CIFAR-stem ResNet-18 (width 64), the five
    augmentation families with crops down to 0.08 of the area (SimCLR's CIFAR recipe), a
    checkpoint every 1,000 steps, 500 L-BFGS steps for the probe and PyTorch's default
    threads; ``fields`` add to these or replace them.

    Example:
        >>> gpu_cifar10(lr=0.1, threads=4)["threads"]
        4
    """
    shared: dict[str, Any] = {
        "dataset": "cifar10",
        "augment": "abcde",
        "crop_min_scale": 0.08,
        "encoder": "resnet18",
        "width": 64,
        "checkpoint_every": 1_000,
        "probe_steps": 500,
        "threads": 0,
    }
    return shared | fields


def resolve_config(module: ModuleType, name: str, preset: str, overrides: Sequence[str]) -> Any:
    """The preset's config with ``overrides`` applied (errors list valid presets/keys)."""
    if preset not in module.PRESETS:
        raise ValueError(
            f"unknown preset {preset!r} for experiment {name!r}; valid presets: "
            f"{', '.join(module.PRESETS)}"
        )
    return engine.apply_overrides(module.PRESETS[preset](), overrides)


def run_experiment(
    name: str,
    *,
    preset: str = "cpu",
    overrides: Sequence[str] = (),
    out: str | Path = "runs",
    run_id: str | None = None,
    resume: bool = False,
    quiet: bool = False,
    auto_seeds: bool = False,
    seeds_cap: int | None = None,
    workers: int = 1,
) -> tuple[engine.Run, Results]:
    """Run an experiment module end to end and save everything into its run folder.

    Steps: resolve the preset and overrides; open the run folder (``config.json``); call
    ``module.run``; evaluate ``module.CLAIMS`` on the returned rows; save
    ``results.json``; reload it and call ``module.plot`` to write ``figures/``.

    ``auto_seeds`` (``--seeds auto[:CAP]``): the config's ``seeds`` is where the sequential
    plan starts (:class:`~amcl_lab.experiments._stats.SeedPlan`, ``seeds_cap`` its cap,
    default four times the start); seeds are added look by look
    (:func:`~amcl_lab.experiments._stats.run_sequential`) and every look is judged at the
    plan's corrected level.  ``config.json`` holds the config with ``seeds`` = the cap.
    ``workers`` > 1 trains the seeds of each look in that many processes
    (:func:`~amcl_lab.experiments._parallel.run_seeds`); the numbers do not change.
    """
    module = load(name)
    config = resolve_config(module, name, preset, overrides)
    plan = _stats.plan_for(config.seeds, seeds_cap) if auto_seeds else None
    if plan is not None:
        config = dataclasses.replace(config, seeds=plan.cap)
    run = engine.open_run(
        out,
        name,
        config,
        preset=preset,
        overrides=overrides,
        seeds=config.seed_list,
        run_id=run_id,
        resume=resume,
        quiet=quiet,
    )
    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()

    def rows_for(seeds: Sequence[int]) -> list[dict[str, Any]]:
        return _parallel.run_seeds(name, module, config, run, seeds, workers)

    sequential = None
    if plan is None:
        rows = rows_for(run.seeds)
        results = evaluate_claims(module.CLAIMS, pd.DataFrame(rows))
        seeds = run.seeds
    else:
        rows, results, looks = _stats.run_sequential(
            plan,
            rows_for,
            lambda r, level: evaluate_claims(module.CLAIMS, pd.DataFrame(r), level),
            first_seed=config.seed,
        )
        seeds = run.seeds[: looks[-1]]
        sequential = {
            "start": plan.start,
            "cap": plan.cap,
            "looks": list(plan.looks),
            "looks_run": looks,
            "alpha_per_look": plan.alpha,
            "level": plan.level,
        }
    claims = [dataclasses.asdict(c) for c in results]
    sessions = (*_earlier_sessions(run), time.perf_counter() - start)
    Results(
        name, run.run_id, preset, seeds, tuple(rows), tuple(claims), sum(sessions), sequential,
        sessions,
    ).save(run.dir)  # fmt: skip
    saved = Results.load(run.dir)
    run.figures_dir.mkdir(parents=True, exist_ok=True)
    module.plot(saved, run.figures_dir)
    return run, saved


def _earlier_sessions(run: engine.Run) -> tuple[float, ...]:
    """The session times of the results a resumed run wrote before (none for a fresh run, or
    when its ``results.json`` is missing or unreadable)."""
    if not run.resume or not run.results_path.is_file():
        return ()
    try:
        return Results.load(run.dir).session_seconds
    except (OSError, ValueError, KeyError, TypeError):
        return ()
