"""The router `watch` uses when no switcher is given: the edge's own confidence.

A new user has no DMD run yet (it needs a VLM over unlabelled footage), so out of the box a
clip goes to the cloud when the edge is unsure (its top probability below `[video]
confidence`, 0.8) and whenever the edge says "fall": a fall claim is the costly one to get
wrong both ways, and the cloud is there to check it. Without a cloud nothing is sent and
those clips keep the edge answer, flagged `no_cloud`. A DMD-trained switcher (`--switcher
--op`) replaces all of this.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.calibrate import OperatingPoint
from edgeswitch.switcher.routers import MaxProbRouter


class EdgeConfidenceRouter(MaxProbRouter):
    """Trust = the edge's top probability; 0 for clips it labels `check` (sent first)."""

    name = "edge-confidence"

    def __init__(self, classes: tuple[str, ...], check: str = "fall") -> None:
        self.check = classes.index(check) if check in classes else None

    def trust(self, edge: ModelOutput) -> np.ndarray:
        score = super().trust(edge)
        if self.check is not None:
            score = np.where(edge.proba.argmax(axis=1) == self.check, 0.0, score)
        return score


def default_routing(classes: tuple[str, ...], threshold: float):
    """(router, operating point): offload where the trust is below `threshold`. Nothing was
    calibrated: the point's offload share on calibration data is unknown (recorded as 0)."""
    op = OperatingPoint("offload", float(threshold), 0.0,
                        params={"router": "edge-confidence", "calibrated": False})
    return EdgeConfidenceRouter(tuple(classes)), op
