"""How a run trains: :func:`train`, one step (:func:`train_step`), resume from checkpoints.

:func:`train` builds the network, objective and optimisation of a :class:`TrainConfig`,
evaluates before the first step, every ``eval_every`` steps and after the last, checkpoints
every ``checkpoint_every`` steps into its :class:`~amcl_lab.engine.runs.Run` and, for a
resumed run, continues from the checkpoint exactly where the uninterrupted run would be.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import _validation as v
from .. import distributed
from ..data import Augmentation
from ..models import Network, NetworkOutput
from ..optim import frozen_bn_stats
from .batches import STREAM_AUGMENT, batch_indices, cached_dataset, generator, training_set
from .build import Optimisation, build_network, build_optimisation
from .config import TrainConfig, config_dict, resolve_device
from .evaluation import EvalHook, evaluate
from .objectives import Objective
from .runs import (
    CHECKPOINT_FORMAT,
    Run,
    check_checkpoint,
    corrupt_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

__all__ = ["StepResult", "TrainResult", "TrainingInterrupted", "train", "train_step"]


class TrainingInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` (SIGINT) during :func:`train`, saying where it landed.

    ``tag``, ``seed`` and ``step`` (the steps completed) name the training run; the last
    checkpoint, not this step, is where ``--resume`` continues.
    """

    def __init__(self, tag: str, seed: int, step: int, steps: int) -> None:
        super().__init__(f"interrupted at step {step} of {steps} of {tag!r} (seed {seed})")
        self.tag, self.seed, self.step, self.steps = tag, seed, step, steps


@dataclass
class TrainResult:
    """What :func:`train` returns.

    ``history``: one record per evaluation (``step``, ``epoch``, ``train_loss`` = mean loss
    since the previous evaluation, ``linear_probe``, ``knn``, classifier and geometry
    metrics); ``network`` and ``objective``: the trained modules (on the run's device).
    """

    tag: str
    config: TrainConfig
    history: list[dict[str, Any]]
    network: Network
    objective: Objective

    @property
    def final(self) -> dict[str, Any]:
        """The last evaluation record."""
        return self.history[-1]

    def rows(self, **condition: Any) -> list[dict[str, Any]]:
        """The history as tidy rows ``{**condition, seed, step, epoch, metric, value}``."""
        return [
            {
                **condition,
                "seed": self.config.seed,
                "step": r["step"],
                "epoch": r["epoch"],
                "metric": k,
                "value": val,
            }
            for r in self.history
            for k, val in r.items()
            if k not in ("run", "seed", "step", "epoch")
        ]


def train(
    config: TrainConfig,
    run: Run | None = None,
    tag: str = "train",
    hooks: Sequence[EvalHook] = (),
) -> TrainResult:
    """Train one model as ``config`` says, checkpointing into ``run`` and resuming from it.

    With a ``run``, evaluations are appended to its ``metrics.jsonl`` and a checkpoint
    ``checkpoints/<tag>.pt`` is written every ``checkpoint_every`` steps and at the end.  If
    the run is resumed and the checkpoint exists, training continues from it (or, for a
    finished run, the stored model and history are returned without training).

    Evaluations happen before the first step (the randomly initialised network), every
    ``eval_every`` steps and after the last step.

    Data parallelism: under a process group of W ranks (``torchrun``,
    :mod:`amcl_lab.distributed`) every rank draws the same global batch of ``batch_size``
    images and their views from the ``(seed, step)`` order and keeps its contiguous block of
    ``batch_size / W`` (the equivalent of a ``DistributedSampler`` over that order); the
    network (and a loss with parameters) is wrapped in ``DistributedDataParallel``;
    contrastive losses gather their negatives over ranks (:class:`Objective`) and SAF its
    logits, so the gradients are those of the single-process loss on the global batch,
    BatchNorm statistics aside (per-rank batches; ``SyncBatchNorm`` is CUDA-only); SAM
    perturbs with each rank's own gradient (m-sharpness, :class:`~amcl_lab.optim.SAM`).
    Rank 0 evaluates (the record is broadcast, so every rank returns the same history),
    logs and writes checkpoints; ``train_loss`` is the mean over ranks; every rank resumes
    from the same checkpoint.

    Raises:
        ValueError: an inconsistent config (e.g. a batch larger than the training set,
            supervised training on unlabelled images, a batch not divisible by the number
            of processes), or a checkpoint of another config.
        FloatingPointError: the loss or the gradient norm of a step became NaN or infinite
            (the message names the run, seed, step and quantity; the step is not taken).

    Each record also holds ``grad_norm_peak``, the largest global L2 norm of the update's
    gradient (before clipping; SAM/ASAM's second pass, which DDP averages, so every rank sees
    the same) since the previous evaluation; with ``grad_clip > 0`` that gradient is clipped
    to the global norm ``grad_clip`` before every update.
    """
    fn = "train"
    device = run.device if run is not None else resolve_device(config.device)
    split = cached_dataset(config.dataset, config.data_dir)
    training = training_set(split, config)
    n_train = len(training[0])
    if config.batch_size > n_train:
        raise ValueError(
            f"{fn}: batch_size {config.batch_size} exceeds the {n_train} training images "
            f"of {config.dataset!r} (train_fraction={config.train_fraction})"
        )
    if config.supervised and bool((training[1] < 0).any()):
        raise ValueError(f"{fn}: supervised training needs labels; {config.dataset!r} has none")
    parallel, ranks = distributed.is_active(), distributed.world_size()
    if config.batch_size % ranks:
        raise ValueError(
            f"{fn}: batch_size {config.batch_size} must be divisible by the {ranks} processes "
            "(each takes an equal shard of every batch)"
        )
    per_epoch = n_train // config.batch_size
    torch.manual_seed(config.seed)
    network = build_network(config, split).to(device)
    objective = Objective(config, network=network, gather_distributed=parallel).to(device)
    opt = build_optimisation(
        config, network, objective, n_train, split.num_classes, gather_distributed=parallel
    )
    for module in opt.extras().values():
        module.to(device)
    images = training[0].to(device)
    aug = Augmentation(config.augment, crop_min_scale=config.crop_min_scale)

    step, history, grad_peak = 0, [], 0.0
    loss_sum, loss_count = torch.zeros((), device=device, dtype=torch.float64), 0
    ckpt = run.checkpoint(tag) if run is not None else None
    if ckpt is not None and distributed.on_main(ckpt.exists):  # rank 0 decides for all
        if not run.resume:  # type: ignore[union-attr]
            raise ValueError(f"{fn}: {ckpt} exists; resume the run instead of overwriting it")
        state = load_checkpoint(ckpt, device)
        check_checkpoint(ckpt, state, config.steps)
        if state["config"] != config_dict(config):
            raise ValueError(f"{fn}: {ckpt} was written by a different config")
        try:  # missing or extra keys, wrong shapes or types: a corrupt file, not a bug
            network.load_state_dict(state["network"])
            objective.load_state_dict(state["objective"])
            opt.optimizer.load_state_dict(state["optimizer"])
            opt.scheduler.load_state_dict(state["scheduler"])
            for name, module in opt.extras().items():
                module.load_state_dict(state["extras"][name])
            set_rng_state(state["rng"])
        except (KeyError, RuntimeError, TypeError, ValueError, IndexError) as error:
            first = (str(error).strip().splitlines() or [""])[0][:200]
            raise corrupt_checkpoint(ckpt, f"{type(error).__name__}: {first}") from None
        step, history, grad_peak = state["step"], state["history"], state["grad_peak"]
        loss_sum, loss_count = state["loss_sum"].to(device), state["loss_count"]
        run.truncate_metrics(tag, step)  # type: ignore[union-attr]
        if state["done"]:
            return TrainResult(tag, config, history, network, objective)
    elif run is not None and run.resume:
        run.truncate_metrics(tag, -1)  # killed before its first checkpoint: start over
    model, loss_fn = network, objective  # what the steps call: DDP wrappers when parallel
    if parallel:
        model = DistributedDataParallel(network)
        if any(p.requires_grad for p in objective.parameters()):
            loss_fn = DistributedDataParallel(objective)

    def check_finite(at: int) -> float:
        nonlocal loss_sum
        if parallel:  # the mean over ranks, the same on every rank (and in checkpoints)
            loss_sum = distributed.all_reduce_sum(loss_sum) / ranks
        mean_loss = float(loss_sum) / loss_count if loss_count else float("nan")
        if loss_count and not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"{fn}: the training loss of {tag!r} became non-finite before step {at} "
                f"(loss={config.loss!r}, lr={config.lr}); lower the learning rate or check "
                "the loss options"
            )
        return mean_loss

    def record(at: int) -> None:
        nonlocal loss_sum, loss_count, grad_peak
        mean_loss = check_finite(at)
        entry = {"run": tag, "seed": config.seed, "step": at, "epoch": at / per_epoch}
        entry["train_loss"] = mean_loss
        if loss_count:
            entry["grad_norm_peak"] = grad_peak
        entry.update(
            distributed.on_main(
                evaluate, network, split, config, device, at, hooks, training, objective
            )
        )
        history.append(entry)
        loss_sum, loss_count, grad_peak = torch.zeros_like(loss_sum), 0, 0.0
        if run is not None:
            run.log(entry)

    def checkpoint(done: bool) -> None:
        if ckpt is None or not distributed.is_main():
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "config": config_dict(config),
            "step": step,
            "done": done,
            "network": network.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(),
            "extras": {k: m.state_dict() for k, m in opt.extras().items()},
            "rng": rng_state(),
            "history": history,
            "loss_sum": loss_sum,
            "loss_count": loss_count,
            "grad_peak": grad_peak,
        }
        save_checkpoint(ckpt, payload)

    try:
        if step == 0 and not history:
            record(0)
        network.train()
        quiet = run.quiet if run is not None else False
        silent = quiet or not distributed.is_main()
        bar = tqdm(
            total=config.steps,
            initial=step,
            desc=tag,
            disable=True if silent else None,
            leave=False,
        )
        while step < config.steps:
            index = batch_indices(n_train, config.batch_size, config.seed, step)
            x = images.batch(index, device)
            labels = images.labels[index.to(device)]
            views = aug.views(x, config.views, generator(config.seed, step, STREAM_AUGMENT))
            if parallel:  # this rank's block of the global batch (views drawn as for one process)
                index, labels = distributed.shard(index), distributed.shard(labels)
                views = distributed.shard(views, dim=1)
            where = f"{tag!r} (seed {config.seed}) at step {step}"
            loss, norm = train_step(
                model, loss_fn, opt, views, labels, index, step // per_epoch, where=where
            )
            grad_peak = max(grad_peak, norm)
            loss_sum += loss.detach().double()
            loss_count += 1
            opt.scheduler.step()
            step += 1
            bar.update(1)
            if step == config.steps or (config.eval_every and step % config.eval_every == 0):
                record(step)
            if step == config.steps or step % config.checkpoint_every == 0:
                check_finite(step)  # never checkpoint diverged weights
                checkpoint(step == config.steps)
    except KeyboardInterrupt:  # SIGINT: say where, so the command line can print it
        raise TrainingInterrupted(tag, config.seed, step, config.steps) from None
    bar.close()
    distributed.sync_buffers(network)  # rank 0's BatchNorm statistics, as in its checkpoint
    return TrainResult(tag, config, history, network, objective)


class StepResult(NamedTuple):
    """What :func:`train_step` returns: the loss at the weights and the gradient norm."""

    loss: Tensor
    grad_norm: float


def _checked_norm(opt: Optimisation, loss: Tensor, where: str, clip: bool) -> float:
    """The global L2 gradient norm after a backward pass, refusing NaN/inf; clips if asked."""
    loss = loss.detach()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(
            f"train {where}: the loss is {float(loss):g}; the step was not taken (lower the "
            "learning rate, set grad_clip, or check the loss options)"
        )
    grads = [p.grad for p in opt.params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if not bool(torch.isfinite(norm)):
        raise FloatingPointError(
            f"train {where}: the gradient norm is {float(norm):g} (loss {float(loss):g}); the "
            "step was not taken (lower the learning rate or set grad_clip)"
        )
    if clip and opt.grad_clip > 0.0:
        torch.nn.utils.clip_grads_with_norm_(opt.params, opt.grad_clip, norm)
    return float(norm)


def _objective(
    objective: Objective | DistributedDataParallel,
    out: NetworkOutput,
    v_count: int,
    labels: Tensor,
    keys: Tensor | None,
    where: str,
) -> Tensor:
    """The loss of ``out``; a network whose outputs are NaN/inf is a diverged run.

    The losses refuse non-finite inputs with a ``ValueError`` naming their own argument
    (``z1``); here that means the weights overflowed at the previous step, which is said so.
    """
    try:
        return objective(out, v_count, labels, keys)
    except ValueError:
        outputs = [t for t in out if t is not None]
        if all(v.all_finite(t) for t in outputs):
            raise
        raise FloatingPointError(
            f"train {where}: the network's outputs are NaN or infinite (the previous update "
            "overflowed the weights); lower the learning rate or set grad_clip"
        ) from None


def train_step(
    network: Network | DistributedDataParallel,
    objective: Objective | DistributedDataParallel,
    opt: Optimisation,
    views: Tensor,
    labels: Tensor,
    index: Tensor,
    epoch: int,
    *,
    where: str = "step",
) -> StepResult:
    """One optimiser step on ``views`` ``(V, B, C, H, W)``: the loss and the update's gradient norm.

    SAM/ASAM take the second forward/backward at the perturbed weights with BatchNorm
    statistics frozen (``docs/optim-api.md``); SAF and MESA add their distillation term on
    the first view's logits (SAF keyed by the images' dataset rows, its epoch counter being
    ``epoch``), and MESA's teacher is updated after every step.  Under DDP, SAM's first pass
    runs in ``no_sync``: each rank perturbs with its own gradient (m-sharpness).  MoCo losses
    draw the step's keys from the objective's momentum network first and update it and the
    queue after the optimiser step.  A non-finite loss or gradient norm raises
    ``FloatingPointError`` (naming ``where``) before any weight changes; with
    ``opt.grad_clip`` the update's gradient is clipped to that global norm.
    """
    v_count, b = views.shape[:2]
    flat = views.reshape(v_count * b, *views.shape[2:])
    loss_module = getattr(objective, "module", objective)  # unwrapped from DDP
    momentum = loss_module.momentum
    keys = momentum.keys(flat) if momentum is not None else None
    first_pass = distributed.no_sync(network, objective) if opt.two_pass else nullcontext()
    with first_pass:
        out = network(flat)
        loss = _objective(objective, out, v_count, labels, keys, where)
        if opt.saf is not None or opt.mesa is not None:
            assert out.logits is not None  # build_optimisation requires a classifier
            first = out.logits[:b]
            if opt.saf is not None:
                loss = loss + opt.saf(first, index.to(first.device), epoch)
            if opt.mesa is not None:
                loss = loss + opt.mesa(first, views[0], epoch)
        loss.backward()
    norm = _checked_norm(opt, loss, where, clip=not opt.two_pass)
    if opt.two_pass:
        opt.optimizer.first_step(zero_grad=True)  # type: ignore[attr-defined]
        with frozen_bn_stats(network):
            perturbed = _objective(
                objective, network(flat), v_count, labels, keys, f"{where} (SAM's second pass)"
            )
            perturbed.backward()
        norm = _checked_norm(opt, perturbed, f"{where} (SAM's second pass)", clip=True)
        opt.optimizer.second_step(zero_grad=True)  # type: ignore[attr-defined]
    else:
        opt.optimizer.step()
        opt.optimizer.zero_grad(set_to_none=True)
    if opt.mesa is not None:
        opt.mesa.update(opt.logits)
    loss_module.after_step(getattr(network, "module", network), keys, v_count)
    return StepResult(loss, norm)
