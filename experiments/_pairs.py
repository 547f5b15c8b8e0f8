"""Pair similarities of a trained network and how well they separate (the ``amcl`` measures).

Wang et al. (ECCV 2024, arXiv:2310.05615) motivate AMCL with histograms of the cosine
similarities of positive pairs (two views of one image) and negative pairs (views of
different images), Fig. 1(b-g).  :func:`similarities` draws such pairs from a trained
network on held-out images; :func:`separation` turns them into the numbers the
:mod:`amcl_lab.experiments.amcl` claims read (histogram overlap, AUC) and the histograms
its figure draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import seaborn as sns
import torch
import torch.nn.functional as F
from torch import Tensor

from amcl_lab import engine, figures
from amcl_lab.data import FAMILY_NAMES, Augmentation
from amcl_lab.models import Network

__all__ = ["histogram_grid", "pair_rows", "separation", "similarities"]

_STREAM_PAIRS = 11  # random stream of the measurement's view pairs (engine streams are 1-5)


@torch.no_grad()
def similarities(
    network: Network, images: Tensor, augmentation: Augmentation, draws: int, seed: int
) -> tuple[Tensor, Tensor]:
    """Positive and negative pair similarities of ``images`` under ``augmentation``.

    Each of ``draws`` rounds makes two views of every image; a pair's similarity is the
    cosine of its two projection-head embeddings averaged over heads.  Positives: the two
    views of one image (``N`` per round); negatives: first view of image i and second view
    of image j for every i != j (``N (N - 1)`` per round).  The network is evaluated in eval
    mode and left in the mode it had.

    Returns:
        ``(positives, negatives)``, 1-D float tensors on the images' device.
    """
    was_training = network.training
    network.eval()
    generator = torch.Generator().manual_seed(engine.derive_seed(seed, _STREAM_PAIRS))
    off_diagonal = ~torch.eye(images.shape[0], dtype=torch.bool, device=images.device)
    positives, negatives = [], []
    for _ in range(draws):
        first, second = augmentation.views(images, 2, generator)
        a = F.normalize(network(first).embeddings.float(), dim=-1)  # (C, N, D)
        b = F.normalize(network(second).embeddings.float(), dim=-1)
        sim = torch.einsum("cnd,cmd->nm", a, b) / a.shape[0]
        positives.append(sim.diagonal())
        negatives.append(sim[off_diagonal])
    network.train(was_training)
    return torch.cat(positives), torch.cat(negatives)


def separation(positives: Tensor, negatives: Tensor, bins: int) -> dict[str, Any]:
    """Histogram overlap coefficient, AUC and the two histograms of the similarities.

    ``overlap = sum_b min(p_b, q_b)`` with ``p``, ``q`` the fractions of positives and
    negatives in ``bins`` equal bins of [-1, 1] (values are clipped into the range); ``auc``
    is P(positive > negative) + P(equal) / 2.  Returns ``overlap``, ``auc`` (floats),
    ``positive`` and ``negative`` (bin fractions) and ``centers`` (bin centres), NumPy
    arrays of length ``bins``.

    Example:
        >>> import torch
        >>> s = separation(torch.tensor([0.9, 0.8]), torch.tensor([-0.5, 0.0, 0.1]), 4)
        >>> s["overlap"], s["auc"]
        (0.0, 1.0)
        >>> s = separation(torch.tensor([0.2, 0.6]), torch.tensor([0.2, 0.6]), 4)
        >>> s["overlap"], s["auc"]
        (1.0, 0.5)
    """
    pos = positives.detach().double().clamp(-1.0, 1.0).cpu()
    neg = negatives.detach().double().clamp(-1.0, 1.0).cpu()
    p = torch.histc(pos, bins, -1.0, 1.0) / pos.numel()
    q = torch.histc(neg, bins, -1.0, 1.0) / neg.numel()
    ordered = neg.sort().values
    below = torch.searchsorted(ordered, pos, side="left").double()
    not_above = torch.searchsorted(ordered, pos, side="right").double()
    auc = float(((below + not_above) / 2.0).mean() / neg.numel())
    edges = np.linspace(-1.0, 1.0, bins + 1)
    return {
        "overlap": float(torch.minimum(p, q).sum()),
        "auc": auc,
        "positive": p.numpy(),
        "negative": q.numpy(),
        "centers": (edges[:-1] + edges[1:]) / 2.0,
    }


def pair_rows(
    result: engine.TrainResult,
    condition: dict[str, Any],
    images: Tensor,
    augmentation: Augmentation,
    *,
    draws: int,
    bins: int,
) -> list[dict[str, Any]]:
    """Tidy rows of a trained run's held-out pair overlap, AUC, means and histograms.

    One row per measure at the run's last step (``overlap``, ``auc``, ``positive_mean``,
    ``negative_mean``) and one per histogram bin (``positive_fraction`` and
    ``negative_fraction`` with the bin centre in ``bin``), each with ``condition``.
    """
    seed, steps = result.config.seed, result.config.steps
    pos, neg = similarities(result.network, images, augmentation, draws, seed)
    sep = separation(pos, neg, bins)
    final = {**condition, "seed": seed, "step": steps, "epoch": None}
    rows = [{**final, "metric": m, "value": sep[m]} for m in ("overlap", "auc")]
    rows.append({**final, "metric": "positive_mean", "value": float(pos.mean())})
    rows.append({**final, "metric": "negative_mean", "value": float(neg.mean())})
    for kind in ("positive", "negative"):
        rows += [
            {**final, "metric": f"{kind}_fraction", "bin": float(c), "value": float(f)}
            for c, f in zip(sep["centers"], sep[kind], strict=True)
        ]
    return rows


def histogram_grid(
    results: Any, methods: Sequence[str], titles: Mapping[str, str], stem: Path
) -> list[Path]:
    """The arms x sets grid of the AMCL paper's Fig. 1(b-g) from a results table.

    One panel per (method, number of families), lettered (a), (b), ... row by row: the
    seed-averaged ``negative_fraction`` histogram (filled) and ``positive_fraction``
    histogram (outline, so equal histograms stay visible and no blend colour appears),
    titled with ``titles[method]``, the set (the title names the families) and the mean overlap
    with its 95 % CI over seeds; a panel whose runs collapsed says so; saved at ``stem``.
    """
    table = results.table
    overlap = table[table["metric"] == "overlap"]
    families = sorted(overlap["families"].unique())
    with figures.house_style():
        negative_color, positive_color = sns.color_palette()[:2]
        fig, axes = figures.new_figure(len(families), len(methods), width="double", aspect=0.8)
        for r, method in enumerate(methods):
            for c, n in enumerate(families):
                ax = axes[r, c]
                cell = table[(table["method"] == method) & (table["families"] == n)]
                for kind, color, fill in (
                    ("negative", negative_color, True),
                    ("positive", positive_color, False),
                ):
                    hist = cell[cell["metric"] == f"{kind}_fraction"].groupby("bin")["value"]
                    mean = hist.mean().sort_index()
                    edges = np.linspace(-1.0, 1.0, len(mean) + 1)
                    style = {"alpha": 0.45} if fill else {"linewidth": 1.4, "linestyle": "--"}
                    y = 100.0 * mean.to_numpy()
                    ax.stairs(y, edges, fill=fill, color=color, label=f"{kind} pairs", **style)
                values = overlap[(overlap["method"] == method) & (overlap["families"] == n)]
                augment = values["augment"].iloc[0] if len(values) else ""
                letter = "abcdefghijklmnopqrstuvwxyz"[r * len(families) + c]
                ax.set_title(
                    f"({letter}) {titles[method]}, families {augment or 'none'}\n"
                    f"overlap {figures.ci_text(values['value'].to_numpy(), figures.PROPORTION)}"
                )
                dead = cell[(cell["metric"] == "collapsed") & (cell["step"] == cell["step"].max())]
                if len(dead) and dead["value"].sum() > 0:
                    ax.text(
                        0.03, 0.95, f"collapsed in {int(dead['value'].sum())}/{len(dead)} seeds:\n"
                        "pairs at cos near 1", transform=ax.transAxes, va="top", fontsize=6.5,
                    )  # fmt: skip
                ax.set_xticks([-1.0, -0.5, 0.0, 0.5, 1.0])
                ax.set_xlabel("pair cosine similarity")
                ax.set_ylabel("pairs (%)")
                ax.set_ylim(0.0, 100.0)
        figures.shared_legend(fig, axes)
        codes = sorted(set("".join(overlap["augment"].unique())))
        key = ", ".join(f"{k} {FAMILY_NAMES[k]}" for k in codes)
        what = f"families: {key}\nheld-out pair similarities, histograms averaged"
        fig.suptitle(figures.title(results, what))
        return figures.save(fig, stem)
