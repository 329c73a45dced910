"""Alerts against a real HTTP receiver on 127.0.0.1, and a real command: delivered once,
retried with backoff, and never blocking the caller when the receiver is down or slow."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.video.alerts import AlertSender


class Receiver:
    """`with Receiver(fail=n, delay_s=d, gate=e) as r`: answers POSTs at r.url, 503 for the
    first n, after `delay_s` (and, with a `gate` Event, not before it is set); r.posts holds
    (headers, JSON body) of each answered with 200."""

    def __init__(self, fail: int = 0, delay_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.posts: list[tuple[dict, dict]] = []
        self.fail, self.delay_s, self.hits = fail, delay_s, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.hits += 1
                time.sleep(outer.delay_s)
                if gate is not None:
                    gate.wait(60)
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alert"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def closed_port():
    """A loopback port that refuses connections while the block runs: bound by this process
    (so no other test or worker can take it), never listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


EVENT = {"id": "fall-0001", "start_s": 12.0, "end_s": 19.0, "confirmed_by": "cloud"}


def test_one_post_per_alert_with_the_bearer_token():
    with Receiver() as r:
        a = AlertSender(r.url, token="s3cret", retries=2, timeout_s=2)
        a.send(EVENT)
        a.close(time.monotonic() + 10)
    assert len(r.posts) == 1
    headers, body = r.posts[0]
    assert body == EVENT and headers["Authorization"] == "Bearer s3cret"
    assert a.stats.sent == 1 and a.stats.failed == 0


def test_a_failing_receiver_is_retried_with_backoff_then_gets_it():
    with Receiver(fail=2) as r:
        a = AlertSender(r.url, retries=3, timeout_s=2, backoff_s=0.05)
        t0 = time.monotonic()
        a.send(EVENT)
        a.close(time.monotonic() + 10)
    assert r.hits == 3 and len(r.posts) == 1 and a.stats.attempts == 3
    assert time.monotonic() - t0 >= 0.05 + 0.1  # two backoffs: 0.05 s, then 0.1 s


def test_a_receiver_that_is_down_or_slow_never_blocks_the_caller():
    gate = threading.Event()
    with Receiver(gate=gate) as r:  # holds every POST until the gate opens
        a = AlertSender(r.url, retries=0, timeout_s=60)
        for _ in range(5):
            a.send(EVENT)  # queued, not sent inline: an inline send would wait for the gate
        assert a.stats.sent == 0 and a.stats.failed == 0 and a.stats.lost == 0
        gate.set()
        a.close(time.monotonic() + 30)
    assert a.stats.sent == 5 and len(r.posts) == 5

    with closed_port() as port:  # down: the connection is refused
        a = AlertSender(f"http://127.0.0.1:{port}/alert", retries=2, timeout_s=1,
                        backoff_s=0.05)
        for _ in range(5):
            a.send(EVENT)
        a.close(time.monotonic() + 10)
    assert a.stats.sent == 0 and a.stats.failed == 5 and a.stats.attempts == 15
    assert "Connection refused" in " ".join(a.stats.errors), a.stats.errors

    with Receiver(delay_s=3) as r:  # slower than the per-attempt timeout
        a = AlertSender(r.url, retries=0, timeout_s=0.3)
        a.send(EVENT)
        a.close(time.monotonic() + 5)
    assert a.stats.failed == 1 and "timed out" in " ".join(a.stats.errors)


def test_alert_cmd_gets_the_event_on_stdin(tmp_path):
    out = tmp_path / "got.json"
    cmd = (f"{sys.executable} -c \"import sys; open(sys.argv[1], 'w')"
           f".write(sys.stdin.read())\" {out}")
    a = AlertSender(cmd=cmd, retries=0, timeout_s=20)
    a.send(EVENT)
    a.close(time.monotonic() + 30)
    assert json.loads(out.read_text()) == EVENT and a.stats.sent == 1


def test_bad_alert_settings_are_named():
    with pytest.raises(EdgeSwitchError, match="--alert-url must start with http"):
        AlertSender("ftp://x")
    with pytest.raises(EdgeSwitchError, match="--alert-url or --alert-cmd"):
        AlertSender()
