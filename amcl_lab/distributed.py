r"""Data parallelism with ``torch.distributed``: global-batch negatives, shards and rank 0.

Contrastive losses depend on the whole batch: with W processes (ranks) each holding a shard
of n samples, every anchor should still see the negatives of all W n samples.  This module
holds the few collectives the losses, :class:`~amcl_lab.optim.SAF` and the engine need, all
built on PyTorch's own process groups (gloo on CPU, NCCL on CUDA; ``torchrun`` sets them up
through :func:`process_group_from_env`).  Without an initialised process group, or with
world size 1, every function here is the identity and the code paths equal the
single-process ones exactly.

Conventions of ``gather_distributed=True`` (:func:`~amcl_lab.losses.nt_xent`,
:func:`~amcl_lab.losses.supcon`, :func:`~amcl_lab.losses.info_nce`,
:func:`~amcl_lab.losses.barlow_twins`, :func:`~amcl_lab.losses.amcl_nt_xent`,
:func:`~amcl_lab.losses.amcl_info_nce`, :func:`~amcl_lab.losses.amcl_barlow_twins`,
:func:`~amcl_lab.losses.vicreg`, :func:`~amcl_lab.losses.multiview_vicreg`,
:func:`~amcl_lab.losses.dcl`, :func:`~amcl_lab.losses.moco_v3` and :mod:`amcl_lab.fast`; the
per-sample AMCL SimSiam and MoCo losses, BYOL/SimSiam's negative cosine and DINO need no
gather, see :mod:`amcl_lab.losses.amcl`; :func:`~amcl_lab.losses.dino_center_update`
all-reduces the teacher mean):

* **Global batch.** Rank :math:`r` holds samples :math:`rn, \dots, rn + n - 1` of the global
  batch: the concatenation of the shards in rank order (:func:`gather`).  Every rank must
  pass the same n (checked on every rank: unequal shards raise a ``ValueError``
  everywhere).
* **Local anchors, global candidates.** Each rank evaluates the per-anchor losses of its own
  anchors against the candidates of every rank, so the W ranks together compute each
  anchor exactly once (no W-fold redundant loss, unlike gathering everything and computing
  the full loss on every rank).  Instance identities are offset by :math:`rn`, so they are
  unique across ranks (per-rank ``arange`` labels collide: with them pytorch-metric-learning's
  ``DistributedLossWrapper`` returns a wrong loss and gradient).
  The Barlow Twins and VICReg losses are the exception: ``D x D`` statistics of the whole
  batch, they gather both views and compute the global loss on every rank (cost O(N D^2) per
  rank).
* **Value.** ``reduction="mean"`` and ``"sum"`` return, **on every rank**, the value of the
  single-process loss :math:`L` on the global batch (the local sums are all-reduced;
  the mean divides by the global anchor count).  ``reduction="none"`` returns the local
  anchors' losses.
* **Gradient.** :func:`gather`'s backward sums the candidates' gradients over ranks
  (all-reduce SUM) and keeps the local slice; the value's all-reduce does the same for the
  W identical copies of :math:`L`.  After ``L.backward()`` on every rank, rank
  :math:`r`'s shard :math:`z_r` therefore holds :math:`W\,\partial L/\partial z_r`, the
  gradient of the sum of the W returned values.  DDP averages parameter gradients over the
  W ranks, so parameter gradients equal :math:`\partial L/\partial\theta` of the
  single-process loss on the global batch exactly.  For a replicated input such as a scalar
  temperature, a rank's gradient is W times its local anchors' contribution (for the Barlow
  Twins losses, the whole gradient) and the mean over ranks is the single-process
  gradient.  This is the criterion "(rank input gradient) / W equals the single-process global
  gradient" of ``docs/conventions.md``, "Distributed losses", satisfied by lightly's and
  solo-learn's GatherLayer; lightly bug #1528 (a gather whose backward returns the local slice
  without the all-reduce) loses the other ranks' terms.

Argument errors that one rank detects on its own inputs (NaN, wrong dimensions) are raised
on that rank only; ``torchrun`` then stops the others.  Collectives must be called by every
rank in the same order, and inputs must require grad on every rank or on none.

:func:`gather` is a small autograd function rather than
``torch.distributed.nn.functional.all_gather`` because the latter is deprecated in PyTorch
2.13 (its replacement lives in the private ``torch.distributed._functional_collectives``),
its non-NCCL backward emulates a reduce-scatter with W sequential scatters, and it had a
wrong-gradient bug for non-contiguous buffers (pytorch #120386, fix PR #120582); here every
buffer is made contiguous before a collective.  The backward all-reduces the whole gathered
gradient (2x the traffic of a reduce-scatter) because every backend supports all-reduce.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "all_reduce_sum",
    "gather",
    "is_active",
    "is_main",
    "no_sync",
    "on_main",
    "process_group_from_env",
    "rank",
    "shard",
    "sync_buffers",
    "world_size",
]

T = TypeVar("T")

#: Dimensions a gathered tensor may have (the shape check exchanges a fixed-size header).
MAX_DIMS = 8
_DTYPES = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.bool,
)


def is_active() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """W: the number of ranks (1 without an active process group)."""
    return dist.get_world_size() if is_active() else 1


def rank() -> int:
    """This process's rank (0 without an active process group)."""
    return dist.get_rank() if is_active() else 0


def is_main() -> bool:
    """Whether this process is rank 0, the one that logs and writes files."""
    return rank() == 0


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward of a sum of W copies is the sum of their gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return _AllReduceSum.apply(grad)


class _Gather(torch.autograd.Function):
    """All-gather along dim 0; backward: all-reduce SUM of the gradient, local slice."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = x.contiguous()  # collectives need contiguous buffers (pytorch #120386)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Rank r' used these candidates in its own anchors' losses: their gradients live on
        # r' and are summed here.  Through _AllReduceSum the backward stays differentiable.
        return _AllReduceSum.apply(grad).narrow(0, dist.get_rank() * ctx.rows, ctx.rows)


def _header(x: Tensor) -> Tensor:
    code = _DTYPES.index(x.dtype) if x.dtype in _DTYPES else -1
    shape = [*x.shape, *([-1] * (MAX_DIMS - x.ndim))]
    return torch.tensor([x.ndim, code, *shape], dtype=torch.int64, device=x.device)


def _describe(header: list[int]) -> str:
    ndim, code = header[0], header[1]
    dtype = _DTYPES[code] if code >= 0 else "another dtype"
    return f"{tuple(header[2 : 2 + ndim])} {dtype}"


def _check_shards(fn: str, name: str, x: Tensor) -> None:
    """Raise on every rank unless every rank holds a tensor of the same shape and dtype."""
    if x.ndim > MAX_DIMS:
        raise ValueError(f"{fn}: {name} may have at most {MAX_DIMS} dimensions, got {x.ndim}")
    header = _header(x)
    headers = [torch.empty_like(header) for _ in range(dist.get_world_size())]
    dist.all_gather(headers, header)
    values = [h.tolist() for h in headers]
    if any(h != values[0] for h in values):
        seen = ", ".join(f"rank {r}: {_describe(h)}" for r, h in enumerate(values))
        raise ValueError(
            f"{fn}: gather_distributed needs {name} of the same shape and dtype on every rank "
            f"(equal shards of the global batch), got {seen}; use a global batch size "
            "divisible by the world size and drop the last partial batch"
        )


def gather(x: Tensor, dim: int = 0, *, fn: str = "gather", name: str = "input") -> Tensor:
    r"""All-gather ``x`` along ``dim`` from every rank, with gradients back to each shard.

    Returns the concatenation of the ranks' tensors in rank order (W n rows along ``dim``
    for n local rows).  The backward pass all-reduces (sums) the gradient over ranks and
    returns this rank's slice: the gradient of the sum over ranks of whatever each rank
    computed from the gathered tensor (module docstring).  Integer tensors (labels) are
    gathered the same way.  Without an active process group ``x`` itself is returned.

    Args:
        x: the local shard; same shape and dtype on every rank.
        dim: the dimension to concatenate along (the batch dimension).
        fn, name: the calling function and argument, for error messages.

    Raises:
        ValueError: on every rank, when the shards' shapes or dtypes differ.

    Example:
        >>> import torch
        >>> x = torch.ones(2, 3)
        >>> gather(x) is x  # no process group: the identity
        True
    """
    if not is_active():
        return x
    _check_shards(fn, name, x)
    return _Gather.apply(x.movedim(dim, 0)).movedim(0, dim)


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of ``x`` over ranks, differentiable (the backward sums the gradients too).

    Without an active process group ``x`` itself is returned.

    Example:
        >>> import torch
        >>> x = torch.tensor(2.0)
        >>> all_reduce_sum(x) is x
        True
    """
    return _AllReduceSum.apply(x) if is_active() else x


def shard(x: Tensor, dim: int = 0, *, fn: str = "shard") -> Tensor:
    """This rank's contiguous block of a global batch ``x`` (rank order, equal blocks).

    The engine's :class:`~torch.utils.data.DistributedSampler` equivalent: every rank draws
    the same global batch from the ``(seed, step)`` order and keeps rows
    ``[r b, (r + 1) b)`` along ``dim``, b = size / W, so that :func:`gather` rebuilds the
    global batch in its original order.

    Raises:
        ValueError: the size along ``dim`` is not divisible by the world size.

    Example:
        >>> import torch
        >>> shard(torch.arange(6)).tolist()  # one rank: the whole batch
        [0, 1, 2, 3, 4, 5]
    """
    size, ranks = x.shape[dim], world_size()
    if size % ranks:
        raise ValueError(
            f"{fn}: a global batch of {size} does not split into {ranks} equal shards; choose "
            f"a batch size divisible by the world size ({ranks})"
        )
    block = size // ranks
    return x.narrow(dim, rank() * block, block)


def sync_buffers(module: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) into ``module`` on every rank.

    DDP does this before each forward; after the last one every rank has updated its
    statistics with its own shard, so a training loop calls this at the end to leave the
    same model on every rank.  No-op without an active process group.
    """
    if is_active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on rank 0 only and return its result on every rank.

    An exception raised by ``fn`` on rank 0 is re-raised on every rank, so no rank is left
    waiting in a later collective.  Results and exceptions travel pickled
    (``broadcast_object_list``): use it for small things (a run folder, a metrics record).

    Example:
        >>> on_main(max, 2, 3)  # no process group: a plain call
        3
    """
    if not is_active():
        return fn(*args, **kwargs)
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = (True, fn(*args, **kwargs))
        except Exception as error:  # re-raised below, on every rank
            try:
                pickle.dumps(error)
                box[0] = (False, error)
            except Exception:
                box[0] = (False, RuntimeError(f"rank 0 raised {error!r}"))
    dist.broadcast_object_list(box, src=0)
    ok, payload = box[0]
    if not ok:
        raise payload
    return payload


@contextlib.contextmanager
def no_sync(*modules: nn.Module) -> Iterator[None]:
    """Skip DDP's gradient all-reduce for the forward and backward passes inside the block.

    Enters :meth:`~torch.nn.parallel.DistributedDataParallel.no_sync` of every
    ``DistributedDataParallel`` among ``modules`` (other modules are ignored).  SAM's first
    pass runs inside it so that each rank perturbs with its local gradient (m-sharpness,
    :class:`~amcl_lab.optim.SAM`).
    """
    with contextlib.ExitStack() as stack:
        for module in modules:
            if isinstance(module, DistributedDataParallel):
                stack.enter_context(module.no_sync())
        yield


@contextlib.contextmanager
def process_group_from_env() -> Iterator[bool]:
    """Join the process group that ``torchrun`` describes in the environment, for the block.

    With ``WORLD_SIZE > 1`` (set by ``torchrun --nproc_per_node N``) and no process group
    yet, initialises one from ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE``
    with gloo for CPU tensors and, when CUDA is available, NCCL for CUDA tensors
    (``"cpu:gloo,cuda:nccl"``); each process then uses GPU ``LOCAL_RANK``.  The group is
    destroyed on exit.  Otherwise (a single process, or a group set up by the caller) it
    does nothing.  Yields whether it created the group.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but this PyTorch build has no distributed support.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (
        dist.is_available() and dist.is_initialized()
    ):
        yield False
        return
    if not dist.is_available():
        raise RuntimeError(
            "WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support; run a "
            "single process (python -m amcl_lab ...) instead of torchrun"
        )
    cuda = torch.cuda.is_available() and dist.is_nccl_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    try:
        yield True
    finally:
        dist.destroy_process_group()
