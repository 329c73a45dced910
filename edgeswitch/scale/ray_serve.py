"""`edgeswitch serve-cloud --server ray`: the cloud model as a Ray Serve application.

One deployment, `CloudService`: each replica serves exactly the HTTP API of the FastAPI server
(the same `create_app`: auth, size limits, errors, the OpenAI subset and /metrics are the same
code) with the ONNX model inside, its runs batched by `@serve.batch` instead of our own
batcher. Replicas are fixed, or autoscale between a minimum and a maximum on ongoing requests.
(A split design, ingress and model as two deployments, costs a second Ray hop per request:
a sequential one-clip request took 11 ms instead of 7 on our 2-core test machine.)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ray import serve

from edgeswitch.config import ServeConfig
from edgeswitch.data.clips import DEFAULT_INPUT_BOUND
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.serving.overload import ClipBound, current, watched

if TYPE_CHECKING:
    from edgeswitch.serving.credentials import Credentials

APP_NAME = "edgeswitch-cloud"


@dataclass(frozen=True)
class ModelInfo:
    """What the ingress needs to know of the model: no weights."""

    classes_: tuple[str, ...]
    name: str
    clip_shape_: tuple[int, int] | None
    input_bound_: float = DEFAULT_INPUT_BOUND  # the range the ingress checks clips against


def deployment_options(cfg: ServeConfig) -> dict:
    """Ray Serve options of the [serve] table: fixed replicas, or autoscaling between
    `replicas` and `max_replicas` on ongoing requests."""
    opts = {"ray_actor_options": {"num_cpus": cfg.cpus_per_replica},
            "max_ongoing_requests": cfg.max_ongoing,
            # past it Ray's proxy answers 503 at once instead of queueing without bound (each
            # replica's own Admission and ClipBound hold the same bounds of serving.overload)
            "max_queued_requests": cfg.max_queue_requests,
            # no per-request access log line: it costs CPU on the request path
            "logging_config": {"log_level": "WARNING", "enable_access_log": False}}
    if cfg.max_replicas > cfg.replicas:
        opts["autoscaling_config"] = {"min_replicas": cfg.replicas,
                                      "max_replicas": cfg.max_replicas,
                                      "target_ongoing_requests": cfg.target_ongoing}
    else:
        opts["num_replicas"] = cfg.replicas
    return opts


@serve.deployment(name="CloudService")
@serve.ingress()
class CloudService:
    """One replica: the HTTP API (serving.app.create_app) with the model inside, its runs
    batched by `@serve.batch` across the requests this replica holds. Replicas scale the
    whole; a request crosses one Ray hop (proxy -> replica), not two."""

    def __init__(self, model_bytes: bytes, info: ModelInfo, cfg: ServeConfig,
                 token: Credentials | str | None, faults: tuple, model_id: str | None) -> None:
        from edgeswitch.models import OnnxClassifier

        self.model = OnnxClassifier(model_bytes, threads=cfg.threads)
        self.info, self.cfg = info, cfg
        self.token, self.faults, self.model_id = token, faults, model_id
        self.http_app = None
        self.bound = ClipBound(cfg.max_queue_clips)
        self.batched.set_max_batch_size(cfg.max_batch)
        self.batched.set_batch_wait_timeout_s(cfg.max_wait_ms / 1000)

    async def _predict(self, X: np.ndarray) -> np.ndarray:
        # in a thread: the replica's event loop keeps taking requests, so the next batch forms
        from edgeswitch.serving.inference import run_model
        from edgeswitch.serving.state import state_of

        state_of(self.http_app).metrics.batch_size.observe(len(X))
        return await asyncio.to_thread(run_model, self.model, X, len(self.info.classes_))

    # batch size in clips, as on the plain server (max_batch is set per replica in __init__)
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0,
                 batch_size_fn=lambda items: sum(len(x) for x in items))
    async def batched(self, items: list[np.ndarray]) -> list[np.ndarray]:
        proba = await self._predict(np.concatenate(items))
        bounds = np.cumsum([0] + [len(x) for x in items])
        return [proba[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    async def run(self, X: np.ndarray) -> np.ndarray:
        """The bounds of the plain batcher (serving.overload): clips over the bound are shed,
        a request past its deadline is dropped on arrival, a client gone cancels its call
        (whether Ray then skips a queued item is Ray's affair: not measured here)."""
        ticket = current()
        ticket.check()
        self.bound.take(len(X))
        try:
            if len(X) >= self.cfg.max_batch:  # a full batch by itself (Ray refuses larger)
                return await watched(self._predict(X), ticket)
            return await watched(self.batched(X), ticket)
        finally:
            self.bound.give(len(X))

    def __serve_build_asgi_app__(self):
        from edgeswitch.serving.app import create_app

        self.http_app = create_app(self.info, self.cfg, token=self.token, faults=self.faults,
                                   model_id=self.model_id, runner=self.run)
        return self.http_app


def build(model_path: str | Path, cfg: ServeConfig, token: Credentials | str | None = None,
          faults: tuple = (), model_id: str | None = None):
    """The bound Ray Serve application for a cloud ONNX model."""
    from edgeswitch.models import OnnxClassifier

    meta = OnnxClassifier(model_path)  # validates the file here, before any replica starts
    info = ModelInfo(tuple(meta.classes_), meta.name, tuple(meta.clip_shape_),
                     meta.input_bound_)
    return CloudService.options(**deployment_options(cfg)).bind(
        Path(model_path).read_bytes(), info, cfg, token, tuple(faults), model_id)


def app_builder(args: dict):
    """Ray Serve application builder, for `serve run` and KubeRay's RayService
    (`import_path: edgeswitch.scale.ray_serve:app_builder`). Keys: model_path (required),
    model_id, token_file (a device token file or one bearer token's; none: no auth), and any key
    of the config's [serve] table (max_batch, replicas, max_replicas, ...)."""
    from edgeswitch.config import from_values
    from edgeswitch.serving.credentials import Credentials

    args = dict(args)
    if "model_path" not in args:
        raise EdgeSwitchError("app_builder needs args.model_path (the cloud .onnx file)")
    own = {"model_path", "model_id", "token_file"}
    # every other key is one of the [serve] table's, checked by the config schema
    cfg = from_values(ServeConfig, {k: v for k, v in args.items() if k not in own},
                      " of app_builder")
    token = Credentials.from_file(args["token_file"]) if args.get("token_file") else None
    return build(args["model_path"], cfg, token, (), args.get("model_id"))


def serve_ray(model_path: str | Path, cfg: ServeConfig, host: str, port: int,
              token: Credentials | str | None = None, faults: tuple = (),
              model_id: str | None = None, ssl_certfile: str | None = None,
              ssl_keyfile: str | None = None, ready_file: str | None = None,
              on_ready: Callable[[int], None] | None = None,
              ray_address: str | None = None) -> None:
    """Run the application until SIGINT/SIGTERM. Starts a local Ray cluster unless
    `ray_address` ([ray] address) names a running one; `port=0` picks a free port.
    `on_ready(port)` is called once the application serves (the CLI prints its banner
    there)."""
    import ray

    if port == 0:
        from edgeswitch.serving.server import bind_socket

        with bind_socket(host, 0) as s:
            port = s.getsockname()[1]
    from edgeswitch.scale.cluster import start_ray

    start_ray(ray_address, max(cfg.max_replicas, cfg.replicas) * cfg.cpus_per_replica)
    http = {"host": host, "port": port}
    if ssl_certfile:
        http |= {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options=http)
        serve.run(build(model_path, cfg, token, faults, model_id), name=APP_NAME,
                  route_prefix="/", blocking=False)
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
            tmp.replace(ready_file)
        if on_ready is not None:
            on_ready(port)
        while not stop.wait(0.5):
            pass
    except RuntimeError as exc:
        raise EdgeSwitchError(f"Ray Serve failed to start: {exc}") from None
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
