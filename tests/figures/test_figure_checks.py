"""Each check of ``figure_checks`` fails on a figure with its defect and passes once fixed.

Two kinds of evidence: small figures built with one defect each (the "bad" case) next to
the same figure drawn the house way (the "good" case), and mutants of
:mod:`amcl_lab.figures` (the old behaviour put back) under which the checks of the saved
experiment figures fail.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from figure_checks import (
    all_problems,
    cut_bars,
    data_axes,
    empty_panel,
    hidden_series,
    legend_problems,
    out_of_range,
    overlapping_text,
    series_off_axes,
    title_problems,
    x_out_of_range,
)
from matplotlib.axes import Axes
from test_saved_figures import FIGURES, draw, saved_results

from amcl_lab import figures

SEEDS = pd.DataFrame(
    [{"seed": s, "step": t, "acc": v} for t in range(3) for s, v in enumerate((90, 99, 99.5))]
)


def _one(ncols=1, width="single"):
    with figures.house_style():
        return figures.new_figure(ncols, width=width)


def band(bounds):
    fig, axes = _one()
    figures.seed_band(axes[0, 0], SEEDS, "step", "acc", bounds=bounds)
    return fig, out_of_range(axes[0, 0], figures.PERCENT)


def bars(ylim):
    fig, axes = _one()
    figures.seed_bars(axes[0, 0], {"SGD": [20.0, 22.0, 24.0], "SAM": [15.0, 17.0, 19.0]})
    if ylim:
        axes[0, 0].set_ylim(12.0, 100.0)  # the old sharpness_bars accuracy axis
    return fig, cut_bars(axes[0, 0])


def labels(annotate):
    fig, axes = _one()
    ax = axes[0, 0]
    # the old cost_vs_accuracy: MESA's time-ratio error bar runs through SGD's label
    for i, (name, x, y) in enumerate((("SGD", 1.0, 22.8), ("MESA", 2.0, 23.0))):
        ax.errorbar(x, y, xerr=[[1.5], [1.0]], yerr=[[2.0], [2.0]], fmt="o", color=f"C{i}")
        if annotate:
            ax.annotate(name, (x, y), xytext=(4, 4), textcoords="offset points")
        else:
            ax.plot([], [], "o", color=f"C{i}", label=name)
    if not annotate:
        figures.shared_legend(fig, axes)
    return fig, overlapping_text(fig)


def legends(shared):
    data = pd.concat([SEEDS.assign(arm="a"), SEEDS.assign(arm="b", acc=SEEDS["acc"] - 5)])
    with figures.house_style():
        fig, axes = figures.new_figure(3, width="double")
        for ax in axes[0]:
            figures.seed_band(ax, data, "step", "acc", hue="arm")
        if shared:
            figures.shared_legend(fig, axes)
    return fig, legend_problems(fig)


def legend_on_band(outside):
    fig, axes = _one()
    ax = axes[0, 0]
    ax.fill_between([0, 1], [0, 0], [1, 1], alpha=0.3, label="band")
    ax.plot([0, 1], [0.5, 0.5], label="mean")
    if outside:
        figures.shared_legend(fig, axes)
    else:
        ax.legend(loc="center")
    return fig, overlapping_text(fig)


def missing_entry(complete):
    fig, axes = _one()
    ax = axes[0, 0]
    for name in ("negative", "positive", "both"):
        ax.plot([0, 1], [0, 1 + len(name)], label=name)
    if complete:
        ax.legend()
    else:  # the third series (the old histograms' blend colour) has no entry
        ax.legend(ax.get_lines()[:2], ["negative", "positive"])
    return fig, legend_problems(fig)


def coinciding(styled):
    data = pd.concat([SEEDS.assign(arm="a"), SEEDS.assign(arm="b")])  # identical curves
    fig, axes = _one()
    if styled:
        figures.seed_band(axes[0, 0], data, "step", "acc", hue="arm")
    else:
        for arm in ("a", "b"):
            axes[0, 0].plot([0, 1, 2], [96.2, 96.2, 96.2], color="C0", label=arm)
    return fig, hidden_series(axes[0, 0])


def histograms(styled):
    fig, axes = _one()
    edges = np.linspace(-1, 1, 5)
    values = np.array([0.0, 0.0, 0.0, 100.0])  # collapsed: one bar at cos = 1
    if styled:
        axes[0, 0].stairs(values, edges, fill=True, alpha=0.45, label="negative pairs")
        axes[0, 0].stairs(values, edges, linestyle="--", label="positive pairs")
    else:
        for kind in ("negative", "positive"):
            axes[0, 0].stairs(values, edges, alpha=0.9, label=kind)
    return fig, hidden_series(axes[0, 0])


def titles(good):
    fig, _ = _one()
    text = "views (smoke preset) on digits\nprobe; one seed, no CI"
    fig.suptitle(text if good else "digits: overlap 0.5 [nan, nan], mean over 1 seeds")
    return fig, title_problems(fig, "views", "smoke")


def crowded(good):
    with figures.house_style():
        fig, axes = figures.new_figure(2, width="single")
    for ax in axes[0]:
        ax.set_title("short" if good else "a long panel title that runs into its neighbour")
    return fig, overlapping_text(fig)


def empty(noted):
    fig, axes = _one()
    axes[0, 0].plot([0.0, 0.5, 1.0], [math.nan] * 3, label="SupCon")  # no run fitted
    if noted:
        axes[0, 0].text(0.5, 0.5, "no run fitted its labels", transform=axes[0, 0].transAxes)
    return fig, empty_panel(axes[0, 0])


def reference_line(helper):
    fig, axes = _one()
    ax = axes[0, 0]
    tight = SEEDS.assign(acc=96.0 + SEEDS["seed"] * 0.5)  # a band between about 95 and 97
    figures.seed_band(ax, tight, "step", "acc", bounds=figures.PERCENT)
    # the old accuracy_vs_tau: a plain axhline after the band fixed the y axis
    draw = figures.reference_line if helper else Axes.axhline
    draw(ax, 87.3, linestyle=":", label="probe at init")
    return fig, series_off_axes(ax)


CASES = {
    "reference line off the axis": (reference_line, False, True),
    "empty panel without a note": (empty, False, True),
    "band leaves 0-100 %": (band, None, figures.PERCENT),
    "bars cut": (bars, True, False),
    "label on a marker": (labels, True, False),
    "legend repeated per panel": (legends, False, True),
    "legend on a band": (legend_on_band, False, True),
    "legend lacks a series": (missing_entry, False, True),
    "identical curves alike": (coinciding, False, True),
    "identical histograms alike": (histograms, False, True),
    "nan and 1 seeds in the title": (titles, False, True),
    "titles overlap": (crowded, False, True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_check_catches_the_defect_and_passes_the_fix(case):
    build, bad, good = CASES[case]
    assert build(bad)[1] != [], f"{case}: the defect went unnoticed"
    assert build(good)[1] == [], f"{case}: the fixed figure is flagged"


def _mean_ci_everywhere(values, bounds=None, level=0.95):
    return figures.mean_ci(values, level)  # the old intervals: bounds ignored


@pytest.mark.parametrize(
    ("mutant", "replacement", "stem"),
    [
        ("bounded_ci", _mean_ci_everywhere, "geometry_vs_tau"),  # cosine band up to 1.07
        ("bounded_ci", _mean_ci_everywhere, "accuracy_vs_fraction"),  # accuracy below 0 %
        ("bounded_ci", _mean_ci_everywhere, "cost_vs_accuracy"),  # time ratio below 0
        ("shared_legend", lambda *a, **k: None, "separation_vs_augmentation"),  # 3 legends
    ],
)
def test_the_saved_figure_checks_catch_the_old_behaviour(
    monkeypatch, tmp_path, mutant, replacement, stem
):
    experiment, ranges = FIGURES[stem]
    monkeypatch.setattr(figures, mutant, replacement)
    fig = draw(saved_results(experiment), tmp_path)[stem]
    problems = all_problems(fig, experiment, "smoke", ranges)
    problems += x_out_of_range(data_axes(fig)[0], (0.0, math.inf))
    assert problems != []
