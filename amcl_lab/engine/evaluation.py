r"""What a run measures: linear probe, k-NN, classifier accuracies and held-out geometry.

All evaluation is on frozen features in eval mode: :func:`extract` embeds a split,
:func:`linear_probe` (L-BFGS logistic regression) and :func:`knn_accuracy` (weighted k-NN)
score the encoder's features, :func:`nearest_mean_accuracy` scores a classifier-free
embedding against its own labels, and the geometry hooks of
:data:`~amcl_lab.engine.catalog.GEOMETRY` (or any :data:`~amcl_lab.engine.catalog.EvalHook`)
compute metrics of :mod:`amcl_lab.metrics` on the held-out split.  Every contrastive run
also gets the collapse diagnostics of :func:`collapse_diagnostics`.  :func:`evaluate` runs
all of them for one evaluation record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import metrics
from ..amcl import LearnedTemperature
from ..data import Augmentation, ImageData, Split
from ..models import LinearClassifier, Network
from .batches import STREAM_EVAL, generator, training_set
from .catalog import GEOMETRY, OBJECTIVES, EvalHook, HeldOut
from .config import TrainConfig
from .objectives import Objective

__all__ = [
    "COLLAPSE_NEGATIVE_COSINE",
    "COLLAPSE_RANK",
    "DIAGNOSTIC_ROWS",
    "collapse_diagnostics",
    "embed",
    "evaluate",
    "extract",
    "knn_accuracy",
    "linear_probe",
    "nearest_mean_accuracy",
]


#: A run is collapsed when the held-out mean negative-pair cosine exceeds this ...
COLLAPSE_NEGATIVE_COSINE = 0.9
#: ... or when the effective rank of its held-out embeddings falls below this.
COLLAPSE_RANK = 2.0
#: Held-out images the pair diagnostics use (the first ones of the test split).
DIAGNOSTIC_ROWS = 1024
#: A learned temperature within this fraction of a bound counts as "at the bound".
BOUND_TOLERANCE = 0.01


@torch.no_grad()
def collapse_diagnostics(
    held: HeldOut, temperature: LearnedTemperature | None = None
) -> dict[str, float]:
    r"""Signs that a contrastive run collapsed, measured on held-out view pairs.

    With :math:`a_i, b_i` the first-head embeddings of two augmented views of held-out image
    :math:`i` (the first :data:`DIAGNOSTIC_ROWS` images), cosines :math:`c_{ij} =
    \cos(a_i, b_j)`:

    * ``diag_pos_cosine``: the mean positive cosine :math:`\frac1n\sum_i c_{ii}`;
    * ``diag_neg_cosine``: the mean negative cosine :math:`\frac{1}{n(n-1)}\sum_{i \ne j}
      c_{ij}`;
    * ``diag_embedding_rank``: the effective rank (:func:`amcl_lab.metrics.effective_rank`)
      of the held-out first-head embeddings, 0 when they are all equal;
    * ``collapsed``: 1.0 when ``diag_neg_cosine > COLLAPSE_NEGATIVE_COSINE`` (0.9: every
      image looks like every other) or ``diag_embedding_rank < COLLAPSE_RANK`` (2: the
      embeddings span a line), else 0.0.

    With a learned ``temperature`` (AMCL) also ``tau_pos_mean``, ``tau_pos_min``
    (temperatures of the positive pairs :math:`(a_i, b_i)`), ``tau_neg_mean``,
    ``tau_neg_min`` (of the negative pairs :math:`(a_i, b_j), i \ne j`), ``tau_median``
    (the median over all those pairs: what a temperature-matched control uses) and
    ``tau_at_bound``,
    the fraction of all those temperatures within 1 % (:data:`BOUND_TOLERANCE`) of
    ``tau_min`` or ``tau_max``: a saturated sigmoid, the temperature runaway of AMCL's
    log-sum-exp forms.

    Args:
        held: the held-out split of an evaluation (:class:`~amcl_lab.engine.HeldOut`).
        temperature: the run's learned pair-temperature network, if any.
    """
    a, b = held.view_pair[:, :DIAGNOSTIC_ROWS].double().unbind(0)
    cos = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    n = cos.shape[0]
    off = ~torch.eye(n, dtype=torch.bool, device=cos.device)
    z = held.embeddings.double()
    flat = bool((z - z.mean(dim=0)).abs().max() == 0)
    rank = 0.0 if flat else float(metrics.effective_rank(z))
    out = {
        "diag_pos_cosine": float(cos.diagonal().mean()),
        "diag_neg_cosine": float(cos[off].mean()) if n > 1 else float("nan"),
        "diag_embedding_rank": rank,
    }
    out["collapsed"] = float(
        out["diag_neg_cosine"] > COLLAPSE_NEGATIVE_COSINE or rank < COLLAPSE_RANK
    )
    if temperature is not None:
        dtype = next(temperature.parameters()).dtype
        tau = temperature.pairwise(a.to(dtype), b.to(dtype)).double()
        pos, neg = tau.diagonal(), tau[off]
        low, high = temperature.tau_min, temperature.tau_max
        near = (tau <= low * (1 + BOUND_TOLERANCE)) | (tau >= high * (1 - BOUND_TOLERANCE))
        out.update(
            tau_pos_mean=float(pos.mean()),
            tau_pos_min=float(pos.min()),
            tau_neg_mean=float(neg.mean()) if n > 1 else float("nan"),
            tau_neg_min=float(neg.min()) if n > 1 else float("nan"),
            tau_median=float(tau.median()),
            tau_at_bound=float(near.double().mean()),
        )
    return out


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
    objective: Objective | None = None,
    views: Callable[[], Tensor] | None = None,
) -> dict[str, float]:
    """Probe, k-NN and classifier accuracies plus the geometry metrics of ``config``.

    ``training`` is :func:`training_set`'s result (computed when omitted): probes and k-NN
    fit the labelled training images with their clean labels; ``train_accuracy`` scores the
    classifier against the labels training used (noisy ones included).  Supervised runs
    without a classifier (SupCon) score the nearest-class-mean classifier of their first-head
    embeddings instead (:func:`nearest_mean_accuracy`, Graf et al.'s "explicit linear" head).
    Contrastive runs (every loss but cross-entropy) add :func:`collapse_diagnostics`, with
    the learned pair temperatures of ``objective`` where it has them.  The held-out view
    pairs (:attr:`~amcl_lab.engine.HeldOut.view_pair`) are the embeddings of two augmented
    views of every test image, drawn with the run's augmentation from ``(seed, step)``;
    ``views`` replaces that draw for data the image augmentations do not apply to (a
    callable returning the ``(2, N, D)`` embeddings).
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
    contrastive = OBJECTIVES[config.loss].kind != "ce"
    if hooks or contrastive:
        aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)

        def augmented() -> Tensor:
            gen = generator(config.seed, step, STREAM_EVAL)
            x = split.test.batch(None, device)
            pair = aug.views(x, 2, gen)
            return torch.stack([embed(network, p) for p in pair])

        embeddings = e_test if e_test is not None else f_test
        held = HeldOut(f_test, embeddings, y_test, views or augmented)
        for hook in hooks:
            out.update({k: float(val) for k, val in hook(held).items()})
        if contrastive:
            pair = objective.pair_temperature if objective is not None else None
            out.update(collapse_diagnostics(held, pair))
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
def embed(network: Network, x: Tensor) -> Tensor:
    """First-head embeddings ``(N, D)`` of ``x`` in eval mode (features without a projector)."""
    was_training = network.training
    network.eval()
    out = network(x)
    network.train(was_training)
    return (out.embeddings[0] if out.embeddings is not None else out.features).float()
