"""The cloud over the network, for an edge that must answer every clip by its deadline.

`RemoteCloud.request(X, deadline)` never blocks past `deadline` (plus scheduling jitter): each
attempt is cancelled when the deadline comes (and tells the server its remaining time, so the
server drops it unrun once the edge has stopped waiting), retries back off with full jitter and
are skipped when their wait would pass the deadline, and a circuit breaker fails calls at once
while the cloud is known to be down. An overloaded cloud (429/503) that says when to come back
(Retry-After) gets no request until then: calls fall back at once, reason `overloaded`.
It returns a `CloudReply`, with probabilities or the reason there are none; the hybrid then
keeps the edge answer, flagged unverified.

The HTTP work runs on a private asyncio loop in a daemon thread, so the hybrid stays plain
synchronous code and a hung connection can always be abandoned.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import ssl
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgeswitch.cloud.breaker import CircuitBreaker
from edgeswitch.cloud.client import CloudReply
from edgeswitch.cloud.payloads import ChatPayload, SensorChat
from edgeswitch.cloud.reasons import CloudFailure, FallbackReason
from edgeswitch.cloud.transports import NativeTransport, OpenAITransport
from edgeswitch.config import RuntimeConfig, validate
from edgeswitch.data.clips import check_clips
from edgeswitch.errors import EdgeSwitchError, ModelError


class _LoopThread:
    """An asyncio loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="edgeswitch-cloud",
                                       daemon=True)
        self.thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


def tls_context(verify: bool | str | ssl.SSLContext,
                client_cert: tuple[str, str] | None = None) -> bool | ssl.SSLContext:
    """What httpx verifies the server with (and shows as this client's certificate)."""
    if isinstance(verify, str):  # a CA bundle or a self-signed certificate to trust
        if not Path(verify).is_file():
            raise EdgeSwitchError(f"certificate file not found: {verify}")
        try:
            verify = ssl.create_default_context(cafile=verify)
        except ssl.SSLError as exc:
            raise EdgeSwitchError(f"{verify} is not a PEM certificate: {exc}") from None
    if client_cert is None:
        return verify
    cert, key = client_cert
    for f in (cert, key):
        if not f or not Path(f).is_file():
            raise EdgeSwitchError("a client certificate needs both --tls-client-cert and "
                                  f"--tls-client-key as files; not found: {f}")
    if verify is False:
        raise EdgeSwitchError("a client certificate needs a verified server (verify=False)")
    ctx = ssl.create_default_context() if verify is True else verify
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise EdgeSwitchError(f"cannot use client certificate {cert} with key {key}: "
                              f"{exc}") from None
    return ctx


class RemoteCloud:
    """A `CloudClient` for an edgeswitch server (`protocol="native"`) or any OpenAI-compatible
    chat endpoint (`protocol="openai"`, model name `model`). `payload` says what a chat
    request carries (default `SensorChat`: sensor clips as `.npy` files; `video.vlm.VideoChat`:
    video clips as JPEG frames); giving one implies the chat protocol. `verify`: True (the
    system CAs), a CA or self-signed certificate file to trust, or an `ssl.SSLContext`.
    `client_cert`: (certificate, key) PEM files this client shows a server that asks for one
    (mutual TLS, `serve-cloud --tls-ca`)."""

    def __init__(self, url: str, classes: tuple[str, ...], cfg: RuntimeConfig | None = None,
                 token: str | None = None, model: str | None = None,
                 verify: bool | str | ssl.SSLContext = True, name: str | None = None,
                 seed: int = 0, payload: ChatPayload | None = None,
                 client_cert: tuple[str, str] | None = None) -> None:
        self.cfg = validate(cfg or RuntimeConfig())
        self.sends_sensor_clips = payload is None or isinstance(payload, SensorChat)
        if not url.startswith(("http://", "https://")):
            raise EdgeSwitchError(f"cloud URL must start with http:// or https://, got {url!r}")
        self.url = url.rstrip("/")
        self.classes_ = tuple(classes)
        self.name = name or f"remote:{self.url}"
        verify = tls_context(verify, client_cert)
        if self.cfg.protocol == "openai" or payload is not None:
            if not model:
                raise EdgeSwitchError("the openai protocol needs the served model's name")
            self.transport = OpenAITransport(self.url, self.classes_, model,
                                             payload or SensorChat(self.classes_), token, verify)
        else:
            self.transport = NativeTransport(self.url, self.classes_, token, verify)
        self.transport.http.client_cert = client_cert is not None
        self.breaker = CircuitBreaker(self.cfg.breaker_failures, self.cfg.breaker_reset_s)
        self.rng = random.Random(seed)
        self._loop: _LoopThread | None = None
        self._loop_lock = threading.Lock()

    @property
    def deadline_s(self) -> float:
        return self.cfg.deadline_ms / 1000

    def request(self, X, deadline: float | None = None) -> CloudReply:
        """Probabilities for the clips `X` by `deadline` (a `time.monotonic()` instant), or the
        reason there are none; never raises. The default deadline is the configured one per
        round of requests: one for a native batch, ceil(n / concurrency) where a chat payload
        sends at most `concurrency` clips at once (a VLM answering clip after clip)."""
        t0 = time.monotonic()
        try:
            X = self.transport.prepare(X)
        except EdgeSwitchError as exc:  # clips this client cannot send: nothing went out
            return CloudReply(None, FallbackReason.ERROR, 0, 0.0, str(exc))
        if deadline is None:
            deadline = t0 + self.deadline_s * self.transport.waves(len(X))
        future = self._loop_thread().submit(self._request(X, deadline))
        try:  # the coroutine stops itself at the deadline; this is the belt to its braces
            reply = future.result(timeout=max(0.0, deadline - time.monotonic()) + 0.02)
        except concurrent.futures.TimeoutError:
            future.cancel()
            reply = CloudReply(None, FallbackReason.TIMEOUT, 1, (time.monotonic() - t0) * 1000)
        if reply.reason == FallbackReason.TIMEOUT:  # whichever timer fired: the call's budget
            said = f"no answer within {deadline - t0:.3g} s"
            if reply.detail.startswith("HTTP "):  # the server said so (504 deadline_exceeded)
                said += f" ({reply.detail})"
            reply = replace(reply, detail=said)
        return reply

    def predict_proba(self, X) -> np.ndarray:
        """`CloudClient` form: probabilities, or ModelError saying why the cloud failed. Sensor
        clips are checked here first (the model contract: bad input fails with a DataError
        naming the problem, before a round trip; text that parses as numbers is refused too)."""
        # bad input raises here, naming the problem, before any round trip
        X = self.transport.prepare(check_clips(X) if self.sends_sensor_clips else X)
        reply = self.request(X)
        if not reply.ok:
            raise ModelError(f"{self.name} did not answer: {reply.reason} {reply.detail}"
                             .strip())
        return reply.proba

    async def _request(self, X: np.ndarray, deadline: float) -> CloudReply:
        t0, attempts, failure = time.monotonic(), 0, None

        def reply(proba=None) -> CloudReply:
            reason = None if proba is not None else \
                (failure.reason if failure else FallbackReason.TIMEOUT)
            return CloudReply(proba, reason, attempts, (time.monotonic() - t0) * 1000,
                              failure.detail if failure and proba is None else "",
                              self.transport.http.device)

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return reply()
            held = self.breaker.held_s()
            if held > 0:  # the cloud said when to come back (Retry-After): not before
                failure = failure or CloudFailure(
                    FallbackReason.OVERLOADED, f"the cloud asked for no requests for "
                    f"{held:.3g} s more (Retry-After)", retryable=False)
                return reply()
            if not self.breaker.allow():  # keep the real reason if an attempt already failed
                failure = failure or CloudFailure(FallbackReason.CIRCUIT_OPEN,
                                                  "the cloud failed recently")
                return reply()
            attempts += 1
            try:
                proba = await asyncio.wait_for(self.transport.send(X, remaining), remaining)
            except TimeoutError:
                failure = CloudFailure(FallbackReason.TIMEOUT)
            except CloudFailure as exc:
                failure = exc
            except asyncio.CancelledError:
                self.breaker.failure()  # a probe must never stay out forever
                raise
            except Exception as exc:  # noqa: BLE001 - an unexpected client bug is a failure too
                failure = CloudFailure(FallbackReason.ERROR, f"{type(exc).__name__}: {exc}",
                                       retryable=False)
            else:
                self.breaker.success()
                return reply(proba)
            if failure.retry_after_s is not None:  # busy, not broken: hold, then fall back
                self.breaker.hold(failure.retry_after_s)
                return reply()
            self.breaker.failure()
            if not failure.retryable or attempts > self.cfg.retries:
                return reply()
            cap = min(self.cfg.backoff_max_ms, self.cfg.backoff_ms * 2 ** (attempts - 1))
            wait = self.rng.uniform(0, cap) / 1000
            if time.monotonic() + wait >= deadline:
                return reply()
            await asyncio.sleep(wait)

    def _loop_thread(self) -> _LoopThread:
        with self._loop_lock:
            if self._loop is None:
                self._loop = _LoopThread()
            return self._loop

    def served_models(self, timeout_s: float = 10.0) -> list[str]:
        """The model names the server lists (GET /v1/models), through this client's own HTTP
        path (token, TLS): how a run records which model answered."""
        future = self._loop_thread().submit(
            self.transport.http.get(self.transport.models_path, timeout_s))
        try:
            body = future.result(timeout_s + 1)
            return [str(m["id"]) for m in body["data"]]
        except CloudFailure as exc:
            raise EdgeSwitchError(f"cannot ask the cloud server {self.url} which model it "
                                  f"serves: {exc.reason} {exc.detail}".strip()) from None
        except (KeyError, TypeError):
            raise EdgeSwitchError(f"the cloud server {self.url} answered /v1/models with no "
                                  "model list") from None
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise EdgeSwitchError(f"the cloud server {self.url} did not list its models "
                                  f"within {timeout_s:g} s") from None

    def close(self) -> None:
        with self._loop_lock:
            if self._loop is None:
                return
            try:
                self._loop.submit(self.transport.aclose()).result(5)
            except Exception:  # noqa: BLE001 - closing must never leave the thread behind
                pass
            finally:
                self._loop.stop()
                self._loop = None
                self.transport.reset()

    def __enter__(self) -> RemoteCloud:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
