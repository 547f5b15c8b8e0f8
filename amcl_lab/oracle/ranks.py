"""W local processes joined in a gloo process group, evaluating one callable on request.

:class:`RankPool` is the machinery of the distributed oracle
(:mod:`amcl_lab.oracle.distributed`): it starts W worker processes on this machine, each of
which joins a gloo group of world size W
(through a ``FileStore`` in a fresh temporary folder, so no TCP port is picked and parallel
test workers cannot collide) and then waits for tasks.  :meth:`RankPool.run` sends one task
per rank, ``fn(rank, world_size, payload)``, and returns the W answers.

Failure handling.  A task that raises answers with the traceback's last line instead of a
result.  Ranks that then wait in a collective for the failed rank would hang, so after any
failure the pool waits at most ``grace`` seconds for the other ranks, terminates every
worker and starts a fresh group on the next call.  A rank that dies, or a task that takes
longer than ``timeout`` seconds, is reported the same way (:class:`RankFailure`).

Processes are forked where the platform allows it (the candidate under test, closures and
functions defined in ``__main__`` included, is inherited rather than pickled; each rank
uses one intra-op thread); ``start_method="spawn"`` needs a picklable ``fn``.  Payloads
and answers travel as standard pickles (tensors are copied, never shared).
"""

from __future__ import annotations

import contextlib
import datetime
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: How long (seconds) a rank's collective may wait for its peers before it fails.
COLLECTIVE_TIMEOUT = 30.0


@dataclass(frozen=True)
class RankFailure:
    """What went wrong on one rank: ``what`` is one line (an exception, a death, a timeout)."""

    rank: int
    what: str


def _worker(
    rank: int,
    world_size: int,
    store_path: str,
    conn: Any,
    fn: Callable[[int, int, Any], Any],
    collective_timeout: float,
) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            store=dist.FileStore(store_path, world_size),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=collective_timeout),
        )
    except Exception as error:
        conn.send_bytes(pickle.dumps((False, f"joining the gloo group failed: {error}")))
        return
    try:
        while True:
            try:
                message = conn.recv_bytes()
            except EOFError:
                return
            payload = pickle.loads(message)
            if payload is None:
                return
            try:
                answer = (True, fn(rank, world_size, payload))
            except Exception as error:
                frame = traceback.extract_tb(error.__traceback__)[-1]
                where = f" ({os.path.basename(frame.filename)}:{frame.lineno})" if frame else ""
                answer = (False, f"{type(error).__name__}: {error}{where}")
            try:
                data = pickle.dumps(answer)
            except Exception as error:
                data = pickle.dumps((False, f"its result cannot be pickled: {error}"))
            conn.send_bytes(data)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


class RankPool:
    """W worker processes in one gloo group; ``run`` evaluates ``fn`` on every rank.

    Args:
        world_size: W >= 2.
        fn: ``fn(rank, world_size, payload) -> answer``; runs inside the workers, with the
            process group initialised.  Payloads and answers must be picklable.
        start_method: ``"fork"`` (default where available) or ``"spawn"``.
        timeout: seconds one :meth:`run` may take before the pool is restarted.
        grace: seconds to wait for the other ranks once one has failed.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        world_size: int,
        fn: Callable[[int, int, Any], Any],
        *,
        start_method: str | None = None,
        timeout: float = 60.0,
        grace: float = 1.0,
        collective_timeout: float = COLLECTIVE_TIMEOUT,
    ) -> None:
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 2:
            raise ValueError(f"RankPool: world_size must be an int >= 2, got {world_size!r}")
        methods = multiprocessing.get_all_start_methods()
        method = start_method or ("fork" if "fork" in methods else "spawn")
        if method not in methods:
            raise ValueError(f"RankPool: start method {method!r} is not one of {methods}")
        self.world_size, self.fn = world_size, fn
        self.timeout, self.grace, self.collective_timeout = timeout, grace, collective_timeout
        self._ctx = multiprocessing.get_context(method)
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._tmp: str | None = None
        self.starts = 0  # how many groups were started (1 + restarts after failures)

    def __enter__(self) -> RankPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        self._tmp = tempfile.mkdtemp(prefix="amcl-oracle-ranks-")
        store = os.path.join(self._tmp, "store")
        for rank in range(self.world_size):
            parent, child = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=_worker,
                args=(rank, self.world_size, store, child, self.fn, self.collective_timeout),
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        self.starts += 1

    def close(self) -> None:
        """Stop the workers (politely if they are idle, else by termination)."""
        for conn in self._conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send_bytes(pickle.dumps(None))
        for proc in self._procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=2.0)
        for conn in self._conns:
            conn.close()
        self._procs, self._conns = [], []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.terminate()
        self.close()

    def run(self, payloads: list[Any]) -> tuple[list[Any], list[RankFailure]]:
        """Send ``payloads[r]`` to rank r and collect the answers.

        Returns ``(answers, failures)``: ``answers[r]`` is rank r's result (``None`` where
        it failed) and ``failures`` lists the ranks that raised, died or timed out.  After a
        failure the workers are stopped and the next call starts a fresh group.
        """
        if len(payloads) != self.world_size:
            raise ValueError(f"RankPool.run: need {self.world_size} payloads, got {len(payloads)}")
        if not self._procs:
            self._start()
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send_bytes(pickle.dumps(payload))
        answers: list[Any] = [None] * self.world_size
        failures: list[RankFailure] = []
        pending = set(range(self.world_size))
        deadline = time.monotonic() + self.timeout
        while pending:
            now = time.monotonic()
            if failures:
                deadline = min(deadline, now + self.grace)
            if now > deadline:
                what = (
                    "did not answer (waiting in a collective for a rank that failed?)"
                    if failures
                    else f"did not finish within {self.timeout:g} s"
                )
                failures += [RankFailure(r, what) for r in sorted(pending)]
                break
            ready = multiprocessing.connection.wait([self._conns[r] for r in pending], timeout=0.05)
            for conn in ready:
                r = self._conns.index(conn)
                pending.discard(r)
                try:
                    ok, answer = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    self._procs[r].join(timeout=1.0)
                    code = self._procs[r].exitcode
                    failures.append(RankFailure(r, f"died (exit code {code})"))
                    continue
                if ok:
                    answers[r] = answer
                else:
                    failures.append(RankFailure(r, answer))
            for r in list(pending):
                if not self._procs[r].is_alive():
                    pending.discard(r)
                    code = self._procs[r].exitcode
                    failures.append(RankFailure(r, f"died (exit code {code})"))
        if failures:
            self._kill()
        failures.sort(key=lambda f: f.rank)
        return answers, failures
