"""Deadline propagation and cancellation: the edge sends its remaining time with each request;
the server drops queued work whose deadline has passed (or cannot be met) before the model
runs it, and stops working for a client that went away. Measured: with a slow model and
clients that give up, the model runs for fewer than 5% of the abandoned clips."""

import asyncio
import json
import re
import threading
import time
from collections import Counter
from contextlib import asynccontextmanager, contextmanager, suppress

import httpx
import numpy as np
import pytest

from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.cloud.transports import DEADLINE_HEADER
from edgeswitch.cloud.wire import encode_clips
from edgeswitch.config import RuntimeConfig, ServeConfig
from edgeswitch.serving.app import create_app
from edgeswitch.serving.batcher import DynamicBatcher
from edgeswitch.serving.overload import TICKET, Shed, Ticket, parse_deadline
from edgeswitch.serving.server import ServerProcess, bind_socket
from tests.edge_run import scrape

CLASSES = ("a", "b", "c")


class _Model:
    """A backend that takes `delay_s` per model run and counts the clips it ran."""

    def __init__(self, delay_s: float = 0.0, inner=None) -> None:
        self.delay_s, self.inner, self.ran = delay_s, inner, []
        self.classes_ = tuple(inner.classes_) if inner is not None else CLASSES
        self.name = "slow"
        self.clip_shape_ = None if inner is not None else (4, 2)

    def predict_proba(self, X):
        time.sleep(self.delay_s)
        self.ran.append(len(X))
        if self.inner is not None:
            return self.inner.predict_proba(X)
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


@asynccontextmanager
async def _in_process(app):
    """httpx's ASGI transport with the app's lifespan (the batcher) running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield c


@contextmanager
def _uvicorn(app):
    """A real uvicorn server on a loopback port, in a thread of this process (so a test can
    serve a slow backend and count its runs)."""
    import uvicorn

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    t_end = time.monotonic() + 20
    while not server.started and time.monotonic() < t_end:
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _clips(n: int = 1) -> dict:
    return {"clips": encode_clips(np.zeros((n, 4, 2), np.float32))}


def test_the_deadline_header_is_relative_milliseconds():
    assert parse_deadline(None, 10.0) is None
    assert parse_deadline("250", 10.0) == pytest.approx(10.25)
    assert parse_deadline("-5", 10.0) == pytest.approx(9.995)  # already passed
    for bad in ("soon", "nan", "inf", ""):
        with pytest.raises(ValueError):
            parse_deadline(bad, 10.0)


def test_a_passed_deadline_is_a_504_without_a_model_run_and_a_bad_one_a_400():
    model = _Model()

    async def main():
        async with _in_process(create_app(model)) as c:
            r = await c.post("/v1/classify", json=_clips(), headers={DEADLINE_HEADER: "0"})
            assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
            assert "retry-after" not in r.headers
            r = await c.post("/v1/classify", json=_clips(), headers={DEADLINE_HEADER: "soon"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_deadline"
            assert DEADLINE_HEADER in r.json()["error"]["message"]
            r = await c.post("/v1/classify", json=_clips(), headers={DEADLINE_HEADER: "5000"})
            assert r.status_code == 200
            return (await c.get("/metrics")).text

    text = asyncio.run(main())
    assert model.ran == [1]  # only the request with time left ran
    assert 'edgeswitch_shed_total{reason="deadline"} 1.0' in text


def test_the_batcher_drops_queued_work_that_expired_or_whose_client_left():
    """Behind a slow run: one queued request's deadline passes, another's client leaves, a
    third can still be answered. Only the first run and the third request use the model."""
    model = _Model(delay_s=0.2)

    async def submit(b, ticket):
        TICKET.set(ticket)  # this task's own context: what Admission sets per request
        return await b.submit(np.zeros((1, 4, 2)))

    async def main():
        b = DynamicBatcher(model.predict_proba, max_batch=8)
        await b.start()
        first = asyncio.ensure_future(submit(b, Ticket()))
        await asyncio.sleep(0.05)  # the first run is under way
        late = asyncio.ensure_future(submit(b, Ticket(time.monotonic() + 0.1)))
        leaving = Ticket()
        left = asyncio.ensure_future(submit(b, leaving))
        kept = asyncio.ensure_future(submit(b, Ticket(time.monotonic() + 5)))
        await asyncio.sleep(0.05)
        leaving.gone.set()
        results = await asyncio.gather(first, late, left, kept, return_exceptions=True)
        await b.stop()
        return results

    first, late, left, kept = asyncio.run(main())
    assert first.shape == (1, 3) and kept.shape == (1, 3)
    assert isinstance(late, Shed) and late.reason == "deadline" and late.status == 504
    assert isinstance(left, Shed) and left.reason == "disconnected"
    assert model.ran == [1, 1]


def test_a_client_gone_before_its_body_was_read_is_shed_not_a_bad_request():
    """A busy server may take up a request only after its client left: the ASGI server then
    reports the disconnect before the body. That request is shed as disconnected (a 499 that
    nobody reads), unrun, and never parsed as the empty body of a bad request."""
    model = _Model()
    app = create_app(model)
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/classify",
             "raw_path": b"/v1/classify", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"900")],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    async def main():
        async with _in_process(app) as c:
            await app(scope, receive, send)
            return (await c.get("/metrics")).text

    text = asyncio.run(main())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499
    assert model.ran == []
    assert 'edgeswitch_shed_total{reason="disconnected"} 1.0' in text
    assert "edgeswitch_errors_total{" not in text  # no client error counted


def test_work_that_cannot_end_by_its_deadline_is_dropped_at_once():
    """After a 0.15 s model run, a request with 50 ms left cannot be answered in time: it gets
    504 at once, unrun, even while another model run holds the batcher (it is not queued
    behind that run to be dropped afterwards)."""
    started, release = threading.Event(), threading.Event()

    class _Held(_Model):
        def predict_proba(self, X):  # the second run (no deadline) waits for the test
            if len(self.ran) == 1 and not started.is_set():
                started.set()
                release.wait(30)
            return super().predict_proba(X)

    model = _Held(delay_s=0.15)

    async def main():
        async with _in_process(create_app(model)) as c:
            assert (await c.post("/v1/classify", json=_clips())).status_code == 200
            held = asyncio.ensure_future(c.post("/v1/classify", json=_clips()))
            try:
                assert await asyncio.to_thread(started.wait, 30)  # the held run is under way
                # a request queued behind the held run would wait for it: 20 s, then fail
                r = await asyncio.wait_for(
                    c.post("/v1/classify", json=_clips(), headers={DEADLINE_HEADER: "50"}), 20)
                still_held = not held.done()
            finally:
                release.set()
            ok = await c.post("/v1/classify", json=_clips(), headers={DEADLINE_HEADER: "2000"})
            return r, still_held, await held, ok

    r, still_held, held, ok = asyncio.run(main())
    assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
    assert still_held  # answered while the other run was still under way
    assert held.status_code == 200 and ok.status_code == 200
    assert model.ran == [1, 1, 1]  # the first, the held one and the last: never the 504


@pytest.mark.slow
def test_clients_that_give_up_cost_no_model_run_on_a_real_server(bm_files, bm_models,
                                                                  basicmotions):
    """`serve-cloud --fault sleep:0.3` (a slow model) and 48 clients that send a request, wait
    0.1 s and give up without saying so (no deadline header: they close the connection): the
    server notices each disconnect and runs the model for fewer than 5% of the abandoned
    clips; then it still answers right. A client's 0.1 s starts once its whole request is
    sent, so on a busy machine none gives up before the server could see its request."""
    X = basicmotions.X[:1].astype(np.float32)
    body = json.dumps({"clips": encode_clips(X)}).encode()
    outcomes = []

    async def impatient(host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: %s\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % (host.encode(), len(body)) + body)
        await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.readline(), 0.1)
            outcomes.append(answer.split(b" ")[1].decode() if answer else "closed")
        except TimeoutError:
            outcomes.append("gave up")
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()

    async def main(url):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):  # three waves of 16 concurrent clients
            await asyncio.gather(*(impatient(host, int(port)) for _ in range(16)))

    with ServerProcess(bm_files["cloud"], faults=("sleep:0.3",)) as server:
        asyncio.run(main(server.url))
        metrics = _decided(server.url, 48)  # the server has decided each request's fate
        ran = metrics["edgeswitch_batch_size_sum"]
        abandoned = Counter(outcomes)["gave up"]
        print(f"abandoned {abandoned} clips, the model ran {ran:.0f} of them")
        assert abandoned == 48
        assert ran < 0.05 * abandoned
        assert metrics["edgeswitch_shed_total"] == abandoned  # each counted, as disconnected
        r = httpx.post(server.url + "/v1/classify", json={"clips": encode_clips(X)}, timeout=5)
        np.testing.assert_allclose(r.json()["proba"], bm_models[1].predict_proba(X), atol=1e-5)


def _decided(url: str, n: int, patience_s: float = 120.0) -> dict:
    """The server's metrics once it has decided the fate of `n` requests (each run by the model
    or shed), polled: how soon a busy machine gets there is not what is under test. Bounded:
    after `patience_s` it returns what it has, and the test's counts say what is missing."""
    until = time.monotonic() + patience_s
    while True:
        metrics = scrape(url)
        done = metrics.get("edgeswitch_batch_size_sum", 0) + metrics.get("edgeswitch_shed_total", 0)
        if done >= n or time.monotonic() > until:
            return metrics
        time.sleep(0.1)


@pytest.mark.slow
def test_edge_clients_with_deadlines_cost_a_slow_backend_almost_no_runs(bm_models,
                                                                        basicmotions):
    """A backend taking 0.15 s per model run, served by uvicorn, and 12 edge clients
    (RemoteCloud, 60 ms deadline: each request says so in its header) for 2 s: every call
    falls back by its deadline, and the model runs for fewer than 5% of the abandoned clips.
    The first model run is held for 1 s: no answer can come from the server then, so every call
    that returns meanwhile gave up by its own deadline."""
    started, release = threading.Event(), threading.Event()

    class _HeldFirst(_Model):
        def predict_proba(self, X):
            if not started.is_set():
                started.set()
                release.wait(30)
            return super().predict_proba(X)

    model = _HeldFirst(delay_s=0.15, inner=bm_models[1])
    X = basicmotions.X.astype(np.float32)
    # the breaker stays closed: every call reaches the server, to be dropped there
    runtime = RuntimeConfig(deadline_ms=60, retries=0, breaker_failures=10**6)
    replies, walls = [], []

    def device(cloud, i, until):
        j = i
        while time.monotonic() < until:
            t0 = time.monotonic()
            replies.append((cloud.request(X[j % len(X) : j % len(X) + 1]), release.is_set()))
            walls.append(time.monotonic() - t0)
            j += 12

    with _uvicorn(create_app(model, ServeConfig(max_batch=8))) as url, \
            RemoteCloud(url, model.classes_, runtime) as cloud:
        until = time.monotonic() + 2
        threads = [threading.Thread(target=device, args=(cloud, i, until)) for i in range(12)]
        for t in threads:
            t.start()
        try:
            assert started.wait(30), "no request reached the model"
            time.sleep(1.0)  # the clients keep calling while the model run is held
            during_hold = sum(1 for _, after in replies if not after)
        finally:
            release.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        time.sleep(0.3)  # the last model run ends
        metrics = httpx.get(url + "/metrics").text
    replies = [r for r, _ in replies]
    reasons = Counter(r.reason for r in replies)
    abandoned = sum(not r.ok for r in replies)
    print(f"{len(replies)} calls ({during_hold} while the run was held) {dict(reasons)}; "
          f"model ran {sum(model.ran)} clips in {len(model.ran)} runs; "
          f"call p90 {np.percentile(walls, 90) * 1000:.0f} ms, "
          f"slowest {max(walls) * 1000:.0f} ms")
    assert abandoned == len(replies) > 50  # no answer can come in 60 ms from this backend
    assert set(reasons) == {FallbackReason.TIMEOUT}  # the server's 504s included
    # while the server could answer nothing, each of the 12 clients still got its calls back
    # (a client that waited for the server would have none until the release)
    assert during_hold >= 12
    assert sum(model.ran) < 0.05 * abandoned
    # the server dropped work by its deadline (its 504 may come after the client gave up)
    shed = re.search(r'edgeswitch_shed_total\{reason="deadline"\} (\S+)', metrics)
    assert shed and float(shed.group(1)) >= 1, metrics
