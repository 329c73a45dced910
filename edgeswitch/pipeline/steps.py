"""The method's steps, each a function a user can call with their own models or data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data import ClipBatch, Splits, load_dataset, split_by_group
from edgeswitch.dmd import DMDRecords
from edgeswitch.errors import ModelError
from edgeswitch.pipeline.costs import Costs
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.select import SwitcherSpec, dmd_targets, fit_switcher


def estimator(cfg: RunConfig, role: str, seed: int | None = None, **overrides):
    """The untrained `NetClassifier` of the config's `[edge]` or `[cloud]` table."""
    from edgeswitch.models.train import NetClassifier

    mc = getattr(cfg, role)
    settings = dict(arch=mc.arch, arch_params=dict(mc.arch_params), name=role, epochs=mc.epochs,
                    lr=mc.lr, batch_size=mc.batch_size, rotate_deg=mc.rotate_deg,
                    seed=cfg.seed if seed is None else seed, ensemble=mc.ensemble)
    return NetClassifier(**(settings | overrides))


def train_models(cfg: RunConfig, train: ClipBatch, cache_dir: Path | None, progress: bool):
    """Edge and cloud models for this config and training split (from the cache if there)."""
    from edgeswitch.models.cache import fit_or_load

    out = {role: fit_or_load(estimator(cfg, role), train, cache_dir, progress)[0]
           for role in ("edge", "cloud")}
    return out["edge"], out["cloud"]


def fit_fusion(cfg: RunConfig, records: DMDRecords) -> Fusion | None:
    """The fusion of the config, fitted on DMD records (no labels); None: the cloud answers."""
    if cfg.fusion.method == "none":
        return None
    return Fusion(cfg.fusion.method, cfg.fusion.edge_weight).fit(records.edge_proba,
                                                                  records.cloud_proba)


def train_switcher(records: DMDRecords, cfg: RunConfig, target: np.ndarray | None = None,
                   name: str = "dmd", fusion: Fusion | None = None) -> Switcher:
    """The DMD switcher on DMD targets (relative to the answer an offloaded clip gets: the
    cloud's, or the fusion's), or (with `target`) on any other targets."""
    spec = SwitcherSpec.from_config(cfg.switcher)
    if target is None:
        answer = records.cloud_proba if fusion is None else fusion.combine(records.edge_proba,
                                                                           records.cloud_proba)
        target = dmd_targets(records.edge_proba, answer, spec.target)
    return fit_switcher(spec, records.edge, target, records.groups, cfg.seed, name,
                        {"edge_model": records.edge_model, "cloud_model": records.cloud_model})


def load_data(cfg: RunConfig, spec: str | None = None,
              classes: tuple[str, ...] | None = None) -> ClipBatch:
    """The data set of a config (or `spec`), windowed as the config says for the watch data.
    `classes` names the label set of unlabelled files that carry none."""
    spec = cfg.dataset if spec is None else spec
    kwargs = {"window_s": cfg.window_s, "stride_s": cfg.stride_s} \
        if str(spec).lower() == "watch" else {}
    return load_dataset(spec, classes=classes, **kwargs)


def split_data(cfg: RunConfig, data: ClipBatch) -> Splits:
    """The config's group split: fixed groups first, the rest dealt by seed and shares."""
    return split_by_group(data, tuple(cfg.splits), seed=cfg.seed,
                          fixed=cfg.split_groups or None)


def check_clip_classes(clips: ClipBatch, model) -> None:
    """A data set's classes must be the model's, in the same order."""
    if tuple(clips.classes) != tuple(model.classes_):
        raise ModelError(f"{clips.name}: data classes {list(clips.classes)} differ from model "
                         f"'{model.name}' classes {list(model.classes_)} (count or order)")


@dataclass
class Artifacts:
    """Everything a run builds before evaluation: reusable by benchmarks and notebooks.

    `records` are the pool's DMD records; `switcher` is the DMD switcher trained on them (what
    a deployment routes with); `supervised` is the labelled ablation."""

    cfg: RunConfig
    splits: Splits
    edge: object
    cloud: object
    records: DMDRecords
    switcher: Switcher
    supervised: Switcher
    costs: Costs
    operating_point: OperatingPoint
    timings: dict
    fusion: Fusion | None = None

    def hybrid(self, cloud=None, **kwargs):
        """The hybrid `demo` deploys: the edge, the DMD switcher at the operating point, and
        offloaded clips answered by the fusion (the cloud's answer where there is none).
        `cloud`: a client (`RemoteCloud`, ...), default this run's cloud model in process;
        `kwargs` go to `HybridClassifier` (log, shadow_rate)."""
        from edgeswitch.runtime.hybrid import HybridClassifier
        from edgeswitch.switcher.routers import SwitcherRouter

        return HybridClassifier(self.edge, SwitcherRouter(self.switcher),
                                self.cloud if cloud is None else cloud, self.operating_point,
                                fusion=self.fusion, **kwargs)
