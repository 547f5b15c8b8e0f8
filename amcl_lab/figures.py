"""Figures in one house style, drawn from saved results, saved as PNG and PDF.

Conventions every experiment's ``plot`` follows:

* draw from the saved results table only (``results.json``), never from live training
  state, so figures re-render without retraining;
* one house style (:func:`house_style`: seaborn ``paper`` context, white grid, colour-blind
  palette, 8 pt text) and publication sizes (:func:`new_figure`: 3.5 in single column,
  7 in double column);
* seeds are shown as 95 % confidence bands (or error bars) around the mean over seeds,
  with the same Student-t interval the claims use (:func:`mean_ci`, :func:`seed_band`);
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
from typing import Any

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
    "PNG_DPI",
    "WIDTHS",
    "ci_error",
    "datasets",
    "house_style",
    "log_axis",
    "mean_ci",
    "new_figure",
    "save",
    "seed_band",
    "seed_bars",
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


def ci_error(values: Sequence[float] | np.ndarray) -> tuple[float, list[list[float]]]:
    """Mean over seeds and the ``yerr``/``xerr`` of its 95 % interval, for ``errorbar``.

    The error is ``[[mean - low], [high - mean]]`` (:func:`mean_ci`), or zero length when
    the interval is undefined (one seed).

    Example:
        >>> ci_error([2.0])
        (2.0, [[0.0], [0.0]])
    """
    mean, low, high = mean_ci(values)
    if not (math.isfinite(low) and math.isfinite(high)):
        return mean, [[0.0], [0.0]]
    return mean, [[mean - low], [high - mean]]


def datasets(table: pd.DataFrame) -> str:
    """The datasets of a results table for a title: their names, sorted, comma-separated.

    Example:
        >>> datasets(pd.DataFrame({"dataset": ["digits", "cifar10", "digits"]}))
        'cifar10, digits'
    """
    return ", ".join(sorted(table["dataset"].unique()))


def _band(values: Sequence[float]) -> tuple[float, float]:
    _, low, high = mean_ci(values)
    return low, high


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
    **kwargs: Any,
) -> Axes:
    """Mean of ``y`` over seeds against ``x`` with a 95 % Student-t band (per ``hue``).

    ``data`` is long-form (one row per seed and ``x``); rows with equal ``x`` (and ``hue``)
    are the seeds averaged.  Extra keyword arguments go to :func:`seaborn.lineplot`.
    """
    return sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        estimator="mean",
        errorbar=_band,
        marker="o" if markers else None,
        markersize=3,
        ax=ax,
        **kwargs,
    )


def seed_bars(ax: Axes, groups: Mapping[str, Sequence[float] | np.ndarray]) -> Axes:
    """One bar per group at its mean over seeds, a 95 % error bar and a dot per seed.

    ``groups`` maps the tick label to the group's per-seed values, in drawing order; bar
    ``i`` takes colour ``C{i}``.
    """
    for i, values in enumerate(groups.values()):
        values = np.asarray(values, dtype=float)
        mean, err = ci_error(values)
        ax.bar(i, mean, color=f"C{i}", alpha=0.7, width=0.7)
        ax.errorbar(i, mean, yerr=err, color="black", capsize=3, linewidth=0.8)
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(i + np.asarray(offsets), values, s=5, color="black", zorder=3)
    ax.set_xticks(range(len(groups)), list(groups))
    return ax


def log_axis(ax: Axes, ticks: Sequence[float], label: str) -> None:
    """A logarithmic x axis labelled at ``ticks`` (plain numbers, no minor ticks)."""
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(ticks)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def save(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically with deterministic metadata."""
    stem = Path(stem)
    paths = []
    for fmt, meta in (
        ("png", {"Software": None}),
        ("pdf", {"Creator": None, "Producer": None, "CreationDate": None}),
    ):
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=PNG_DPI, metadata=meta)
        paths.append(path)
    return paths
