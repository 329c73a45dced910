"""Work the server sheds instead of queueing it without bound or running it for nobody.

- requests: `middleware.Admission` holds at most `max_queue_requests` model requests at once;
  the next one gets 503 + Retry-After before its body is read (no parsing, no model work).
- clips: the batcher (or Ray Serve's runner) holds at most `max_queue_clips` clips awaiting a
  model run (`ClipBound`); a request that would pass it gets the same 503.
- deadlines: a client says how long it will still wait (`X-Edgeswitch-Deadline-Ms`, relative
  milliseconds, so the two clocks need not agree); work whose deadline has passed, or would
  pass before even the fastest recent model run could end, is dropped before the model runs
  (504 `deadline_exceeded`).
- disconnects: once a request's body is read its connection is watched; when the client goes
  away, its pending model work is cancelled (the batcher skips it) and nothing is answered.

A request's `Ticket` travels from the middleware to the batcher in a context variable, so the
routes in between need not know about any of this.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

SHED_REASONS = ("queue_requests", "queue_clips", "deadline", "disconnected")  # metric labels


class Shed(BaseException):  # noqa: N818 - not an error of the server: a refusal it chose
    """Work refused or dropped, with the answer that says so. A BaseException on purpose: it
    must pass the route's handler of backend failures (which makes any Exception a 500) up to
    `Admission`, which answers it and counts it by `reason` (one of SHED_REASONS)."""

    def __init__(self, reason: str, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.status, self.code, self.message = reason, status, code, message


def overloaded(what: str, detail: str) -> Shed:
    return Shed(f"queue_{what}", 503, "overloaded", f"server overloaded: {detail}; retry later")


def expired() -> Shed:
    return Shed("deadline", 504, "deadline_exceeded",
                "the request's deadline passed (or would, before a model run could end) "
                "before the model ran it")


def gone() -> Shed:
    # 499 (nginx's "client closed request"): nobody reads it, but the metrics tell it apart
    return Shed("disconnected", 499, "client_disconnected", "the client went away")


@dataclass
class Ticket:
    """One admitted model request: its deadline and whether its client is still there."""

    deadline: float | None = None  # a time.monotonic() instant; None: the client set none
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def expired(self, margin_s: float = 0.0) -> bool:
        """Past the deadline, or within `margin_s` of it (an answer that needs a model run
        of at least that long cannot arrive in time)."""
        return self.deadline is not None and time.monotonic() + margin_s >= self.deadline

    def check(self, margin_s: float = 0.0) -> None:
        """Raise Shed when this request's work should not start."""
        if self.gone.is_set():
            raise gone()
        if self.expired(margin_s):
            raise expired()


TICKET: ContextVar[Ticket | None] = ContextVar("edgeswitch_ticket", default=None)


def current() -> Ticket:
    """This request's ticket (a blank one outside Admission: no deadline, never gone)."""
    return TICKET.get() or Ticket()


def parse_deadline(value: str | None, now: float) -> float | None:
    """The monotonic instant an `X-Edgeswitch-Deadline-Ms` value (relative ms) names; None
    when absent. ValueError when it is not a finite number."""
    if value is None:
        return None
    ms = float(value)
    if ms != ms or ms in (float("inf"), float("-inf")):
        raise ValueError(value)
    return now + ms / 1000


async def watched(work: Awaitable, ticket: Ticket):
    """The result of `work` (a future or coroutine), unless the client goes away first: then
    the work is cancelled (a queued batcher item is skipped) and `gone()` raised."""
    task = asyncio.ensure_future(work)
    gone_wait = asyncio.ensure_future(ticket.gone.wait())
    try:
        await asyncio.wait({task, gone_wait}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        gone_wait.cancel()
    if not task.done():
        task.cancel()
        raise gone()
    return task.result()


class ClipBound:
    """Clips held for a model run (queued or running, while their request waits): `take(n)`
    raises the 503 Shed when n more would pass `limit`; `give(n)` when they leave."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held = limit, 0

    def take(self, n: int) -> None:
        if self.held + n > self.limit:
            raise overloaded("clips", f"{self.held} clips queued, the limit is {self.limit}")
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n

    def release_when_done(self, future: asyncio.Future, n: int) -> None:
        future.add_done_callback(lambda _: self.give(n))


async def watch_disconnect(receive: Callable[[], Awaitable[dict]], ticket: Ticket) -> None:
    """Set `ticket.gone` when the connection reports `http.disconnect` (call it only after the
    body was read: later messages are the disconnect, or the end of the response)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ticket.gone.set()
            return
        if not message.get("body") and not message.get("more_body"):
            await asyncio.Event().wait()  # a server that repeats empty bodies: stop polling
