"""Training on a synthetic augmentation graph: the CPU setting of ``projector`` and ``views``.

The kernel view of contrastive learning (Ghosh, Agrawal et al., NeurIPS 2024,
arXiv:2312.10725) is exact on a finite augmentation graph: images, their augmented points and
the probabilities :math:`p(a \\mid x)` of drawing a point from an image.  On such a graph the
encoder can be a free function of the augmented point (the engine's MLP on its one-hot code),
so everything the features learn about classes comes from the augmentations.
:func:`train_on_graph` is :func:`amcl_lab.engine.train` with that data pipeline;
:func:`train_condition` picks it or the engine's image pipeline from ``GraphConfig.graph``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from amcl_lab import _validation as v
from amcl_lab import engine
from amcl_lab.data import ImageData, Split
from amcl_lab.data.synthetic import AugmentationGraph, clustered_augmentation_graph
from amcl_lab.engine.evaluation import embed
from amcl_lab.models import MLP, Network, Normalize, ProjectionHead

from ._protocol import ExperimentConfig, derive_loss, gpu_cifar10

__all__ = [
    "MULTIVIEW",
    "SMOKE",
    "GraphConfig",
    "MultiViewLoss",
    "gpu_images",
    "graph_split",
    "multiview_options",
    "train_condition",
    "train_on_graph",
]

# random streams of the graph runs (the engine uses 1-6)
_STREAM_GRAPH, _STREAM_VIEWS, _STREAM_SUBSET, _STREAM_PAIRS = 101, 102, 103, 104


@dataclass(frozen=True)
class MultiViewLoss:
    """A multi-view loss of the small-projector paper: its engine name, the options of the
    authors' code reading, and the options that set its orthogonality weight beta."""

    loss: str
    code_options: tuple[str, ...]
    weight: Callable[[float], tuple[str, ...]]


#: The frameworks ``projector`` and ``views`` train (Ghosh, Agrawal et al. 2024 state their
#: recommendations for Barlow Twins and VICReg alike).  Barlow Twins: beta is the off-diagonal
#: weight of the jointly standardised, L2-normalised embeddings (their code); VICReg: the
#: covariance term keeps weight 1 and the invariance and variance terms get 1 / beta (their
#: code's reading of beta for VICReg); kernel: the invariance + beta-orthogonality loss itself.
MULTIVIEW: dict[str, MultiViewLoss] = {
    "barlow_twins": MultiViewLoss(
        "multiview_barlow_twins",
        ("standardize=joint", "normalize=True"),
        lambda beta: (f"lambda_offdiag={beta!r}",),
    ),
    "vicreg": MultiViewLoss(
        "multiview_vicreg",
        (),
        lambda beta: (f"lambda_invariance={1.0 / beta!r}", f"mu_variance={1.0 / beta!r}"),
    ),
    "kernel": MultiViewLoss("invariance_orthogonality", (), lambda beta: (f"beta={beta!r}",)),
}


def multiview_options(config: GraphConfig, beta: float) -> tuple[str, ...]:
    """The loss options of ``config.framework`` at orthogonality weight ``beta``, then the
    config's own ``loss_options``.

    Raises:
        ValueError: ``loss_options`` already sets a weight that beta sets.
    """
    spec = MULTIVIEW[config.framework]
    weights = spec.weight(beta)
    keys = {option.partition("=")[0] for option in weights}
    clash = [o for o in config.loss_options if o.partition("=")[0].strip() in keys]
    if clash:
        raise ValueError(
            f"the experiment sets {sorted(keys)} from beta; remove {clash} from loss_options"
        )
    return (*spec.code_options, *weights, *config.loss_options)


@dataclass(frozen=True)
class GraphConfig(ExperimentConfig):
    """:class:`ExperimentConfig` plus the synthetic augmentation graph the CPU presets train on.

    ``framework`` picks the multi-view loss (:data:`MULTIVIEW`; ``loss`` follows it).  With
    ``graph`` true, :func:`train_on_graph` replaces the image pipeline: ``dataset``,
    ``augment``, ``crop_min_scale`` and ``encoder`` are ignored (the encoder is the engine's
    MLP on one-hot codes of the graph's augmented points), every other training field
    (objective, optimiser, steps, batch, views, train_fraction, probe) applies as in
    :func:`amcl_lab.engine.train`.
    """

    framework: str = "barlow_twins"  # barlow_twins | vicreg | kernel (MULTIVIEW)
    loss: str = ""  # derived from framework
    graph: bool = True  # train on the clustered augmentation graph (False: `dataset` images)
    graph_classes: int = 10
    graph_images_per_class: int = 10
    graph_augmentations_per_image: int = 2  # augmented points owned by each image
    graph_overlap: float = 0.3  # weight of the other same-class images' points
    graph_background: float = 0.01  # weight of every other point

    def __post_init__(self) -> None:
        derive_loss(self, {name: spec.loss for name, spec in MULTIVIEW.items()})
        super().__post_init__()
        fn = type(self).__name__
        for name in ("graph_classes", "graph_augmentations_per_image"):
            v.check_int(fn, name, getattr(self, name), low=1)
        # the probe trains on half of each class's images and tests on the other half
        v.check_int(fn, "graph_images_per_class", self.graph_images_per_class, low=2)
        v.check_positive_float(fn, "graph_overlap", self.graph_overlap, allow_zero=True)
        v.check_positive_float(fn, "graph_background", self.graph_background)


def graph_split(config: GraphConfig, seed: int) -> tuple[AugmentationGraph, Split]:
    """The seed's clustered graph and its augmented points as a probe train/test split.

    Point ``a`` is a one-channel ``1 x M`` "image" holding the one-hot code of ``a``,
    labelled with the class of the image that owns it; the points of the even-numbered
    images of each class form the train split, those of the odd-numbered the test split.
    """
    gen = torch.Generator().manual_seed(engine.derive_seed(seed, _STREAM_GRAPH))
    graph = clustered_augmentation_graph(
        config.graph_classes,
        config.graph_images_per_class,
        config.graph_augmentations_per_image,
        class_overlap=config.graph_overlap,
        background=config.graph_background,
        generator=gen,
    )
    assert graph.labels is not None  # the clustered generator labels its images
    m = graph.num_augmentations
    owner = torch.arange(m) // config.graph_augmentations_per_image
    codes = torch.eye(m, dtype=torch.uint8).reshape(m, 1, 1, m)
    labels = graph.labels[owner]
    test = (owner % config.graph_images_per_class) % 2 == 1
    classes = tuple(str(c) for c in range(config.graph_classes))

    def part(name: str, rows: torch.Tensor) -> ImageData:
        return ImageData(f"graph/{name}", codes[rows], labels[rows], classes, max_value=1.0)

    return graph, Split("graph", part("train", ~test), part("test", test))


def _subgraph(graph: AugmentationGraph, config: GraphConfig, seed: int) -> AugmentationGraph:
    """The graph restricted to a random ``train_fraction`` of its images (uniform prior).

    The subsets of one seed are nested (a smaller fraction keeps a prefix of the same random
    order), so fractions of one seed differ only in the images they drop.

    Raises:
        ValueError: the kept images never reach some augmented point (possible only with
            ``graph_overlap`` below ``graph_background``), so the subgraph is undefined.
    """
    if config.train_fraction >= 1.0:
        return graph
    n = graph.num_images
    gen = torch.Generator().manual_seed(engine.derive_seed(seed, _STREAM_SUBSET))
    keep = torch.randperm(n, generator=gen)[: max(1, round(config.train_fraction * n))]
    keep = keep.sort().values
    conditional = graph.conditional[keep]
    unreachable = torch.nonzero(conditional.sum(dim=0) <= 0).flatten().tolist()
    if unreachable:
        raise ValueError(
            f"train_on_graph: the {keep.numel()} images kept by train_fraction="
            f"{config.train_fraction:g} (seed {seed}) never reach the augmented points "
            f"{unreachable[:5]} with graph_overlap={config.graph_overlap:g}; raise "
            "graph_overlap or train_fraction"
        )
    assert graph.labels is not None  # the clustered generator labels its images
    prior = torch.full((keep.numel(),), 1.0 / keep.numel(), dtype=conditional.dtype)
    return AugmentationGraph(prior, conditional, graph.labels[keep])


def train_on_graph(
    config: GraphConfig,
    run: engine.Run | None = None,
    tag: str = "train",
    hooks: Sequence[engine.EvalHook] = (),
) -> engine.TrainResult:
    """:func:`amcl_lab.engine.train` with views drawn from a synthetic augmentation graph.

    Each step draws ``batch_size`` images i.i.d. (with replacement) from the seed's graph
    (restricted to a random ``train_fraction`` of its images), ``views`` augmented points of
    each from :math:`p(a \\mid x)`, and takes one optimiser step of the configured objective on the
    network's embeddings of their one-hot codes.  Evaluations (before the first step, every
    ``eval_every`` steps and after the last) use :func:`amcl_lab.engine.evaluate` on the
    probe split of :func:`graph_split`, which covers the points of *all* images, so a
    fraction of the data shrinks pretraining only, as the paper's probe on the full
    labelled set.  The collapse diagnostics compare two points drawn from :math:`p(a \\mid x)`
    for every image of the graph.  A run takes seconds, so it is not checkpointed:
    ``--resume`` trains it again (the same numbers, every draw being seeded).

    Raises:
        FloatingPointError: the training loss became NaN or infinite.
    """
    fn = "train_on_graph"
    device = run.device if run is not None else engine.resolve_device(config.device)
    graph, split = graph_split(config, config.seed)
    sampler = _subgraph(graph, config, config.seed)
    if run is not None and run.resume:
        run.truncate_metrics(tag, -1)  # retrained from scratch: drop the earlier lines
    torch.manual_seed(config.seed)
    encoder = MLP(graph.num_augmentations, config.width)
    projector = ProjectionHead(config.width, config.proj_hidden, config.proj_dim)
    network = Network(Normalize(split.mean, split.std), encoder, projector).to(device)
    objective = engine.Objective(config).to(device)
    opt = engine.build_optimisation(
        config, network, objective, sampler.num_images, config.graph_classes
    )
    codes = ImageData(
        "graph/points",
        torch.eye(graph.num_augmentations, dtype=torch.uint8)[:, None, None, :],
        torch.zeros(graph.num_augmentations, dtype=torch.int64),
        ("point",),
        max_value=1.0,
    )
    training = (split.train, split.train.labels)
    gen = torch.Generator().manual_seed(engine.derive_seed(config.seed, _STREAM_VIEWS))

    def view_pairs(step: int) -> torch.Tensor:
        """Embeddings ``(2, images, D)`` of two points drawn from p(a | x) for every image."""
        pair_gen = torch.Generator().manual_seed(
            engine.derive_seed(config.seed, step, _STREAM_PAIRS)
        )
        points = torch.multinomial(graph.conditional, 2, replacement=True, generator=pair_gen)
        return torch.stack([embed(network, codes.batch(points[:, v], device)) for v in (0, 1)])

    history: list[dict[str, Any]] = []
    losses: list[float] = []

    def record(step: int) -> None:
        mean_loss = float(np.mean(losses)) if losses else math.nan
        if not math.isfinite(mean_loss) and losses:
            raise FloatingPointError(
                f"{fn}: the training loss of {tag!r} became non-finite before step {step} "
                f"(loss={config.loss!r}, lr={config.lr}); lower the learning rate"
            )
        entry = {"run": tag, "seed": config.seed, "step": step}
        entry["epoch"] = step * config.batch_size / sampler.num_images
        entry["train_loss"] = mean_loss
        entry.update(
            engine.evaluate(
                network,
                split,
                config,
                device,
                step,
                hooks,
                training,
                objective,
                views=lambda: view_pairs(step),
            )
        )
        history.append(entry)
        losses.clear()
        if run is not None:
            run.log(entry)

    record(0)
    network.train()
    for step in range(1, config.steps + 1):
        sample = sampler.sample_views(config.views, batch_size=config.batch_size, generator=gen)
        x = codes.batch(sample.augmentations.T.reshape(-1), device)  # view-major rows
        loss = objective(network(x), config.views, sample.images.to(device))
        loss.backward()
        opt.optimizer.step()
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scheduler.step()
        losses.append(float(loss.detach()))
        if step == config.steps or (config.eval_every and step % config.eval_every == 0):
            record(step)
    return engine.TrainResult(tag, config, history, network, objective)


def train_condition(
    config: GraphConfig, run: engine.Run, tag: str, hooks: Sequence[engine.EvalHook] = ()
) -> engine.TrainResult:
    """One training run on the graph or, with ``graph`` false, on images (engine.train)."""
    if config.graph:
        return train_on_graph(config, run, tag, hooks)
    return engine.train(config, run, tag, hooks)


def gpu_images(**fields: Any) -> dict[str, Any]:
    """The ``gpu`` fields of ``projector`` and ``views``: the paper's CIFAR-10 runs on images.

    :func:`~amcl_lab.experiments._protocol.gpu_cifar10` instead of the graph, Adam-type at
    1e-3 for 100 epochs of two views of 512 images, a 200-neighbour k-NN and three seeds;
    ``fields`` add to these or replace them.
    """
    paper = {"graph": False, "lr": 1e-3, "steps": 100 * (50_000 // 512), "knn_k": 200}
    return gpu_cifar10(**paper, seeds=3) | fields


#: The ``smoke`` fields of ``projector`` and ``views``: a tiny graph and network, a few steps.
SMOKE: dict[str, Any] = {
    "graph_classes": 3,
    "graph_images_per_class": 4,
    "width": 8,
    "steps": 10,
    "probe_steps": 10,
    "knn_k": 5,
    "seeds": 3,
}
