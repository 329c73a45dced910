"""The DMD switcher: a small MLP that predicts whether the cloud would agree with the edge.

Trained with torch (a few seconds), served with two numpy matrix products, so it costs almost
nothing next to the edge model.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit

from edgeswitch.errors import DataError, ModelError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.features import FEATURE_GROUPS, switcher_features


@dataclass
class MLPSwitcher:
    """score(edge output) -> estimated probability that the edge answer stands (agrees).

    target: "soft" regresses the cloud's probability of the edge's class, "hard" classifies
    agreement. The same class trained on ground-truth "edge is correct" labels is the
    supervised ablation.
    """

    hidden: int = 32
    target: str = "hard"
    features: tuple[str, ...] = FEATURE_GROUPS
    epochs: int = 400
    lr: float = 1e-2
    weight_decay: float = 1e-3
    val_fraction: float = 0.2
    seed: int = 0
    name: str = "dmd"
    meta: dict = field(default_factory=dict)

    def fit(self, edge: ModelOutput, target: np.ndarray, groups: np.ndarray | None = None
            ) -> MLPSwitcher:
        """Fit on edge outputs and targets in [0, 1].

        The number of epochs is chosen by cross-validation over groups (subjects/recordings)
        when there are at least two, so early stopping rewards generalising to an unseen
        subject rather than to unseen windows of known ones; then the MLP is refitted on all.
        """
        F = switcher_features(edge, tuple(self.features))
        t = np.asarray(target, dtype=np.float32)
        if t.shape != (len(F),):
            raise DataError(f"switcher target has shape {t.shape}, expected ({len(F)},)")
        if not np.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise DataError("switcher targets must be finite and within [0, 1]")
        if self.epochs < 1:
            raise DataError(f"switcher epochs must be >= 1, got {self.epochs}")
        if t.max() - t.min() < 1e-6:
            warnings.warn(f"switcher '{self.name}': every target is {t[0]:.3g} (the two models "
                          "always agree or always disagree on this pool); the switcher will be "
                          "a constant", stacklevel=2)
        self.mean_ = F.mean(axis=0)
        self.scale_ = F.std(axis=0) + 1e-6
        Z = ((F - self.mean_) / self.scale_).astype(np.float32)
        folds = _validation_folds(len(F), groups, self.val_fraction,
                                  np.random.default_rng(self.seed))
        if folds:
            curves = [self._train(Z[~va], t[~va], self.epochs, Z[va], t[va])[1] for va in folds]
            mean_curve = np.mean(curves, axis=0)
            self.best_epoch_ = int(np.argmin(mean_curve)) + 1
            self.val_loss_ = float(mean_curve.min())
        else:
            self.best_epoch_, self.val_loss_ = self.epochs, None
        (w1, b1, w2, b2), _ = self._train(Z, t, self.best_epoch_)
        # fold the standardisation into the first layer: inference is then two matmuls
        self.W1_ = (w1 / self.scale_).T.astype(np.float32)
        self.b1_ = (b1 - (w1 / self.scale_) @ self.mean_).astype(np.float32)
        self.w2_ = w2.reshape(-1).astype(np.float32)
        self.b2_ = float(b2[0])
        self.n_features_ = F.shape[1]
        return self

    def _train(self, Z: np.ndarray, t: np.ndarray, epochs: int, Zv: np.ndarray | None = None,
               tv: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray]:
        """Full-batch AdamW (the pool is small); returns weights and the per-epoch val loss."""
        import torch

        bce = torch.nn.functional.binary_cross_entropy_with_logits
        torch.manual_seed(self.seed)
        net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], self.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(self.hidden, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        X, T = torch.from_numpy(Z), torch.from_numpy(t)
        Xv = None if Zv is None else torch.from_numpy(Zv)
        Tv = None if tv is None else torch.from_numpy(tv)
        val = []
        for _ in range(epochs):
            opt.zero_grad()
            loss = bce(net(X).squeeze(1), T)
            loss.backward()
            opt.step()
            if Xv is not None:
                with torch.no_grad():
                    val.append(bce(net(Xv).squeeze(1), Tv).item())
        weights = [p.detach().numpy().astype(np.float32) for p in net.parameters()]
        return weights, np.asarray(val)

    def _check_fitted(self) -> None:
        if not hasattr(self, "W1_"):
            raise NotFittedError(f"switcher '{self.name}': call fit() before scoring")

    def score(self, edge: ModelOutput) -> np.ndarray:
        """Predicted alignment in (0, 1): high means keep the edge answer."""
        self._check_fitted()
        F = switcher_features(edge, tuple(self.features))
        if F.shape[1] != self.n_features_:
            raise ModelError(f"switcher '{self.name}' was fitted on {self.n_features_} features, "
                             f"got {F.shape[1]} (different edge model or class count?)")
        h = np.maximum(F @ self.W1_ + self.b1_, 0.0)
        return expit(h @ self.w2_ + self.b2_)

    def check_edge(self, edge_model) -> None:
        """Refuse an edge model other than the one whose outputs trained this switcher."""
        from edgeswitch.dmd.generate import model_identity

        expected = self.meta.get("edge_model")
        actual = model_identity(edge_model)
        if expected and "@" in expected and "@" in actual and expected != actual:
            raise ModelError(f"switcher '{self.name}' was trained on outputs of edge model "
                             f"{expected}, not {actual}")

    def predict_proba(self, edge: ModelOutput) -> np.ndarray:
        """`[n, 2]`: P(offload-worthy disagreement), P(agreement)."""
        s = self.score(edge)
        return np.stack([1 - s, s], axis=1)

    def predict(self, edge: ModelOutput, threshold: float = 0.5) -> np.ndarray:
        """1 = keep the edge answer, 0 = offload."""
        return (self.score(edge) >= threshold).astype(np.int64)

    @property
    def n_params(self) -> int:
        self._check_fitted()
        return int(self.W1_.size + self.b1_.size + self.w2_.size + 1)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per clip of the MLP (features add O(K) more)."""
        self._check_fitted()
        return int(self.W1_.size + self.w2_.size)

    def save(self, path: str | Path) -> Path:
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params = asdict(self) | {"features": list(self.features)}
        with open(path, "wb") as fh:  # np.savez would append .npz to a path without one
            np.savez(fh, W1=self.W1_, b1=self.b1_, w2=self.w2_, b2=np.float32(self.b2_),
                     params=json.dumps(params))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MLPSwitcher:
        try:
            with np.load(path, allow_pickle=False) as f:
                params = json.loads(str(f["params"]))
                params["features"] = tuple(params["features"])
                sw = cls(**params)
                sw.W1_, sw.b1_, sw.w2_ = f["W1"], f["b1"], f["w2"]
                sw.b2_ = float(f["b2"])
        except FileNotFoundError:
            raise ModelError(f"switcher file not found: {path}") from None
        except (KeyError, ValueError, OSError, TypeError) as exc:
            raise ModelError(f"{path}: not an edgeswitch switcher file ({exc})") from None
        sw.n_features_ = sw.W1_.shape[0]
        return sw


def _validation_folds(n: int, groups: np.ndarray | None, fraction: float,
                      rng: np.random.Generator, max_folds: int = 5) -> list[np.ndarray]:
    """Validation masks: leave-group(s)-out folds when there are >= 2 groups, else one random
    `fraction` of the rows; none when there is too little data."""
    if fraction <= 0 or n < 10:
        return []
    if groups is not None:
        g = rng.permutation(np.unique(groups))
        if len(g) >= 2:
            return [np.isin(groups, part) for part in np.array_split(g, min(max_folds, len(g)))]
    return [rng.random(n) < fraction]
