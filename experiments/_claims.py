"""The shared vocabulary of effects that a :class:`~amcl_lab.experiments.Claim` measures.

Every experiment's ``run`` returns the tidy results table: one measurement per row, with
``seed``, ``metric``, ``value`` and ``step`` columns plus the experiment's condition columns
(``optimizer``, ``temperature``, ``proj_dim``, ...).  A claim's ``measure`` turns that table
into ``{seed: effect}``; this module holds the pieces it is built from, in two layers.

Values
    :func:`final` and :func:`initial` pick one metric at the last (first) step of every run
    and return a :class:`pandas.Series` named ``value``, indexed by ``seed`` plus the
    condition columns that tell the runs apart; :func:`at` selects a condition from it.
Effects
    Functions of such values returning ``{seed: effect}``: paired comparisons of two
    conditions of the same seed (:func:`paired`, :func:`paired_difference`,
    :func:`relative_change`), the change of a metric over training (:func:`over_training`),
    trends against a condition (:func:`rank_correlation`, :func:`log_slope`,
    :func:`held_out_peak`, :func:`power_law`), non-inferiority against a reference that must
    have learned (:func:`matched_difference`), and :func:`combine` for effects of effects.

A condition is a mapping ``{column: value}``.  Numbers are compared with
:func:`numpy.isclose` (grids of floats such as ``3 / 32`` match), anything else with ``==``;
a callable value is applied to the column's values first, so ``{"proj_dim": min}`` is the
smallest dimension the values hold and ``{"families": max}`` the richest set.

Seeds and NaN.  A seed that lacks one of the compared conditions is left out, and a paired
comparison of a condition with itself has no effect at all (``{}``: the claim is then
inconclusive for want of seeds, not "no difference").  Whether a NaN effect is kept (the
claim becomes inconclusive, the protocol's rule for a non-finite effect) or left out is the
caller's choice, ``drop_nan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "Condition",
    "Effect",
    "Measure",
    "at",
    "collapsed_seeds",
    "combine",
    "final",
    "held_out_peak",
    "initial",
    "log_slope",
    "matched_difference",
    "over_training",
    "paired",
    "paired_difference",
    "per_seed",
    "power_law",
    "rank_correlation",
    "relative_change",
]

#: ``{column: value}``; a callable value is resolved on the column (``min``, ``max``).
Condition = Mapping[str, Any]
#: One claim effect per seed.
Effect = dict[int, float]
#: What :attr:`Claim.measure <amcl_lab.experiments.Claim.measure>` is.
Measure = Callable[[pd.DataFrame], Mapping[int, float]]


# --- values ----------------------------------------------------------------------------------


def _at_step(
    table: pd.DataFrame, metric: str, by: Sequence[str], end: str, same_step: bool
) -> pd.Series:
    rows = table[table["metric"] == metric]
    keys = ["seed", *by]
    edge = getattr(rows["step"], end)() if same_step else rows.groupby(keys)["step"].transform(end)
    return rows[rows["step"] == edge].set_index(keys)["value"].astype(float)


def final(
    table: pd.DataFrame, metric: str, by: Sequence[str] = (), *, same_step: bool = False
) -> pd.Series:
    """``metric`` at the last step of every run, indexed by ``(seed, *by)``.

    A run is the rows of one ``(seed, *by)`` combination; its last step is the largest
    ``step`` among its rows of ``metric``.  With ``same_step``, every run is read at the
    largest step of ``metric`` in the whole table instead, so a run that lacks that step
    (stopped early, or its last row missing) has no value rather than an earlier one.
    NaN values are kept.

    Example:
        >>> t = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [0, 5, 0, 4], "arm": "a",
        ...                   "metric": "acc", "value": [0.1, 0.8, 0.2, 0.7]})
        >>> final(t, "acc", ["arm"]).to_dict()
        {(0, 'a'): 0.8, (1, 'a'): 0.7}
        >>> final(t, "acc", ["arm"], same_step=True).to_dict()
        {(0, 'a'): 0.8}
    """
    return _at_step(table, metric, by, "max", same_step)


def initial(
    table: pd.DataFrame, metric: str, by: Sequence[str] = (), *, same_step: bool = False
) -> pd.Series:
    """``metric`` at the first step of every run (the random initialisation, step 0).

    ``same_step`` as in :func:`final`, with the smallest step of the table.

    Example:
        >>> t = pd.DataFrame({"seed": [0, 0], "step": [0, 5], "metric": "acc",
        ...                   "value": [0.1, 0.8]})
        >>> initial(t, "acc").to_dict()
        {0: 0.1}
    """
    return _at_step(table, metric, by, "min", same_step)


def _resolve(values: pd.Series, condition: Condition) -> dict[str, Any]:
    levels = values.index.to_frame(index=False)
    return {k: v(levels[k]) if callable(v) else v for k, v in condition.items()}


def _matches(column: pd.Series, value: Any) -> np.ndarray:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return np.isclose(column.to_numpy(dtype=float), value)
    return (column == value).to_numpy()


def at(values: pd.Series, condition: Condition) -> pd.Series:
    """The entries of ``values`` at ``condition``, indexed by ``seed`` and the other levels.

    Example:
        >>> v = pd.Series([1.0, 2.0, 3.0, 4.0], name="value", index=pd.MultiIndex.from_tuples(
        ...     [(0, 2, 0.5), (0, 4, 0.5), (1, 2, 0.5), (1, 4, 0.5)],
        ...     names=["seed", "views", "fraction"]))
        >>> at(v, {"views": max, "fraction": 0.5}).to_dict()
        {0: 2.0, 1: 4.0}
    """
    condition = _resolve(values, condition) if len(values) else dict(condition)
    frame = values.rename("value").reset_index()
    mask = np.ones(len(frame), dtype=bool)
    for column, value in condition.items():
        mask &= _matches(frame[column], value)
    keep = [name for name in values.index.names if name not in condition]
    return frame[mask].set_index(keep)["value"]


def per_seed(values: pd.Series, *, drop_nan: bool = False) -> Effect:
    """``{seed: value}`` of a series indexed by seed, in increasing seed order.

    The order makes a claim's mean and interval independent of the table's row order (a
    sum of floats depends on its order in the last bit).  NaN is kept unless ``drop_nan``.

    Example:
        >>> per_seed(pd.Series([1.5, np.nan, 0.5], index=[3, 4, 1]), drop_nan=True)
        {1: 0.5, 3: 1.5}
    """
    if drop_nan:
        values = values.dropna()
    values = values.sort_index(kind="stable")
    return {int(seed): float(x) for seed, x in values.items()}


#: Columns of a tidy table that are not conditions (what tells runs apart).
_NOT_CONDITIONS = ("seed", "metric", "value", "step", "epoch", "bin")


def collapsed_seeds(table: pd.DataFrame, arm: Condition) -> list[int]:
    """The seeds whose runs at ``arm`` ended collapsed (the engine's ``collapsed`` flag).

    Every training run of a contrastive loss records ``collapsed`` (1.0 or 0.0) at each
    evaluation (:func:`amcl_lab.engine.evaluation.collapse_diagnostics`); a run is told
    apart by its seed and condition columns, and its last record decides.  The random
    network at step 0 usually "collapses" by this test (its embeddings sit in a narrow
    cone), so only the last step counts.

    Example:
        >>> t = pd.DataFrame({"seed": [0, 0, 1, 1], "step": [0, 9, 0, 9], "arm": "a",
        ...                   "metric": "collapsed", "value": [1.0, 0.0, 1.0, 1.0]})
        >>> collapsed_seeds(t, {"arm": "a"}), collapsed_seeds(t, {"arm": "b"})
        ([1], [])
    """
    rows = table[table["metric"] == "collapsed"] if "metric" in table else table.iloc[:0]
    if not len(rows):
        return []
    by = [c for c in rows.columns if c not in _NOT_CONDITIONS and rows[c].notna().any()]
    if any(column not in by for column in arm):
        return []
    flags = at(final(rows, "collapsed", by), arm)
    return sorted(
        {int(seed) for seed, flag in zip(_seeds(flags), flags, strict=True) if flag > 0.5}
    )


def _seeds(values: pd.Series) -> list[Any]:
    index = values.index
    return list(index.get_level_values("seed") if isinstance(index, pd.MultiIndex) else index)


# --- paired effects --------------------------------------------------------------------------


def paired(
    values: pd.Series,
    arm: Condition,
    control: Condition,
    effect: Callable[[pd.Series, pd.Series], pd.Series],
    *,
    drop_nan: bool = True,
) -> Effect:
    """Per seed, ``effect(arm, control)`` of the values at two conditions of the same seed.

    Seeds that lack either condition are left out (with ``drop_nan``; otherwise they get
    NaN).  ``arm`` and ``control`` resolving to the same condition give no effect (``{}``).

    Example:
        >>> v = pd.Series([2.0, 1.0, 6.0, 3.0], name="value", index=pd.MultiIndex.from_product(
        ...     [[0, 1], ["a", "b"]], names=["seed", "arm"]))
        >>> paired(v, {"arm": "a"}, {"arm": "b"}, lambda x, y: x / y)
        {0: 2.0, 1: 2.0}
    """
    if not len(values) or _resolve(values, arm) == _resolve(values, control):
        return {}
    return per_seed(effect(at(values, arm), at(values, control)), drop_nan=drop_nan)


def paired_difference(
    values: pd.Series,
    arm: Condition,
    control: Condition,
    *,
    scale: float = 1.0,
    drop_nan: bool = True,
) -> Effect:
    """Per seed, ``scale * (arm - control)`` (:func:`paired`): e.g. accuracy points.

    Example:
        >>> v = pd.Series([0.9, 0.8, 0.7, 0.75], name="value", index=pd.MultiIndex.from_product(
        ...     [[0, 1], ["sam", "sgd"]], names=["seed", "optimizer"]))
        >>> d = paired_difference(v, {"optimizer": "sam"}, {"optimizer": "sgd"}, scale=100)
        >>> {s: round(x, 6) for s, x in d.items()}
        {0: 10.0, 1: -5.0}
    """
    return paired(values, arm, control, lambda a, c: scale * (a - c), drop_nan=drop_nan)


def relative_change(
    values: pd.Series, arm: Condition, control: Condition, *, drop_nan: bool = True
) -> Effect:
    """Per seed, ``100 * (arm - control) / control``: the arm's change relative to the control, %.

    Example:
        >>> v = pd.Series([8.0, 10.0], name="value", index=pd.MultiIndex.from_tuples(
        ...     [(0, "sam"), (0, "sgd")], names=["seed", "optimizer"]))
        >>> relative_change(v, {"optimizer": "sam"}, {"optimizer": "sgd"})
        {0: -20.0}
    """
    return paired(values, arm, control, lambda a, c: 100.0 * (a - c) / c, drop_nan=drop_nan)


def matched_difference(
    table: pd.DataFrame,
    metric: str,
    by: Sequence[str],
    candidate: Condition,
    reference: Condition,
    *,
    margin: float,
    scale: float = 100.0,
) -> Effect:
    """Per seed, ``scale * (candidate - reference)`` at the last step, for a "matches" claim.

    A non-inferiority claim ("the candidate reaches the reference") says nothing when the
    reference learned nothing: two probes at chance match trivially.  So a seed whose
    reference did not gain more than ``margin`` (in ``scale`` units) over its own first step
    gets NaN, which makes the claim inconclusive.  Seeds missing either condition are left
    out.  Conditions are resolved on the last-step values (:func:`final` with ``by``).

    Example:
        >>> t = pd.DataFrame({"seed": 0, "step": [0, 9, 0, 9], "arm": ["a", "a", "b", "b"],
        ...                   "metric": "acc", "value": [0.1, 0.5, 0.1, 0.52]})
        >>> round(matched_difference(t, "acc", ["arm"], {"arm": "a"}, {"arm": "b"},
        ...                          margin=2.0)[0], 6)
        -2.0
        >>> matched_difference(t.assign(value=0.1), "acc", ["arm"], {"arm": "a"},
        ...                    {"arm": "b"}, margin=2.0)
        {0: nan}
    """
    last, first = final(table, metric, by), initial(table, metric, by)
    if not len(last):
        return {}
    candidate, reference = _resolve(last, candidate), _resolve(last, reference)
    diff = (scale * (at(last, candidate) - at(last, reference))).dropna()
    gain = scale * (at(last, reference) - at(first, reference))
    learned = gain.reindex(diff.index) > margin
    return per_seed(diff.where(learned, math.nan))


# --- change over training --------------------------------------------------------------------


def over_training(
    table: pd.DataFrame,
    metric: str,
    effect: Callable[[float, float], float],
    where: Condition | None = None,
) -> Effect:
    """Per seed, ``effect(first, last)`` of ``metric``'s values at its first and last step.

    ``where`` selects the rows (one run per seed); NaN values are left out first.

    Example:
        >>> t = pd.DataFrame({"seed": 0, "step": [10, 0, 20], "metric": "nc1",
        ...                   "value": [0.5, 1.0, 0.1]})
        >>> over_training(t, "nc1", lambda first, last: last / first)
        {0: 0.1}
    """
    rows = table[table["metric"] == metric]
    for column, value in (where or {}).items():
        rows = rows[rows[column] == value]
    out = {}
    for seed, s in rows.dropna(subset=["value"]).groupby("seed"):
        s = s.sort_values("step")
        out[int(seed)] = effect(float(s["value"].iloc[0]), float(s["value"].iloc[-1]))
    return out


# --- trends against a condition --------------------------------------------------------------


def _trend(
    values: pd.Series, x: str, statistic: Callable[[np.ndarray, np.ndarray], float]
) -> Effect:
    frame = values.rename("value").dropna().reset_index()
    out = {}
    for seed, t in frame.groupby("seed"):
        t = t.sort_values(x)
        out[int(seed)] = statistic(t[x].to_numpy(float), t["value"].to_numpy(float))
    return out


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.ptp(y) == 0:  # a rank trend needs three points that differ
        return math.nan
    return float(stats.spearmanr(x, y).statistic)


def _log10_slope(x: np.ndarray, y: np.ndarray) -> float:
    if len(np.unique(x)) < 2:
        return math.nan
    return float(np.polyfit(np.log10(x), y, 1)[0])


def rank_correlation(values: pd.Series, x: str) -> Effect:
    """Per seed, Spearman's rank correlation between the level ``x`` and the values.

    ``values`` is indexed by ``seed`` and ``x`` (one entry per pair; NaN entries are left
    out).  A seed with fewer than three points or a constant value gets NaN: no rank trend
    can be measured.

    Example:
        >>> v = pd.Series([1.0, 3.0, 2.0, 5.0, 5.0, 5.0], name="value",
        ...     index=pd.MultiIndex.from_product([[0, 1], [0.1, 0.3, 1.0]], names=["seed", "tau"]))
        >>> rank_correlation(v, "tau")
        {0: 0.5, 1: nan}
    """
    return _trend(values, x, _spearman)


def log_slope(values: pd.Series, x: str) -> Effect:
    """Per seed, the least-squares slope of the values against ``log10`` of the level ``x``.

    Units: value per decade of ``x``.  A constant value has slope 0 (a flat curve is a
    measurement, not a missing one); a seed with fewer than two distinct ``x`` gets NaN.

    Example:
        >>> v = pd.Series([1.0, 2.0, 3.0], name="value", index=pd.MultiIndex.from_product(
        ...     [[0], [0.1, 1.0, 10.0]], names=["seed", "tau"]))
        >>> round(log_slope(v, "tau")[0], 9)
        1.0
    """
    return _trend(values, x, _log10_slope)


def held_out_peak(values: pd.Series, x: str, *, scale: float = 1.0) -> Effect:
    """Per seed, the value at an interior ``x`` minus the better of the grid's two ends.

    The interior ``x`` is chosen for each seed as the one with the best mean over the *other*
    seeds (leave-one-seed-out), so the selection does not reuse the seed's own noise:
    the best of several noisy interior values against two end points would look like a
    peak even when the values do not depend on ``x``.  A seed gets NaN when there is no
    interior ``x`` or no other seed to choose it on; NaN entries are left out.

    Example:
        >>> v = pd.Series([0.90, 0.95, 0.91, 0.89, 0.96, 0.90], name="value",
        ...     index=pd.MultiIndex.from_product([[0, 1], [0.1, 0.3, 1.0]], names=["seed", "tau"]))
        >>> {s: round(e, 6) for s, e in held_out_peak(v, "tau", scale=100).items()}
        {0: 4.0, 1: 6.0}
    """
    grid_values = values.dropna().unstack(x)
    grid = sorted(grid_values.columns)
    interior = grid[1:-1]
    out = {}
    for seed in grid_values.index:
        if interior:
            others = grid_values.drop(index=seed)[interior].mean()
        else:
            others = pd.Series(dtype=float)
        if others.isna().all():  # no interior value, or no other seed to choose it on
            out[int(seed)] = math.nan
            continue
        chosen = others.idxmax()
        ends = max(grid_values.loc[seed, grid[0]], grid_values.loc[seed, grid[-1]])
        out[int(seed)] = scale * float(grid_values.loc[seed, chosen] - ends)
    return out


def power_law(values: pd.Series, x: str) -> dict[int, tuple[float, float, float]]:
    """Per seed, ``(k, c, y0)`` of ``y(x) = y0 + c x^k`` fitted to the values against ``x``.

    ``y0`` is the value at ``x = 0``; ``k`` and ``log c`` are the least-squares slope and
    intercept of ``log(y(x) - y0)`` on ``log x`` over the positive ``x``.  A seed without
    ``x = 0`` or two positive ``x`` is left out; one where some ``y(x) - y0`` is not finite
    and positive gets ``(nan, nan, y0)``.

    Example:
        >>> v = pd.Series([10.0, 12.0, 18.0], name="value", index=pd.MultiIndex.from_product(
        ...     [[0], [0.0, 0.5, 1.0]], names=["seed", "p"]))
        >>> k, c, y0 = power_law(v, "p")[0]
        >>> round(k, 6), round(c, 6), y0
        (2.0, 8.0, 10.0)
    """
    frame = values.rename("value").reset_index()
    out = {}
    for seed, s in frame.groupby("seed"):
        ys = s.set_index(x)["value"].astype(float).sort_index()
        if 0.0 not in ys.index or (ys.index > 0).sum() < 2:
            continue
        y0, positive = ys.loc[0.0], ys[ys.index > 0]
        extra = positive.to_numpy() - y0
        if not np.all(np.isfinite(extra)) or not np.all(extra > 0) or not math.isfinite(y0):
            out[int(seed)] = (math.nan, math.nan, y0)
            continue
        k, log_c = np.polyfit(np.log(positive.index.to_numpy()), np.log(extra), 1)
        out[int(seed)] = (float(k), float(math.exp(log_c)), float(y0))
    return out


# --- effects of effects ----------------------------------------------------------------------


def combine(function: Callable[..., float], *effects: Mapping[Hashable, float]) -> Effect:
    """Per seed, ``function`` of the seed's entries in every one of ``effects``.

    Only the seeds present in all of them count, in increasing order.

    Example:
        >>> combine(lambda a, b: a - b, {0: 3.0, 1: 2.0}, {1: 0.5, 2: 9.0})
        {1: 1.5}
    """
    if not effects:
        return {}
    common = set(effects[0]).intersection(*effects[1:])
    return {int(s): function(*(e[s] for e in effects)) for s in sorted(common)}
