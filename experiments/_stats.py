r"""The statistics behind a claim's verdict: tests, power, Holm, bootstrap, sequential seeds.

A claim's verdict (:func:`amcl_lab.experiments.evaluate_claim`) is a decision from a 95 %
Student-t interval of the per-seed effects.  This module holds everything else a reviewer
asks about that decision, as pure functions of the per-seed effects:

Tests
    :func:`decision_p_values` gives the two p-values the interval rule is equivalent to:
    ``p_reproduced < alpha`` exactly when the :math:`1 - \alpha` interval lies on the claimed
    side of the threshold (inside the margin of a ``"within"`` claim), ``p_not_reproduced
    <= alpha`` exactly when it lies on the other side.  :func:`verdict_from_p` turns them back
    into a verdict.
Power and seeds
    :func:`power` is the probability that the interval rule gives "reproduced" with ``n``
    seeds when the true mean effect is ``mean`` and the per-seed standard deviation is
    ``sd`` (non-central t; a one-dimensional integral over the sample SD for ``"within"``
    claims); :func:`seeds_for_power` is the smallest ``n >= 3`` reaching a power target
    (:data:`POWER` = 0.8).
Several claims per experiment
    :func:`holm` adjusts p-values for multiplicity (Holm 1979, step-down); :func:`holm_verdicts`
    applies it to the claims of one run.
Non-normal effects
    :func:`bootstrap_ci` is the BCa bootstrap interval (Efron 1987) of the mean over seeds,
    for rank correlations, ratios and fitted exponents, whose per-seed distribution is
    bounded or skewed.  It needs :data:`BOOTSTRAP_MIN_SEEDS` seeds.
Paired designs
    Arms that share a seed share its initialisation, batch order and data draw, so the
    per-seed effect of a paired claim is a within-seed difference and the t interval on it is
    the paired t interval.  :func:`pairing_gain` says how many times more seeds an unpaired
    design of the same arms would need.
Sequential seeds
    :class:`SeedPlan` is ``--seeds auto``: looks at ``start, 2 start, 4 start, ...`` seeds up
    to ``cap``; :func:`run_sequential` adds seeds look by look until every claim that more
    seeds can decide is decided.  Every look is judged at the Bonferroni level
    ``alpha / K`` (``K`` planned looks), so the probability of any false verdict over all
    looks stays below ``alpha`` although the stopping point depends on the data.

``docs/results.md`` ("Statistics") states each choice and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import integrate, stats

__all__ = [
    "ALPHA",
    "BOOTSTRAP_MIN_SEEDS",
    "BOOTSTRAP_RESAMPLES",
    "POWER",
    "SeedPlan",
    "bootstrap_ci",
    "decision_p_values",
    "holm",
    "holm_verdicts",
    "pairing_gain",
    "parse_seeds",
    "power",
    "run_sequential",
    "seeds_for_power",
    "verdict_from_p",
]

#: Two-sided error rate of a verdict: the interval is the 1 - ALPHA = 95 % interval.
ALPHA = 0.05
#: The power target for the seeds of a claim.
POWER = 0.8
#: Fewest seeds for a bootstrap interval (fewer seeds have too few distinct resamples).
BOOTSTRAP_MIN_SEEDS = 8
BOOTSTRAP_RESAMPLES = 10_000
#: Seeds :func:`seeds_for_power` searches up to.
MAX_SEEDS = 10_000
MIN_SEEDS = 3

_DIRECTIONS = ("greater", "less", "within")


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(list(values), dtype=np.float64)


# --- tests -----------------------------------------------------------------------------------


def decision_p_values(
    values: Sequence[float] | np.ndarray,
    direction: str = "greater",
    threshold: float = 0.0,
    margin: float = 0.0,
) -> tuple[float, float]:
    r"""``(p_reproduced, p_not_reproduced)`` of the per-seed effects ``values``.

    With :math:`t = (\bar x - c)/(s/\sqrt n)` and :math:`F` the t distribution with
    :math:`n - 1` degrees of freedom:

    * ``"greater"`` (claim: effect > ``threshold`` = c): ``p_reproduced`` = :math:`2(1 - F(t))`,
      ``p_not_reproduced`` = :math:`2F(t)`: twice the one-sided p-values, so that
      ``p_reproduced < alpha`` exactly when the two-sided :math:`1 - \alpha` interval lies
      above c, and ``p_not_reproduced <= alpha`` exactly when it lies at or below c;
      ``"less"`` mirrors this;
    * ``"within"`` (claim: ``|effect| <= margin`` = m): ``p_reproduced`` is twice the larger
      of the two one-sided p-values against -m and +m (two one-sided tests), small exactly
      when the interval lies inside [-m, m]; ``p_not_reproduced`` twice the smaller of the
      one-sided p-values for "effect > m" and "effect < -m", small exactly when the interval
      lies outside.

    Every p-value is capped at 1.  Identical values (zero spread) give 0 or 1, as their
    point interval does; fewer than two values or a non-finite one give NaN.

    Example:
        >>> p_r, p_n = decision_p_values([1.0, 1.2, 0.9])
        >>> round(p_r, 4), round(p_n, 4)
        (0.0072, 1.0)
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"decision_p_values: direction must be one of {_DIRECTIONS}")
    x = _clean(values)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return math.nan, math.nan
    mean, sd, n = float(x.mean()), float(x.std(ddof=1)), x.size
    if sd == 0.0:
        if direction == "within":
            inside = abs(mean) <= margin
        elif direction == "greater":
            inside = mean > threshold
        else:
            inside = mean < threshold
        return (0.0, 1.0) if inside else (1.0, 0.0)
    se = sd / math.sqrt(n)
    dist = stats.t(n - 1)
    if direction == "within":
        above_low = float(dist.sf((mean + margin) / se))  # H0: effect <= -m
        below_high = float(dist.cdf((mean - margin) / se))  # H0: effect >= +m
        beyond_high = float(dist.sf((mean - margin) / se))  # H0: effect <= +m
        beyond_low = float(dist.cdf((mean + margin) / se))  # H0: effect >= -m
        return min(1.0, 2 * max(above_low, below_high)), min(1.0, 2 * min(beyond_high, beyond_low))
    t = (mean - threshold) / se if direction == "greater" else (threshold - mean) / se
    return min(1.0, 2 * float(dist.sf(t))), min(1.0, 2 * float(dist.cdf(t)))


def verdict_from_p(p_reproduced: float, p_not_reproduced: float, alpha: float = ALPHA) -> str:
    """The verdict of the two p-values of :func:`decision_p_values` at level ``alpha``.

    Example:
        >>> verdict_from_p(0.01, 1.0), verdict_from_p(0.2, 0.9), verdict_from_p(1.0, 0.03)
        ('reproduced', 'inconclusive', 'not reproduced')
    """
    if p_reproduced < alpha:
        return "reproduced"
    if p_not_reproduced <= alpha:
        return "not reproduced"
    return "inconclusive"


# --- several claims: Holm ----------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    r"""Holm's step-down adjusted p-values (Holm 1979, Scand. J. Statist. 6, 65-70).

    With the m finite p-values sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`, the adjusted
    value of :math:`p_{(i)}` is :math:`\max_{j \le i} \min(1, (m - j + 1) p_{(j)})`; rejecting
    where the adjusted value is below alpha controls the family-wise error rate at alpha
    under any dependence.  NaN entries stay NaN and do not count in m.

    Example:
        >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03, 0.005])]
        [0.03, 0.06, 0.06, 0.02]
    """
    p = _clean(p_values)
    out = np.full(p.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


def holm_verdicts(claims: Sequence[Any], alpha: float = ALPHA) -> list[tuple[float, str]]:
    """``(Holm-adjusted p, Holm verdict)`` for the claims of one run, in order.

    ``claims`` are :class:`~amcl_lab.experiments.ClaimResult` objects (or their dicts).
    Each claim's p-value is the smaller of its two decision p-values (for a threshold claim,
    the two-sided t-test of the threshold); the family is the claims of the run that have
    one.  A claim is reproduced (not reproduced) after the adjustment when its adjusted
    p-value is below ``alpha`` and the smaller p-value was its ``p_reproduced``
    (``p_not_reproduced``).  A claim without p-values (collapsed arm, fewer than three seeds,
    non-finite effect) keeps its verdict and gets NaN.
    """

    def get(claim: Any, key: str) -> Any:
        return claim[key] if isinstance(claim, dict) else getattr(claim, key)

    sides = []
    for claim in claims:
        p_r, p_n = get(claim, "p_reproduced"), get(claim, "p_not_reproduced")
        usable = get(claim, "verdict") in ("reproduced", "not reproduced", "inconclusive")
        finite = p_r is not None and p_n is not None and math.isfinite(p_r) and math.isfinite(p_n)
        sides.append((min(p_r, p_n), p_r <= p_n) if usable and finite else (math.nan, True))
    adjusted = holm([p for p, _ in sides])
    out = []
    for claim, (_, for_claim), adj in zip(claims, sides, adjusted, strict=True):
        if not math.isfinite(adj):
            out.append((math.nan, get(claim, "verdict")))
        elif for_claim:
            out.append((adj, "reproduced" if adj < alpha else "inconclusive"))
        else:
            out.append((adj, "not reproduced" if adj <= alpha else "inconclusive"))
    return out


# --- power and seeds ---------------------------------------------------------------------------


def power(
    n: int,
    mean: float,
    sd: float,
    direction: str = "greater",
    threshold: float = 0.0,
    margin: float = 0.0,
    alpha: float = ALPHA,
) -> float:
    r"""Probability that ``n`` seeds give "reproduced" when the effects are N(``mean``, ``sd``\ ²).

    For ``"greater"`` the interval rule rejects when :math:`t > q`, :math:`q = t_{1-\alpha/2,
    n-1}`, and :math:`t` follows the non-central t distribution with non-centrality
    :math:`(\mu - c)\sqrt n/\sigma`; ``"less"`` mirrors it.  For ``"within"`` it is
    :math:`E_s[\Phi((m - qs/\sqrt n - \mu)\sqrt n/\sigma) - \Phi((-m + qs/\sqrt n - \mu)\sqrt
    n/\sigma)]^+` over the distribution of the sample SD, :math:`(n-1)s^2/\sigma^2 \sim
    \chi^2_{n-1}`, integrated numerically.

    Example:
        >>> round(power(10, 1.0, 1.0), 3)  # Cohen's d = 1 with 10 seeds
        0.803
    """
    if n < 2:
        return 0.0
    q = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1))
    if sd <= 0.0:
        if direction == "within":
            return 1.0 if abs(mean) <= margin else 0.0
        side = mean - threshold if direction == "greater" else threshold - mean
        return 1.0 if side > 0 else 0.0
    root = math.sqrt(n)
    if direction != "within":
        side = mean - threshold if direction == "greater" else threshold - mean
        return float(stats.nct.sf(q, n - 1, side * root / sd))
    df = n - 1
    se = sd / root

    def integrand(u: float) -> float:
        s = sd * math.sqrt(u / df)
        half = q * s / root
        high = stats.norm.cdf((margin - half - mean) / se)
        low = stats.norm.cdf((-margin + half - mean) / se)
        return float(stats.chi2.pdf(u, df) * max(high - low, 0.0))

    # s < m sqrt(n) / q is needed for the interval to fit inside the margin; the chi-square
    # mass outside its 1e-12 quantiles is negligible (and would hide the peak from quad)
    low, high = (float(stats.chi2.ppf(p, df)) for p in (1e-12, 1.0 - 1e-12))
    high = min(high, df * (margin * root / (q * sd)) ** 2)
    if high <= low:
        return 0.0
    value, _ = integrate.quad(integrand, low, high, limit=200, points=[min(max(df, low), high)])
    return float(min(max(value, 0.0), 1.0))


def seeds_for_power(
    mean: float,
    sd: float,
    direction: str = "greater",
    threshold: float = 0.0,
    margin: float = 0.0,
    target: float = POWER,
    alpha: float = ALPHA,
    max_seeds: int = MAX_SEEDS,
) -> int | None:
    """The fewest seeds (>= 3) whose :func:`power` reaches ``target``; None if none up to max.

    Example:
        >>> seeds_for_power(1.0, 1.0), seeds_for_power(0.5, 1.0)  # d = 1 and d = 0.5
        (10, 34)
        >>> seeds_for_power(-1.0, 1.0) is None  # the effect is on the other side
        True
    """
    if not (math.isfinite(mean) and math.isfinite(sd)):
        return None

    def enough(n: int) -> bool:
        return power(n, mean, sd, direction, threshold, margin, alpha) >= target

    if not enough(max_seeds):
        return None
    low, high = MIN_SEEDS, max_seeds  # power grows with n: bisect for the first n
    if enough(low):
        return low
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def pairing_gain(arm: Sequence[float], control: Sequence[float]) -> float:
    r"""How many times more seeds an unpaired design would need than the paired one.

    ``arm`` and ``control`` are the two conditions' values, one per seed, in the same seed
    order.  The paired effect's variance is :math:`\mathrm{Var}(a - c)`; two independent
    groups of the same size would have :math:`\mathrm{Var}(a) + \mathrm{Var}(c)`; the ratio
    is :math:`1/(1 - \rho)` for equal variances and correlation :math:`\rho` between arms.

    Example:
        >>> round(pairing_gain([1.0, 2.0, 3.0, 4.0], [1.1, 2.2, 2.9, 4.2]), 1)
        167.7
    """
    a, c = _clean(arm), _clean(control)
    if a.shape != c.shape or a.size < 2:
        raise ValueError("pairing_gain: arm and control need the same number (>= 2) of seeds")
    paired = float(np.var(a - c, ddof=1))
    unpaired = float(np.var(a, ddof=1) + np.var(c, ddof=1))
    return math.inf if paired == 0.0 else unpaired / paired


# --- bootstrap --------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    level: float = 1.0 - ALPHA,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    r"""BCa bootstrap interval of the mean of ``values`` (Efron 1987, JASA 82, 171-185).

    ``resamples`` resamples of the seeds with replacement (a NumPy generator seeded with
    ``seed``, so the interval is reproducible); the bias correction :math:`z_0` is the normal
    quantile of the share of resampled means below the mean (ties count half), the
    acceleration :math:`a = \sum d_i^3 / (6 (\sum d_i^2)^{3/2})` with :math:`d_i` the
    jackknife deviations.  Identical values give the point interval; fewer than
    :data:`BOOTSTRAP_MIN_SEEDS` values or a non-finite one give NaN.

    Example:
        >>> low, high = bootstrap_ci([0.8, 0.9, 1.0, 0.7, 0.9, 1.0, 0.6, 0.9, 0.8, 1.0])
        >>> round(low, 2), round(high, 2)
        (0.78, 0.94)
    """
    x = _clean(values)
    n = x.size
    if n < BOOTSTRAP_MIN_SEEDS or not np.all(np.isfinite(x)):
        return math.nan, math.nan
    mean = float(x.mean())
    if np.ptp(x) == 0.0:
        return mean, mean
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    share = (np.sum(means < mean) + 0.5 * np.sum(means == mean)) / resamples
    z0 = float(stats.norm.ppf(min(max(share, 0.5 / resamples), 1.0 - 0.5 / resamples)))
    d = x.mean() - (x.sum() - x) / (n - 1)  # jackknife deviations of the mean
    spread = float(np.sum(d**2))
    accel = float(np.sum(d**3)) / (6.0 * spread**1.5) if spread > 0 else 0.0
    tail = (1.0 - level) / 2.0
    ends = []
    for z in stats.norm.ppf([tail, 1.0 - tail]):
        shifted = z0 + (z0 + z) / (1.0 - accel * (z0 + z))
        ends.append(float(np.quantile(means, stats.norm.cdf(shifted))))
    return ends[0], ends[1]


# --- sequential seeds --------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedPlan:
    """``--seeds auto``: looks at ``start, 2 start, 4 start, ...`` seeds, the last at ``cap``.

    Every look judges every claim at the two-sided level :attr:`alpha` = ``ALPHA / K`` for
    ``K`` = the number of planned looks (Bonferroni over the looks): the chance of a false
    verdict at *any* look is at most ``ALPHA``, which an uncorrected 5 % rule repeated at
    every look does not guarantee (optional stopping).

    Example:
        >>> plan = SeedPlan(3, 20)
        >>> plan.looks, round(plan.alpha, 4), round(plan.level, 4)
        ((3, 6, 12, 20), 0.0125, 0.9875)
    """

    start: int
    cap: int

    def __post_init__(self) -> None:
        if self.start < MIN_SEEDS or self.cap < self.start:
            raise ValueError(
                f"--seeds auto: needs {MIN_SEEDS} <= start <= cap, got start={self.start}, "
                f"cap={self.cap}"
            )

    @property
    def looks(self) -> tuple[int, ...]:
        """The number of seeds at each look, increasing, the last one ``cap``."""
        looks, n = [], self.start
        while n < self.cap:
            looks.append(n)
            n *= 2
        return (*looks, self.cap)

    @property
    def alpha(self) -> float:
        return ALPHA / len(self.looks)

    @property
    def level(self) -> float:
        return 1.0 - self.alpha


def parse_seeds(text: str) -> tuple[int | None, int | None]:
    """``--seeds`` as ``(seeds, None)`` for a number, ``(None, cap)`` for ``auto[:CAP]``.

    ``auto`` alone gives ``cap`` None (four times the preset's seeds, ``plan_for``).

    Example:
        >>> parse_seeds("5"), parse_seeds("auto"), parse_seeds("auto:24")
        ((5, None), (None, None), (None, 24))
    """
    text = text.strip()
    if text.isdigit():
        return int(text), None
    name, _, cap = text.partition(":")
    if name == "auto" and (not cap or cap.isdigit()):
        return None, (int(cap) if cap else None)
    raise ValueError(f"--seeds: expected a number, 'auto' or 'auto:CAP', got {text!r}")


def plan_for(preset_seeds: int, cap: int | None) -> SeedPlan:
    """The plan of ``--seeds auto[:cap]`` for a preset of ``preset_seeds`` seeds."""
    start = max(MIN_SEEDS, preset_seeds)
    return SeedPlan(start, cap if cap is not None else 4 * start)


#: Verdicts more seeds can still change (the others are final or need another setup).
_UNDECIDED = "inconclusive"


def undecided(result: Any) -> bool:
    """Whether more seeds could decide this claim: inconclusive with a finite p-value.

    A claim with a collapsed arm, or an effect that is not finite for some seed, stays as it
    is however many seeds are added; it does not keep the sequential run going.
    """
    get = result.get if isinstance(result, dict) else lambda k: getattr(result, k)
    p = get("p_reproduced")
    return get("verdict") == _UNDECIDED and p is not None and math.isfinite(p)


def run_sequential(
    plan: SeedPlan,
    rows_for: Callable[[Sequence[int]], list[dict[str, Any]]],
    evaluate: Callable[[list[dict[str, Any]], float], list[Any]],
    first_seed: int = 0,
) -> tuple[list[dict[str, Any]], list[Any], list[int]]:
    """Add seeds look by look until every claim more seeds can decide is decided.

    ``rows_for(seeds)`` trains and measures the given (new) seeds and returns their rows;
    ``evaluate(rows, level)`` the claim results of all rows so far at the interval level
    ``level``.  Returns the rows, the claim results of the last look and the seed counts of
    the looks that ran.
    """
    rows: list[dict[str, Any]] = []
    looks: list[int] = []
    done = 0
    results: list[Any] = []
    for n in plan.looks:
        rows += rows_for(tuple(range(first_seed + done, first_seed + n)))
        done = n
        looks.append(n)
        results = evaluate(rows, plan.level)
        if not any(undecided(r) for r in results):
            break
    return rows, results, looks
