"""Stage 1 of a fold: train its models (cached) and record every model output it needs.

The expensive part of a fold is training; everything after it works on these arrays, so a
fold's outputs are saved once (`outputs.npz`) and a rerun, or a resumed run, only evaluates.
Labels are saved for the test split (evaluation) and, kept apart, for the pool (the supervised
ablation and the label-noise audit only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.benchmark.folds import Fold, check_fold_classes
from edgeswitch.config import RunConfig
from edgeswitch.data.augment import rotated_views
from edgeswitch.data.clips import ClipBatch, stream_lists
from edgeswitch.models.base import ModelOutput, check_same_classes

PARTS = ("pool", "calib", "test")
AUG_VIEWS = 8   # rotated views per pool clip recorded, so that augmented variants can be scored


@dataclass
class FoldOutputs:
    """Every array a fold's evaluation reads (no models, no clips)."""

    arrays: dict[str, np.ndarray]
    classes: tuple[str, ...]
    # the unit of `macs` ([edge, cloud, ensemble] per clip): "macs" for trained models,
    # "ms" or None (no costs: no compute axis) for recorded outputs (benchmark.recorded)
    cost_unit: str | None = "macs"

    def edge(self, part: str) -> ModelOutput:
        return ModelOutput(self.arrays[f"edge_{part}_p"], self.arrays[f"edge_{part}_e"])

    def cloud(self, part: str) -> np.ndarray:
        return self.arrays[f"cloud_{part}_p"]

    def stream_lists(self, part: str) -> list[np.ndarray]:
        """Each stream's clip indices in time order (`attach_streams`; without: each clip
        alone)."""
        if f"streams_{part}" not in self.arrays:
            return [np.asarray([i]) for i in range(len(self.arrays[f"ids_{part}"]))]
        return stream_lists(self.arrays[f"streams_{part}"], self.arrays[f"t_{part}"])

    def attach_streams(self, data: ClipBatch) -> FoldOutputs:
        """The streams and times of `data` (the run's, with its `streams` setting) for each
        part's clips, by clip id: they are a setting of the evaluation, not of the stored
        model outputs."""
        where = {cid: i for i, cid in enumerate(data.ids)}
        for part in PARTS:
            idx = np.asarray([where[str(c)] for c in self.arrays[f"ids_{part}"]], np.int64)
            self.arrays[f"streams_{part}"] = data.streams[idx]
            self.arrays[f"t_{part}"] = data.t[idx]
        return self

    def members(self, part: str) -> np.ndarray:
        """`[k, n, K]`: the ABC ensemble's probabilities, the deployed edge first."""
        return self.arrays[f"members_{part}_p"]

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def save(self, path: Path) -> Path:
        tmp = path.with_name(path.name + ".tmp")
        arrays = {k: v for k, v in self.arrays.items() if not k.startswith(("streams_", "t_"))}
        with open(tmp, "wb") as fh:
            np.savez(fh, classes=np.asarray(self.classes), **arrays)
        tmp.replace(path)  # atomic: a killed run never leaves half a file under the real name
        return path

    @classmethod
    def load(cls, path: Path) -> FoldOutputs:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: np.array(f[k]) for k in f.files if k != "classes"}
            classes = tuple(str(c) for c in f["classes"])
        return cls(arrays, classes)


def fold_outputs(cfg: RunConfig, fold: Fold, data: ClipBatch, cache_dir: Path | None,
                 progress: bool = False) -> FoldOutputs:
    """Train the fold's edge, cloud and extra ABC edge members, and run them on its splits."""
    from edgeswitch.models.cache import fit_or_load
    from edgeswitch.pipeline import estimator, train_models

    fold_cfg = _with_seed(cfg, fold.seed)
    splits = fold.split(data)
    check_fold_classes(fold, splits)
    edge, cloud = train_models(fold_cfg, splits.train, cache_dir, progress)
    check_same_classes(edge, cloud)
    # ABC: more edge models of the same design, other seeds; the deployed edge is member 0
    members = [edge] + [fit_or_load(estimator(fold_cfg, "edge", fold.seed + 100 * j),
                                    splits.train, cache_dir, progress)[0]
                        for j in range(1, cfg.benchmark.abc_members)]
    a: dict[str, np.ndarray] = {}
    for part in PARTS:
        X = getattr(splits, part).X
        out = edge.outputs(X)
        a[f"edge_{part}_p"], a[f"edge_{part}_e"] = out.proba, out.embedding
        a[f"cloud_{part}_p"] = cloud.predict_proba(X)
        a[f"members_{part}_p"] = np.stack([out.proba] + [m.predict_proba(X)
                                                         for m in members[1:]])
        a[f"groups_{part}"] = getattr(splits, part).groups
        a[f"ids_{part}"] = getattr(splits, part).ids
    a["y_test"] = splits.test.y
    a["hidden_y_pool"] = splits.hidden_labels["pool"]      # ablation and audit only
    views = rotated_views(splits.pool, max(cfg.switcher.augment_views, AUG_VIEWS),
                          cfg.edge.rotate_deg, seed=fold.seed)
    if views is not None:  # DMD on rotated views of the pool: labels never read
        out = edge.outputs(views.X)
        a["edge_aug_p"], a["edge_aug_e"] = out.proba, out.embedding
        a["cloud_aug_p"] = cloud.predict_proba(views.X)
        a["groups_aug"] = views.groups
    a["macs"] = np.asarray([edge.macs_ or 0, cloud.macs_ or 0,
                            sum(m.macs_ or 0 for m in members)], dtype=np.int64)
    return FoldOutputs(a, tuple(edge.classes_))


def _with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    import copy

    out = copy.deepcopy(cfg)
    out.seed = seed
    return out
