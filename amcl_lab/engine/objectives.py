"""What a run minimises: the :class:`Objective` module of a config's loss.

The loss is looked up by name in :data:`~amcl_lab.engine.catalog.OBJECTIVES` (every two-view
and SupCon loss of :mod:`amcl_lab.registry`, the multi-view losses of the small-projector
paper, the AMCL losses through :class:`amcl_lab.amcl.AMCLModel`, supervised cross-entropy);
:class:`Objective` turns a network's output on ``V`` views into that loss, summed over
projection heads and averaged over view pairs.
"""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed
from ..amcl import AMCLModel, PairTemperature
from ..models import MultiHeadProjector, NetworkOutput
from .catalog import OBJECTIVES
from .config import TrainConfig

__all__ = ["Objective"]


class Objective(nn.Module):
    """The training loss of a :class:`NetworkOutput` on ``V`` views of ``N`` images.

    Embeddings arrive as ``(C, V * N, D)`` (head, view-major rows).  Pairwise losses are
    averaged over the ``V (V - 1) / 2`` view pairs and summed over heads; SupCon sees
    ``(N, V, D)`` per head with instance labels (self-supervised, the multi-view NT-Xent) or
    class labels; AMCL losses are evaluated by :class:`~amcl_lab.amcl.AMCLModel` on the head
    stacks (its temperature network, if any, is a parameter of this module).

    ``gather_distributed=True`` (set by :func:`train` under a process group) passes
    ``gather_distributed=True`` to every loss that takes it (NT-Xent, InfoNCE, SupCon, Barlow
    Twins, the AMCL NT-Xent/InfoNCE/Barlow Twins with a constant or a learned temperature):
    the rows are then this rank's shard and the negatives (or batch statistics) those of the
    global batch (:mod:`amcl_lab.distributed`).  A learned temperature is computed on the
    same gathered rows (:class:`~amcl_lab.amcl.AMCLModel`); for Barlow Twins the network's
    input width is then the global batch size.  The other losses are evaluated on the local
    shard (AMCL SimSiam is per sample and needs no gather); a ``loss_options`` entry
    ``gather_distributed=False`` opts out.
    """

    def __init__(self, config: TrainConfig, *, gather_distributed: bool = False) -> None:
        super().__init__()
        fn = "Objective"
        self.spec = OBJECTIVES[config.loss]
        self.supervised = config.supervised
        options = {**self.spec.fixed, **config.loss_kwargs}
        takes = self.spec.fn is not None and (
            "gather_distributed" in inspect.signature(self.spec.fn).parameters
        )
        if gather_distributed and takes:
            options.setdefault("gather_distributed", True)
        self.amcl: AMCLModel | None = None
        if self.spec.kind == "amcl":
            self.amcl = _amcl_model(config, options)
            self.kwargs: dict[str, Any] = {}
            return
        if self.spec.fn is not None and "temperature" in inspect.signature(self.spec.fn).parameters:
            options.setdefault("temperature", config.temperature)
        if self.spec.fn is not None:
            try:
                inspect.signature(self.spec.fn).bind_partial(**options)
            except TypeError as error:
                params = inspect.signature(self.spec.fn).parameters.values()
                keywords = [p.name for p in params if p.default is not inspect.Parameter.empty]
                raise ValueError(
                    f"{fn}: bad loss_options for {config.loss!r} ({error}); keywords of "
                    f"{self.spec.fn.__name__}: {', '.join(keywords)}"
                ) from None
        self.kwargs = options

    def forward(self, out: NetworkOutput, views: int, labels: Tensor) -> Tensor:
        kind, fn, kw = self.spec.kind, self.spec.fn, self.kwargs
        if kind == "ce":
            assert out.logits is not None  # guaranteed by build_network
            return F.cross_entropy(out.logits, labels.repeat(views))
        assert out.embeddings is not None
        c, rows, d = out.embeddings.shape
        z = out.embeddings.reshape(c, views, rows // views, d)  # (C, V, N, D)
        if kind == "amcl":
            assert self.amcl is not None
            return self.amcl(*z.unbind(dim=1))
        if kind == "pairwise":
            pairs = list(itertools.combinations(range(views), 2))
            total = sum(fn(z[h, a], z[h, b], **kw) for a, b in pairs for h in range(c))
            return total / len(pairs)
        per_image = z.permute(0, 2, 1, 3)  # (C, N, V, D)
        if kind == "labels":
            targets = labels if self.supervised else None  # None: instance ids (global if gathered)
            return sum(fn(per_image[h], targets, **kw) for h in range(c))
        return sum(fn(per_image[h], **kw) for h in range(c))


def _amcl_model(config: TrainConfig, options: dict[str, Any]) -> AMCLModel:
    temperature: PairTemperature | float = config.temperature
    if config.adaptive_temperature:
        # Barlow Twins compares channel vectors across the batch (the second AMCL code
        # release's BatchVectorTemperatureHead): those of the global batch when gathered,
        # of the local shard otherwise
        batch = config.batch_size
        if not options.get("gather_distributed", False):
            batch //= distributed.world_size()
        dim = batch if config.loss == "amcl_barlow_twins" else config.proj_dim
        temperature = PairTemperature(dim)
    predictor = None
    if config.loss == "amcl_simsiam":
        predictor = MultiHeadProjector(
            config.proj_dim, config.proj_hidden, config.proj_dim, heads=config.heads
        )
    return AMCLModel(
        nn.Identity(), nn.Identity(), temperature, config.loss, predictor=predictor, **options
    )
