"""Dynamic batching: requests that arrive close together share one model run.

Many devices each send a clip or a few; one run over 32 clips can cost less than 32 runs over
one. The batcher takes every request queued while the previous batch ran, then waits for more
until `max_batch` clips are gathered or `max_wait_ms` has passed since the first arrived, runs
the model once on the concatenation, and hands each request its rows (a request is never split,
so a batch may pass `max_batch` by the size of its last request). `max_wait_ms=0` batches
only what piled up (no added latency). With `max_batch=1` every request runs alone (no
batching), on a small thread pool so that requests still overlap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from edgeswitch.config import ServeConfig


@dataclass
class _Pending:
    X: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


_SERVE = ServeConfig()  # the schema's [serve] table holds the defaults


class DynamicBatcher:
    def __init__(self, run: Callable[[np.ndarray], np.ndarray],
                 max_batch: int = _SERVE.max_batch, max_wait_ms: float = _SERVE.max_wait_ms,
                 workers: int = 2,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch or (lambda n: None)
        # onnxruntime releases the GIL, so model runs overlap with request handling
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self.queue: asyncio.Queue[_Pending] | None = None
        self.task: asyncio.Task | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    async def start(self) -> None:
        if self.batching:
            self.queue = asyncio.Queue()
            self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def submit(self, X: np.ndarray) -> np.ndarray:
        """Probabilities for clips `X`, computed alone or together with other requests."""
        loop = asyncio.get_running_loop()
        if not self.batching:
            self.on_batch(len(X))
            return await loop.run_in_executor(self.pool, self.run, X)
        pending = _Pending(X, loop.create_future())
        await self.queue.put(pending)
        return await pending.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].X)
            deadline = batch[0].arrived + self.max_wait_s
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
                batch.append(item)
                size += len(item.X)
            batch = [p for p in batch if not p.future.cancelled()]  # the client went away
            if not batch:
                continue
            self.on_batch(sum(len(p.X) for p in batch))
            try:
                proba = await loop.run_in_executor(
                    self.pool, self.run, np.concatenate([p.X for p in batch]))
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
