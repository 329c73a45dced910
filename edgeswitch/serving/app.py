"""The cloud model as an HTTP service (FastAPI). `create_app(model)` hosts any backend with
`classes_`, `name` and `predict_proba(X)`; this module only composes the app from its parts.

Endpoints: `POST /v1/classify` (native, batches of clips), `POST /v1/chat/completions` and
`GET /v1/models` (an OpenAI-compatible subset), `GET /healthz` (open, for load balancers) and
`GET /metrics` (Prometheus): see serving.routes. Pure-ASGI middleware runs before FastAPI reads
anything (request metrics, the access log, bearer-token auth per device, the JSON content
type, admission of model work under overload, the body size limit: see serving.middleware),
so an unauthenticated or oversized request costs the server no parsing and no model run.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from edgeswitch.cloud.transports import DEADLINE_HEADER
from edgeswitch.config import ServeConfig
from edgeswitch.data.clips import DEFAULT_INPUT_BOUND
from edgeswitch.serving.access_log import AccessLog
from edgeswitch.serving.batcher import DynamicBatcher
from edgeswitch.serving.credentials import Credentials
from edgeswitch.serving.errors import register_handlers
from edgeswitch.serving.faults import Fault, FaultInjector
from edgeswitch.serving.inference import run_model
from edgeswitch.serving.metrics import ServerMetrics
from edgeswitch.serving.middleware import (
    DEVICE_HEADER,
    Admission,
    BearerAuth,
    BodyLimit,
    JsonContentType,
    RequestMetrics,
)
from edgeswitch.serving.routes import native, openai, ops
from edgeswitch.serving.state import Runner, ServingState, state_of

__all__ = ["Fault", "create_app"]  # Fault: the CLI parses --fault with it

# the FastAPI routers of the route modules (not switcher.routers.ROUTERS, the offload routers)
API_ROUTERS = (ops.router, openai.router, native.router)
ENDPOINTS = frozenset(route.path for router in API_ROUTERS for route in router.routes)
MODEL_PATHS = ("/v1/classify", "/v1/chat/completions")  # the work Admission bounds


def create_app(model, cfg: ServeConfig | None = None, token: str | Credentials | None = None,
               faults: tuple[Fault, ...] = (), model_id: str | None = None,
               seed: int = 0, runner: Runner | None = None) -> FastAPI:
    """The HTTP API around `model`. By default the model runs here, behind a dynamic batcher.
    `runner` (an async `X -> proba`) runs it elsewhere instead: then `model` only needs
    `classes_`, `name` and `clip_shape_` (Ray Serve's ingress uses this; see scale.ray_serve).
    `token`: one shared token (the device `default`) or the devices' `Credentials`."""
    cfg = cfg or ServeConfig()
    state = build_state(model, cfg, faults, model_id, seed, runner)
    app = FastAPI(title="edgeswitch cloud", version="1", lifespan=lifespan,
                  middleware=middleware(state, token))
    app.state.serving = state
    register_handlers(app)
    for router in API_ROUTERS:
        app.include_router(router)
    return app


def build_state(model, cfg: ServeConfig, faults: tuple[Fault, ...], model_id: str | None,
                seed: int, runner: Runner | None) -> ServingState:
    classes = tuple(model.classes_)
    metrics = ServerMetrics()
    batcher = None
    if runner is None:
        batcher = DynamicBatcher(partial(run_model, model, k=len(classes)), cfg.max_batch,
                                 cfg.max_wait_ms, on_batch=metrics.batch_size.observe,
                                 max_queue_clips=cfg.max_queue_clips)
        runner = batcher.submit
    return ServingState(model=model, cfg=cfg, metrics=metrics,
                        model_id=model_id or str(model.name), classes=classes,
                        clip_shape=getattr(model, "clip_shape_", None), runner=runner,
                        input_bound=float(getattr(model, "input_bound_", DEFAULT_INPUT_BOUND)),
                        batcher=batcher, faults=FaultInjector(tuple(faults),
                                                              random.Random(seed)))


def middleware(state: ServingState, token: str | Credentials | None) -> list[Middleware]:
    """Outermost first. Metrics see every request, refused ones included; auth comes before
    anything looks at the body."""
    metrics = state.metrics
    stack = [Middleware(RequestMetrics, metrics=metrics, endpoints=ENDPOINTS),
             Middleware(AccessLog)]
    if state.cfg.cors_origins:  # off by default; before auth: a preflight carries no token
        stack.append(Middleware(CORSMiddleware, allow_origins=list(state.cfg.cors_origins),
                                allow_methods=["GET", "POST"], max_age=600,
                                allow_headers=["Authorization", "Content-Type",
                                               DEADLINE_HEADER],
                                expose_headers=[DEVICE_HEADER.decode()]))
    if token is not None:
        credentials = Credentials.single(token) if isinstance(token, str) else token
        stack.append(Middleware(BearerAuth, credentials=credentials, metrics=metrics,
                                open_paths=ops.OPEN_PATHS))
    return stack + [Middleware(JsonContentType, metrics=metrics),
                    # before the body is read: a shed request costs no upload and no parsing
                    Middleware(Admission, limit=state.cfg.max_queue_requests,
                               retry_after_s=state.cfg.retry_after_s, metrics=metrics,
                               paths=MODEL_PATHS),
                    Middleware(BodyLimit, max_body=state.max_body,
                               metrics=metrics)]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The batcher's loop runs while the app serves (none when a runner was given)."""
    batcher = state_of(app).batcher
    if batcher is not None:
        await batcher.start()
    yield
    if batcher is not None:
        await batcher.stop()
