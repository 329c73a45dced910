"""How the hybrid reaches the cloud model: one small interface, implemented in-process here.

A remote implementation (HTTP, OpenAI-compatible VLM endpoints) only has to provide
`classes_`, `name` and `classify(X) -> proba [n, K]`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from edgeswitch.errors import ModelError
from edgeswitch.models.base import ClipClassifier


@runtime_checkable
class CloudClient(Protocol):
    classes_: tuple[str, ...]
    name: str

    def classify(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities `[n, K]` for clips `[n, T, C]`."""
        ...


class InProcessCloud:
    """The cloud model called directly in this process (no network)."""

    def __init__(self, model: ClipClassifier) -> None:
        self.model = model
        self.classes_ = tuple(model.classes_)
        self.name = model.name
        self.calls = 0
        self.clips_sent = 0

    def classify(self, X: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.clips_sent += len(X)
        return check_proba(self.model.predict_proba(X), len(X), len(self.classes_), self.name)


def check_proba(proba: np.ndarray, n: int, k: int, who: str) -> np.ndarray:
    """A cloud answer must be n rows of k finite probabilities."""
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, k):
        raise ModelError(f"cloud '{who}' returned probabilities of shape {proba.shape}, "
                         f"expected ({n}, {k}) for {n} clips and {k} classes")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ModelError(f"cloud '{who}' returned invalid probabilities (negative or non-finite)")
    return proba
