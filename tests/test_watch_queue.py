"""The asynchronous cloud queue of `watch`: bounded, oldest dropped first, every job settled
exactly once (answered, dropped when full, or dropped at the drain deadline)."""

from __future__ import annotations

import threading
import time

from edgeswitch.runtime.async_cloud import DRAIN_DEADLINE, QUEUE_FULL, AsyncCloud


def recorder():
    done, lock = [], threading.Lock()

    def on_done(job, result, reason):
        with lock:
            done.append((job.key, result, reason))
    return done, on_done


def test_a_full_queue_drops_its_oldest_and_never_exceeds_its_bound():
    started, release = threading.Event(), threading.Event()
    done, on_done = recorder()

    def work(p):
        started.set()
        release.wait(30)
        return p

    q = AsyncCloud(work, on_done, workers=1, bound=3)
    q.submit("k0", 0)
    assert started.wait(30)  # the worker has taken k0 and holds it
    for i in range(1, 8):
        q.submit(f"k{i}", i)
    assert q.queued == 3 and q.stats.max_queued == 3
    assert [k for k, _, r in done if r == QUEUE_FULL] == ["k1", "k2", "k3", "k4"]
    release.set()
    q.drain(time.monotonic() + 10)
    answered = sorted(k for k, _, r in done if r is None)
    assert answered == ["k0", "k5", "k6", "k7"]
    assert len(done) == 8 and len({k for k, _, _ in done}) == 8  # each settled once
    assert q.stats.dropped == {QUEUE_FULL: 4} and q.stats.answered == 4


def test_workers_run_at_once_and_the_drain_deadline_drops_the_rest():
    done, on_done = recorder()
    both = threading.Barrier(2, timeout=30)  # passed only by two jobs running at once
    stuck = threading.Event()  # the slow job runs until the test ends

    def work(p):
        if p == "together":
            both.wait()
        elif p == "stuck":
            stuck.wait(60)
        return p

    q = AsyncCloud(work, on_done, workers=2, bound=10)
    q.submit("fast1", "together")
    q.submit("fast2", "together")
    q.submit("slow", "stuck")
    q.submit("waiting", "quick")
    try:
        q.drain(time.monotonic() + 2.0)
        reasons = {k: r for k, _, r in done}
        # settled at the deadline: had the drain waited for the slow job, it would be answered
        assert reasons["slow"] == DRAIN_DEADLINE
    finally:
        stuck.set()
    assert reasons["fast1"] is None and reasons["fast2"] is None  # in parallel, both in time
    assert len(done) == 4


def test_a_raising_worker_still_settles_its_job():
    done, on_done = recorder()
    q = AsyncCloud(lambda p: 1 / 0, on_done, workers=1, bound=2)
    q.submit("k", None)
    q.drain(time.monotonic() + 5)
    assert len(done) == 1 and isinstance(done[0][1], ZeroDivisionError) and done[0][2] is None
