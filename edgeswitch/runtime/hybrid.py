"""Hybrid inference: edge -> switcher -> (cloud when the switcher doubts the edge)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.data.clips import check_clips
from edgeswitch.models.base import ClipClassifier, ModelOutput, check_same_classes
from edgeswitch.runtime.cloud import CloudClient, InProcessCloud
from edgeswitch.switcher.calibrate import OperatingPoint
from edgeswitch.switcher.routers import Router


@dataclass(frozen=True)
class HybridResult:
    """Per clip: final label and probabilities, who answered, the switcher score."""

    label: np.ndarray        # [n] class index
    proba: np.ndarray        # [n, K]
    answered_by: np.ndarray  # [n] "edge" | "cloud"
    score: np.ndarray        # [n] switcher score
    edge: ModelOutput

    @property
    def offloaded(self) -> np.ndarray:
        return self.answered_by == "cloud"

    def records(self, classes: tuple[str, ...], ids: np.ndarray | None = None) -> list[dict]:
        ids = np.arange(len(self.label)).astype(str) if ids is None else ids
        return [{"clip_id": str(i), "label": classes[int(lab)], "answered_by": str(who),
                 "switcher_score": float(s),
                 "proba": {c: float(p) for c, p in zip(classes, row, strict=True)}}
                for i, lab, who, s, row in zip(ids, self.label, self.answered_by, self.score,
                                               self.proba, strict=True)]


class HybridClassifier:
    """Edge model + router + threshold + cloud client. The edge answer stands unless the router
    scores the clip below the operating point's threshold."""

    def __init__(self, edge: ClipClassifier, router: Router,
                 cloud: CloudClient | ClipClassifier, operating_point: OperatingPoint,
                 step: float | None = None) -> None:
        self.edge = edge
        self.router = router
        self.cloud = cloud if isinstance(cloud, CloudClient) else InProcessCloud(cloud)
        check_same_classes(edge, self.cloud)
        self.operating_point = operating_point
        self.classes_ = tuple(edge.classes_)
        # an adaptive operating point keeps its offload share on the clips this object sees
        self.controller = None
        if operating_point.adaptive:
            self.controller = operating_point.controller(step)

    def classify(self, X: np.ndarray) -> HybridResult:
        X = check_clips(X)
        edge_out = self.edge.outputs(X)
        score = self.router.score(edge_out)
        off = self.controller.decide(score) if self.controller is not None \
            else self.operating_point.offload(score)
        proba = edge_out.proba.astype(np.float64).copy()
        if off.any():
            proba[off] = self.cloud.classify(X[off])
        return HybridResult(label=proba.argmax(axis=1), proba=proba,
                            answered_by=np.where(off, "cloud", "edge"), score=score,
                            edge=edge_out)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).label

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).proba
