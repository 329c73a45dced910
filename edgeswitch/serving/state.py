"""What every route, handler and the lifespan share, as one typed object on `app.state`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request

from edgeswitch.cloud.wire import WireError
from edgeswitch.config import ServeConfig
from edgeswitch.serving.batcher import DynamicBatcher
from edgeswitch.serving.faults import FaultInjector
from edgeswitch.serving.metrics import ServerMetrics

Runner = Callable[[np.ndarray], Awaitable[np.ndarray]]  # clips -> probabilities, unchecked


@dataclass(frozen=True)
class ServingState:
    model: Any                          # the backend; under Ray Serve only its ModelInfo
    cfg: ServeConfig
    metrics: ServerMetrics
    model_id: str                       # the name clients ask for
    classes: tuple[str, ...]
    clip_shape: tuple[int, int] | None  # None: the model takes any (T, C)
    input_bound: float                  # |x| <= this: the model's input range (data.clips)
    runner: Runner                      # the batcher's submit, or Ray Serve's batched run
    batcher: DynamicBatcher | None      # None when `runner` runs the model elsewhere
    faults: FaultInjector

    @property
    def max_body(self) -> int:
        """The request body limit in bytes: no decoded clip batch may claim more."""
        return int(self.cfg.max_body_mb * 2**20)

    def check_model(self, name: str | None) -> None:
        """A request that names a model must name this one (None: whatever is served)."""
        if name is not None and name != self.model_id:
            raise WireError(f"model {name!r} is not served here; this server serves "
                            f"{self.model_id!r}", "model_not_found", 404)


def state_of(app: FastAPI) -> ServingState:
    return app.state.serving


def get_state(request: Request) -> ServingState:
    """The state of the app serving `request`, for routes and exception handlers."""
    return state_of(request.app)
