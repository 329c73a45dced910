"""Fusion on offload: answer an offloaded clip with both models' posteriors, not the cloud's alone.

The fused posterior is log-linear (a weighted product of experts):

    log q(k) = log p_cloud(k) + w * log p_edge(k) - log Z

`w = 0` is plain offloading (the cloud answers). The edge weight is fitted **without labels** on
DMD records: the `w` under which the fused posterior gives the cloud's own decision the highest
likelihood. Where the edge agrees with the cloud, a larger `w` sharpens the fused posterior; where
it disagrees, a larger `w` pulls probability away from the cloud's class. A weak edge disagrees
often and confidently, so its weight goes to 0; a strong edge earns a weight that lets it overrule
a cloud that is unsure. No label is read, only the two models' outputs on unlabelled clips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError, NotFittedError
from edgeswitch.switcher.files import load_json

EPS = 1e-6
FUSION_METHODS = ("none", "dmd", "fixed")


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0))


def log_linear(edge_proba: np.ndarray, cloud_proba: np.ndarray, edge_weight: float) -> np.ndarray:
    """`[n, K]`: the normalised product p_cloud * p_edge ** edge_weight."""
    z = _log(cloud_proba) + edge_weight * _log(edge_proba)
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    return q / q.sum(axis=1, keepdims=True)


def cloud_label_loglik(edge_proba: np.ndarray, cloud_proba: np.ndarray,
                       weights: np.ndarray) -> np.ndarray:
    """Mean log-likelihood of the cloud's decision under the fused posterior, per weight."""
    lc = np.asarray(cloud_proba).argmax(axis=1)
    rows = np.arange(len(lc))
    le, lcp = _log(edge_proba), _log(cloud_proba)
    out = []
    for w in weights:
        z = lcp + w * le
        m = z.max(axis=1, keepdims=True)
        lse = (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
        out.append(float(np.mean(z[rows, lc] - lse)))
    return np.asarray(out)


@dataclass
class Fusion:
    """How an offloaded clip is answered: by the cloud (`method="none"`), or by the log-linear
    fusion with an edge weight fitted on DMD records (`"dmd"`) or given (`"fixed"`)."""

    method: str = "dmd"
    edge_weight: float = 1.0           # used as is by "fixed"; fitted by "dmd"
    max_weight: float = 2.0            # "dmd": the search range is [0, max_weight] ...
    grid: int = 81                     # ... on this many points
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in FUSION_METHODS:
            raise DataError(f"fusion method must be one of {list(FUSION_METHODS)}, got "
                            f"{self.method!r}")
        if not np.isfinite(self.edge_weight) or self.edge_weight < 0:
            raise DataError(f"fusion edge_weight must be finite and >= 0, got {self.edge_weight}")
        if self.method == "dmd" and (self.max_weight <= 0 or self.grid < 2):
            raise DataError("fusion max_weight must be > 0 and grid >= 2")

    def fit(self, edge_proba: np.ndarray, cloud_proba: np.ndarray) -> Fusion:
        """Fit on the two models' outputs for unlabelled clips (DMD records); no labels."""
        edge_proba, cloud_proba = np.asarray(edge_proba), np.asarray(cloud_proba)
        if edge_proba.shape != cloud_proba.shape or edge_proba.ndim != 2:
            raise DataError(f"fusion needs edge and cloud probabilities of one shape [n, K], got "
                            f"{edge_proba.shape} and {cloud_proba.shape}")
        if not (np.isfinite(edge_proba).all() and np.isfinite(cloud_proba).all()):
            raise DataError("fusion: edge or cloud probabilities contain NaN or inf")
        if self.method == "none":
            self.weight_ = 0.0
        elif self.method == "fixed":
            self.weight_ = float(self.edge_weight)
        else:
            weights = np.linspace(0.0, self.max_weight, self.grid)
            ll = cloud_label_loglik(edge_proba, cloud_proba, weights)
            self.weight_ = float(weights[int(np.argmax(ll))])
            self.loglik_ = ll.tolist()
        self.n_fit_ = len(edge_proba)
        return self

    @property
    def weight(self) -> float:
        if not hasattr(self, "weight_"):
            raise NotFittedError("fusion: call fit() before combining")
        return self.weight_

    def combine(self, edge_proba: np.ndarray, cloud_proba: np.ndarray) -> np.ndarray:
        """The answer's posterior for offloaded clips (the cloud's own when the weight is 0)."""
        w = self.weight
        if w == 0.0:
            return np.asarray(cloud_proba, dtype=np.float64)
        return log_linear(edge_proba, cloud_proba, w)

    def to_dict(self) -> dict:
        return asdict(self) | {"weight": self.weight, "n_fit": getattr(self, "n_fit_", None)}

    @classmethod
    def from_dict(cls, d: dict) -> Fusion:
        if not isinstance(d, dict):
            raise DataError(f"fusion must be a JSON object, got {type(d).__name__}")
        known = {"method", "edge_weight", "max_weight", "grid", "meta"}
        try:
            f = cls(**{k: v for k, v in d.items() if k in known})
            w = float(d["weight"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"fusion: not a fitted fusion ({exc})") from None
        if not np.isfinite(w) or w < 0:
            raise DataError(f"fusion weight must be finite and >= 0, got {w}")
        f.weight_ = w
        return f

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Fusion:
        return load_json(path, "fusion", cls.from_dict)
