"""The server's access log: one line per request, naming the device that made it.

`device=cam-01 method=POST path=/v1/classify status=200 ms=3.1` on the logger
`edgeswitch.access` (INFO), written where `open_access_log` says (`serve-cloud --access-log`).
Never a header, a query string or a body: the bearer token can appear in none of its lines.
A logger nobody configured (Ray Serve replicas, tests in process) drops the lines for free.
"""

from __future__ import annotations

import logging
import sys
import time

from edgeswitch.serving.middleware import DEVICE_KEY

logger = logging.getLogger("edgeswitch.access")


class AccessLog:
    """Outermost but for the metrics, so refused requests get their line too. `device=-`: no
    credential (auth off, an open path, or refused)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500  # 500: the app raised before answering

        async def send_seen(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_seen)
        finally:
            # the path only: a query string is the client's and could hold anything
            logger.info("device=%s method=%s path=%s status=%d ms=%.1f",
                        scope.get(DEVICE_KEY, "-"), scope["method"], _printable(scope["path"]),
                        status, (time.perf_counter() - t0) * 1000)


def _printable(path: str) -> str:
    """A path as one log line can hold it (no newline injected by a client)."""
    return path[:200].encode("unicode_escape").decode("ascii")


def open_access_log(dest: str) -> None:
    """Send the access log to stderr (`-`), a file (appended), or nowhere (`off`)."""
    logger.handlers.clear()
    logger.propagate = False
    if dest == "off":
        logger.setLevel(logging.WARNING)
        return
    handler = logging.StreamHandler(sys.stderr) if dest == "-" else \
        logging.FileHandler(dest, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s",
                                           "%Y-%m-%dT%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
