"""A model run for one request: the checked probabilities, or the response that replaces them
(an injected fault, or a 500 when the backend fails)."""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
from fastapi.responses import Response

from edgeswitch.models.base import ProbaError, check_proba
from edgeswitch.serving.responses import error_response
from edgeswitch.serving.state import ServingState

log = logging.getLogger("edgeswitch.serving")


def check_shape(proba, n: int, k: int) -> np.ndarray:
    """A broken backend is a 500, never garbage: the shape is checked on every whole model run
    (before a batch is split among its requests) and again on each request's share."""
    try:
        return check_proba(proba, n, k, "the backend")
    except ProbaError as exc:
        raise RuntimeError(str(exc)) from None


def run_model(model, X: np.ndarray, k: int) -> np.ndarray:
    """One whole model run (what the batcher and Ray Serve's batch call), checked."""
    return check_shape(model.predict_proba(X), len(X), k)


async def run(state: ServingState, X: np.ndarray) -> np.ndarray:
    """This request's share of a model run, checked again."""
    return check_shape(await state.runner(X), len(X), len(state.classes))


async def answer(state: ServingState, X: np.ndarray) -> np.ndarray | Response:
    """Probabilities for the clips `X` (through the batcher), with any configured fault
    injected first; a failing backend becomes this request's 500, not the server's."""
    injected = await state.faults.inject(X, partial(run, state), state.metrics)
    if injected is not None:
        return injected
    try:
        proba = await run(state, X)
    except Exception:  # noqa: BLE001 - any backend failure is this request's 500
        state.metrics.errors.labels("backend").inc()
        log.exception("model run failed")  # details stay in the server's log
        return error_response(500, "the model failed on this request", "backend_error")
    state.metrics.clips.inc(len(X))
    return proba
