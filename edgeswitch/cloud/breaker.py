"""A circuit breaker: stop calling a cloud that keeps failing, and probe it now and then.

closed --K consecutive failures--> open --reset_s elapsed--> half-open (one probe in flight)
half-open --probe succeeds--> closed;  half-open --probe fails--> open (timer restarts)

While open, calls fail at once, so the edge answers without waiting for a dead cloud.

Apart from that, `hold(s)` honours a server's Retry-After: no call goes out for `s` seconds
(`held_s()` says how long still). A busy cloud is not a failing one, so a hold does not count
towards opening; a half-open probe that is told to wait re-opens the circuit.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    def __init__(self, failures: int = 5, reset_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.clock = clock
        self._state = CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_out = False
        self._held_until = 0.0
        self._lock = threading.Lock()
        # (time, new state), the latest 256, for logs and tests
        self.transitions: deque[tuple[float, str]] = deque(maxlen=256)

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == OPEN and self.clock() - self._opened_at >= self.reset_s:
            self._set(HALF_OPEN)
        return self._state

    def _set(self, state: str) -> None:
        self._state = state
        self._probe_out = False
        self.transitions.append((self.clock(), state))

    def allow(self) -> bool:
        """May a request go out now? In half-open only one probe at a time may."""
        with self._lock:
            if self.clock() < self._held_until:
                return False
            state = self._current()
            if state == CLOSED:
                return True
            if state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._consecutive = 0
            if self._state != CLOSED:
                self._set(CLOSED)

    def failure(self) -> None:
        with self._lock:
            self._consecutive += 1
            state = self._current()
            if state == HALF_OPEN or (state == CLOSED and self._consecutive >= self.failures):
                self._opened_at = self.clock()
                self._set(OPEN)
            elif state == OPEN:
                self._probe_out = False

    def hold(self, seconds: float) -> None:
        """The server asked for no requests for `seconds` (Retry-After)."""
        with self._lock:
            self._held_until = max(self._held_until, self.clock() + seconds)
            if self._current() == HALF_OPEN:  # the probe learnt nothing: wait again
                self._opened_at = self.clock()
                self._set(OPEN)

    def held_s(self) -> float:
        """Seconds the server's Retry-After still forbids requests (0: none)."""
        with self._lock:
            return max(0.0, self._held_until - self.clock())
