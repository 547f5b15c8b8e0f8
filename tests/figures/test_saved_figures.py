"""Every figure an experiment saves passes the checks of ``figure_checks``, with 3 seeds and 1.

The figures are drawn by each experiment's ``plot`` from saved smoke results
(``tests/figures/results/<experiment>.json.gz``: the ``results.json`` of ``amcl-lab run
<experiment> --preset smoke``, gzipped; rerun and copy one to refresh it after a change of
the experiment's rows).  :func:`amcl_lab.figures.save` is replaced by a function that keeps
the figure object, so the checks read exactly what would be saved.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
from pathlib import Path

import pytest
from figure_checks import all_problems, data_axes, title_problems, x_out_of_range

from amcl_lab import figures
from amcl_lab.experiments import Results, load

RESULTS = Path(__file__).parent / "results"
P, COS, PROP = figures.PERCENT, figures.COSINE, figures.PROPORTION
POS = (0.0, math.inf)

#: figure -> (experiment, {panel index: range of its y quantity}).
FIGURES = {
    "training_curves": ("simclr_digits", {0: POS, 1: P, 2: P}),
    "sharpness_bars": ("sharpness", {3: P}),
    "spectral_density": ("sharpness", {0: POS}),
    "cost_vs_accuracy": ("sharpness", {0: P}),
    "similarity_histograms": ("amcl", dict.fromkeys(range(4), P)),
    "separation_vs_augmentation": ("amcl", {0: PROP, 1: PROP, 2: P}),
    "controls": ("amcl", {0: P, 1: COS}),
    "phase_map": ("amcl_phase", {}),
    "negative_weights": ("hardness", {0: P, 1: POS}),
    "uniformity_vs_tau": ("hardness", {0: POS, 1: COS}),
    "projector_heatmap": ("projector", {}),
    "geometry_over_training": ("simplex", {0: POS, 1: POS, 2: P}),
    "fit_vs_noise": ("simplex", {0: POS}),
    "geometry_vs_tau": ("temperature", {0: POS, 1: COS}),
    "accuracy_vs_tau": ("temperature", {0: P}),
    "accuracy_vs_views": ("views", {0: P}),
    "accuracy_vs_fraction": ("views", {0: P}),
}


def saved_results(experiment: str, seeds: int | None = None) -> Results:
    """The saved smoke results of ``experiment``, cut to its first ``seeds`` seeds."""
    data = json.loads(gzip.decompress((RESULTS / f"{experiment}.json.gz").read_bytes()))
    results = Results(**{**data, "seeds": tuple(data["seeds"]), "rows": tuple(data["rows"])})
    if seeds is None:
        return results
    keep = results.seeds[:seeds]
    rows = tuple(r for r in results.rows if r.get("seed") in keep)
    return dataclasses.replace(results, seeds=keep, rows=rows)


def draw(results: Results, tmp_path: Path) -> dict[str, object]:
    """The figures ``plot`` saves for ``results``, by file stem, as figure objects."""
    drawn = {}

    def keep(fig, stem):
        drawn[Path(stem).name] = fig
        return [Path(stem).with_suffix(".png")]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(figures, "save", keep)
        load(results.experiment).plot(results, tmp_path)
    return drawn


@pytest.fixture(scope="module")
def every_figure(tmp_path_factory):
    out = {}
    for experiment in sorted({e for e, _ in FIGURES.values()}):
        out.update(draw(saved_results(experiment), tmp_path_factory.mktemp(experiment)))
    return out


def test_every_figure_is_checked(every_figure):
    assert sorted(every_figure) == sorted(FIGURES)


@pytest.mark.parametrize("stem", sorted(FIGURES))
def test_saved_figure_passes_the_checks(every_figure, stem):
    experiment, ranges = FIGURES[stem]
    fig = every_figure[stem]
    assert all_problems(fig, experiment, "smoke", ranges) == []
    if stem == "cost_vs_accuracy":  # the time ratio is on the x axis
        assert x_out_of_range(data_axes(fig)[0], POS) == []


@pytest.mark.parametrize("experiment", sorted({e for e, _ in FIGURES.values()}))
def test_a_one_seed_run_says_so_and_shows_no_nan(experiment, tmp_path):
    results = saved_results(experiment, seeds=1)
    for stem, fig in draw(results, tmp_path).items():
        assert title_problems(fig, experiment, "smoke") == [], stem
