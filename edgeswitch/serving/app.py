"""The cloud model as an HTTP service (FastAPI). `create_app(model)` hosts any backend with
`classes_`, `name` and `predict_proba(X)`.

Endpoints: `POST /v1/classify` (native, batches of clips), `POST /v1/chat/completions` and
`GET /v1/models` (an OpenAI-compatible subset: one clip per chat request as a `.npy` file
content part; the reply names the label and carries per-class top logprobs), `GET /healthz`
(open, for load balancers) and `GET /metrics` (Prometheus).

A pure-ASGI gate runs before FastAPI reads anything: bearer-token auth, the JSON content type
and the body size limit. So an unauthenticated or oversized request costs the server no parsing
and no model run.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from edgeswitch.cloud.wire import WireError, decode_clips, decode_npy_data_url
from edgeswitch.config import ServeConfig
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import ProbaError, check_proba
from edgeswitch.serving.batcher import DynamicBatcher
from edgeswitch.serving.metrics import ServerMetrics

OPEN_PATHS = ("/healthz",)
log = logging.getLogger("edgeswitch.serving")


# ---- request bodies -----------------------------------------------------------------------

class ClassifyRequest(BaseModel):
    clips: dict = Field(description="{'shape': [n, T, C], 'dtype': 'float32', 'b64': ...}")
    model: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens...: accepted, unused
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


# ---- fault injection ----------------------------------------------------------------------

FAULT_KINDS = ("sleep", "http500", "malformed", "wrong_classes")


@dataclass(frozen=True)
class Fault:
    """A deliberate misbehaviour for resilience tests of edge deployments (`--fault`)."""

    kind: str
    rate: float = 1.0      # share of classify requests it hits
    seconds: float = 0.0   # for "sleep"

    @classmethod
    def parse(cls, text: str) -> Fault:
        """`KIND[:SECONDS][@RATE]`, e.g. `http500@0.2`, `sleep:2.5`, `malformed`."""
        m = re.fullmatch(r"(\w+)(?::(\d+(?:\.\d+)?))?(?:@(\d+(?:\.\d+)?))?", text.strip())
        if not m or m.group(1) not in FAULT_KINDS:
            raise EdgeSwitchError(f"bad fault {text!r}: use KIND[:SECONDS][@RATE] with KIND one "
                                  f"of {', '.join(FAULT_KINDS)}")
        rate = float(m.group(3)) if m.group(3) else 1.0
        seconds = float(m.group(2)) if m.group(2) else 0.0
        if not 0 <= rate <= 1 or (m.group(1) == "sleep" and seconds <= 0):
            raise EdgeSwitchError(f"bad fault {text!r}: RATE within [0, 1], sleep needs SECONDS")
        return cls(m.group(1), rate, seconds)


# ---- errors -------------------------------------------------------------------------------

def error_response(status: int, message: str, code: str, headers: dict | None = None):
    """OpenAI-style error body, so the official client surfaces the message."""
    kind = "authentication_error" if status == 401 else \
        "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)


# ---- the gate -----------------------------------------------------------------------------

class Gate:
    """ASGI middleware: auth, content type and size limit before any parsing, plus metrics."""

    def __init__(self, app, token: str | None, max_body: int, metrics: ServerMetrics) -> None:
        self.app, self.token, self.max_body, self.metrics = app, token, max_body, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is None and scope["method"] == "POST":
                refusal, receive = await self._buffer_body(receive)
            if refusal is not None:
                self.metrics.errors.labels(refusal[2]).inc()
                return await error_response(*refusal)(scope, receive, send_counted)
            await self.app(scope, receive, send_counted)
        finally:
            endpoint = path if path in KNOWN_PATHS else "other"
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)

    def _refuse(self, scope) -> tuple | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                return (401, "missing bearer token (Authorization: Bearer ...)", "unauthorized",
                        {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
                return (401, "invalid bearer token", "unauthorized", {"WWW-Authenticate": "Bearer"})
        if scope["method"] == "POST":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "application/json":
                return (415, f"content type must be application/json, got {ctype or 'none'}",
                        "unsupported_media_type")
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return (413, f"request body of {int(length)} bytes exceeds the limit of "
                        f"{self.max_body}", "too_large")
        return None

    async def _buffer_body(self, receive):
        """Read the body up to the limit (chunked uploads have no Content-Length to trust)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return (413, f"request body exceeds the limit of {self.max_body} bytes",
                        "too_large"), receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


KNOWN_PATHS = ("/v1/classify", "/v1/chat/completions", "/v1/models", "/healthz", "/metrics")


# ---- the app ------------------------------------------------------------------------------

def check_shape(proba, n: int, k: int) -> np.ndarray:
    """A broken backend is a 500, never garbage: the shape is checked on every whole model run
    (before a batch is split among its requests) and again on each request's share."""
    try:
        return check_proba(proba, n, k, "the backend")
    except ProbaError as exc:
        raise RuntimeError(str(exc)) from None


def run_model(model, X: np.ndarray, k: int) -> np.ndarray:
    return check_shape(model.predict_proba(X), len(X), k)


def create_app(model, cfg: ServeConfig | None = None, token: str | None = None,
               faults: tuple[Fault, ...] = (), model_id: str | None = None,
               seed: int = 0, runner: Callable[[np.ndarray], Awaitable] | None = None) -> FastAPI:
    """The HTTP API around `model`. By default the model runs here, behind a dynamic batcher.
    `runner` (an async `X -> proba`) runs it elsewhere instead: then `model` only needs
    `classes_`, `name` and `clip_shape_` (Ray Serve's ingress uses this; see scale.ray_serve)."""
    cfg = cfg or ServeConfig()
    classes = tuple(model.classes_)
    model_id = model_id or str(model.name)
    clip_shape = getattr(model, "clip_shape_", None)
    metrics = ServerMetrics()
    rng = random.Random(seed)

    batcher = None
    if runner is None:
        batcher = DynamicBatcher(lambda X: run_model(model, X, len(classes)), cfg.max_batch,
                                 cfg.max_wait_ms, on_batch=metrics.batch_size.observe)
        runner = batcher.submit

    async def run(X: np.ndarray) -> np.ndarray:
        return check_shape(await runner(X), len(X), len(classes))

    async def lifespan(app):
        if batcher is not None:
            await batcher.start()
        yield
        if batcher is not None:
            await batcher.stop()

    app = FastAPI(title="edgeswitch cloud", version="1", lifespan=lifespan)
    app.state.metrics = metrics

    @app.exception_handler(WireError)
    async def wire_error(request: Request, exc: WireError):
        metrics.errors.labels(exc.code).inc()
        return error_response(exc.status, str(exc), exc.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            metrics.errors.labels("bad_json").inc()
            return error_response(400, "request body is not valid JSON", "bad_json")
        first = errs[0] if errs else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        metrics.errors.labels("bad_request").inc()
        return error_response(422, f"invalid request: {where}: {first.get('msg', '?')}",
                              "bad_request")

    async def classify(X: np.ndarray):
        """Run the model (through the batcher), with any configured fault injected first."""
        for f in faults:
            if rng.random() >= f.rate:
                continue
            metrics.errors.labels(f"injected_{f.kind}").inc()
            if f.kind == "sleep":
                await asyncio.sleep(f.seconds)
            elif f.kind == "http500":
                return None, error_response(500, "injected fault: internal error", "injected")
            elif f.kind == "malformed":
                return None, Response(b'{"proba": [[0.1, 0.2', media_type="application/json")
            elif f.kind == "wrong_classes":
                return (await run(X))[:, :-1], None
        try:
            proba = await run(X)
        except Exception:  # noqa: BLE001 - any backend failure is this request's 500
            metrics.errors.labels("backend").inc()
            log.exception("model run failed")  # details stay in the server's log
            return None, error_response(500, "the model failed on this request",
                                        "backend_error")
        metrics.clips.inc(len(X))
        return proba, None

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": model_id, "classes": list(classes),
                "clip_shape": list(clip_shape) if clip_shape else None}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                            "owned_by": "edgeswitch", "classes": list(classes)}]}

    def check_model(name: str | None) -> None:
        if name is not None and name != model_id:
            raise WireError(f"model {name!r} is not served here; this server serves "
                            f"{model_id!r}", "model_not_found", 404)

    @app.post("/v1/classify")
    async def classify_native(req: ClassifyRequest):
        check_model(req.model)
        X = decode_clips(req.clips, clip_shape, cfg.max_clips)
        proba, failure = await classify(X)
        if failure is not None:
            return failure
        return {"model": model_id, "classes": list(classes),
                "proba": proba.round(7).tolist(),
                "labels": [classes[i] for i in proba.argmax(axis=1)]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        check_model(req.model)
        X = decode_npy_data_url(_clip_part(req), clip_shape)
        proba, failure = await classify(X)
        if failure is not None:
            return failure
        return _chat_reply(model_id, classes, proba[0], req.logprobs, req.top_logprobs)

    app.add_middleware(Gate, token=token, max_body=int(cfg.max_body_mb * 2**20), metrics=metrics)
    return app


def _clip_part(req: ChatRequest) -> str:
    """The data URL of the one clip in the last user message."""
    users = [m for m in req.messages if m.role == "user"]
    parts = users[-1].content if users else None
    files = [p for p in parts if p.get("type") == "file"] if isinstance(parts, list) else []
    if len(files) != 1:
        raise WireError(f"the last user message must carry exactly one clip as a 'file' content "
                        f"part, found {len(files)}", "bad_content_part", 400)
    file = files[0].get("file")
    if not isinstance(file, dict):
        raise WireError("the clip's 'file' part must be an object with 'file_data'",
                        "bad_content_part", 400)
    return file.get("file_data")


def _chat_reply(model_id: str, classes: tuple[str, ...], p: np.ndarray, logprobs: bool,
                top: int | None) -> dict:
    k = int(np.argmax(p))
    logp = [math.log(max(float(v), 1e-30)) for v in p]

    def entry(i: int) -> dict:
        return {"token": classes[i], "logprob": logp[i], "bytes": list(classes[i].encode())}

    choice = {"index": 0, "finish_reason": "stop", "logprobs": None,
              "message": {"role": "assistant", "content": classes[k]}}
    if logprobs:
        order = np.argsort(-p, kind="stable")[: (top or 0)]
        choice["logprobs"] = {"content": [entry(k) | {"top_logprobs": [entry(int(i))
                                                                       for i in order]}]}
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_id, "choices": [choice],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}}
