"""Overload: the server holds a bounded amount of model work and answers the rest at once with
503 + Retry-After; the edge client falls back with reason `overloaded`, honours Retry-After in
its breaker and never waits past its deadline."""

import asyncio
import os
import time
from collections import Counter

import httpx
import numpy as np
import pytest

from edgeswitch.cloud.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from edgeswitch.cloud.reasons import FallbackReason, parse_retry_after, status_failure
from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.cloud.wire import encode_clips
from edgeswitch.config import RuntimeConfig, ServeConfig, from_values
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.serving.app import create_app
from edgeswitch.serving.batcher import DynamicBatcher
from edgeswitch.serving.overload import Shed
from edgeswitch.serving.server import ServerProcess
from tests.edge_run import scrape

CLASSES = ("a", "b", "c")
# as in tests/test_service.py: EDGESWITCH_TEST_ENGINE=ray runs the server tests on Ray Serve
# (inside a loopback-only network namespace, see tests/test_ray.py)
ENGINE = os.environ.get("EDGESWITCH_TEST_ENGINE", "fastapi")


def _server(model, cfg, faults) -> ServerProcess:
    return ServerProcess(model, cfg, faults=faults, server=ENGINE,
                         start_timeout_s=600 if ENGINE == "ray" else 120)


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class _Info:
    """What create_app needs of a model when a runner runs it elsewhere."""

    classes_, name, clip_shape_ = CLASSES, "gated", (4, 2)


def _clips(n: int) -> dict:
    return {"clips": encode_clips(np.zeros((n, 4, 2), np.float32))}


def test_the_batcher_refuses_clips_past_its_bound_and_frees_them_when_answered():
    release, runs = None, []

    def run(X):
        release.wait(5)
        runs.append(len(X))
        return np.full((len(X), 3), 1 / 3)

    async def main():
        nonlocal release
        import threading

        release = threading.Event()
        b = DynamicBatcher(run, max_batch=4, max_queue_clips=5)
        await b.start()
        held = [asyncio.ensure_future(b.submit(np.zeros((2, 4, 2)))) for _ in range(2)]
        await asyncio.sleep(0.05)
        assert b.bound.held == 4
        with pytest.raises(Shed) as shed:
            await b.submit(np.zeros((2, 4, 2)))  # 4 + 2 > 5
        assert (shed.value.status, shed.value.code, shed.value.reason) == \
            (503, "overloaded", "queue_clips")
        one = asyncio.ensure_future(b.submit(np.zeros((1, 4, 2))))  # 4 + 1 fits
        release.set()
        assert [len(p) for p in await asyncio.gather(*held, one)] == [2, 2, 1]
        assert b.bound.held == 0
        await b.stop()

    asyncio.run(main())
    assert sum(runs) == 5  # the refused request never ran


def test_max_queue_clips_below_max_clips_is_a_clear_config_error():
    with pytest.raises(EdgeSwitchError, match="max_queue_clips .* must be >= max_clips"):
        from_values(ServeConfig, {"max_clips": 64, "max_queue_clips": 8}, "")


def test_admission_sheds_past_max_queue_requests_at_once_with_retry_after():
    """In process (httpx's ASGI transport): with every admitted request held by the runner,
    the next gets 503 overloaded with Retry-After while they are still held (at once: it
    waits for none of them), its body never parsed."""

    async def main():
        gate = asyncio.Event()

        async def runner(X):
            await gate.wait()
            return np.full((len(X), 3), 1 / 3)

        cfg = ServeConfig(max_queue_requests=3, retry_after_s=7)
        app = create_app(_Info(), cfg, runner=runner)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            held = [asyncio.ensure_future(c.post("/v1/classify", json=_clips(1)))
                    for _ in range(3)]
            await asyncio.sleep(0.1)
            # not even valid JSON: a shed request's body is never read
            # (a shed that waited for a held request would wait for ever: 20 s, then fail)
            r = await asyncio.wait_for(c.post("/v1/classify", content=b"{not json",
                                              headers={"Content-Type": "application/json"}), 20)
            assert not any(h.done() for h in held)
            assert r.status_code == 503 and r.headers["retry-after"] == "7"
            assert r.json()["error"]["code"] == "overloaded"
            assert r.json()["error"]["type"] == "server_error"
            assert "3 requests in progress" in r.json()["error"]["message"]
            chat = await c.post("/v1/chat/completions", json={"model": "gated", "messages": []})
            assert chat.status_code == 503 and chat.json()["error"]["code"] == "overloaded"
            assert (await c.get("/healthz")).status_code == 200  # only model work is bounded
            gate.set()
            assert [x.status_code for x in await asyncio.gather(*held)] == [200] * 3
            assert (await c.post("/v1/classify", json=_clips(1))).status_code == 200
            text = (await c.get("/metrics")).text
        assert 'edgeswitch_shed_total{reason="queue_requests"} 2.0' in text
        assert 'edgeswitch_shed_total{reason="deadline"} 0.0' in text  # every reason shows

    asyncio.run(main())


def test_retry_after_is_read_as_seconds_or_a_date_and_capped():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None and parse_retry_after("-4") == 0.0
    assert parse_retry_after("999999") == 300.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    busy = status_failure(503, "server overloaded", "2")
    assert busy.reason is FallbackReason.OVERLOADED and busy.retry_after_s == 2.0
    assert not busy.retryable and "Retry-After 2 s" in busy.detail
    late = status_failure(504, "deadline passed", code="deadline_exceeded")
    assert late.reason is FallbackReason.TIMEOUT and not late.retryable
    assert status_failure(504).reason == "http_504"  # any other 504: a gateway's
    plain = status_failure(429)  # no Retry-After: retried with backoff, as other 5xx
    assert plain.reason is FallbackReason.OVERLOADED and plain.retryable
    assert plain.retry_after_s is None


def test_breaker_hold_refuses_until_retry_after_without_opening():
    clock = _Clock()
    b = CircuitBreaker(failures=2, reset_s=1.0, clock=clock)
    b.hold(3.0)
    assert not b.allow() and b.held_s() == 3.0 and b.state == CLOSED
    clock.t += 2.5
    assert not b.allow() and b.held_s() == pytest.approx(0.5)
    clock.t += 0.5
    assert b.allow() and b.held_s() == 0.0
    b.failure()
    b.failure()
    clock.t += 1.0
    assert b.state == HALF_OPEN and b.allow()  # the probe goes out and is told to wait
    b.hold(2.0)
    assert b.state == OPEN and not b.allow()
    clock.t += 2.0
    assert b.allow()  # the hold and the reset both passed: one probe again


@pytest.mark.slow
def test_remote_cloud_falls_back_overloaded_and_honours_retry_after(bm_files, basicmotions):
    """A real server kept busy (one request allowed, a slow fault holding it): the edge's
    request gets 503 -> `overloaded` at once, the next asks nothing until Retry-After has
    passed, and none waits past its deadline."""
    import threading

    X = basicmotions.X[:1]
    cfg = ServeConfig(max_queue_requests=1, retry_after_s=1)
    # a deadline a busy machine's 503 still comes back by; the fault's sleep far past it
    runtime = RuntimeConfig(deadline_ms=2000, retries=2, backoff_ms=10, backoff_max_ms=20)
    with _server(bm_files["cloud"], cfg, ("sleep:6",)) as server:
        classes = tuple(httpx.get(server.url + "/healthz").json()["classes"])
        busy = threading.Thread(target=lambda: httpx.post(
            server.url + "/v1/classify", json={"clips": encode_clips(X)}, timeout=30))
        busy.start()
        time.sleep(0.3)
        with RemoteCloud(server.url, classes, runtime) as cloud:
            t0 = time.monotonic()
            first = cloud.request(X)
            second = cloud.request(X)
            wall = time.monotonic() - t0
            assert first.reason is FallbackReason.OVERLOADED and first.attempts == 1
            assert "Retry-After 1 s" in first.detail
            assert second.reason is FallbackReason.OVERLOADED and second.attempts == 0
            assert "Retry-After" in second.detail
            # both fell back at once: before the busy request's 6 s sleep freed the server
            assert busy.is_alive(), f"the two calls took {wall:.2f} s"
            assert cloud.breaker.state == CLOSED  # busy is not broken
            busy.join(30)
            time.sleep(max(0.0, 1.05 - (time.monotonic() - t0)))
            t1 = time.monotonic()
            third = cloud.request(X)  # Retry-After passed: asked again (and slow, as all are)
            assert third.attempts == 1 and third.reason is FallbackReason.TIMEOUT
            # never past the deadline (2 s; a call that waited for the server's 6 s sleep
            # would take that long; the rest is margin for a busy machine)
            assert time.monotonic() - t1 < 4.5
        time.sleep(6.5)  # the server drops the timed-out request after its fault's sleep
        shed = scrape(server.url)
        # the held-back call never reached the server; the third was dropped unrun (Ray Serve
        # cancels a disconnected request's handler itself, before our middleware counts it)
        assert shed["edgeswitch_shed_total"] == (1 if ENGINE == "ray" else 2)
        assert shed["edgeswitch_batch_size_sum"] == 1  # only the busy request ran


@pytest.mark.slow
def test_many_clients_against_a_slow_server_some_shed_none_hang(bm_files, bm_models,
                                                                 basicmotions):
    """64 concurrent clients for 3 s against `--fault sleep:0.2` with room for 8 requests:
    some get 503 with Retry-After (answered fast), every accepted one gets the model's right
    probabilities, and no request hangs (each is answered within the client's 5 s timeout).
    The clients are aiohttp: httpx's pool queues 64 concurrent requests client-side for
    seconds, which would hide the server's own latency."""
    import json

    import aiohttp

    X = basicmotions.X[:8].astype(np.float32)
    want = bm_models[1].predict_proba(X)
    bodies = [json.dumps({"clips": encode_clips(X[j : j + 1])}) for j in range(len(X))]
    cfg = ServeConfig(max_queue_requests=8, retry_after_s=1)
    results = []

    async def client(session, url, i, until):
        while time.monotonic() < until:
            j = i % len(X)
            t0 = time.monotonic()
            try:
                async with session.post(url, data=bodies[j],
                                        headers={"Content-Type": "application/json"}) as r:
                    # Ray Serve's proxy refuses past max_queued_requests with a text 503
                    body = await r.json() if r.content_type == "application/json" else None
            except (aiohttp.ClientError, TimeoutError) as exc:
                results.append((type(exc).__name__, None, time.monotonic() - t0, j, None))
                continue
            results.append((r.status, r.headers.get("Retry-After"), time.monotonic() - t0, j,
                            body))
            if r.status == 503:  # back off (a fifth of Retry-After: keep the pressure on; a
                await asyncio.sleep(0.2)  # client that never waits is a flood, not load)

    async def main(url):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                         timeout=aiohttp.ClientTimeout(total=5)) as session:
            until = time.monotonic() + 3
            await asyncio.gather(*(client(session, url + "/v1/classify", i, until)
                                   for i in range(64)))

    with _server(bm_files["cloud"], cfg, ("sleep:0.2",)) as server:
        asyncio.run(main(server.url))
        metrics = scrape(server.url)
        assert "Traceback" not in server.log()
    statuses = Counter(r[0] for r in results)
    print(f"{len(results)} requests: {dict(statuses)}")
    assert set(statuses) == {200, 503}, statuses  # no timeout, no dropped connection, no 5xx
    assert statuses[200] >= 20 and statuses[503] >= 20
    ours = 0  # 503s from our Admission (the rest: Ray's proxy, on the ray engine only)
    for status, retry, _, j, body in results:
        if status == 503 and body is None:
            assert ENGINE == "ray"
        elif status == 503:
            assert retry == "1" and body["error"]["code"] == "overloaded"
            ours += 1
        else:
            np.testing.assert_allclose(body["proba"], want[j : j + 1], atol=1e-5)
    shed_walls = np.array([r[2] for r in results if r[0] == 503])
    ok_walls = np.array([r[2] for r in results if r[0] == 200])
    print(f"p99 shed {np.percentile(shed_walls, 99) * 1000:.1f} ms, "
          f"p99 accepted {np.percentile(ok_walls, 99) * 1000:.1f} ms")
    # shed without queueing: the typical shed answer comes in under half the typical accepted
    # one (which waits its turn in the queue, 0.2 s a request). An ordering, not a time: on a
    # loaded 2-core machine a shed answer took 0.33 s, over one model request. Latency figures
    # (p99 shed, accepted p99 against capacity) are the benchmark's (benchmarks/overload.py)
    assert np.median(shed_walls) < 0.5 * np.median(ok_walls), \
        (np.median(shed_walls), np.median(ok_walls))
    assert metrics["edgeswitch_shed_total"] == ours and ours >= 20
    assert metrics["edgeswitch_batch_size_sum"] == statuses[200]  # shed ones never ran


def test_ray_serve_queues_no_more_requests_than_the_server_holds():
    pytest.importorskip("ray.serve")
    from edgeswitch.scale.ray_serve import deployment_options

    opts = deployment_options(ServeConfig(max_queue_requests=7, max_ongoing=4))
    assert opts["max_queued_requests"] == 7 and opts["max_ongoing_requests"] == 4


def test_a_batcher_serves_again_after_a_stop():
    """An app whose lifespan runs twice (a test client opened twice) gets a new model pool,
    not 'cannot schedule new futures after shutdown' on every request (found by fuzzing)."""
    import asyncio

    import numpy as np

    from edgeswitch.serving.batcher import DynamicBatcher

    async def twice() -> list[np.ndarray]:
        out = []
        for max_batch in (1, 4):
            batcher = DynamicBatcher(lambda X: X * 2, max_batch=max_batch)
            for _ in range(2):
                await batcher.start()
                out.append(await batcher.submit(np.ones((1, 2), np.float32)))
                await batcher.stop()
        return out

    assert all(np.array_equal(a, np.full((1, 2), 2.0)) for a in asyncio.run(twice()))
