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
import sys
import threading
import time
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

# Start-up on a busy machine: Ray gives its HTTP proxy 60 s to start (then serve.start raises
# TimeoutError) and a replica 30 s to answer a health check; a 2-core machine whose cores other
# jobs hold took 98 s to serve. We wait up to this long for the whole start (cluster,
# controller, proxy, replicas, the app answering through the proxy).
START_TIMEOUT_S = 600.0
HEALTH_CHECK_TIMEOUT_S = 120.0  # a replica this slow to answer Ray's health check is restarted
# Ray Serve's controller gives its HTTP proxy 5 s per readiness check and kills it after three
# misses: under load the proxy never became ready, and serve.start failed with ActorDiedError
# (the killed proxy). A local cluster this process starts inherits these (a user's own
# settings win; a cluster joined at --ray-address keeps its own).
BUSY_MACHINE_ENV = {"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
                    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60"}


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
            "logging_config": {"log_level": "WARNING", "enable_access_log": False},
            # Ray's 30 s would restart a replica that a busy machine merely slowed down
            "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S}
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
              ray_address: str | None = None,
              start_timeout_s: float = START_TIMEOUT_S) -> None:
    """Run the application until SIGINT/SIGTERM. Starts a local Ray cluster unless
    `ray_address` ([ray] address) names a running one; `port=0` picks a free port.
    `on_ready(port)` is called once the application answers through Ray's HTTP proxy (the CLI
    prints its banner there). A start that fails, or takes longer than `start_timeout_s`, is an
    EdgeSwitchError naming the step that failed."""
    import ray

    if port == 0:
        from edgeswitch.serving.server import bind_socket

        with bind_socket(host, 0) as s:
            port = s.getsockname()[1]
    from edgeswitch.scale.cluster import start_ray

    deadline = time.monotonic() + start_timeout_s
    if not ray_address:
        for key, value in BUSY_MACHINE_ENV.items():
            os.environ.setdefault(key, value)
    start_ray(ray_address, max(cfg.max_replicas, cfg.replicas) * cfg.cpus_per_replica)
    http = {"host": host, "port": port}
    if ssl_certfile:
        http |= {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    step = "starting Ray Serve's controller and HTTP proxy"
    try:
        try:
            serve.start(http_options=http)
        except (TimeoutError, ray.exceptions.RayActorError):
            # Ray's own 60 s wait for its proxy ran out, or the proxy it waited on was
            # restarted by the controller: the controller keeps starting one, we wait on
            # (a dead controller fails the deploy below, naming itself)
            pass
        step = "deploying the application (its replicas load the model)"
        serve.run(build(model_path, cfg, token, faults, model_id), name=APP_NAME,
                  route_prefix="/", blocking=False)
        step = "waiting for the application to answer through Ray's HTTP proxy"
        if not _wait_until_served(host, port, bool(ssl_certfile), deadline, stop):
            return  # SIGINT/SIGTERM before it was ready
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
            tmp.replace(ready_file)
        if on_ready is not None:
            on_ready(port)
        step = "serving"
        while not stop.wait(0.5):
            pass
    except EdgeSwitchError:
        raise
    except Exception as exc:  # noqa: BLE001 - Ray's errors (actor died, deploy failed, ...)
        from edgeswitch.scale.cluster import root_cause

        cause = root_cause(exc)
        if not cause.startswith(type(exc).__name__):
            cause = f"{type(exc).__name__}: {cause}"
        raise EdgeSwitchError(f"Ray Serve failed while {step}: {cause}") from None
    finally:
        _shutdown(ray)


def _wait_until_served(host: str, port: int, tls: bool, deadline: float,
                       stop: threading.Event) -> bool:
    """Until GET /healthz answers 200 through Ray's proxy (it may start after the app is
    deployed): True; False if `stop` is set first; an EdgeSwitchError at `deadline`."""
    import httpx

    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    url = f"{'https' if tls else 'http'}://{f'[{local}]' if ':' in local else local}:{port}"
    last = "no answer yet"
    while not stop.is_set():
        try:  # our own loopback check of our own certificate's server: no verification
            r = httpx.get(url + "/healthz", timeout=10, verify=False)  # noqa: S501
            if r.status_code == 200:
                return True
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise EdgeSwitchError(f"Ray Serve's HTTP proxy at {url} did not serve the "
                                  f"application in time ({last})")
        stop.wait(0.5)
    return False


def _shutdown(ray) -> None:
    """Serve, then Ray; an error here (an actor already gone) never hides why we stop."""
    try:
        serve.shutdown()
    except Exception as exc:  # noqa: BLE001
        print(f"edgeswitch: note: Ray Serve shutdown: {type(exc).__name__}: {exc}"[:300],
              file=sys.stderr)
    finally:
        ray.shutdown()
