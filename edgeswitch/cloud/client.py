"""How the hybrid reaches the cloud model: one small interface.

A cloud client provides `classes_`, `name` and `predict_proba(X) -> proba [n, K]` (raising when the
cloud fails). Clients that can fail at run time also provide `request(X, deadline) ->
CloudReply`, which never raises and says why there is no answer; the hybrid prefers it.
`ask(cloud, X, deadline)` gives either kind of client's answer as a `CloudReply`.
`InProcessCloud` calls a model in this process; `remote.RemoteCloud` reaches a server;
`spec.CloudSpec` says which of the two to build (in a CLI command or in a Ray worker).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.errors import ModelError
from edgeswitch.models.base import ClipClassifier, CloudModel, ProbaError, check_proba


@dataclass(frozen=True)
class CloudReply:
    """A cloud call's outcome: probabilities, or the reason there are none."""

    proba: np.ndarray | None       # [n, K] when the cloud answered
    reason: FallbackReason | None  # why it did not
    attempts: int
    latency_ms: float
    detail: str = ""
    device: str | None = None      # the credential the server took (its X-Edgeswitch-Device)

    @property
    def ok(self) -> bool:
        return self.proba is not None


# a cloud client is a cloud model (the contract is written once, in models.base)
CloudClient = CloudModel


class InProcessCloud:
    """The cloud model called directly in this process (no network)."""

    def __init__(self, model: ClipClassifier) -> None:
        self.model = model
        self.classes_ = tuple(model.classes_)
        self.name = model.name
        self.calls = 0
        self.clips_sent = 0

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.clips_sent += len(X)
        return check_proba(self.model.predict_proba(X), len(X), len(self.classes_), self.name)



class NoCloud:
    """No cloud at all (an edge-only deployment): every ask fails with reason `NO_CLOUD`."""

    name = "no-cloud"

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes_ = tuple(classes)

    def predict_proba(self, X) -> np.ndarray:
        raise ModelError("no cloud model is configured")

    def request(self, X, deadline: float | None = None) -> CloudReply:
        return CloudReply(None, FallbackReason.NO_CLOUD, 0, 0.0, "no cloud model is configured")


def ask(cloud: CloudClient, X: np.ndarray, deadline: float | None = None) -> CloudReply:
    """Any client's answer as a `CloudReply`: its own `request` where it has one (remote
    clients, which enforce the deadline), else `predict_proba` with a failure turned into a reason.
    A local call cannot be abandoned midway, so there the deadline is not enforced."""
    if hasattr(cloud, "request"):
        return cloud.request(X, deadline)
    t0 = time.monotonic()
    try:
        proba = cloud.predict_proba(X)
    except Exception as exc:  # noqa: BLE001 - any cloud failure falls back to the edge
        # an answer that is not probabilities says how (as a remote client's would)
        why = FallbackReason(exc.reason) if isinstance(exc, ProbaError) else FallbackReason.ERROR
        return CloudReply(None, why, 1, (time.monotonic() - t0) * 1000, str(exc))
    return CloudReply(proba, None, 1, (time.monotonic() - t0) * 1000)
