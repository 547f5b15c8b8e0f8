"""Figures in one house style, drawn from saved results, saved as PNG and PDF.

Conventions every experiment's ``plot`` follows:

* draw from the saved results table only (``results.json``), never from live training
  state, so figures re-render without retraining;
* one house style (:func:`house_style`: seaborn ``paper`` context, white grid, colour-blind
  palette, 8 pt text) and publication sizes (:func:`new_figure`: 3.5 in single column,
  7 in double column);
* seeds are shown as 95 % confidence bands (or error bars) around the mean over seeds,
  with the same Student-t interval the claims use (:func:`mean_ci`, :func:`seed_band`);
  a quantity with a range (an accuracy, a cosine, a time ratio) gets its interval on a
  scale where it stays in that range (:func:`bounded_ci`), and its axis stops at the range;
* bar charts start at 0; several series on one axes differ in colour *and* marker or dash,
  so identical curves stay visible; a figure has one legend, outside the panels
  (:func:`shared_legend`);
* titles name the experiment, the preset and the datasets and say how many seeds the
  intervals are over (:func:`title`); one seed gets no interval (:func:`ci_text`);
* every axis label names the quantity and its unit (``"accuracy (%)"``, ``"step"``);
* :func:`save` writes ``<stem>.png`` (300 dpi) and ``<stem>.pdf`` atomically with fixed
  metadata (no software version, no creation date), so the same results give the same
  bytes.

Figures are built on :class:`matplotlib.figure.Figure` directly (no pyplot state, no
display backend needed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator
from scipy import stats

from .io import atomic_path

__all__ = [
    "COSINE",
    "PERCENT",
    "PNG_DPI",
    "POSITIVE",
    "PROPORTION",
    "WIDTHS",
    "Bounds",
    "RunSummary",
    "bounded_ci",
    "ci_error",
    "ci_text",
    "datasets",
    "house_style",
    "log_axis",
    "mean_ci",
    "new_figure",
    "reference_line",
    "save",
    "seed_band",
    "seed_bars",
    "shared_legend",
    "title",
]

PNG_DPI = 300
#: Figure widths in inches: one journal column, two columns.
WIDTHS = {"single": 3.5, "double": 7.0}
FONT_SIZE = 8
_STYLE: dict[str, Any] = {
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": FONT_SIZE - 1,
    "ytick.labelsize": FONT_SIZE - 1,
    "legend.fontsize": FONT_SIZE - 1,
    "legend.title_fontsize": FONT_SIZE - 1,
    "lines.linewidth": 1.2,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
    "svg.hashsalt": "amcl_lab",
}


def mean_ci(
    values: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    r"""Mean and two-sided Student-t confidence interval over seeds.

    :math:`\bar x \pm t_{(1+\ell)/2,\,n-1}\, s/\sqrt n` with :math:`s` the sample standard
    deviation (``ddof=1``) and :math:`\ell` = ``level``.  With one value the interval is
    undefined and returned as NaN; with identical values it collapses to the mean.

    Example:
        >>> mean, low, high = mean_ci([1.0, 2.0, 3.0])
        >>> round(mean, 6), round(low, 4), round(high, 4)
        (2.0, -0.4841, 4.4841)
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("mean_ci: values must hold at least one number, got none")
    if not 0.0 < level < 1.0:
        raise ValueError(f"mean_ci: level must be in (0, 1), got {level!r}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


#: The range of a quantity, ``(low, high)``; either end may be infinite.
Bounds = tuple[float, float]
PERCENT: Bounds = (0.0, 100.0)  # an accuracy or a share in %
PROPORTION: Bounds = (0.0, 1.0)  # an overlap coefficient, an AUC
COSINE: Bounds = (-1.0, 1.0)  # a cosine similarity (or a mean of them)
POSITIVE: Bounds = (0.0, math.inf)  # a ratio, a loss, a count of steps
#: How far (relative) a value may pass a bound by rounding (an entropy a hair above log m).
_ROUNDING = 1e-9


def _check_bounds(bounds: Bounds) -> tuple[float, float]:
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise TypeError(f"bounds must be a pair of numbers (low, high), got {bounds!r}") from None
    if math.isnan(low) or math.isnan(high) or not low < high:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
    return low, high


def bounded_ci(
    values: Sequence[float] | np.ndarray, bounds: Bounds | None = None, level: float = 0.95
) -> tuple[float, float, float]:
    r"""Mean over seeds and a confidence interval that stays inside ``bounds``.

    The Student-t interval of :func:`mean_ci`, computed on a scale where the range is the
    whole real line and mapped back: the logit of :math:`(x - a)/(b - a)` for a finite
    range :math:`[a, b]` (for a cosine, :math:`[-1, 1]`, it is twice Fisher's
    :math:`z = \operatorname{artanh} x`, the same interval), :math:`\log(x - a)` for
    :math:`[a, \infty)` (a ratio) and :math:`-\log(b - x)` for :math:`(-\infty, b]`.  The
    mean is the plain mean (the number the claims report), and the interval is widened to
    hold it if the scale change left it outside.  A value at a bound is first moved inside,
    halfway to the nearest other value; equal values give the interval ``[mean, mean]``.
    ``bounds=None``: :func:`mean_ci` unchanged.

    Raises:
        ValueError: a value outside ``bounds`` (by more than a rounding error, ``1e-9``
            relative), or ``bounds`` not ``low < high``.

    Example:
        >>> mean, low, high = bounded_ci([90.0, 99.0, 99.5], PERCENT)
        >>> round(mean, 4), 0 < low < mean < high < 100, mean_ci([90.0, 99.0, 99.5])[2] > 100
        (96.1667, True, True)
    """
    if bounds is None:
        return mean_ci(values, level)
    low, high = _check_bounds(bounds)
    x = np.asarray(values, dtype=np.float64)
    slack = [_ROUNDING * max(1.0, abs(b)) if math.isfinite(b) else 0.0 for b in (low, high)]
    if np.any(x < low - slack[0]) or np.any(x > high + slack[1]):
        raise ValueError(f"bounded_ci: values must lie in bounds {bounds!r}, got {x.tolist()}")
    x = np.clip(x, low, high)  # a rounding error past a bound is on it
    mean, lo, hi = mean_ci(x, level)  # validates size and level
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo == hi:
        return mean, lo, hi  # one seed (NaN) or equal values (the mean)
    _, lo, hi = mean_ci(_to_line(_off_bounds(x, low, high), low, high), level)
    back = _from_line(np.array([lo, hi]), low, high)
    return mean, min(float(back[0]), mean), max(float(back[1]), mean)


def _off_bounds(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``x`` with its values at a bound moved inside (see :func:`bounded_ci`)."""
    x = x.copy()
    for bound, inward in ((low, 1.0), (high, -1.0)):
        at = x == bound
        if math.isfinite(bound) and at.any():
            # the scale change sends the bound to infinity: halfway to the nearest other value
            x[at] = bound + inward * 0.5 * float(np.abs(x[~at] - bound).min())  # x varies
    return x


def _to_line(x: np.ndarray, low: float, high: float) -> np.ndarray:
    if math.isfinite(low) and math.isfinite(high):
        p = (x - low) / (high - low)
        return np.log(p) - np.log1p(-p)
    if math.isfinite(low):
        return np.log(x - low)
    if math.isfinite(high):
        return -np.log(high - x)
    return x


def _from_line(z: np.ndarray, low: float, high: float) -> np.ndarray:
    if math.isfinite(low) and math.isfinite(high):
        return low + (high - low) / (1.0 + np.exp(-z))
    if math.isfinite(low):
        return low + np.exp(z)
    if math.isfinite(high):
        return high - np.exp(-z)
    return z


def ci_error(
    values: Sequence[float] | np.ndarray, bounds: Bounds | None = None
) -> tuple[float, list[list[float]]]:
    """Mean over seeds and the ``yerr``/``xerr`` of its 95 % interval, for ``errorbar``.

    The error is ``[[mean - low], [high - mean]]`` (:func:`bounded_ci`), or zero length
    when the interval is undefined (one seed).

    Example:
        >>> ci_error([2.0])
        (2.0, [[0.0], [0.0]])
    """
    mean, low, high = bounded_ci(values, bounds)
    if not (math.isfinite(low) and math.isfinite(high)):
        return mean, [[0.0], [0.0]]
    return mean, [[max(mean - low, 0.0)], [max(high - mean, 0.0)]]


def ci_text(
    values: Sequence[float] | np.ndarray, bounds: Bounds | None = None, digits: int = 2
) -> str:
    """``"mean [low, high]"`` over seeds (:func:`bounded_ci`), ``"mean (one seed)"`` for one.

    Example:
        >>> ci_text([0.5]), ci_text([0.4, 0.5, 0.6], PROPORTION)
        ('0.50 (one seed)', '0.50 [0.27, 0.73]')
    """
    mean, low, high = bounded_ci(values, bounds)
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f} (one seed)"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


class RunSummary(Protocol):
    """What :func:`title` reads of a run's saved results (the ``Results`` of an experiment run)."""

    @property
    def experiment(self) -> str: ...
    @property
    def preset(self) -> str: ...
    @property
    def seeds(self) -> Sequence[int]: ...
    @property
    def table(self) -> pd.DataFrame: ...


def title(results: RunSummary, what: str, *, intervals: bool = True) -> str:
    """A two-line figure title: experiment, preset, datasets; ``what`` and the seeds.

    ``intervals=False``: the figure shows seeds but no intervals (only their number).

    Example:
        >>> from types import SimpleNamespace
        >>> run = SimpleNamespace(experiment="views", preset="smoke", seeds=(0,),
        ...                       table=pd.DataFrame({"dataset": ["digits"]}))
        >>> print(title(run, "probe accuracy"))
        views (smoke preset) on digits
        probe accuracy; one seed, no CI
    """
    n = len(results.seeds)
    if not intervals:
        seeds = "one seed" if n == 1 else f"{n} seeds"
    else:
        seeds = "one seed, no CI" if n == 1 else f"mean and 95 % CI over {n} seeds"
    table = results.table
    data = f" on {datasets(table)}" if "dataset" in table else ""
    return f"{results.experiment} ({results.preset} preset){data}\n{what}; {seeds}"


def datasets(table: pd.DataFrame) -> str:
    """The datasets of a results table for a title: their names, sorted, comma-separated.

    Example:
        >>> datasets(pd.DataFrame({"dataset": ["digits", "cifar10", "digits"]}))
        'cifar10, digits'
    """
    return ", ".join(sorted(table["dataset"].unique()))


def _within(ax: Axes, bounds: Bounds | None, *, zero: bool = False) -> None:
    """Keep the y axis inside ``bounds`` (and, for bars, include 0)."""
    ax.autoscale_view()
    low, high = ax.get_ylim()
    if zero:
        low, high = min(low, 0.0), max(high, 0.0)
    if bounds is not None:
        a, b = _check_bounds(bounds)
        low, high = max(low, a), min(high, b)
    ax.set_ylim(low, high)


@contextmanager
def house_style() -> Iterator[None]:
    """Apply the house style for the duration of the block (global settings restored after)."""
    with mpl.rc_context():
        sns.set_theme(context="paper", style="whitegrid", palette="colorblind", rc=_STYLE)
        yield


def new_figure(
    ncols: int = 1, nrows: int = 1, *, width: str = "single", aspect: float = 0.75
) -> tuple[Figure, np.ndarray]:
    """A figure of ``WIDTHS[width]`` inches with a grid of axes (always a 2-D array).

    ``aspect`` is the height of one panel relative to its width.  Call inside
    :func:`house_style` so the axes pick up the style.
    """
    if width not in WIDTHS:
        raise ValueError(f"new_figure: width must be one of {tuple(WIDTHS)}, got {width!r}")
    w = WIDTHS[width]
    fig = Figure(figsize=(w, w / ncols * aspect * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def seed_band(
    ax: Axes,
    data: pd.DataFrame,
    x: str,
    y: str,
    *,
    hue: str | None = None,
    markers: bool = True,
    bounds: Bounds | None = None,
    **kwargs: Any,
) -> Axes:
    """Mean of ``y`` over seeds against ``x`` with a 95 % Student-t band (per ``hue``).

    ``data`` is long-form (one row per seed and ``x``); rows with equal ``x`` (and ``hue``)
    are the seeds averaged.  ``bounds``: the range of ``y`` (:data:`PERCENT`,
    :data:`COSINE`, ...): the band is :func:`bounded_ci`'s and the axis stops at the range.
    On a log y axis (set it first) the band is seaborn's, on log10 y.  Each ``hue`` level
    gets its own colour and dash (and marker), so equal curves stay visible.  Extra keyword
    arguments go to :func:`seaborn.lineplot`.
    """

    scale = bounds
    if bounds is not None and ax.get_yscale() == "log":  # seaborn hands over log10(y)
        a, b = _check_bounds(bounds)
        scale = (math.log10(a) if a > 0 else -math.inf, math.log10(b))

    def band(values: Sequence[float]) -> tuple[float, float]:
        _, low, high = bounded_ci(values, scale)
        return low, high

    style = {"style": hue, "markers": markers, "dashes": True} if hue else {}
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        estimator="mean",
        errorbar=band,
        marker="o" if markers and not hue else None,
        markersize=3,
        ax=ax,
        **style,
        **kwargs,
    )
    _within(ax, bounds)
    return ax


def seed_bars(
    ax: Axes, groups: Mapping[str, Sequence[float] | np.ndarray], bounds: Bounds | None = None
) -> Axes:
    """One bar per group at its mean over seeds, a 95 % error bar and a dot per seed.

    ``groups`` maps the tick label to the group's per-seed values, in drawing order; bar
    ``i`` takes colour ``C{i}``.  The axis includes 0 (bars are never cut) and stays inside
    ``bounds``, the range of the values, which the error bars respect (:func:`ci_error`).
    """
    for i, values in enumerate(groups.values()):
        values = np.asarray(values, dtype=float)
        mean, err = ci_error(values, bounds)
        ax.bar(i, mean, color=f"C{i}", alpha=0.7, width=0.7)
        ax.errorbar(i, mean, yerr=err, color="black", capsize=3, linewidth=0.8)
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(i + np.asarray(offsets), values, s=5, color="black", zorder=3)
    ax.set_xticks(range(len(groups)), list(groups))
    _within(ax, bounds, zero=True)
    return ax


def shared_legend(fig: Figure, axes: Sequence[Axes] | np.ndarray, title: str | None = None) -> None:
    """One legend for the whole figure, below the panels, instead of one per axes.

    The entries are those of the first of ``axes`` with labelled artists; every legend of
    ``axes`` is removed (the panels share their series, so the entries are the same).
    """
    handles: list[Any] = []
    labels: list[str] = []
    for ax in np.ravel(axes):
        if not handles:
            handles, labels = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), title=title)


def log_axis(ax: Axes, ticks: Sequence[float], label: str) -> None:
    """A logarithmic x axis labelled at ``ticks`` (plain numbers, no minor ticks)."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(ticks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def reference_line(ax: Axes, y: float, **kwargs: Any) -> None:
    """A horizontal line at ``y`` (a threshold, a baseline) that the y axis always shows.

    :func:`seed_band` and :func:`seed_bars` fix the y limits when they draw, so a plain
    ``axhline`` drawn afterwards can fall outside them; this one widens the limits to take
    ``y`` in, whatever the order.  Keyword arguments go to ``Axes.axhline``.
    """
    ax.axhline(y, **kwargs)
    low, high = ax.get_ylim()
    if not low <= y <= high:  # widen to y plus a 5 % margin, so the line clears the spine
        pad = 0.05 * (max(high, y) - min(low, y))
        ax.set_ylim(min(low, y - pad), max(high, y + pad))


def _caption(fig: Figure) -> str:
    """The figure's title as plain one-line text (mathtext ``$\\tau$`` read as "tau")."""
    text = fig.get_suptitle() or " ".join(ax.get_title() for ax in fig.axes[:1])
    text = text.replace("\n", " - ").replace("$\\tau$", "tau")
    return text.replace("$", "").replace("\\", "")


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically with deterministic metadata.

    The title of the figure goes into both files' ``Title`` metadata (the report's caption).
    """
    stem = Path(stem)
    paths = []
    title = _caption(fig)
    for fmt, meta in (
        ("png", {"Software": None, "Title": title}),
        ("pdf", {"Creator": None, "Producer": None, "CreationDate": None, "Title": title}),
    ):
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=meta)
        paths.append(path)
    return paths
