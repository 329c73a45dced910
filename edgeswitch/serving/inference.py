"""A model run for one request: the checked probabilities, or the response that replaces them
(an injected fault, a 422 for a clip the model cannot digest, or a 500 when the backend fails).

Isolation: a dynamic batch holds the clips of many requests, so a whole run is checked for its
shape only (a wrong shape is the backend's fault, shared by all). Whether the rows are finite
is checked on each request's share: a clip the model cannot digest fails its own request
(422 naming it), never the batch it shared.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
from fastapi.responses import Response

from edgeswitch.cloud.wire import WireError
from edgeswitch.models.base import NonFiniteOutput, ProbaError, check_proba
from edgeswitch.serving.responses import error_response
from edgeswitch.serving.state import ServingState

log = logging.getLogger("edgeswitch.serving")


def check_shape(proba, n: int, k: int) -> np.ndarray:
    """A broken backend is a 500, never garbage: n rows of k numbers on every whole model run
    (before a batch is split among its requests). Rows may still be non-finite here."""
    try:
        proba = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError):
        raise RuntimeError("the backend returned probabilities that are not a numeric "
                           "table") from None
    if proba.shape != (n, k):
        raise RuntimeError(f"the backend returned probabilities of shape {proba.shape} for "
                           f"{n} clips of {k} classes")
    return proba


def _rows(model, X: np.ndarray, k: int) -> np.ndarray:
    """The model's rows for `X`. A backend that refuses a whole run because some rows came out
    non-finite (our ONNX models do) is run again on halves until those clips stand alone:
    they get NaN rows, the others their probabilities (a few extra runs, only then)."""
    try:
        return check_shape(model.predict_proba(X), len(X), k)
    except NonFiniteOutput:
        if len(X) == 1:
            return np.full((1, k), np.nan)
        mid = len(X) // 2
        return np.concatenate([_rows(model, X[:mid], k), _rows(model, X[mid:], k)])


def run_model(model, X: np.ndarray, k: int) -> np.ndarray:
    """One whole model run (what the batcher and Ray Serve's batch call), shape checked."""
    return _rows(model, X, k)


def check_share(proba, X: np.ndarray, k: int) -> np.ndarray:
    """This request's rows: a non-finite row is a 422 naming the clip (the model cannot digest
    it); anything else wrong (shape, negative) is the backend's fault, a RuntimeError."""
    proba = check_shape(proba, len(X), k)
    bad = np.nonzero(~np.isfinite(proba).all(axis=1))[0]
    if len(bad):
        i = int(bad[0])
        raise WireError(f"the model cannot digest clip index {i}: its class probabilities are "
                        f"not finite (the clip's values lie in [{float(X[i].min()):.6g}, "
                        f"{float(X[i].max()):.6g}]; {len(bad)} clip(s) of this request)",
                        "non_finite_output", 422)
    try:
        return check_proba(proba, len(X), k, "the backend")
    except ProbaError as exc:
        raise RuntimeError(str(exc)) from None


async def run(state: ServingState, X: np.ndarray) -> np.ndarray:
    """This request's share of a model run, checked on its own."""
    return check_share(await state.runner(X), X, len(state.classes))


async def answer(state: ServingState, X: np.ndarray) -> np.ndarray | Response:
    """Probabilities for the clips `X` (through the batcher), with any configured fault
    injected first; a failing backend becomes this request's 500, not the server's, and a
    clip the model cannot digest this request's 422 (raised: the handlers answer it)."""
    try:
        injected = await state.faults.inject(X, partial(run, state), state.metrics)
        if injected is not None:
            return injected
        proba = await run(state, X)
    except WireError:
        raise
    except Exception:  # noqa: BLE001 - any backend failure is this request's 500
        state.metrics.errors.labels("backend").inc()
        log.exception("model run failed")  # details stay in the server's log
        return error_response(500, "the model failed on this request", "backend_error")
    state.metrics.clips.inc(len(X))
    return proba
