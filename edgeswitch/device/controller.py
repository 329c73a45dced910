"""The adaptive operating point's rate controller, for the slim device runner.

The same rule as switcher.calibrate.RateController (rank a trust among the calibration
quantiles, offload below a level that tracks the target rate, a hard cap on the running
share), rewritten here because the runner may not import switcher.calibrate: the
edgeswitch.switcher package imports scipy. One addition: a trust within `tie` of a
calibration knot is read as that knot (device.spec.TIE): a tree switcher's trust takes few
values, a live clip often ties with calibration clips exactly, and the graph's float32 trust
of it lands an ulp off, on the other side of a mid-tie level. tests/test_device.py holds the
two to the same decisions on the same scores. The graph does not hold the controller: it
carries one level for the whole device, across streams, as the runtime's one per hybrid does.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.errors import DataError


class Controller:
    def __init__(self, rate: float, calib_quantiles, step: float = 0.01, tie: float = 0.0
                 ) -> None:
        q = np.asarray(calib_quantiles, dtype=float)
        if not 0.0 <= rate <= 1.0 or step <= 0 or q.ndim != 1 or len(q) < 2 or \
                np.any(np.diff(q) < 0):
            raise DataError("device.json: the controller needs a rate in [0, 1], a positive "
                            "step and at least two non-decreasing calibration quantiles")
        self.rate, self.step, self.tie = float(rate), float(step), float(tie)
        levels = np.linspace(0.0, 1.0, len(q))
        self.knots, first = np.unique(q, return_index=True)
        last = len(q) - 1 - np.unique(q[::-1], return_index=True)[1]
        self.levels = (levels[first] + levels[last]) / 2
        self.level = self.rate
        self.seen = self.offloaded = self.capped = 0

    def rank(self, score: float) -> float:
        """The score's quantile; a score within `tie` of a knot takes the knot's level (the
        graph's float32 trust of a clip tied with calibration clips lands an ulp off)."""
        near = int(np.argmin(np.abs(self.knots - score)))
        if abs(self.knots[near] - score) <= self.tie:
            score = float(self.knots[near])
        if len(self.knots) == 1:
            k = self.knots[0]
            return 0.0 if score < k else (1.0 if score > k else 0.5)
        return float(np.interp(score, self.knots, self.levels))

    def decide(self, score: float) -> bool:
        """Offload this clip? (each decision reads only the clips before it)"""
        self.seen += 1
        want = self.rank(score) < self.level
        capped = want and self.offloaded + 1 > self.rate * self.seen + 1e-9
        hit = want and not capped
        self.offloaded += int(hit)
        self.capped += int(capped)
        if not capped:
            self.level += self.step * (self.rate - float(hit))
        return hit
