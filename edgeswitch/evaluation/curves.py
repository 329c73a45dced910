"""Accuracy / macro-F1 against offload rate: one curve function for every router.

A router gives a path of hybrids, from keeping every clip to offloading every clip:

* a per-clip router (`RankedPath`): offloading the k lowest-scored clips of n, for every
  k = 0..n. Ties in the scores are broken by a seeded random order, so a router that cannot
  tell clips apart gets the expected value of a random choice, not a lucky ordering;
* a stream router (`SweptPath`): one hybrid per threshold of a sweep, run through the streams
  in time order (a decision changes later states, so each threshold is its own run).

`offload_curve` reads either on a grid of offload rates: between two hybrids of the path the
curve is the straight line a random mixture of the two would give. "Offload to match the
cloud" is the least offload at which the path reaches cloud-only accuracy (the cloud's own
answers, whatever answers the hybrid gives offloaded clips).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.evaluation.quality import macro_f1


def offload_order(scores: np.ndarray, seed: int = 0) -> np.ndarray:
    """Clip indices in the order a router offloads them (lowest score first)."""
    scores = np.asarray(scores, dtype=float)
    tiebreak = np.random.default_rng(seed).random(len(scores))
    return np.lexsort((tiebreak, scores))


def accuracy_by_k(edge_correct: np.ndarray, cloud_correct: np.ndarray,
                  order: np.ndarray) -> np.ndarray:
    """Hybrid accuracy when the first k clips of `order` are offloaded, for k = 0..n."""
    edge_correct = np.asarray(edge_correct, dtype=float)
    gain = (np.asarray(cloud_correct, dtype=float) - edge_correct)[order]
    return (edge_correct.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / len(edge_correct)


def trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


@dataclass(frozen=True)
class RankedPath:
    """A per-clip router's hybrids: the first k clips of `order` answered by `answer`, the
    rest by `kept`, for k = 0..n."""

    order: np.ndarray    # [n] offload order
    kept: np.ndarray     # [n] the label of a kept clip
    answer: np.ndarray   # [n] the label of an offloaded clip

    @classmethod
    def from_scores(cls, scores: np.ndarray, kept: np.ndarray, answer: np.ndarray,
                    seed: int = 0) -> RankedPath:
        return cls(offload_order(scores, seed), np.asarray(kept), np.asarray(answer))

    @property
    def rates(self) -> np.ndarray:
        return np.arange(len(self.order) + 1) / len(self.order)

    def accuracy(self, y: np.ndarray) -> np.ndarray:
        return accuracy_by_k(self.kept == y, self.answer == y, self.order)

    def labels(self, rate: float) -> np.ndarray:
        k = int(np.rint(rate * len(self.order)))
        out = self.kept.copy()
        out[self.order[:k]] = self.answer[self.order[:k]]
        return out


@dataclass(frozen=True)
class SweptPath:
    """A stream router's hybrids: per threshold of a sweep, which clips it offloaded and the
    labels it answered (rows sorted by offload rate)."""

    offloaded: np.ndarray   # [P, n] bool
    label: np.ndarray       # [P, n]
    threshold: np.ndarray   # [P]

    def __post_init__(self) -> None:
        order = np.lexsort((self.threshold, self.offloaded.mean(axis=1)))
        for name in ("offloaded", "label", "threshold"):
            object.__setattr__(self, name, np.asarray(getattr(self, name))[order])

    @property
    def rates(self) -> np.ndarray:
        return self.offloaded.mean(axis=1)

    def accuracy(self, y: np.ndarray) -> np.ndarray:
        return (self.label == np.asarray(y)[None, :]).mean(axis=1)

    def labels(self, rate: float) -> np.ndarray:
        """The answers of the hybrid whose offload rate is nearest `rate`."""
        return self.label[int(np.argmin(np.abs(self.rates - rate)))]


def accuracy_at(path: RankedPath | SweptPath, y: np.ndarray, rates) -> np.ndarray:
    """The path's accuracy at these offload rates (straight lines between its hybrids)."""
    r, a = path.rates, path.accuracy(y)
    if isinstance(path, RankedPath):   # exact: the hybrid offloading round(rate * n) clips
        return a[np.rint(np.asarray(rates) * (len(r) - 1)).astype(int)]
    return np.interp(rates, r, a)


def match_rate(rates: np.ndarray, acc: np.ndarray, target: float) -> float | None:
    """The least offload rate at which the path (straight lines between its points) reaches
    `target` accuracy; None when it never does."""
    reach = np.nonzero(acc >= target - 1e-12)[0]
    if not len(reach):
        return None
    i = int(reach[0])
    if i == 0 or acc[i] == acc[i - 1]:
        return float(rates[i])
    frac = (target - acc[i - 1]) / (acc[i] - acc[i - 1])
    return float(rates[i - 1] + np.clip(frac, 0.0, 1.0) * (rates[i] - rates[i - 1]))


@dataclass(frozen=True)
class RouterCurve:
    offload: np.ndarray      # grid of offload rates, 0..1
    accuracy: np.ndarray
    macro_f1: np.ndarray
    auc: float               # area under accuracy vs offload rate
    offload_to_match_cloud: float | None

    def to_dict(self) -> dict:
        return {
            "curve": [[round(float(r), 6), round(float(a), 6)]
                      for r, a in zip(self.offload, self.accuracy, strict=True)],
            "f1_curve": [[round(float(r), 6), round(float(f), 6)]
                         for r, f in zip(self.offload, self.macro_f1, strict=True)],
            "auc": self.auc,
            "offload_to_match_cloud": self.offload_to_match_cloud,
        }


def offload_curve(path: RankedPath | SweptPath, y: np.ndarray, n_classes: int,
                  cloud_accuracy: float, points: int = 101) -> RouterCurve:
    """The curve of one router on labelled clips (see the module doc). `cloud_accuracy` is the
    cloud-only accuracy that "offload to match the cloud" is measured against."""
    grid = np.linspace(0.0, 1.0, points)
    acc = accuracy_at(path, y, grid)
    f1 = np.asarray([macro_f1(y, path.labels(r), n_classes) for r in grid])
    return RouterCurve(offload=grid, accuracy=acc, macro_f1=f1, auc=trapezoid_auc(grid, acc),
                       offload_to_match_cloud=match_rate(path.rates, path.accuracy(y),
                                                         cloud_accuracy))


def router_curve(scores: np.ndarray, edge_label: np.ndarray, cloud_label: np.ndarray,
                 y_true: np.ndarray, n_classes: int, points: int = 101, seed: int = 0,
                 cloud_accuracy: float | None = None) -> RouterCurve:
    """The curve of a per-clip router's scores (`cloud_label`: what an offloaded clip is
    answered; `cloud_accuracy` defaults to that answer's accuracy at full offload)."""
    path = RankedPath.from_scores(scores, edge_label, cloud_label, seed)
    target = float(np.mean(cloud_label == y_true)) if cloud_accuracy is None else cloud_accuracy
    return offload_curve(path, y_true, n_classes, target, points)
