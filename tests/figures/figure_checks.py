"""Checks of a drawn matplotlib figure: each returns the defects it finds, as sentences.

They read the figure object (after a draw, so text extents are the saved ones), not pixels:

* :func:`out_of_range` - axis limits, bands, lines and error bars stay in a quantity's range;
* :func:`overlapping_text` - no two text boxes overlap (titles, labels, tick labels,
  annotations, legends), and no annotation or legend sits on plotted data;
* :func:`legend_problems` - legend entries are exactly the labelled series, no legend is
  repeated, and a figure with several labelled series has a legend;
* :func:`hidden_series` - two series with the same data differ in dash or marker;
* :func:`cut_bars` - bar charts include 0;
* :func:`title_problems` - the title names the experiment and the preset, no "nan", no
  "over 1 seeds".

``tests/figures/test_figure_checks.py`` shows each one failing on a figure with the defect.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Rectangle, StepPatch
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.transforms import Bbox

Bounds = tuple[float, float]
_SLACK = 1e-9  # relative tolerance of a value at its bound
_PIXELS = 1.0  # text boxes may touch, not overlap by more than this
_CAPS = ("|", "_")  # the markers of error-bar caps (not series)


def _renderer(fig: Figure):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def data_axes(fig: Figure) -> list[Axes]:
    """The panels of ``fig`` (colour bars left out)."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def _inside(values: np.ndarray, bounds: Bounds) -> bool:
    values = values[np.isfinite(values)]
    low, high = bounds
    slack = _SLACK * max(1.0, abs(low) if math.isfinite(low) else 1.0)
    slack = max(slack, _SLACK * max(1.0, abs(high) if math.isfinite(high) else 1.0))
    return bool(np.all(values >= low - slack) and np.all(values <= high + slack))


def _drawn_y(ax: Axes) -> Iterator[tuple[str, np.ndarray]]:
    for line in ax.get_lines():
        if line.get_transform() == ax.transData:  # not axhline (axes-fraction x)
            yield f"line {line.get_label()!r}", np.asarray(line.get_ydata(), dtype=float)
    for coll in ax.collections:
        if isinstance(coll, LineCollection):  # error bars
            segments = coll.get_segments()
            if segments:
                yield "error bar", np.concatenate([s[:, 1] for s in segments])
        elif isinstance(coll, PolyCollection):  # confidence bands
            for path in coll.get_paths():
                yield "band", path.vertices[:, 1]


def out_of_range(ax: Axes, bounds: Bounds) -> list[str]:
    """The y axis limits and every line, band and error bar of ``ax`` inside ``bounds``."""
    problems = []
    low, high = ax.get_ylim()
    if not _inside(np.array([low, high]), bounds):
        problems.append(f"{ax.get_ylabel()!r}: y limits [{low:.4g}, {high:.4g}] leave {bounds}")
    for what, y in _drawn_y(ax):
        if not _inside(y, bounds):
            problems.append(
                f"{ax.get_ylabel()!r}: {what} reaches [{np.nanmin(y):.4g}, {np.nanmax(y):.4g}], "
                f"outside {bounds}"
            )
    return problems


def x_out_of_range(ax: Axes, bounds: Bounds) -> list[str]:
    """The x error bars of ``ax`` inside ``bounds`` (a ratio on the x axis)."""
    problems = []
    for coll in ax.collections:
        if isinstance(coll, LineCollection) and coll.get_segments():
            x = np.concatenate([s[:, 0] for s in coll.get_segments()])
            if not _inside(x, bounds):
                problems.append(f"x error bar reaches {np.nanmin(x):.4g}, outside {bounds}")
    return problems


def _tick_labels(axis: Axis) -> list[Text]:
    """The tick labels drawn: those of ticks inside the view interval."""
    low, high = sorted(axis.get_view_interval())
    ticks = axis.get_majorticklocs()
    labels = axis.get_majorticklabels()
    return [t for x, t in zip(ticks, labels, strict=False) if low <= x <= high]


def _texts(fig: Figure) -> list[tuple[str, Text | Legend]]:
    out: list[tuple[str, Text | Legend]] = []
    if fig._suptitle is not None:
        out.append(("suptitle", fig._suptitle))
    out += [("figure text", t) for t in fig.texts if t is not fig._suptitle]
    out += [("figure legend", leg) for leg in fig.legends]
    for i, ax in enumerate(fig.axes):
        out += [(f"axes {i} title", t) for t in (ax.title, ax._left_title, ax._right_title)]
        out += [(f"axes {i} x label", ax.xaxis.label), (f"axes {i} y label", ax.yaxis.label)]
        out += [(f"axes {i} x tick", t) for t in _tick_labels(ax.xaxis)]
        out += [(f"axes {i} y tick", t) for t in _tick_labels(ax.yaxis)]
        out += [(f"axes {i} text {t.get_text()!r}", t) for t in ax.texts]
        if ax.get_legend() is not None:
            out.append((f"axes {i} legend", ax.get_legend()))
    return [
        (name, a)
        for name, a in out
        if a.get_visible() and (isinstance(a, Legend) or a.get_text().strip())
    ]


def _shrunk(box: Bbox) -> Bbox:
    return Bbox.from_extents(box.x0 + _PIXELS, box.y0 + _PIXELS, box.x1 - _PIXELS, box.y1 - _PIXELS)


def _data_paths(ax: Axes) -> Iterator[tuple[str, Path | np.ndarray, bool]]:
    """The data of ``ax`` in display space: (what, path or points, filled)."""
    for line in ax.get_lines():
        path = line.get_transform().transform_path(line.get_path())
        if line.get_linestyle() in ("None", "none", "", " "):  # markers only: the points
            yield f"marker of {line.get_label()!r}", path.vertices, False
        else:
            yield f"line {line.get_label()!r}", path, False
    for coll in ax.collections:
        if isinstance(coll, LineCollection | PolyCollection):
            for path in coll.get_paths():
                filled = isinstance(coll, PolyCollection)
                yield "band or error bar", coll.get_transform().transform_path(path), filled
        elif len(coll.get_offsets()):
            yield "point", coll.get_offset_transform().transform(coll.get_offsets()), False
    for patch in ax.patches:
        yield "bar", patch.get_transform().transform_path(patch.get_path()), patch.get_fill()


def overlapping_text(fig: Figure) -> list[str]:
    """Pairs of overlapping text boxes, and annotations or axes legends on the data."""
    renderer = _renderer(fig)
    boxes = [(name, _shrunk(a.get_window_extent(renderer))) for name, a in _texts(fig)]
    problems = [
        f"{a} overlaps {b}"
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    for ax in data_axes(fig):
        if ax.images:  # heat maps write their numbers on the cells on purpose
            continue
        covers = [(f"text {t.get_text()!r}", t) for t in ax.texts if t.get_visible()]
        if ax.get_legend() is not None:
            covers.append(("legend", ax.get_legend()))
        for name, artist in covers:
            box = _shrunk(artist.get_window_extent(renderer))
            for what, path, filled in _data_paths(ax):
                if isinstance(path, np.ndarray):
                    x, y = path[:, 0], path[:, 1]
                    hit = bool(np.any((box.x0 < x) & (x < box.x1) & (box.y0 < y) & (y < box.y1)))
                else:
                    hit = path.intersects_bbox(box, filled=filled)
                if hit:
                    problems.append(f"{name} of {ax.get_ylabel()!r} covers a {what}")
                    break
    return problems


def _series(ax: Axes) -> list[str]:
    return list(dict.fromkeys(ax.get_legend_handles_labels()[1]))


def legend_problems(fig: Figure) -> list[str]:
    """Legend entries that are not the labelled series, repeated or missing legends."""
    problems = []
    axes = data_axes(fig)
    legends = [(f"axes {i}", ax.get_legend(), _series(ax)) for i, ax in enumerate(axes)]
    legends = [(name, leg, series) for name, leg, series in legends if leg is not None]
    every = list(dict.fromkeys(label for ax in axes for label in _series(ax)))
    legends += [("figure", leg, every) for leg in fig.legends]
    entries = []
    for name, leg, series in legends:
        shown = [t.get_text() for t in leg.get_texts()]
        entries.append(tuple(shown))
        if sorted(shown) != sorted(series):
            problems.append(f"{name} legend shows {shown}, the series are {series}")
    for a, b in itertools.combinations(entries, 2):
        if a == b:
            problems.append(f"the legend {list(a)} is repeated")
    if not legends and any(len(_series(ax)) > 1 for ax in axes):
        problems.append("several labelled series and no legend")
    return problems


def hidden_series(ax: Axes) -> list[str]:
    """Pairs of lines (or histograms) of ``ax`` with the same data drawn alike."""
    lines = [
        line
        for line in ax.get_lines()
        if line.get_transform() == ax.transData and line.get_marker() not in _CAPS
    ]
    problems = []
    for a, b in itertools.combinations(lines, 2):
        ya, yb = (np.asarray(line.get_ydata(), dtype=float) for line in (a, b))
        xa, xb = (np.asarray(line.get_xdata(), dtype=float) for line in (a, b))
        if ya.size == 0 or ya.shape != yb.shape or xa.shape != xb.shape:
            continue
        same = np.allclose(ya, yb, equal_nan=True) and np.allclose(xa, xb, equal_nan=True)
        if same and a.get_linestyle() == b.get_linestyle() and a.get_marker() == b.get_marker():
            problems.append(
                f"{ax.get_ylabel()!r}: {a.get_label()!r} and {b.get_label()!r} coincide and look "
                "alike"
            )
    steps = [p for p in ax.patches if isinstance(p, StepPatch)]
    for a, b in itertools.combinations(steps, 2):
        va, vb = a.get_data().values, b.get_data().values
        alike = a.get_fill() == b.get_fill() and a.get_linestyle() == b.get_linestyle()
        if va.shape == vb.shape and np.allclose(va, vb) and alike:
            problems.append(
                f"{ax.get_ylabel()!r}: histograms {a.get_label()!r} and {b.get_label()!r} coincide "
                "and look alike"
            )
    return problems


def cut_bars(ax: Axes) -> list[str]:
    """A bar chart whose y axis does not include 0."""
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() != 0]
    low, high = ax.get_ylim()
    if bars and not low <= 0.0 <= high:
        return [f"{ax.get_ylabel()!r}: bars cut, the y axis is [{low:.4g}, {high:.4g}]"]
    return []


def series_off_axes(ax: Axes) -> list[str]:
    """A labelled line or a horizontal reference line whose every point lies off the y axis."""
    low, high = sorted(ax.get_ylim())
    problems = []
    for line in ax.get_lines():
        label = line.get_label()
        y = np.asarray(line.get_ydata(), dtype=float)
        y = y[np.isfinite(y)]
        reference = line.get_transform() != ax.transData  # axhline: a threshold, a baseline
        if (label.startswith("_") and not reference) or y.size == 0:
            continue
        if np.all((y < low) | (y > high)):
            problems.append(
                f"{ax.get_ylabel()!r}: {label!r} lies outside the y axis [{low:.4g}, {high:.4g}]"
            )
    return problems


def empty_panel(ax: Axes) -> list[str]:
    """A panel that draws no finite data and carries no text saying why."""
    drawn = any(np.isfinite(y).any() for _, y in _drawn_y(ax))
    drawn = drawn or bool(ax.patches) or bool(ax.images)
    if drawn or any(t.get_text().strip() for t in ax.texts):
        return []
    return [f"{ax.get_ylabel()!r}: the panel shows no data and no note saying why"]


def title_problems(fig: Figure, experiment: str, preset: str) -> list[str]:
    """The title without the experiment or the preset; "nan" or "over 1 seeds" in any text."""
    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    if not title:
        title = " ".join(ax.get_title() for ax in fig.axes)
    problems = [f"the title {title!r} lacks {w!r}" for w in (experiment, preset) if w not in title]
    for name, artist in _texts(fig):
        parts = artist.get_texts() if isinstance(artist, Legend) else [artist]
        for text in (t.get_text() for t in parts):
            if re.search(r"\bnan\b", text, re.IGNORECASE) or "over 1 seeds" in text:
                problems.append(f"{name} reads {text!r}")
    return problems


def all_problems(
    fig: Figure, experiment: str, preset: str, ranges: Mapping[int, Bounds] | None = None
) -> list[str]:
    """Every check on ``fig``; ``ranges``: panel index -> the range of its y quantity."""
    problems = (
        overlapping_text(fig) + legend_problems(fig) + title_problems(fig, experiment, preset)
    )
    for i, ax in enumerate(data_axes(fig)):
        problems += hidden_series(ax) + cut_bars(ax) + empty_panel(ax) + series_off_axes(ax)
        if ranges and i in ranges:
            problems += out_of_range(ax, ranges[i])
    return problems
