"""Accuracy / macro-F1 against offload rate for a router's scores.

Offloading the k lowest-scored clips of n gives one hybrid; the curve visits every offload rate
on a grid from 0 to 1. Ties in the scores are broken by a seeded random order, so a router that
cannot tell clips apart gets the expected value of a random choice, not a lucky ordering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.evaluation.metrics import macro_f1


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


def router_curve(scores: np.ndarray, edge_label: np.ndarray, cloud_label: np.ndarray,
                 y_true: np.ndarray, n_classes: int, points: int = 101,
                 seed: int = 0) -> RouterCurve:
    """The full offload curve of one router on labelled clips."""
    n = len(y_true)
    order = offload_order(scores, seed)
    acc_k = accuracy_by_k(edge_label == y_true, cloud_label == y_true, order)
    grid = np.linspace(0.0, 1.0, points)
    ks = np.rint(grid * n).astype(int)
    f1 = []
    for k in ks:
        pred = edge_label.copy()
        pred[order[:k]] = cloud_label[order[:k]]
        f1.append(macro_f1(y_true, pred, n_classes))
    # exact least k (over all n+1, not the grid) at which the hybrid reaches cloud accuracy
    reach = np.nonzero(acc_k >= acc_k[-1] - 1e-12)[0]
    match = float(reach[0] / n) if len(reach) else None
    return RouterCurve(offload=ks / n, accuracy=acc_k[ks], macro_f1=np.asarray(f1),
                       auc=trapezoid_auc(ks / n, acc_k[ks]), offload_to_match_cloud=match)
