"""How the hybrid reaches the cloud model: one small interface.

A cloud client provides `classes_`, `name` and `classify(X) -> proba [n, K]` (raising when the
cloud fails). Clients that can fail at run time also provide `request(X, deadline) ->
CloudReply`, which never raises and says why there is no answer; the hybrid prefers it.
`InProcessCloud` calls a model in this process; `remote.RemoteCloud` reaches a server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edgeswitch.errors import ModelError
from edgeswitch.models.base import ClipClassifier


@dataclass(frozen=True)
class CloudReply:
    """A cloud call's outcome: probabilities, or the reason there are none."""

    proba: np.ndarray | None   # [n, K] when the cloud answered
    reason: str | None         # why it did not (see runtime.transports.REASONS)
    attempts: int
    latency_ms: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.proba is not None


@runtime_checkable
class CloudClient(Protocol):
    classes_: tuple[str, ...]
    name: str

    def classify(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `[n, K]` for clips `[n, T, C]`."""
        ...


class InProcessCloud:
    """The cloud model called directly in this process (no network)."""

    def __init__(self, model: ClipClassifier) -> None:
        self.model = model
        self.classes_ = tuple(model.classes_)
        self.name = model.name
        self.calls = 0
        self.clips_sent = 0

    def classify(self, X: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.clips_sent += len(X)
        return check_proba(self.model.predict_proba(X), len(X), len(self.classes_), self.name)

    def request(self, X: np.ndarray, deadline: float | None = None) -> CloudReply:
        """In process there is no network to fail; a model error is still reported, not raised.
        The deadline is not enforced: a local call cannot be abandoned midway."""
        t0 = time.monotonic()
        try:
            proba = self.classify(X)
        except ModelError as exc:
            return CloudReply(None, "error", 1, (time.monotonic() - t0) * 1000, str(exc))
        return CloudReply(proba, None, 1, (time.monotonic() - t0) * 1000)


def check_proba(proba: np.ndarray, n: int, k: int, who: str) -> np.ndarray:
    """A cloud answer must be n rows of k finite probabilities."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, k):
        raise ModelError(f"cloud '{who}' returned probabilities of shape {proba.shape}, "
                         f"expected ({n}, {k}) for {n} clips and {k} classes")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ModelError(f"cloud '{who}' returned invalid probabilities (negative or non-finite)")
    return proba
