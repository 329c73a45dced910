"""The model contract: what every classifier in edgeswitch provides and returns.

Every model has `classes_: tuple[str, ...]` (the label set, in order) and `name: str`.

An **edge model** (`ClipClassifier`; sensor networks, ONNX models, the video edges) provides
- `outputs(X) -> ModelOutput`: class probabilities `[n, K]` and an embedding `[n, E]` in one
  pass, what the switcher, DMD and the hybrid read;
- `predict_proba(X) -> [n, K]`: the same probabilities as `outputs(X).proba`;
- `predict(X) -> np.ndarray` of int64 **class indices into `classes_`**, the argmax of
  `predict_proba`. It is the same kind for every model; a caller that wants names writes
  `np.asarray(m.classes_)[m.predict(X)]`.

A **cloud model** (`CloudModel`; what the hybrid and DMD send offloaded clips to, in-process or
remote) answers through one method, `predict_proba(X) -> [n, K]`: rows are finite,
non-negative and sum to 1 (`check_proba` is the one check callers apply to what comes back).
Where a cloud model also has `predict`, it returns indices like an edge model's.

`X` is whatever the model reads (sensor clips `[n, T, C]`, or a list of video clips). Bad input
(wrong shape, NaN, wrong dtype, the wrong kind of clip) raises an `EdgeSwitchError` subclass
that names the problem, never a library's traceback. Routers and switchers score an edge
output with `trust(edge_output) -> [n]` (edgeswitch.switcher). `tests/test_model_contract.py`
checks every model class against this contract, in the spirit of scikit-learn's
`check_estimator`.
"""

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
            bad = np.nonzero(~np.isfinite(self.proba).all(axis=1))[0]
            raise NonFiniteOutput("model returned non-finite class probabilities", bad)

    @property
    def label(self) -> np.ndarray:
        """int64 indices into the model's `classes_`: what `predict` returns."""
        return class_indices(self.proba)

    def __len__(self) -> int:
        return len(self.proba)


@runtime_checkable
class ClipClassifier(Protocol):
    """An edge model: `outputs`, `predict_proba` and `predict` (indices) over `classes_`. The
    sensor cloud networks satisfy it too (they have embeddings), and so may be used as either."""

    classes_: tuple[str, ...]
    name: str

    def outputs(self, X) -> ModelOutput: ...

    def predict_proba(self, X) -> np.ndarray: ...

    def predict(self, X) -> np.ndarray: ...


@runtime_checkable
class CloudModel(Protocol):
    """A cloud model: one method, `predict_proba(X) -> [n, K]` over `classes_`."""

    classes_: tuple[str, ...]
    name: str

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities `[n, K]`; raises when the cloud cannot answer."""
        ...


def class_indices(proba: np.ndarray) -> np.ndarray:
    """`predict` from probabilities: int64 indices into `classes_` (the contract's one kind)."""
    return np.asarray(proba).argmax(axis=1).astype(np.int64)


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


class NonFiniteOutput(ModelError):
    """A model run whose probabilities are not finite for the clips at `rows`: those clips
    are what the model cannot digest (the server fails their requests alone)."""

    def __init__(self, message: str, rows: np.ndarray) -> None:
        super().__init__(message)
        self.rows = rows


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
