"""Alerts for confirmed fall events, sent from a background thread so the stream never waits.

`--alert-url URL` POSTs the event as JSON (`Authorization: Bearer TOKEN` with a token file);
`--alert-cmd CMD` runs a command with the event's JSON on stdin. Each alert gets bounded
attempts (1 + `retries`) with doubling backoff (0.5 s, 1 s, 2 s, ...) and a per-attempt
timeout; a receiver that is down or slow costs the alert thread time, never the stream. The
queue is bounded too (`max_queued`): past it the new alert is counted as lost, not waited for.
At the end, `close(deadline)` gives the queued alerts until the deadline to go out.
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from edgeswitch.errors import EdgeSwitchError


@dataclass
class AlertStats:
    sent: int = 0
    failed: int = 0          # every attempt failed
    lost: int = 0            # the queue was full, or the end came first
    attempts: int = 0
    errors: list[str] = field(default_factory=list)  # the last few reasons, for the summary


class AlertSender:
    def __init__(self, url: str | None = None, cmd: str | None = None,
                 token: str | None = None, retries: int = 3, timeout_s: float = 5.0,
                 backoff_s: float = 0.5, max_queued: int = 100) -> None:
        if not url and not cmd:
            raise EdgeSwitchError("an alert needs --alert-url or --alert-cmd")
        if url and not url.startswith(("http://", "https://")):
            raise EdgeSwitchError(f"--alert-url must start with http:// or https://, got "
                                  f"{url!r}")
        self.url, self.token = url, token
        self.cmd = shlex.split(cmd) if cmd else None
        if cmd and not self.cmd:
            raise EdgeSwitchError("--alert-cmd is empty")
        self.retries, self.timeout_s, self.backoff_s = retries, timeout_s, backoff_s
        self.stats = AlertStats()
        self._queue: queue.Queue = queue.Queue(max_queued)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="edgeswitch-alerts",
                                        daemon=True)
        self._thread.start()

    def send(self, event: dict) -> None:
        """Queue an alert; never blocks."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.stats.lost += 1

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            body = json.dumps(event).encode()
            targets = ([self._post] if self.url else []) + ([self._run_cmd] if self.cmd else [])
            for target in targets:
                self._deliver(target, body)

    def _deliver(self, target, body: bytes) -> None:
        for attempt in range(self.retries + 1):
            if self._stop.is_set():
                self.stats.lost += 1
                return
            self.stats.attempts += 1
            try:
                target(body)
                self.stats.sent += 1
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then counted
                self.stats.errors = (self.stats.errors + [f"{type(exc).__name__}: {exc}"])[-5:]
            if attempt < self.retries:
                self._stop.wait(self.backoff_s * 2 ** attempt)
        self.stats.failed += 1

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as r:  # noqa: S310
            if not 200 <= r.status < 300:
                raise OSError(f"HTTP {r.status}")

    def _run_cmd(self, body: bytes) -> None:
        try:
            done = subprocess.run(self.cmd, input=body, capture_output=True,
                                  timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise OSError(f"--alert-cmd: {self.cmd[0]} not found") from None
        if done.returncode != 0:
            raise OSError(f"--alert-cmd exited {done.returncode}: "
                          f"{done.stderr.decode(errors='replace')[:200]}")

    def close(self, deadline: float) -> None:
        """Let the queued alerts go out until `deadline` (a monotonic instant), then stop."""
        try:
            self._queue.put(None, timeout=max(0.0, deadline - time.monotonic()))
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():  # a slow receiver: stop retrying, count what is left
            self._stop.set()
            self.stats.lost += self._queue.qsize()
