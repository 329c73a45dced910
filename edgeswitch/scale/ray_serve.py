"""`edgeswitch serve-cloud --engine ray`: the cloud model as a Ray Serve application.

Two deployments. `CloudModel` replicas hold the ONNX model and batch requests with
`@serve.batch`; they scale (fixed replicas, or autoscaling between a minimum and a maximum on
ongoing requests). `CloudIngress` serves exactly the HTTP API of the FastAPI server: it is the
same `create_app`, with its model runs sent to the `CloudModel` replicas instead of a local
batcher. Auth, size limits, errors, the OpenAI subset and /metrics are therefore the same code.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ray import serve

from edgeswitch.config import ServeConfig
from edgeswitch.errors import EdgeSwitchError

APP_NAME = "edgeswitch-cloud"


@dataclass(frozen=True)
class ModelInfo:
    """What the ingress needs to know of the model: no weights."""

    classes_: tuple[str, ...]
    name: str
    clip_shape_: tuple[int, int] | None


@dataclass(frozen=True)
class Scaling:
    replicas: int = 1                 # model replicas (the minimum, when autoscaling)
    max_replicas: int | None = None   # > replicas: autoscale on ongoing requests
    target_ongoing: float = 4.0       # autoscaling target per replica
    cpus_per_replica: float = 1.0

    def options(self) -> dict:
        opts = {"ray_actor_options": {"num_cpus": self.cpus_per_replica}}
        if self.max_replicas and self.max_replicas > self.replicas:
            opts["autoscaling_config"] = {"min_replicas": self.replicas,
                                          "max_replicas": self.max_replicas,
                                          "target_ongoing_requests": self.target_ongoing}
        else:
            opts["num_replicas"] = self.replicas
        return opts


@serve.deployment(name="CloudModel")
class CloudModel:
    """Model replicas. A batch is a list of requests' clip arrays; each gets its probabilities
    and the size (in clips) of the model run it shared, the first request of a batch also
    `first=True`, so the ingress counts every batch once."""

    def __init__(self, model_bytes: bytes, cfg: ServeConfig) -> None:
        from edgeswitch.models import OnnxClassifier

        self.model = OnnxClassifier(model_bytes, threads=cfg.threads)
        self.run.set_max_batch_size(cfg.max_batch)
        self.run.set_batch_wait_timeout_s(cfg.max_wait_ms / 1000)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def run(self, items: list[np.ndarray]) -> list[tuple[np.ndarray, int, bool]]:
        X = np.concatenate(items)
        proba = np.asarray(self.model.predict_proba(X))
        bounds = np.cumsum([0] + [len(x) for x in items])
        return [(proba[a:b], len(X), i == 0)
                for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]


@serve.deployment(name="CloudIngress")
@serve.ingress()
class CloudIngress:
    """The HTTP API (serving.app.create_app) in front of the model replicas."""

    def __init__(self, model, info: ModelInfo, cfg: ServeConfig, token: str | None,
                 faults: tuple, model_id: str | None) -> None:
        self.model, self.info, self.cfg = model, info, cfg
        self.token, self.faults, self.model_id = token, faults, model_id
        self.http_app = None

    async def _run(self, X: np.ndarray) -> np.ndarray:
        proba, batch_clips, first = await self.model.run.remote(X)
        if first:
            self.http_app.state.metrics.batch_size.observe(batch_clips)
        return proba

    def __serve_build_asgi_app__(self):
        from edgeswitch.serving.app import create_app

        self.http_app = create_app(self.info, self.cfg, token=self.token, faults=self.faults,
                              model_id=self.model_id, runner=self._run)
        return self.http_app


def build(model_path: str | Path, cfg: ServeConfig, token: str | None = None,
          faults: tuple = (), model_id: str | None = None, scaling: Scaling | None = None):
    """The bound Ray Serve application for a cloud ONNX model."""
    from edgeswitch.models import OnnxClassifier

    meta = OnnxClassifier(model_path)  # validates the file here, before any replica starts
    info = ModelInfo(tuple(meta.classes_), meta.name, tuple(meta.clip_shape_))
    model = CloudModel.options(**(scaling or Scaling()).options()).bind(
        Path(model_path).read_bytes(), cfg)
    return CloudIngress.options(ray_actor_options={"num_cpus": 0}).bind(
        model, info, cfg, token, tuple(faults), model_id)


def serve_ray(model_path: str | Path, cfg: ServeConfig, host: str, port: int,
              token: str | None = None, faults: tuple = (), model_id: str | None = None,
              scaling: Scaling | None = None, address: str | None = None,
              ssl_certfile: str | None = None, ssl_keyfile: str | None = None,
              ready_file: str | None = None) -> None:
    """Run the application until SIGINT/SIGTERM. Starts a local Ray cluster unless `address`
    names a running one; `port=0` picks a free port."""
    import ray

    scaling = scaling or Scaling()
    if port == 0:
        from edgeswitch.serving.server import bind_socket

        with bind_socket(host, 0) as s:
            port = s.getsockname()[1]
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="warning")
    if address:
        ray.init(address=address, **kwargs)
    else:
        need = int(np.ceil((scaling.max_replicas or scaling.replicas)
                           * scaling.cpus_per_replica)) + 1
        ray.init(num_cpus=max(os.cpu_count() or 1, need), **kwargs)
    http = {"host": host, "port": port}
    if ssl_certfile:
        http |= {"ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options=http)
        serve.run(build(model_path, cfg, token, faults, model_id, scaling), name=APP_NAME,
                  route_prefix="/", blocking=False)
        if ready_file:
            tmp = Path(ready_file).with_suffix(".tmp")
            tmp.write_text(json.dumps({"port": port, "pid": os.getpid()}))
            tmp.replace(ready_file)
        while not stop.wait(0.5):
            pass
    except RuntimeError as exc:
        raise EdgeSwitchError(f"Ray Serve failed to start: {exc}") from None
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
