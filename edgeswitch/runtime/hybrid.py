"""Hybrid inference: edge -> switcher -> (cloud when the switcher doubts the edge).

Every clip gets an answer. When the cloud was asked and did not answer by the deadline (down,
slow, erroring, circuit open), the edge answer stands, flagged `verified=False` with the reason.
A clip the edge model cannot digest raises for its call (runtime.stream then retries the
call's clips one by one, so that only that clip fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeswitch.cloud.client import CloudClient, CloudReply, InProcessCloud
from edgeswitch.cloud.client import ask as ask_cloud
from edgeswitch.data.clips import model_input
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import ClipClassifier, ModelOutput, check_same_classes
from edgeswitch.runtime.decision_log import Decision, DecisionLog
from edgeswitch.switcher.calibrate import OperatingPoint
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import Router


@dataclass(frozen=True)
class HybridResult:
    """Per clip: the answer, who gave it, and everything the decision was based on."""

    label: np.ndarray        # [n] class index of the answer
    proba: np.ndarray        # [n, K]
    answered_by: np.ndarray  # [n] "edge" | "cloud"
    score: np.ndarray        # [n] switcher score
    edge: ModelOutput
    offloaded: np.ndarray    # [n] the router sent the clip to the cloud
    verified: np.ndarray     # [n] False where the cloud was asked and did not answer
    reason: np.ndarray       # [n] why not: a cloud.reasons.FallbackReason ("" where verified)
    cloud_proba: np.ndarray  # [n, K], NaN rows where the cloud gave nothing
    edge_ms: float           # this call's edge + switcher time
    cloud_ms: float          # this call's cloud time (0 when not asked)
    total_ms: float          # from the call to its answers

    def records(self, classes: tuple[str, ...], ids: np.ndarray | None = None) -> list[dict]:
        """JSON-ready rows, one per clip."""
        ids = np.arange(len(self.label)).astype(str) if ids is None else ids
        # the call's latencies (every clip of a call shares them)
        latency = {"edge": round(self.edge_ms, 3), "cloud": round(self.cloud_ms, 3),
                   "total": round(self.total_ms, 3)}
        return [{"clip_id": str(i), "label": classes[int(lab)], "answered_by": str(who),
                 "verified": bool(ok), "fallback_reason": str(why) or None,
                 "switcher_score": float(s), "latency_ms": latency,
                 "proba": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)}}
                for i, lab, who, ok, why, s, row in zip(ids, self.label, self.answered_by,
                                                        self.verified, self.reason, self.score,
                                                        self.proba, strict=True)]


class HybridClassifier:
    """Edge model + router + threshold + cloud client. The edge answer stands unless the router
    scores the clip below the operating point's threshold and the cloud answers in time.

    `log` appends every decision to a `DecisionLog`. `shadow_rate` also sends that share of the
    clips the router kept to the cloud, for the log only (unbiased DMD data; costs cloud calls).
    `fusion` answers an offloaded clip with the fused edge and cloud posteriors (the log keeps
    the cloud's own probabilities beside the answer).
    """

    def __init__(self, edge: ClipClassifier, router: Router,
                 cloud: CloudClient | ClipClassifier, operating_point: OperatingPoint,
                 step: float | None = None, log: DecisionLog | None = None,
                 shadow_rate: float = 0.0, seed: int = 0, fusion: Fusion | None = None) -> None:
        self.edge = edge
        self.fusion = fusion
        self.router = router
        self.cloud = cloud if isinstance(cloud, CloudClient) else InProcessCloud(cloud)
        check_same_classes(edge, self.cloud)
        self.operating_point = operating_point
        self.classes_ = tuple(edge.classes_)
        self.log = log
        if not 0 <= shadow_rate <= 1:
            raise EdgeSwitchError(f"shadow_rate must be within [0, 1], got {shadow_rate}")
        self.shadow_rate = shadow_rate
        self.rng = np.random.default_rng(seed)
        # an adaptive operating point keeps its offload share on the clips this object sees
        self.controller = None
        if operating_point.adaptive:
            self.controller = operating_point.controller(step)

    def classify(self, X: np.ndarray, ids=None, groups=None,
                 on_answer: Callable[[HybridResult], None] | None = None) -> HybridResult:
        """The call's answers. `on_answer(result)` runs before the decisions are committed to
        the log (inside its transaction): what it writes and the log agree even after a kill,
        up to this one call (see runtime.stream)."""
        t0 = time.monotonic()
        deadline = t0 + getattr(self.cloud, "deadline_s", float("inf"))
        X = model_input(X)
        n, k = len(X), len(self.classes_)
        edge_out = self.edge.outputs(X)
        score = self.router.trust(edge_out)
        off = self.controller.decide(score) if self.controller is not None \
            else self.operating_point.offload(score)
        shadow = ~off & (self.rng.random(n) < self.shadow_rate) if self.shadow_rate else \
            np.zeros(n, bool)
        t_edge = time.monotonic()
        proba = edge_out.proba.astype(np.float64).copy()
        cloud_proba = np.full((n, k), np.nan)
        verified = np.ones(n, bool)
        reason = np.full(n, "", dtype=object)
        ask = off | shadow
        reply = CloudReply(None, None, 0, 0.0)
        if ask.any():
            reply = ask_cloud(self.cloud, X[ask], deadline)
            if reply.ok:
                cloud_proba[ask] = reply.proba
                proba[off] = cloud_proba[off] if self.fusion is None else \
                    self.fusion.combine(edge_out.proba[off], cloud_proba[off])
            else:
                verified[off] = False
                reason[off] = reply.reason
        answered = off & verified
        result = HybridResult(
            label=proba.argmax(axis=1), proba=proba,
            answered_by=np.where(answered, "cloud", "edge"), score=score, edge=edge_out,
            offloaded=off, verified=verified, reason=reason, cloud_proba=cloud_proba,
            edge_ms=(t_edge - t0) * 1000, cloud_ms=reply.latency_ms,
            total_ms=(time.monotonic() - t0) * 1000)
        if self.log is not None:
            self._log(result, shadow, reply, ids, groups,
                      None if on_answer is None else lambda: on_answer(result))
        elif on_answer is not None:
            on_answer(result)
        return result

    def _log(self, r: HybridResult, shadow: np.ndarray, reply: CloudReply, ids, groups,
             before_commit: Callable[[], None] | None = None) -> None:
        n = len(r.label)
        ids = np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)
        groups = np.full(n, "live") if groups is None else np.asarray(groups).astype(str)
        asked = r.offloaded | shadow
        self.log.append([Decision(
            clip_id=ids[i], group=groups[i], label=self.classes_[int(r.label[i])],
            answered_by=str(r.answered_by[i]), verified=bool(r.verified[i]),
            fallback_reason=r.reason[i] or None, offloaded=bool(r.offloaded[i]),
            shadow=bool(shadow[i]), score=float(r.score[i]), edge_proba=r.edge.proba[i],
            edge_embedding=r.edge.embedding[i],
            cloud_proba=None if np.isnan(r.cloud_proba[i, 0]) else r.cloud_proba[i],
            edge_ms=r.edge_ms, cloud_ms=reply.latency_ms if asked[i] else None,
            total_ms=r.total_ms, attempts=reply.attempts if asked[i] else 0,
            device=reply.device if asked[i] else None)
            for i in range(n)], before_commit=before_commit)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).label

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).proba
