"""Switcher inputs: what the edge model already computed for a clip, plus cheap summaries."""

from __future__ import annotations

import numpy as np

from edgeswitch.config import FEATURE_GROUPS
from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput

# the names are the config schema's (its [switcher] features are checked against them)


def confidence(proba: np.ndarray) -> np.ndarray:
    """`[n, 3]`: max probability, margin (top-1 minus top-2), entropy normalised to [0, 1]."""
    k = proba.shape[1]
    top2 = np.partition(proba, k - 2, axis=1)[:, -2:]
    p_max = top2.max(axis=1)
    margin = p_max - top2.min(axis=1)
    ent = -(proba * np.log(np.clip(proba, 1e-12, None))).sum(axis=1) / np.log(k)
    return np.stack([p_max, margin, ent], axis=1)


def switcher_features(edge: ModelOutput, groups: tuple[str, ...] = FEATURE_GROUPS,
                      conf: np.ndarray | None = None) -> np.ndarray:
    """Concatenate the chosen feature groups into one float32 matrix `[n, F]`. `conf`: the
    clips' `confidence`, where already computed (a replay computes it once per clip)."""
    unknown = set(groups) - set(FEATURE_GROUPS)
    if unknown or not groups:
        raise DataError(f"unknown switcher feature groups {sorted(unknown)}; "
                        f"choose from {list(FEATURE_GROUPS)}")
    parts = {"proba": edge.proba, "embedding": edge.embedding,
             "confidence": confidence(edge.proba) if conf is None else conf}
    return np.concatenate([parts[g] for g in groups], axis=1).astype(np.float32)


def n_feature_macs(groups: tuple[str, ...], n_classes: int, embedding_dim: int) -> int:
    """Rough operations per clip to build the features (the edge computed proba/embedding)."""
    return 4 * n_classes if "confidence" in groups else 0


def feature_slices(groups: tuple[str, ...], n_classes: int, embedding_dim: int
                   ) -> dict[str, tuple[int, int]]:
    """Column range of each feature group in `switcher_features`' matrix."""
    sizes = {"proba": n_classes, "confidence": 3, "embedding": embedding_dim}
    out, start = {}, 0
    for g in groups:
        out[g] = (start, start + sizes[g])
        start += sizes[g]
    return out
