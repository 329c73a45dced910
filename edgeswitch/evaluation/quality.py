"""Classification quality, accuracy and macro-F1, in plain numpy (no scikit-learn at run
time). In this project "metrics" are the Prometheus metrics of a process (runtime/metrics.py,
serving/metrics.py); these are not."""

from __future__ import annotations

import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in y_true or y_pred."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = n_classes or int(max(y_true.max(), y_pred.max())) + 1
    idx = y_true * k + y_pred
    cm = np.bincount(idx, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=present)
    return float(f1[present].mean())
