r"""What a run measures: linear probe, k-NN, classifier accuracies and held-out geometry.

All evaluation is on frozen features in eval mode: :func:`extract` embeds a split,
:func:`linear_probe` (L-BFGS logistic regression) and :func:`knn_accuracy` (weighted k-NN)
score the encoder's features, :func:`nearest_mean_accuracy` scores a classifier-free
embedding against its own labels, and the geometry hooks of
:data:`~amcl_lab.engine.catalog.GEOMETRY` (or any :data:`~amcl_lab.engine.catalog.EvalHook`)
compute metrics of :mod:`amcl_lab.metrics` on the held-out split.  :func:`evaluate` runs
all of them for one evaluation record.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Augmentation, ImageData, Split
from ..models import LinearClassifier, Network
from .batches import STREAM_EVAL, generator, training_set
from .catalog import GEOMETRY, EvalHook, HeldOut
from .config import TrainConfig

__all__ = [
    "evaluate",
    "extract",
    "knn_accuracy",
    "linear_probe",
    "nearest_mean_accuracy",
]


@torch.no_grad()
def extract(
    network: Network, data: ImageData, device: torch.device, batch: int = 1024
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Features ``(N, F)``, first-head embeddings ``(N, D)`` and logits, in eval mode."""
    was_training = network.training
    network.eval()
    feats, embs, logits = [], [], []
    for start in range(0, len(data), batch):
        out = network(data.batch(torch.arange(start, min(start + batch, len(data))), device))
        feats.append(out.features.float())
        if out.embeddings is not None:
            embs.append(out.embeddings[0].float())
        if out.logits is not None:
            logits.append(out.logits.float())
    network.train(was_training)
    return (
        torch.cat(feats),
        torch.cat(embs) if embs else None,
        torch.cat(logits) if logits else None,
    )


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    steps: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    r"""Test accuracy of multinomial logistic regression on frozen features.

    Features are standardised with the training mean and standard deviation; the weights
    start at zero and minimise :math:`\mathrm{CE} + \lambda\lVert W\rVert^2` (``weight_decay``
    :math:`\lambda`) by full-batch L-BFGS with a strong-Wolfe line search for ``steps``
    iterations.  The problem is convex and the start fixed, so the result is deterministic.
    The linear evaluation protocol of Chen et al. 2020 (arXiv:2002.05709, Section 4).

    Args:
        train_x, test_x: ``(N, F)`` float features.
        train_y, test_y: ``(N,)`` int64 labels in ``[0, K)``.
        steps: L-BFGS iterations.
        weight_decay: L2 penalty on the weights (not the bias).

    Returns:
        Accuracy on ``(test_x, test_y)`` in [0, 1].
    """
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    head = LinearClassifier(xs.shape[1], classes).to(xs.device)
    nn.init.zeros_(head.linear.weight)
    nn.init.zeros_(head.linear.bias)
    opt = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head(xs), train_y) + weight_decay * head.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        return float((head(xt).argmax(dim=1) == test_y).float().mean())


@torch.no_grad()
def knn_accuracy(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 200,
    temperature: float = 0.1,
    chunk: int = 1024,
) -> float:
    r"""Test accuracy of the weighted k-NN classifier on cosine similarity.

    Each test point takes its ``k`` most similar training points (cosine similarity
    :math:`s`, ``k`` capped at the training size); class :math:`c` scores
    :math:`\sum_{j \in \mathrm{kNN}, y_j = c} \exp(s_j / t)`, the prediction is the top
    score.  The monitor of Wu et al. 2018 (arXiv:1805.01978) used by the contrastive2021 and
    AMCL code with ``k = 200``, ``t = 0.1``.
    """
    a = F.normalize(train_x, dim=1)
    b = F.normalize(test_x, dim=1)
    k = min(k, a.shape[0])
    classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for start in range(0, b.shape[0], chunk):
        sim = b[start : start + chunk] @ a.T
        top, index = sim.topk(k, dim=1)
        votes = torch.zeros(sim.shape[0], classes, device=sim.device, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[index], torch.exp(top / temperature))
        correct += int((votes.argmax(dim=1) == test_y[start : start + chunk]).sum())
    return correct / b.shape[0]


def evaluate(
    network: Network,
    split: Split,
    config: TrainConfig,
    device: torch.device,
    step: int,
    hooks: Sequence[EvalHook] = (),
    training: tuple[ImageData, Tensor] | None = None,
) -> dict[str, float]:
    """Probe, k-NN and classifier accuracies plus the geometry metrics of ``config``.

    ``training`` is :func:`training_set`'s result (computed when omitted): probes and k-NN
    fit the labelled training images with their clean labels; ``train_accuracy`` scores the
    classifier against the labels training used (noisy ones included).  Supervised runs
    without a classifier (SupCon) score the nearest-class-mean classifier of their first-head
    embeddings instead (:func:`nearest_mean_accuracy`, Graf et al.'s "explicit linear" head).
    """
    data, clean = training if training is not None else training_set(split, config)
    labelled = clean >= 0  # STL-10's unlabelled images serve training only
    train = ImageData(
        data.name, data.images[labelled], data.labels[labelled], data.classes, data.max_value
    )
    f_train, e_train, logits_train = extract(network, train, device)
    f_test, e_test, logits_test = extract(network, split.test, device)
    y_train, y_test = clean[labelled].to(device), split.test.labels.to(device)
    out = {
        "linear_probe": linear_probe(
            f_train,
            y_train,
            f_test,
            y_test,
            steps=config.probe_steps,
            weight_decay=config.probe_weight_decay,
        ),
        "knn": knn_accuracy(
            f_train, y_train, f_test, y_test, k=config.knn_k, temperature=config.knn_temperature
        ),
    }
    if logits_train is not None and logits_test is not None:
        fitted = train.labels.to(device)
        out["train_accuracy"] = float((logits_train.argmax(1) == fitted).float().mean())
        out["test_accuracy"] = float((logits_test.argmax(1) == y_test).float().mean())
    elif config.supervised and e_train is not None:
        fitted = train.labels.to(device)
        out["train_accuracy"] = nearest_mean_accuracy(e_train, fitted, split.num_classes)
    hooks = [*(GEOMETRY[name] for name in config.geometry), *hooks]
    if hooks:
        aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)

        def views() -> Tensor:
            gen = generator(config.seed, step, STREAM_EVAL)
            x = split.test.batch(None, device)
            pair = aug.views(x, 2, gen)
            return torch.stack([_embed(network, p) for p in pair])

        held = HeldOut(f_test, e_test if e_test is not None else f_test, y_test, views)
        for hook in hooks:
            out.update({k: float(val) for k, val in hook(held).items()})
    return out


@torch.no_grad()
def nearest_mean_accuracy(z: Tensor, labels: Tensor, classes: int) -> float:
    r"""Accuracy on ``labels`` of the nearest-class-mean classifier of the normalised ``z``.

    With :math:`u_i = z_i / \lVert z_i\rVert` and class means :math:`\mu_c` of the
    :math:`u_i` labelled :math:`c`, sample :math:`i` is predicted
    :math:`\arg\max_c \langle u_i, \mu_c\rangle`: the linear head whose rows are the class
    means ("explicit linear" in Graf et al. 2021, arXiv:2102.08817), i.e. how well a
    classifier-free embedding (SupCon) fits the labels it was trained on.

    Args:
        z: ``(N, D)`` embeddings.
        labels: ``(N,)`` int64 labels in ``[0, classes)``.
        classes: number of classes.
    """
    u = F.normalize(z.float(), dim=1)
    sums = torch.zeros(classes, u.shape[1], device=u.device).index_add_(0, labels, u)
    counts = torch.bincount(labels, minlength=classes).clamp_min(1).to(u.dtype)
    means = sums / counts[:, None]
    return float(((u @ means.T).argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def _embed(network: Network, x: Tensor) -> Tensor:
    was_training = network.training
    network.eval()
    out = network(x)
    network.train(was_training)
    return (out.embeddings[0] if out.embeddings is not None else out.features).float()
