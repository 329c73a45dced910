"""One attempt to get cloud probabilities over HTTP: native `/v1/classify` (httpx) or the
OpenAI chat protocol (the official `openai` client). Deadlines, retries and the circuit breaker
live one level up, in `remote.py`; a transport only turns every way a call can go wrong into a
`CloudFailure` with a short reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl

import numpy as np

from edgeswitch.models.base import ProbaError, check_proba

REASONS = ("timeout", "connection", "http_5xx", "malformed", "wrong_classes", "unauthorized",
           "rejected", "circuit_open", "error")


class CloudFailure(Exception):
    """Why the cloud did not answer: `reason` is one of REASONS (http_5xx as http_<status>)."""

    def __init__(self, reason: str, detail: str = "", retryable: bool = True) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.retryable = reason, detail, retryable


def status_failure(status: int, detail: str = "") -> CloudFailure:
    if status in (401, 403):
        return CloudFailure("unauthorized", detail, retryable=False)
    if status >= 500 or status == 429:  # overload and server errors may pass
        return CloudFailure(f"http_{status}", detail)
    return CloudFailure("rejected", f"HTTP {status} {detail}".strip(), retryable=False)


def check_reply(proba, n: int, classes: tuple[str, ...], reply_classes=None) -> np.ndarray:
    """A reply's probabilities must be n rows over exactly our classes, finite, non-negative.
    A wrong class set is not retried: it is a configuration error, not a passing one."""
    if reply_classes is not None and tuple(reply_classes) != tuple(classes):
        raise CloudFailure("wrong_classes", f"cloud classes {list(reply_classes)[:8]} are not "
                           f"the edge's {list(classes)[:8]}", retryable=False)
    try:
        return check_proba(proba, n, len(classes), "the cloud")
    except ProbaError as exc:
        raise CloudFailure(exc.reason, str(exc),
                           retryable=exc.reason != "wrong_classes") from None


class NativeTransport:
    """`POST /v1/classify` with a batch of clips; the reply names its classes."""

    def __init__(self, url: str, classes: tuple[str, ...], token: str | None = None,
                 verify: bool | ssl.SSLContext = True) -> None:
        import httpx  # noqa: F401 - imported now, not inside the first clip's deadline

        self.url, self.classes, self.token, self.verify = url.rstrip("/"), classes, token, verify
        self._client = None

    def reset(self) -> None:
        self._client = None

    def client(self):
        import httpx

        if self._client is None:  # created lazily, inside the event loop that will use it
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                             verify=self.verify)
        return self._client

    async def send(self, X: np.ndarray, timeout_s: float) -> np.ndarray:
        import httpx

        from edgeswitch.cloud.wire import encode_clips

        try:
            r = await self.client().post("/v1/classify", json={"clips": encode_clips(X)},
                                         timeout=timeout_s)
        except httpx.TimeoutException:
            raise CloudFailure("timeout", "no reply in time") from None
        except httpx.TransportError as exc:  # refused, reset, closed mid-reply, TLS
            raise CloudFailure("connection", f"{type(exc).__name__}: {exc}") from None
        if r.status_code != 200:
            raise status_failure(r.status_code, _error_message(r.text))
        try:
            body = r.json()
            proba, reply_classes = body["proba"], body.get("classes")
        except (ValueError, KeyError, TypeError):
            raise CloudFailure("malformed", "reply is not the expected JSON") from None
        return check_reply(proba, len(X), self.classes, reply_classes)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _error_message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return text[:200]


class OpenAITransport:
    """OpenAI chat completions, one clip per request (the clip as a `.npy` file content part),
    all clips of a call in parallel. Works against our server; `prompt` lists the label set for
    servers that read it."""

    def __init__(self, url: str, classes: tuple[str, ...], model: str, token: str | None = None,
                 verify: bool | ssl.SSLContext = True, prompt: str | None = None) -> None:
        self.url, self.classes, self.model = url.rstrip("/"), classes, model
        self.token, self.verify = token, verify
        self.prompt = prompt or ("Classify this sensor clip. Answer with exactly one label "
                                 "from: " + ", ".join(classes) + ".")
        import openai  # noqa: F401 - about 1 s: now, not inside the first clip's deadline

        self._client = None

    def reset(self) -> None:
        self._client = None

    def client(self):
        import openai

        if self._client is None:
            base = self.url if self.url.endswith("/v1") else self.url + "/v1"
            http = None
            if self.verify is not True:  # a private CA or a self-signed certificate
                http = openai.DefaultAsyncHttpxClient(verify=self.verify)
            self._client = openai.AsyncOpenAI(base_url=base, api_key=self.token or "none",
                                              max_retries=0, http_client=http)
        return self._client

    async def send(self, X: np.ndarray, timeout_s: float) -> np.ndarray:
        try:  # one clip failing cancels the others: a retry must not double the load
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(x, timeout_s)) for x in X]
        except* CloudFailure as group:
            raise group.exceptions[0] from None
        return check_reply(np.stack([t.result() for t in tasks]), len(X), self.classes)

    async def _one(self, clip: np.ndarray, timeout_s: float) -> np.ndarray:
        import openai

        from edgeswitch.cloud.wire import encode_npy_data_url

        content = [{"type": "text", "text": self.prompt},
                   {"type": "file", "file": {"filename": "clip.npy",
                                             "file_data": encode_npy_data_url(clip)}}]
        try:
            reply = await self.client().chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}],
                logprobs=True, top_logprobs=min(len(self.classes), 20), max_tokens=16,
                temperature=0, timeout=timeout_s)
        except openai.APITimeoutError:
            raise CloudFailure("timeout", "no reply in time") from None
        except openai.APIConnectionError as exc:
            raise CloudFailure("connection", str(exc)) from None
        except openai.APIStatusError as exc:
            raise status_failure(exc.status_code, str(exc.message)[:200]) from None
        except (openai.APIResponseValidationError, ValueError, TypeError) as exc:
            raise CloudFailure("malformed", f"reply is not a chat completion: {exc}") from None
        try:
            choice = reply.choices[0]
            top = choice.logprobs.content[0].top_logprobs if choice.logprobs and \
                choice.logprobs.content else []
            return proba_from_chat(choice.message.content or "",
                                   [(t.token, t.logprob) for t in top], self.classes)
        except (AttributeError, IndexError, TypeError) as exc:
            raise CloudFailure("malformed", f"reply is not a chat completion: {exc}") from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


def match_class(text: str, classes: tuple[str, ...]) -> int | None:
    """The class a token or answer names: exact (case-insensitive), else a unique prefix."""
    t = text.strip().strip("\"'.").lower()
    if not t:
        return None
    lowered = [c.lower() for c in classes]
    if t in lowered:
        return lowered.index(t)
    if len(t) < 2:  # "a" or "f" says nothing: text tokens start with them all the time
        return None
    hits = [i for i, c in enumerate(lowered) if c.startswith(t)]
    return hits[0] if len(hits) == 1 else None


def label_from_text(content: str, classes: tuple[str, ...]) -> int:
    """The class a free-text or JSON answer names, or CloudFailure('malformed')."""
    text = content.strip()
    try:  # {"label": "..."} or {"class": "..."}
        obj = json.loads(text)
        if isinstance(obj, dict):
            text = str(obj.get("label", obj.get("class", obj.get("answer", text))))
        elif isinstance(obj, str):
            text = obj
    except ValueError:
        pass
    lowered = [c.lower() for c in classes]
    if text.strip().strip("\"'.").lower() in lowered:  # exactly a class name
        return lowered.index(text.strip().strip("\"'.").lower())
    named = {i for i, c in enumerate(classes)
             if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", text.lower())}
    if len(named) == 1:
        return named.pop()
    raise CloudFailure("malformed", f"answer names {'several' if named else 'no'} known class: "
                       f"{content[:80]!r}", retryable=False)


def proba_from_chat(content: str, top: list[tuple[str, float]],
                    classes: tuple[str, ...]) -> np.ndarray:
    """Class probabilities from a chat reply: the top logprobs where they name classes (the
    mass they leave is spread evenly over the classes they miss), else the answer's label."""
    k = len(classes)
    p = np.zeros(k)
    for token, logprob in top:
        i = match_class(token, classes)
        if i is not None and logprob is not None and math.isfinite(logprob):
            p[i] += math.exp(logprob)
    if p.sum() > 0:
        missing = p == 0
        if missing.any():
            p[missing] = max(0.0, 1.0 - p.sum()) / missing.sum()
        return p / p.sum()
    p[label_from_text(content, classes)] = 1.0
    return p
