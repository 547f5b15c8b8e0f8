"""Run a function on W forked processes joined in a gloo process group (test helper).

Forking (not spawning) reuses the already imported torch and amcl_lab, so a 2-rank launch
costs about 0.1 s instead of two fresh interpreters.  Each rank gets one intra-op thread.
Results come back pickled through a queue; an exception in any rank, a rank that dies, or a
launch exceeding ``timeout`` fails the launch with the rank's traceback, after the other
ranks (only the ones started here) are terminated.

No fixed TCP port anywhere, so parallel pytest-xdist workers cannot collide: ``init="file"``
meets through a ``FileStore`` in a fresh temporary folder, and ``init="env"`` does what
``torchrun``'s agent does - this process hosts the ``TCPStore`` on a port the OS picks (and
keeps it bound while the ranks run) and the ranks join it as clients
(``TORCHELASTIC_USE_AGENT_STORE=True``).
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import queue
import tempfile
import time
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

#: How long a collective may wait for a peer before the rank fails (seconds).
COLLECTIVE_TIMEOUT = 60


def _worker(
    rank: int,
    world_size: int,
    init: str,
    where: str,
    results: Any,
    target: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    torch.set_num_threads(1)
    try:
        if init == "file":
            dist.init_process_group(
                "gloo",
                store=dist.FileStore(where, world_size),
                rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT),
            )
        else:  # what torchrun exports; the code under test creates the group
            os.environ.update(
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=where,
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world_size),
                TORCHELASTIC_USE_AGENT_STORE="True",  # join the launcher's store
            )
        results.put((rank, True, pickle.dumps(target(rank, world_size, *args))))
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _check_alive(procs: list[Any], out: dict[int, Any], deadline: float, timeout: float) -> None:
    dead = [r for r, p in enumerate(procs) if p.exitcode and r not in out]
    if dead:
        raise RuntimeError(f"rank {dead[0]} died (exit code {procs[dead[0]].exitcode})")
    if time.monotonic() > deadline:
        missing = sorted(set(range(len(procs))) - set(out))
        raise TimeoutError(f"ranks {missing} did not finish within {timeout} s")


def launch(
    target: Callable[..., Any],
    *args: Any,
    world_size: int = 2,
    init: str = "file",
    timeout: float = 60.0,
) -> list[Any]:
    """``[target(rank, world_size, *args) for rank in range(world_size)]``, one process each.

    ``init="file"``: the ranks join a gloo group through a ``FileStore`` before ``target``
    runs (no TCP port to pick).  ``init="env"``: they only get torchrun's environment
    (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and
    ``TORCHELASTIC_USE_AGENT_STORE``, the store being hosted here) and ``target`` must
    create the group itself.
    """
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        if init == "file":
            where = os.path.join(tmp, "store")
        else:  # the agent's store: port 0 lets the OS pick a free port, held until we exit
            store = dist.TCPStore(
                "127.0.0.1",
                0,
                is_master=True,
                timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT),
                wait_for_workers=False,
            )
            where = str(store.port)
        procs = [
            ctx.Process(target=_worker, args=(r, world_size, init, where, results, target, args))
            for r in range(world_size)
        ]
        for p in procs:
            p.start()
        out: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        try:
            while len(out) < world_size:
                try:
                    rank, ok, payload = results.get(timeout=0.2)
                except queue.Empty:
                    _check_alive(procs, out, deadline, timeout)
                    continue
                if not ok:
                    raise RuntimeError(f"rank {rank} failed:\n{payload}")
                out[rank] = pickle.loads(payload)
        finally:
            for p in procs:
                p.join(timeout=5 if len(out) == world_size else 0.1)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
    return [out[r] for r in range(world_size)]
