"""The cloud off the critical path: offloaded work waits in a bounded queue served by a fixed
number of worker threads, so a slow cloud never delays the next clip.

`submit` never blocks: when the queue is full the OLDEST waiting job is dropped (reason
`queue_full`): on a live camera the newest clip is the one that matters, and a queue that
only grows means answers that come ever later. `drain(deadline)` stops taking work and waits
for what is queued and in flight up to a deadline; whatever is still unanswered then is
dropped (reason `drain_deadline`). Every job is settled exactly once, through `on_done(job,
result, drop_reason)`, from a worker thread (a result) or from the caller (a drop).

`work` must not raise for a cloud failure (a `cloud.client.ask` reply carries the reason);
an exception it raises anyway settles the job with that exception as its result.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeswitch.cloud.reasons import FallbackReason

QUEUE_FULL = str(FallbackReason.QUEUE_FULL)          # dropped unasked: newer clips came
DRAIN_DEADLINE = str(FallbackReason.DRAIN_DEADLINE)  # unanswered when the final wait ended


@dataclass
class Job:
    key: str
    payload: Any
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    done: bool = False

    @property
    def waited_s(self) -> float:
        """Seconds in the queue before a worker took it (so far, if none has)."""
        return (self.started_at or time.monotonic()) - self.queued_at


@dataclass
class QueueStats:
    submitted: int = 0
    answered: int = 0        # work returned (the cloud answered or said why not)
    dropped: dict[str, int] = field(default_factory=dict)
    max_queued: int = 0      # the most jobs ever waiting at once (never above the bound)
    bound: int = 0
    workers: int = 0


class AsyncCloud:
    """`workers` threads run `work(payload)` for jobs taken from a queue of at most `bound`."""

    def __init__(self, work: Callable[[Any], Any],
                 on_done: Callable[[Job, Any, str | None], None],
                 workers: int = 2, bound: int = 8) -> None:
        if workers < 1 or bound < 1:
            raise ValueError("workers and bound must be >= 1")
        self.work, self.on_done = work, on_done
        self.stats = QueueStats(bound=bound, workers=workers)
        self._queue: deque[Job] = deque()
        self._running: set[int] = set()
        self._jobs: dict[int, Job] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"edgeswitch-cloud-{i}",
                                          daemon=True) for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, key: str, payload: Any) -> Job:
        job, dropped = Job(key, payload), None
        with self._cv:
            if self._closed:
                raise RuntimeError("the cloud queue is closed")
            if len(self._queue) >= self.stats.bound:
                dropped = self._queue.popleft()
            self._queue.append(job)
            self.stats.submitted += 1
            self.stats.max_queued = max(self.stats.max_queued, len(self._queue))
            self._cv.notify()
        if dropped is not None:
            self._settle(dropped, None, QUEUE_FULL)
        return job

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._queue)

    def _serve(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if not self._queue:
                    return
                job = self._queue.popleft()
                job.started_at = time.monotonic()
                self._running.add(id(job))
                self._jobs[id(job)] = job
            try:
                result = self.work(job.payload)
            except Exception as exc:  # noqa: BLE001 - a job always settles
                result = exc
            with self._cv:
                self.stats.answered += 0 if job.done else 1
            # settled before it stops counting as running: `drain` returns only once the
            # answer is out (the caller may close its outputs right after)
            try:
                self._settle(job, result, None)
            finally:
                with self._cv:
                    self._running.discard(id(job))
                    self._jobs.pop(id(job), None)
                    self._cv.notify_all()

    def _settle(self, job: Job, result: Any, reason: str | None) -> None:
        with self._cv:
            if job.done:
                return
            job.done = True
            if reason is not None:
                self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + 1
        self.on_done(job, result, reason)

    def drain(self, deadline: float) -> None:
        """Stop taking work; wait until every job is settled or `deadline` (a monotonic
        instant) passes, then drop the rest (queued and in flight) with `drain_deadline`."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            while (self._queue or self._running) and time.monotonic() < deadline:
                self._cv.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            left = list(self._queue) + list(self._jobs.values())
            self._queue.clear()
        for job in left:  # an in-flight request may still finish: its result is ignored
            self._settle(job, None, DRAIN_DEADLINE)
