r"""What a run minimises: the :class:`Objective` module of a config's loss.

The loss is looked up by name in :data:`~amcl_lab.engine.catalog.OBJECTIVES` (every two-view
and SupCon loss of :mod:`amcl_lab.registry`, the multi-view losses of the small-projector
paper, the AMCL losses through :class:`amcl_lab.amcl.AMCLModel`, MoCo and its AMCL form,
supervised cross-entropy); :class:`Objective` turns a network's output on ``V`` views into
that loss, summed over projection heads and averaged over view pairs.  The momentum
(exponential moving average) copy of the network is :class:`MomentumNetwork`: the target of
BYOL and MoCo v3 (kind ``"ema_target"``, with a trainable :class:`Predictor`), and, with a
per-head queue of past keys, MoCo's key side :class:`MomentumQueue`.  Both are held by the
objective so that they are checkpointed with it.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import distributed, losses
from ..amcl import AMCLModel, LearnedTemperature, PairTemperature, ScalarTemperature
from ..losses._common import l2_normalize
from ..models import MultiHeadProjector, Network, NetworkOutput, ProjectionHead
from .batches import STREAM_QUEUE, generator
from .catalog import OBJECTIVES
from .config import TrainConfig

__all__ = ["MomentumNetwork", "MomentumQueue", "Objective", "Predictor", "learned_temperature"]


class MomentumNetwork(nn.Module):
    r"""A momentum copy of a network: the key encoder of MoCo, the target network of BYOL.

    The copy starts as the trained (online / query) network and follows it by the exponential
    moving average :math:`\xi \leftarrow m\,\xi + (1 - m)\,\theta` (``momentum`` :math:`m`),
    Eq. (2) of [He2020]_ and the target update of [Grill2020]_ (Section 3.1), applied to
    every parameter by :meth:`step` after each optimiser step.  Its BatchNorm statistics come
    from its own forward passes in training mode, as in both papers; it has no classifier and
    receives no gradient.  Every projection head has a momentum copy.

    Args:
        network: the online network to copy.
        momentum: :math:`m` in [0, 1) (MoCo: 0.999; BYOL: 0.996 at the start of its cosine
            schedule towards 1, which is not implemented: :math:`m` stays constant).

    References:
        .. [He2020] K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, "Momentum Contrast for
           Unsupervised Visual Representation Learning", CVPR 2020, arXiv:1911.05722.
        .. [Grill2020] J.-B. Grill et al., "Bootstrap Your Own Latent: A New Approach to
           Self-Supervised Learning", NeurIPS 2020, arXiv:2006.07733.
    """

    def __init__(self, network: Network, *, momentum: float) -> None:
        super().__init__()
        self.network = copy.deepcopy(network)
        self.network.classifier = None
        self.network.requires_grad_(False)
        self.momentum = momentum

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """The projection head stack ``(C, rows, D)`` of a batch of images (no gradient)."""
        out = self.network(x)
        assert out.embeddings is not None  # momentum objectives have a projector
        return out.embeddings

    @torch.no_grad()
    def step(self, network: Network) -> None:
        r"""Move each parameter towards ``network``'s: :math:`\xi \gets m \xi + (1-m) \theta`."""
        m = self.momentum
        for ema_p, online_p in zip(self.network.parameters(), network.parameters(), strict=True):
            ema_p.mul_(m).add_(online_p.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def update(self, network: Network, keys: Tensor, views: int) -> None:
        """After an optimiser step (the interface :func:`~amcl_lab.engine.train_step` calls)."""
        self.step(network)


class MomentumQueue(MomentumNetwork):
    r"""MoCo's key side: a :class:`MomentumNetwork` and a per-head FIFO queue of keys.

    The key network follows the query network by the moving average of Eq. (2) of
    [He2020]_ (:class:`MomentumNetwork`); its keys are L2-normalised.  Every projection head
    has a momentum copy (the per-head momentum projectors of the AMCL MoCo variant).  The
    queue holds, per head, the ``size`` most recent keys, oldest overwritten first; it starts
    as random unit vectors drawn from ``seed``.

    Args:
        network: the query network to copy (its classifier, if any, is not used).
        heads: projection heads C; dim: projection dimension D; size: queue rows K >= 1.
        momentum: :math:`m` in [0, 1).
        seed: the run's seed (the initial queue is drawn from its own stream).

    References:
        .. [He2020] K. He, H. Fan, Y. Wu, S. Xie, R. Girshick, "Momentum Contrast for
           Unsupervised Visual Representation Learning", CVPR 2020, arXiv:1911.05722.

    .. note:: Documented choice.
        With ``V`` views every key of the step is enqueued (``V N`` rows per step, view
        major; under ``torchrun`` the keys of every rank, in the order of the global batch),
        after the optimiser step, so the loss of a step never sees its own keys as negatives.
        The queue is a buffer of the objective, so a checkpoint holds it, the key network
        and the write position.
    """

    queue: Tensor
    position: Tensor

    def __init__(
        self, network: Network, *, heads: int, dim: int, size: int, momentum: float, seed: int
    ) -> None:
        super().__init__(network, momentum=momentum)
        start = torch.randn(heads, size, dim, generator=generator(seed, STREAM_QUEUE))
        device = next(network.parameters()).device
        self.register_buffer("queue", l2_normalize(start).to(device))
        self.register_buffer("position", torch.zeros((), dtype=torch.long, device=device))

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """The normalised key head stack ``(C, rows, D)`` of a batch of images (no gradient)."""
        return l2_normalize(super().keys(x))

    @torch.no_grad()
    def update(self, network: Network, keys: Tensor, views: int) -> None:
        """After an optimiser step: move the key network towards ``network``, enqueue ``keys``.

        ``keys`` is this rank's ``(C, V n, D)`` stack (view major); under a process group the
        keys of every rank are gathered into the order of the global batch first.
        """
        self.step(network)
        c, rows, d = keys.shape
        per_view = distributed.gather(keys.reshape(c, views, rows // views, d), dim=2)
        self.enqueue(per_view.flatten(1, 2))

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write the ``(C, n, D)`` rows into the queue, overwriting the oldest (FIFO)."""
        size, n = self.queue.shape[1], keys.shape[1]
        if n >= size:
            self.queue.copy_(keys[:, n - size :])
            self.position.zero_()
            return
        rows = (self.position + torch.arange(n, device=keys.device)) % size
        self.queue[:, rows] = keys.to(self.queue.dtype)
        self.position.copy_((self.position + n) % size)


class Predictor(nn.Module):
    """BYOL's and MoCo v3's predictor: one ``Linear -> BatchNorm -> ReLU -> Linear`` per head.

    ``forward`` maps the projection head stack ``(C, rows, D)`` to predictions of the same
    shape, head ``c`` by its own MLP (:class:`~amcl_lab.models.ProjectionHead` with
    BatchNorm, ``D -> hidden -> D``, the shape of BYOL's predictor).  The rows of all views
    of a step pass through one BatchNorm batch.
    """

    def __init__(self, heads: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            ProjectionHead(dim, hidden, dim, batch_norm=True) for _ in range(heads)
        )

    def forward(self, z: Tensor) -> Tensor:
        return torch.stack([head(z[c]) for c, head in enumerate(self.heads)])


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

    MoCo losses (kind ``"moco"``) need the ``network`` to copy into their
    :class:`MomentumQueue`: each view's queries are scored against the keys of every other
    view (the symmetrised MoCo loss; for two views the mean of ``(q_1, k_2)`` and
    ``(q_2, k_1)``), with the queue as negatives, per head; ``amcl_moco`` takes the
    temperatures of a learned :class:`~amcl_lab.amcl.PairTemperature` (or ``temperature``).
    The keys of a step come from :meth:`MomentumQueue.keys` and are passed to ``forward``;
    :meth:`after_step` updates the key network and the queue.

    BYOL and MoCo v3 (kind ``"ema_target"``) also need the ``network``: its
    :class:`MomentumNetwork` copy gives the targets (projections of every view, no gradient)
    and a trainable :class:`Predictor` (a parameter of this module) maps the online
    projections to predictions; each unordered view pair ``(a, b)`` contributes
    ``fn(p_a, p_b, t_a, t_b)`` (:func:`~amcl_lab.losses.negative_cosine`: BYOL's symmetrised
    loss, view ``a``'s prediction against view ``b``'s target and back;
    :func:`~amcl_lab.losses.moco_v3`: its ``ctr(q_a, k_b) + ctr(q_b, k_a)``), averaged over
    the pairs and summed over heads.  ``TrainConfig.key_momentum`` is the EMA factor (BYOL
    uses 0.996 rising to 1, MoCo v3 0.99 rising to 1; the engine keeps it constant).
    :meth:`after_step` moves the target towards the online network.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        network: Network | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        fn = "Objective"
        self.spec = OBJECTIVES[config.loss]
        self.supervised = config.supervised
        self._proj_dim = config.proj_dim
        self.momentum: MomentumNetwork | None = None
        self.predictor: Predictor | None = None
        self.temperature_net: LearnedTemperature | None = None
        options = {**self.spec.fixed, **config.loss_kwargs}
        takes = self.spec.fn is not None and (
            "gather_distributed" in inspect.signature(self.spec.fn).parameters
        )
        if gather_distributed and takes:
            options.setdefault("gather_distributed", True)
        self.amcl: AMCLModel | None = None
        if self.spec.kind == "amcl":
            self.amcl = _amcl_model(config, options)
            net = self.amcl.temperature
            self.temperature_net = net if isinstance(net, LearnedTemperature) else None
            self.kwargs: dict[str, Any] = {}
            return
        if self.spec.kind == "moco":
            if network is None:
                raise ValueError(f"{fn}: loss {config.loss!r} needs the network (its key copy)")
            self.momentum = MomentumQueue(
                network,
                heads=config.heads,
                dim=config.proj_dim,
                size=config.queue_size,
                momentum=config.key_momentum,
                seed=config.seed,
            )
            options.pop("gather_distributed", None)  # the queue holds every rank's keys
            if config.loss == "amcl_moco" and config.adaptive_temperature:
                self.temperature_net = learned_temperature(config, config.proj_dim)
        if self.spec.kind == "ema_target":
            if network is None:
                raise ValueError(f"{fn}: loss {config.loss!r} needs the network (its EMA target)")
            self.momentum = MomentumNetwork(network, momentum=config.key_momentum)
            self.predictor = Predictor(config.heads, config.proj_dim, config.proj_hidden)
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

    @property
    def pair_temperature(self) -> LearnedTemperature | None:
        """The learned temperature of pairs of embeddings, if the loss has one.

        ``None`` for constant temperatures and for the Barlow Twins form, whose temperatures
        are those of channel vectors, not of embedding pairs.
        """
        net = self.temperature_net
        if isinstance(net, PairTemperature) and net.dim != self._proj_dim:
            return None
        return net

    def forward(
        self, out: NetworkOutput, views: int, labels: Tensor, keys: Tensor | None = None
    ) -> Tensor:
        """The loss of ``out`` on ``views`` views (``keys``: MoCo's key stack of the step)."""
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
        if kind == "ema_target":
            assert self.predictor is not None and keys is not None, "needs the step's targets"
            p = self.predictor(out.embeddings).reshape(c, views, rows // views, d)
            t = keys.reshape(c, views, rows // views, d)
            pairs = list(itertools.combinations(range(views), 2))
            total = sum(
                fn(p[h, a], p[h, b], t[h, a], t[h, b], **kw) for a, b in pairs for h in range(c)
            )
            return total / len(pairs)
        if kind == "moco":
            assert self.momentum is not None and keys is not None, "MoCo needs the step's keys"
            k = keys.reshape(c, views, rows // views, d)
            queue = self.momentum.queue.to(z.dtype)
            pairs = list(itertools.permutations(range(views), 2))
            return sum(self._moco(z[:, a], k[:, b], queue) for a, b in pairs) / len(pairs)
        if kind == "pairwise":
            pairs = list(itertools.combinations(range(views), 2))
            total = sum(fn(z[h, a], z[h, b], **kw) for a, b in pairs for h in range(c))
            return total / len(pairs)
        per_image = z.permute(0, 2, 1, 3)  # (C, N, V, D)
        if kind == "labels":
            targets = labels if self.supervised else None  # None: instance ids (global if gathered)
            return sum(fn(per_image[h], targets, **kw) for h in range(c))
        return sum(fn(per_image[h], **kw) for h in range(c))

    def _moco(self, query: Tensor, key: Tensor, queue: Tensor) -> Tensor:
        fn, kw = self.spec.fn, self.kwargs
        if fn is losses.info_nce:
            return sum(fn(q, k_, u, **kw) for q, k_, u in zip(query, key, queue, strict=True))
        tau = kw.get("temperature")
        if self.temperature_net is not None:
            tau = self.temperature_net.with_queue(query, key, queue)
        return fn(query, key, queue, **{**kw, "temperature": tau})

    @torch.no_grad()
    def after_step(self, network: Network, keys: Tensor | None, views: int) -> None:
        """After the optimiser step: MoCo updates the key network and enqueues ``keys``; BYOL
        and MoCo v3 move their target network."""
        if self.momentum is not None and keys is not None:
            self.momentum.update(network, keys, views)


def learned_temperature(config: TrainConfig, dim: int) -> LearnedTemperature:
    """The learned temperature of ``config.temperature_model`` for ``dim``-wide vectors."""
    bounds = {"tau_min": config.tau_min, "tau_max": config.tau_max}
    if config.temperature_model == "scalar":
        return ScalarTemperature(config.temperature, **bounds)
    return PairTemperature(dim, **bounds)


def _amcl_model(config: TrainConfig, options: dict[str, Any]) -> AMCLModel:
    temperature: LearnedTemperature | float = config.temperature
    if config.adaptive_temperature:
        # Barlow Twins compares channel vectors across the batch (the second AMCL code
        # release's BatchVectorTemperatureHead): those of the global batch when gathered,
        # of the local shard otherwise
        batch = config.batch_size
        if not options.get("gather_distributed", False):
            batch //= distributed.world_size()
        dim = batch if config.loss == "amcl_barlow_twins" else config.proj_dim
        temperature = learned_temperature(config, dim)
    predictor = None
    if config.loss == "amcl_simsiam":
        predictor = MultiHeadProjector(
            config.proj_dim, config.proj_hidden, config.proj_dim, heads=config.heads
        )
    return AMCLModel(
        nn.Identity(), nn.Identity(), temperature, config.loss, predictor=predictor, **options
    )
