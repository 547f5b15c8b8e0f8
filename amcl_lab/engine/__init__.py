r"""The experiment engine: one training loop, from a frozen config to checkpointed results.

A run flows through the package's modules in this order:

0. :mod:`.catalog`: the names a config may hold (losses, geometry metrics, optimisers,
   schedules) and what each means;
1. :mod:`.config`: a frozen :class:`TrainConfig` (flat, commented defaults; strict
   ``key=value`` overrides through :func:`apply_overrides`) says what the run is;
2. :mod:`.batches`: every random choice is a pure function of ``(seed, step)``
   (:func:`derive_seed`): the batch order of an epoch, the augmentations of a step, the
   training subset and label noise of :func:`training_set`;
3. :mod:`.objectives`: the loss by name (:data:`OBJECTIVES`: the registry's two-view and
   SupCon losses, the multi-view losses, the AMCL losses through
   :class:`amcl_lab.amcl.AMCLModel`, MoCo, BYOL and MoCo v3 with their momentum networks,
   supervised cross-entropy) as an :class:`Objective`;
4. :mod:`.build`: the network (normalisation + encoder + ``heads`` projection heads and/or a
   linear classifier), the optimiser (SGD, AdamW, SAM/ASAM, SAF, MESA: :data:`OPTIMIZERS`)
   and the learning-rate schedule;
5. :mod:`.loop`: :func:`train` runs the steps (:func:`train_step`), evaluates and
   checkpoints;
6. :mod:`.evaluation`: linear probe, weighted k-NN, classifier accuracies and held-out
   geometry metrics (:data:`GEOMETRY` by name, or any :data:`EvalHook`);
7. :mod:`.runs`: run folders ``<out>/<experiment>/<run-id>/`` with ``config.json``,
   ``metrics.jsonl``, ``results.json``, ``figures/`` and ``checkpoints/``, every file
   written atomically (:mod:`amcl_lab.io`).

A run checkpointed at step ``s`` and resumed sees exactly the batches and views of an
uninterrupted run; the checkpoint also restores the model, optimiser, scheduler, loss-term
states, global RNG states and the metric history, so ``--resume`` reproduces the
uninterrupted run's numbers bit for bit on the same device and thread count (CUDA kernels
may be non-deterministic).

Everything public is re-exported here, so ``from amcl_lab import engine; engine.train(...)``
works without knowing the module a name lives in.
"""

from __future__ import annotations

from .batches import batch_indices, derive_seed, training_set
from .build import build_network, build_optimisation, lr_factor
from .catalog import GEOMETRY, OBJECTIVES, OPTIMIZERS, SCHEDULES, EvalHook, HeldOut, ObjectiveSpec
from .config import TrainConfig, apply_overrides, config_dict, resolve_device
from .evaluation import evaluate, knn_accuracy, linear_probe, nearest_mean_accuracy
from .loop import TrainingInterrupted, TrainResult, train, train_step
from .objectives import Objective
from .runs import Run, open_run, open_runs

__all__ = [
    "GEOMETRY",
    "OBJECTIVES",
    "OPTIMIZERS",
    "SCHEDULES",
    "EvalHook",
    "HeldOut",
    "Objective",
    "ObjectiveSpec",
    "Run",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "apply_overrides",
    "batch_indices",
    "build_network",
    "build_optimisation",
    "config_dict",
    "derive_seed",
    "evaluate",
    "knn_accuracy",
    "linear_probe",
    "lr_factor",
    "nearest_mean_accuracy",
    "open_run",
    "open_runs",
    "resolve_device",
    "train",
    "train_step",
    "training_set",
]
