"""The app's ASGI middleware, one concern each, outermost first: request metrics, bearer
auth, the JSON content type, admission of model work (overload, deadlines, disconnects), the
body size limit. They run before FastAPI reads anything, so
an unauthenticated or oversized request costs the server no parsing and no model run.

Pure ASGI, not Starlette's BaseHTTPMiddleware: that runs the app in a task behind a memory
stream (a cost on every request) and cannot hand the app a body it has already read, which
the size limit needs (a chunked upload has no Content-Length to trust, so it is read here up to
the limit and replayed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection

from edgeswitch.cloud.transports import DEADLINE_HEADER
from edgeswitch.serving import overload
from edgeswitch.serving.credentials import Credentials
from edgeswitch.serving.metrics import ServerMetrics
from edgeswitch.serving.responses import error_response

BEARER = {"WWW-Authenticate": "Bearer"}


def header(scope, name: bytes) -> str | None:
    """A request header's value (the last one, if repeated), or None."""
    value = None
    for key, v in scope.get("headers", ()):
        if key.lower() == name:
            value = v
    return None if value is None else value.decode("latin-1")


async def refuse(scope, receive, send, metrics: ServerMetrics, status: int, message: str,
                 code: str, headers: dict[str, str] | None = None) -> None:
    """Answer with the error body instead of passing the request on, and count it."""
    metrics.errors.labels(code).inc()
    await error_response(status, message, code, headers)(scope, receive, send)


class RequestMetrics:
    """Requests by endpoint and status, and their latency, refused ones included (so it runs
    outermost). Paths the app does not serve share the endpoint label "other"."""

    def __init__(self, app, metrics: ServerMetrics, endpoints: Collection[str]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, frozenset(endpoints)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, t0 = scope["path"], time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_counted(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            endpoint = path if path in self.endpoints else "other"
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


class BearerAuth:
    """Every path but the open ones needs `Authorization: Bearer <token>` (401 otherwise; the
    scheme is case-insensitive, RFC 7235) naming a device of `credentials`. The device's name
    goes into the scope (DEVICE_KEY, for the access log), into a response header (DEVICE_HEADER:
    the edge logs which credential the server took) and into the per-device request counter."""

    def __init__(self, app, credentials: Credentials, metrics: ServerMetrics,
                 open_paths: Collection[str]) -> None:
        self.app, self.credentials, self.metrics = app, credentials, metrics
        self.open_paths = frozenset(open_paths)
        self.labels = DeviceLabels()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            return await self.app(scope, receive, send)
        device, problem = self.identify(header(scope, b"authorization") or "")
        if device is None:
            self.metrics.device_requests.labels("unauthenticated", "4xx").inc()
            return await refuse(scope, receive, send, self.metrics, 401, problem,
                                "unauthorized", BEARER)
        scope[DEVICE_KEY] = device
        name = device.encode()

        async def send_named(message) -> None:
            if message["type"] == "http.response.start":
                message = message | {"headers": [*message.get("headers", ()),
                                                  (DEVICE_HEADER, name)]}
                self.metrics.device_requests.labels(
                    self.labels.of(device), f"{message['status'] // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, send_named)

    def identify(self, auth: str) -> tuple[str | None, str]:
        """(device, "") or (None, what is wrong). Never echoes the token."""
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None, "missing bearer token (Authorization: Bearer ...)"
        device = self.credentials.device(token.strip())
        return (device, "") if device is not None else (None, "invalid bearer token")


DEVICE_KEY = "edgeswitch.device"      # scope key: the authenticated device's name
DEVICE_HEADER = b"x-edgeswitch-device"
MAX_DEVICE_LABELS = 100               # metric series per device name, then "other"


class DeviceLabels:
    """The metrics label of a device: its own name for the first MAX_DEVICE_LABELS names seen
    in this process (reloads included), "other" after that, so a huge fleet cannot blow up
    the metrics."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_DEVICE_LABELS if limit is None else limit
        self.seen: set[str] = set()

    def of(self, device: str) -> str:
        if device in self.seen:
            return device
        if len(self.seen) < self.limit:
            self.seen.add(device)
            return device
        return "other"


class JsonContentType:
    """A POST must say `Content-Type: application/json` (415 otherwise)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            ctype = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return await refuse(scope, receive, send, self.metrics, 415,
                                    f"content type must be application/json, got "
                                    f"{ctype or 'none'}", "unsupported_media_type")
        await self.app(scope, receive, send)


class BodyLimit:
    """A POST body over `max_body` bytes is a 413: at once when its Content-Length says so,
    else once that many bytes have arrived. The app gets the body replayed from memory. A model
    request whose client leaves before its body is read is shed (Admission counts it)."""

    def __init__(self, app, max_body: int, metrics: ServerMetrics) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await refuse(scope, receive, send, self.metrics, 413,
                                f"request body of {int(length)} bytes exceeds the limit of "
                                f"{self.max_body}", "too_large")
        body = await self.read(receive)
        if body is None:
            return await refuse(scope, receive, send, self.metrics, 413,
                                f"request body exceeds the limit of {self.max_body} bytes",
                                "too_large")
        if overload.current().gone.is_set():
            # the client left before its body was read (Admission saw the disconnect): shed
            # it as gone; parsing what arrived would count a bad request the client never sent
            raise overload.gone()
        await self.app(scope, Replay(body, receive), send)

    async def read(self, receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class Replay:
    """An ASGI `receive` that hands over a body already read, then defers to the real one
    (which reports the client's disconnect)."""

    def __init__(self, body: bytes, receive) -> None:
        self.body, self.receive, self.sent = body, receive, False

    async def __call__(self) -> dict:
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self.receive()


class Admission:
    """Bounded model work (see serving.overload). A POST to one of `paths` beyond `limit`
    held at once gets 503 `overloaded` with `Retry-After` at once, its body unread; an admitted
    one carries a Ticket (its `X-Edgeswitch-Deadline-Ms`, its connection watched once its body
    is read) to the batcher. Work shed later (clips over their bound, a deadline passed, the
    client gone) is answered here, and every shed request is counted by reason."""

    def __init__(self, app, limit: int, retry_after_s: int, metrics: ServerMetrics,
                 paths: Collection[str]) -> None:
        self.app, self.limit, self.metrics = app, limit, metrics
        self.retry = {"Retry-After": str(retry_after_s)}
        self.paths, self.held = frozenset(paths), 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" \
                or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.held >= self.limit:
            return await self.shed(scope, receive, send, overload.overloaded(
                "requests", f"{self.held} requests in progress, the limit is {self.limit}"))
        try:
            deadline = overload.parse_deadline(
                header(scope, DEADLINE_HEADER.lower().encode()), time.monotonic())
        except ValueError:
            return await refuse(scope, receive, send, self.metrics, 400,
                                f"{DEADLINE_HEADER} must be a number of milliseconds",
                                "bad_deadline")
        ticket = overload.Ticket(deadline)
        watcher: list[asyncio.Task] = []

        async def receive_watched() -> dict:
            message = await receive()
            if message["type"] == "http.disconnect":
                ticket.gone.set()
            elif not message.get("more_body") and not watcher:  # the body is read: watch
                watcher.append(asyncio.create_task(overload.watch_disconnect(receive, ticket)))
            return message

        self.held += 1
        reset = overload.TICKET.set(ticket)
        try:
            await self.app(scope, receive_watched, send)
        except overload.Shed as shed:
            await self.shed(scope, receive, send, shed)
        finally:
            self.held -= 1
            overload.TICKET.reset(reset)
            for task in watcher:
                task.cancel()

    async def shed(self, scope, receive, send, shed: overload.Shed) -> None:
        self.metrics.shed.labels(shed.reason).inc()
        headers = self.retry if shed.status == 503 else None
        await error_response(shed.status, shed.message, shed.code, headers)(scope, receive, send)
