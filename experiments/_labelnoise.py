"""What the label-noise runs of ``simplex`` measure: held-out simplex geometry and fit steps.

:func:`geometry_hook` is the evaluation hook of the geometry runs
(:func:`amcl_lab.metrics.simplex_report` of the held-out embeddings with clean labels);
:func:`fit_step` reads the first evaluated step at which a run fitted its training labels.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F

from amcl_lab import engine, metrics

__all__ = ["fit_step", "geometry_hook"]


def geometry_hook(normalize: bool) -> engine.EvalHook:
    """Held-out simplex metrics, on L2-normalised embeddings when ``normalize``."""

    def hook(held: engine.HeldOut) -> dict[str, float]:
        z = F.normalize(held.embeddings, dim=1) if normalize else held.embeddings
        report = metrics.simplex_report(z, held.labels)
        return {
            "simplex_distance": float(report.simplex_distance),
            "simplex_max_cosine_gap": float(report.max_cosine_gap),
            "sample_cosine": float(report.sample_cosine),
            "nc1": float(report.nc1),
        }

    return hook


def fit_step(history: list[dict[str, Any]], accuracy: float) -> float:
    """First evaluated step whose ``train_accuracy`` reaches ``accuracy`` (NaN if none)."""
    return next(
        (float(r["step"]) for r in history if r.get("train_accuracy", -1.0) >= accuracy),
        math.nan,
    )
