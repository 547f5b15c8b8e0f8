"""Running an experiment module's smoke preset from a test, with config overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from amcl_lab import engine
from amcl_lab.experiments import load, resolve_config


def smoke_rows(name: str, overrides: Sequence[str], out: Path) -> pd.DataFrame:
    """The results table of ``name``'s smoke preset with ``overrides`` (no claims, no figures).

    ``overrides`` are ``key=value`` strings, as ``amcl-lab run --set`` takes them; the run
    folder goes under ``out``.
    """
    module = load(name)
    config = resolve_config(module, name, "smoke", tuple(overrides))
    run = engine.open_run(out, name, config, preset="smoke", seeds=config.seed_list, quiet=True)
    return pd.DataFrame(module.run(config, run))
