"""One attempt to get cloud probabilities over HTTP (httpx): native `/v1/classify`, or OpenAI
chat completions with a pluggable payload (`cloud.payloads`: sensor clips as `.npy` files,
video clips as JPEG frames). Deadlines, retries and the circuit breaker live one level up, in
`remote.py`; a transport only turns every way a call can go wrong into a `CloudFailure` with
a `FallbackReason`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl
from urllib.parse import urlsplit

import numpy as np

from edgeswitch.cloud.answers import check_reply, proba_from_chat
from edgeswitch.cloud.payloads import ChatPayload
from edgeswitch.cloud.reasons import CloudFailure, FallbackReason, status_failure

# each request says how long this client will still wait for it, in relative milliseconds (no
# clock sync needed): the server drops it unrun once that has passed (serving.overload)
DEADLINE_HEADER = "X-Edgeswitch-Deadline-Ms"


class _Http:
    """The HTTP side both transports share: one lazily made `httpx.AsyncClient` (bearer token,
    TLS verification), the deadline header on every call, and every transport error, bad
    status (with its Retry-After) or non-JSON reply as a `CloudFailure`."""

    def __init__(self, base_url: str, token: str | None, verify: bool | ssl.SSLContext) -> None:
        import httpx  # noqa: F401 - imported now, not inside the first clip's deadline

        self.base_url, self.token, self.verify = base_url.rstrip("/"), token, verify
        self._client = None
        # the device the server last said this client's token belongs to: one token per
        # client, so one name (None until a server that names devices answered)
        self.device: str | None = None
        self.client_cert = False  # whether `verify` carries a client certificate (mutual TLS)

    def reset(self) -> None:
        self._client = None

    def client(self):
        import httpx

        if self._client is None:  # created lazily, inside the event loop that will use it
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                             verify=self.verify)
        return self._client

    async def post(self, path: str, body: dict, timeout_s: float):
        """The reply's JSON, or CloudFailure."""
        return await self._call("POST", path, timeout_s, body)

    async def get(self, path: str, timeout_s: float):
        return await self._call("GET", path, timeout_s)

    async def _call(self, method: str, path: str, timeout_s: float, body: dict | None = None):
        import httpx

        deadline = {DEADLINE_HEADER: str(max(0, int(timeout_s * 1000)))}
        try:
            r = await self.client().request(method, path, json=body, timeout=timeout_s,
                                            headers=deadline)
        except httpx.TimeoutException:
            raise CloudFailure(FallbackReason.TIMEOUT, "no reply in time") from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-reply, TLS
            raise CloudFailure(FallbackReason.CONNECTION, _transport_detail(
                exc, self.base_url.startswith("https:"), self.client_cert)) from None
        self.device = r.headers.get(DEVICE_HEADER, self.device)
        if r.status_code != 200:
            message, code = _error(r.text)
            raise status_failure(r.status_code, message, r.headers.get("retry-after"), code)
        try:
            return r.json()
        except ValueError:
            raise CloudFailure(FallbackReason.MALFORMED, "reply is not JSON") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


DEVICE_HEADER = "x-edgeswitch-device"


def _transport_detail(exc: Exception, https: bool, client_cert: bool) -> str:
    """What went wrong on the wire. A TLS server that refuses the client's certificate (mutual
    TLS, TLS 1.3) closes the connection after the handshake without a word (asyncio servers
    send no alert), so the client sees only a disconnect: say what that most likely means."""
    import httpx

    said = f"{type(exc).__name__}: {exc}".strip()
    if https and isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
        why = ("the certificate given (--tls-client-cert) is not one its CA signed"
               if client_cert else "none was given (--tls-client-cert)")
        return (f"{said} (the TLS server closed the connection before answering: if it requires "
                f"client certificates (serve-cloud --tls-ca), {why})")
    return said


def _error(text: str) -> tuple[str, str | None]:
    """An error body's message (else the text) and code, both cut short."""
    try:
        error = json.loads(text)["error"]
        code = error.get("code")
        return str(error["message"])[:200], str(code)[:64] if code is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return text[:200], None


class NativeTransport:
    """`POST /v1/classify` with a batch of clips; the reply names its classes."""

    def __init__(self, url: str, classes: tuple[str, ...], token: str | None = None,
                 verify: bool | ssl.SSLContext = True) -> None:
        self.classes = classes
        self.http = _Http(url, token, verify)
        self.models_path = "/v1/models"  # relative to the server root

    def prepare(self, X) -> np.ndarray:
        return np.ascontiguousarray(X, np.float32)

    def waves(self, n: int) -> int:
        return 1  # one request carries the whole batch

    async def send(self, X: np.ndarray, timeout_s: float) -> np.ndarray:
        from edgeswitch.cloud.wire import encode_clips

        body = await self.http.post("/v1/classify", {"clips": encode_clips(X)}, timeout_s)
        try:
            proba, reply_classes = body["proba"], body.get("classes")
        except (KeyError, TypeError, AttributeError):
            raise CloudFailure(FallbackReason.MALFORMED,
                               "reply is not the expected JSON") from None
        return check_reply(proba, len(X), self.classes, reply_classes)

    def reset(self) -> None:
        self.http.reset()

    async def aclose(self) -> None:
        await self.http.aclose()


def api_base(url: str) -> str:
    """The OpenAI API base of a URL: as given where its path names an API version (`/v1`, a
    hosted `/v1beta/openai`), else a server's root (`edgeswitch serve-cloud`) plus `/v1`."""
    url = url.rstrip("/")
    return url if re.search(r"/v\d+[a-z0-9]*(/|$)", urlsplit(url).path) else url + "/v1"


class OpenAITransport:
    """OpenAI chat completions at `api_base(URL)/chat/completions`, one clip per request, the
    payload's `concurrency` clips in flight at once (all of a call when None)."""

    def __init__(self, url: str, classes: tuple[str, ...], model: str, payload: ChatPayload,
                 token: str | None = None, verify: bool | ssl.SSLContext = True) -> None:
        self.classes, self.model, self.payload = classes, model, payload
        self.http = _Http(api_base(url), token, verify)
        self.models_path = "/models"  # relative to the API base (".../v1")

    def prepare(self, X) -> list:
        return self.payload.clips(X)

    def waves(self, n: int) -> int:
        """Rounds of requests a call of n clips takes."""
        c = self.payload.concurrency
        return max(1, math.ceil(n / c)) if c else 1

    async def send(self, clips: list, timeout_s: float) -> np.ndarray:
        if not clips:
            return np.zeros((0, len(self.classes)))
        gate = asyncio.Semaphore(self.payload.concurrency or len(clips))
        try:  # one clip failing cancels the others: a retry must not double the load
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(c, timeout_s, gate)) for c in clips]
        except* Exception as group:  # the first failure, not an ExceptionGroup
            raise group.exceptions[0] from None
        return check_reply(np.stack([t.result() for t in tasks]), len(clips), self.classes)

    async def _one(self, clip, timeout_s: float, gate: asyncio.Semaphore) -> np.ndarray:
        async with gate:
            body = {"model": self.model} | self.payload.body(clip)
            return proba_from_chat(await self.http.post("/chat/completions", body, timeout_s),
                                   self.classes)

    def reset(self) -> None:
        self.http.reset()

    async def aclose(self) -> None:
        await self.http.aclose()
