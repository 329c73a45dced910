"""What every switcher shares: the scikit-learn shape, edge-model checks, one file format.

A switcher maps what the edge model computed for a clip (`ModelOutput`) to a score in [0, 1],
`trust(edge_output) -> [n]`: high means "keep the edge answer". Families differ only in `_fit`,
`_trust` and their arrays; `load_switcher` reads any of them back by the family named in the
file (import `edgeswitch.switcher` first: it registers every family).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgeswitch.errors import DataError, ModelError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.features import (
    FEATURE_GROUPS,
    feature_slices,
    n_feature_macs,
    switcher_features,
)

SWITCHERS: dict[str, type[Switcher]] = {}


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z), the formula of scipy.special.expit, in numpy so that scoring a clip on a
    device needs no scipy (equal to expit within one ulp: numpy's exp against libm's). Every
    switcher scores with it, in training and on the device alike, so thresholds match."""
    with np.errstate(over="ignore"):  # e^-z = inf for z < -709 gives 0, as expit does
        return 1.0 / (1.0 + np.exp(-z))


def registrar(table: dict, attribute: str):
    """A class decorator factory: `@register(name)` files the class under `name` in `table`
    and sets `cls.<attribute> = name` (one pattern for switcher families and routers)."""
    def register(name: str):
        def deco(cls):
            table[name] = cls
            setattr(cls, attribute, name)
            return cls
        return deco
    return register


register_family = registrar(SWITCHERS, "family")


@dataclass
class Switcher:
    """Base class. Subclasses are dataclasses whose fields are their hyperparameters."""

    target: str = "hard"
    features: tuple[str, ...] = FEATURE_GROUPS
    seed: int = 0
    name: str = "dmd"
    meta: dict = field(default_factory=dict)

    family: ClassVar[str] = "base"
    _arrays: ClassVar[tuple[str, ...]] = ()      # fitted arrays saved to the file
    # a clip's trust is the same bit for bit whatever batch it is scored in (not so where
    # it goes through a BLAS product: its result depends on the batch in the last bits)
    rowwise: ClassVar[bool] = False

    # --- what a family implements -------------------------------------------------------
    def _fit(self, F: np.ndarray, t: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def _trust(self, F: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        self._check_fitted()
        return int(sum(np.asarray(getattr(self, a)).size for a in self._arrays))

    @property
    def macs(self) -> int:
        """Multiply-accumulates (or comparisons, for trees) per clip, features included."""
        raise NotImplementedError

    # --- the shared estimator surface ---------------------------------------------------
    def fit(self, edge: ModelOutput, target: np.ndarray, groups: np.ndarray | None = None
            ) -> Switcher:
        """Fit on edge outputs and per-clip targets in [0, 1] (1 = the edge answer stands)."""
        F = switcher_features(edge, tuple(self.features))
        t = np.asarray(target, dtype=np.float32)
        if t.shape != (len(F),):
            raise DataError(f"switcher target has shape {t.shape}, expected ({len(F)},)")
        if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise DataError("switcher targets must be finite and within [0, 1]")
        if t.max() - t.min() < 1e-6:
            warnings.warn(f"switcher '{self.name}': every target is {t[0]:.3g} (the two models "
                          "always agree or always disagree on this pool); the switcher will be "
                          "a constant", stacklevel=2)
        self.n_classes_ = edge.proba.shape[1]
        self.embedding_dim_ = edge.embedding.shape[1]
        self.feature_slices_ = feature_slices(tuple(self.features), self.n_classes_,
                                              self.embedding_dim_)
        self._fit(F, t, None if groups is None else np.asarray(groups).astype(str))
        self.n_features_ = F.shape[1]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_"):
            raise NotFittedError(f"switcher '{self.name}': call fit() before scoring")

    def trust(self, edge: ModelOutput, conf: np.ndarray | None = None) -> np.ndarray:
        """Predicted trust in the edge answer per clip, in [0, 1]: high means keep it. `conf`:
        the clips' confidence features, where already computed (switcher_features)."""
        self._check_fitted()
        F = switcher_features(edge, tuple(self.features), conf)
        if F.shape[1] != self.n_features_:
            raise ModelError(f"switcher '{self.name}' was fitted on {self.n_features_} features, "
                             f"got {F.shape[1]} (different edge model or class count?)")
        return self._trust(F)

    def predict_proba(self, edge: ModelOutput) -> np.ndarray:
        """`[n, 2]`: P(offload-worthy), P(the edge answer stands)."""
        s = self.trust(edge)
        return np.stack([1 - s, s], axis=1)

    def predict(self, edge: ModelOutput, threshold: float = 0.5) -> np.ndarray:
        """1 = keep the edge answer, 0 = offload."""
        return (self.trust(edge) >= threshold).astype(np.int64)

    def check_edge(self, edge_model) -> None:
        """Refuse an edge model other than the one whose outputs trained this switcher."""
        from edgeswitch.models.base import model_identity

        expected = self.meta.get("edge_model")
        actual = model_identity(edge_model)
        if expected and "@" in expected and "@" in actual and expected != actual:
            raise ModelError(f"switcher '{self.name}' was trained on outputs of edge model "
                             f"{expected}, not {actual}")

    def feature_macs(self) -> int:
        return n_feature_macs(tuple(self.features), self.n_classes_, self.embedding_dim_)

    # --- one file format for every family -----------------------------------------------
    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params = asdict(self) | {"features": list(self.features), "family": self.family,
                                 "fitted": self._fitted_scalars()}
        arrays = {a.rstrip("_"): np.asarray(getattr(self, a)) for a in self._arrays}
        with open(path, "wb") as fh:  # np.savez would append .npz to a path without one
            np.savez(fh, params=json.dumps(params), **arrays)
        return path

    def _fitted_scalars(self) -> dict:
        return {"n_features_": self.n_features_, "n_classes_": self.n_classes_,
                "embedding_dim_": self.embedding_dim_}

    def _restore(self, fitted: dict | None) -> None:
        """Fitted scalars after the arrays are loaded (older files carry none: derive them)."""
        for key, value in (fitted or {}).items():
            setattr(self, key, value)


def load_switcher(path: str | Path) -> Switcher:
    """Any switcher file, of any registered family (edgeswitch.switcher registers them all)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            params = json.loads(str(f["params"]))
            family = params.pop("family", "mlp")   # files from before families were named
            if family not in SWITCHERS:
                raise ModelError(f"{path}: unknown switcher family {family!r}; known: "
                                 f"{sorted(SWITCHERS)}")
            klass = SWITCHERS[family]
            fitted = params.pop("fitted", None)
            names = {f.name for f in fields(klass)}
            params["features"] = tuple(params["features"])
            sw = klass(**{k: v for k, v in params.items() if k in names})
            arrays = {a: np.array(f[a.rstrip("_")]) for a in klass._arrays}
    except FileNotFoundError:
        raise ModelError(f"switcher file not found: {path}") from None
    except ModelError:
        raise
    except (KeyError, ValueError, OSError, TypeError) as exc:
        raise ModelError(f"{path}: not an edgeswitch switcher file ({exc})") from None
    for a, v in arrays.items():
        setattr(sw, a, v)
    sw._restore(fitted)
    return sw
