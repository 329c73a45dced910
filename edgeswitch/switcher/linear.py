"""A linear switcher: L2-regularised logistic regression on standardised switcher features.

The smallest learned switcher: one dot product per clip. On a small DMD pool it is the family
least likely to do worse than the edge's own confidence, which is one of its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.switcher.base import Switcher, register_family, sigmoid


@register_family("linear")
@dataclass
class LinearSwitcher(Switcher):
    """score = sigmoid(w . features + b); `l2` penalises the standardised weights.

    `free` names feature columns left unpenalised (by default the confidence triplet, when it
    is among the features): a large `l2` then shrinks the model to the edge's own confidence,
    and a smaller one learns corrections to it (per edge class, from the embedding)."""

    l2: float = 1e-2
    free: str = "confidence"       # "confidence" or "" (penalise every weight)

    _arrays: ClassVar[tuple[str, ...]] = ("w_", "b_")

    def _fit(self, F: np.ndarray, t: np.ndarray, groups: np.ndarray | None) -> None:
        if not self.l2 >= 0:
            raise DataError(f"linear switcher l2 must be >= 0, got {self.l2}")
        mean = F.mean(axis=0).astype(np.float64)
        scale = F.std(axis=0).astype(np.float64) + 1e-6
        Z = (F - mean) / scale
        t64 = t.astype(np.float64)
        n, d = Z.shape
        pen = np.ones(d)
        if self.free == "confidence" and "confidence" in self.features:
            start, stop = self.feature_slices_["confidence"]
            pen[start:stop] = 0.0
        elif self.free not in ("", "confidence"):
            raise DataError(f"linear switcher free must be 'confidence' or '', got {self.free!r}")
        from scipy.optimize import minimize  # training only (the 'train' extra)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:d], theta[d]
            z = Z @ w + b
            # BCE with soft targets, written stably: log(1 + e^z) - t z
            val = np.mean(np.logaddexp(0.0, z) - t64 * z) + 0.5 * self.l2 * (pen * w @ w)
            r = (sigmoid(z) - t64) / n
            return val, np.concatenate([Z.T @ r + self.l2 * pen * w, [r.sum()]])

        res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                       options={"maxiter": 500})
        w = res.x[:d] / scale          # fold the standardisation into the weights
        self.w_ = w.astype(np.float32)
        self.b_ = np.float32(res.x[d] - w @ mean)

    def _trust(self, F: np.ndarray) -> np.ndarray:
        return sigmoid(F.astype(np.float64) @ self.w_ + float(self.b_))

    @property
    def macs(self) -> int:
        self._check_fitted()
        return int(self.w_.size) + self.feature_macs()

