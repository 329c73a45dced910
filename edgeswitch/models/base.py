"""What every classifier in edgeswitch returns, and the interface edge and cloud models share."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from edgeswitch.errors import ModelError


@dataclass(frozen=True)
class ModelOutput:
    """One pass of a model over n clips: class probabilities `[n, K]`, embedding `[n, E]`."""

    proba: np.ndarray
    embedding: np.ndarray

    def __post_init__(self) -> None:
        if self.proba.ndim != 2 or self.embedding.ndim != 2:
            raise ModelError(f"model output must be 2-D, got proba {self.proba.shape} "
                             f"and embedding {self.embedding.shape}")
        if len(self.proba) != len(self.embedding):
            raise ModelError("proba and embedding disagree on the number of clips")
        if not np.isfinite(self.proba).all():
            raise ModelError("model returned non-finite class probabilities")

    @property
    def label(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    def __len__(self) -> int:
        return len(self.proba)


@runtime_checkable
class ClipClassifier(Protocol):
    """Anything that classifies clips `[n, T, C]` into `classes_` and exposes its embedding.

    Edge models, cloud models (in-process or remote) and ensembles all satisfy this.
    """

    classes_: tuple[str, ...]
    name: str

    def outputs(self, X: np.ndarray) -> ModelOutput: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def check_same_classes(edge: ClipClassifier, cloud: ClipClassifier) -> None:
    """Edge and cloud must speak the same label set, in the same order."""
    if len(edge.classes_) != len(cloud.classes_):
        raise ModelError(
            f"class count mismatch: edge '{edge.name}' has {len(edge.classes_)} classes "
            f"{list(edge.classes_)}, cloud '{cloud.name}' has {len(cloud.classes_)} "
            f"{list(cloud.classes_)}"
        )
    if tuple(edge.classes_) != tuple(cloud.classes_):
        raise ModelError(f"class order mismatch: edge {list(edge.classes_)} vs cloud "
                         f"{list(cloud.classes_)}")


def model_identity(model) -> str:
    """name@hash of the model file where there is one, else the name."""
    blob = getattr(model, "onnx_bytes_", None) or getattr(getattr(model, "model", None),
                                                           "onnx_bytes_", None)
    if blob:
        return f"{model.name}@{hashlib.sha256(blob).hexdigest()[:12]}"
    return str(model.name)


class ProbaError(ModelError):
    """A cloud answer that is not n rows of k probabilities; `reason` says how."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason  # "wrong_classes" | "malformed"


def check_proba(proba, n: int, k: int, who: str) -> np.ndarray:
    """A model's answer must be n rows of k finite, non-negative probabilities: the one check
    every caller of a model (hybrid, DMD, server, clients) applies to what comes back."""
    try:
        proba = np.asarray(proba, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProbaError(f"{who} returned probabilities that are not a numeric table",
                         "malformed") from None
    if proba.ndim != 2 or proba.shape[0] != n:
        raise ProbaError(f"{who} returned probabilities of shape {proba.shape} for {n} clips",
                         "malformed")
    if proba.shape[1] != k:
        raise ProbaError(f"{who} returned {proba.shape[1]} class probabilities, the edge has "
                         f"{k} classes", "wrong_classes")
    if not np.isfinite(proba).all() or (proba < 0).any():
        raise ProbaError(f"{who} returned probabilities that are negative or not finite",
                         "malformed")
    return proba
