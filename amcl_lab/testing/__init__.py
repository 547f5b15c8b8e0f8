"""Tools for testing contrastive losses: public Hypothesis strategies (:mod:`.strategies`)."""

from . import strategies

__all__ = ["strategies"]
