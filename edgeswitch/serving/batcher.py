"""Dynamic batching: requests that arrive close together share one model run.

Many devices each send a clip or a few; one run over 32 clips can cost less than 32 runs over
one. The batcher takes every request queued while the previous batch ran, then waits for more
until `max_batch` clips are gathered or `max_wait_ms` has passed since the first arrived, runs
the model once on the concatenation, and hands each request its rows (a request is never split,
so a batch may pass `max_batch` by the size of its last request). `max_wait_ms=0` batches
only what piled up (no added latency). With `max_batch=1` every request runs alone (no
batching), on a small thread pool so that requests still overlap.

The batcher is bounded and runs nothing for nobody (see serving.overload): it holds at most
`max_queue_clips` clips whose requests await them (one more request gets the 503 `Shed`);
a request whose client went away, or whose deadline has passed or falls before the fastest of
the last 16 model runs could end, is dropped before its model run, both when it arrives and
when a batch is gathered; a model run already started finishes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgeswitch.config import ServeConfig
from edgeswitch.serving.overload import ClipBound, Ticket, current, expired, watched


@dataclass
class _Pending:
    X: np.ndarray
    future: asyncio.Future
    ticket: Ticket
    arrived: float = field(default_factory=time.perf_counter)

    def live(self, run_s: float) -> bool:
        """Still worth a model run that takes at least `run_s`; an expired one is answered 504
        here."""
        if self.future.done() or self.ticket.gone.is_set():  # cancelled: the client left
            return False
        if self.ticket.expired(run_s):
            self.future.set_exception(expired())
            return False
        return True


_SERVE = ServeConfig()  # the schema's [serve] table holds the defaults


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray],
                 max_batch: int = _SERVE.max_batch, max_wait_ms: float = _SERVE.max_wait_ms,
                 workers: int = 2,
                 on_batch: Callable[[int], None] | None = None,
                 max_queue_clips: int = _SERVE.max_queue_clips) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.bound = ClipBound(max_queue_clips)
        self.run_times: deque[float] = deque(maxlen=16)  # seconds of the latest model runs
        self.on_batch = on_batch or (lambda n: None)
        self.workers = workers
        # onnxruntime releases the GIL, so model runs overlap with request handling
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self.queue: asyncio.Queue[_Pending] | None = None
        self.task: asyncio.Task | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    @property
    def fastest_run_s(self) -> float:
        """A lower bound on the next model run's time (0 before the first run)."""
        return min(self.run_times, default=0.0)

    def _timed_run(self, X: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.run(X)
        finally:
            self.run_times.append(time.perf_counter() - t0)

    async def start(self) -> None:
        if self.batching:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        # a fresh pool (its threads start on first use) for a second lifespan of the same app
        self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="model")

    async def submit(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for clips `X`, computed alone or together with other requests; Shed
        when over the bound, past this request's deadline, or its client gone."""
        loop, ticket = asyncio.get_running_loop(), current()
        ticket.check(self.fastest_run_s)
        self.bound.take(len(X))
        if not self.batching:
            future = loop.run_in_executor(self.pool, self._run_alone, X, ticket)
        else:
            future = loop.create_future()
            self.queue.put_nowait(_Pending(X, future, ticket))
        self.bound.release_when_done(future, len(X))
        return await watched(future, ticket)

    def _run_alone(self, X: np.ndarray, ticket: Ticket) -> np.ndarray:
        """On a pool thread: the deadline may have passed while the pool was busy."""
        if ticket.expired(self.fastest_run_s):
            raise expired()
        self.on_batch(len(X))
        return self._timed_run(X)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if not first.live(self.fastest_run_s):  # dropped work starts no batch's wait
                continue
            batch, size = [first], len(first.X)
            deadline = first.arrived + self.max_wait_s
            while size < self.max_batch:
                # take what is queued now (it piled up while the last batch ran); wait for
                # more only until max_wait after the first arrival
                try:
                    item = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    wait = deadline - time.perf_counter()
                    if wait <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self.queue.get(), wait)
                    except TimeoutError:
                        break
                if item.live(self.fastest_run_s):
                    batch.append(item)
                    size += len(item.X)
            # a client may have left during the wait
            batch = [p for p in batch if p.live(self.fastest_run_s)]
            if not batch:
                continue
            self.on_batch(sum(len(p.X) for p in batch))
            try:
                proba = await loop.run_in_executor(
                    self.pool, self._timed_run, np.concatenate([p.X for p in batch]))
            except Exception as exc:  # one failed run fails its requests, not the server
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(proba[start : start + len(p.X)])
                start += len(p.X)
