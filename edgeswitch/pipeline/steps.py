"""The method's steps, each a function a user can call with their own models or data."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data import ClipBatch, Splits, load_dataset, split_by_group
from edgeswitch.data.streams import with_streams
from edgeswitch.dmd import DMDRecords
from edgeswitch.errors import ModelError
from edgeswitch.pipeline.costs import Costs
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import Router, SwitcherRouter
from edgeswitch.switcher.select import SwitcherSpec, dmd_targets, fit_switcher
from edgeswitch.switcher.stream import belief_router
from edgeswitch.switcher.stream_fit import fit_belief


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
    """The data set of a config (or `spec`), windowed as the config says for the watch data,
    its streams as the data gives them. `classes` names the label set of unlabelled files that
    carry none."""
    spec = cfg.dataset if spec is None else spec
    kwargs = {"window_s": cfg.window_s, "stride_s": cfg.stride_s} \
        if str(spec).lower() == "watch" else {}
    return load_dataset(spec, classes=classes, **kwargs)


def run_data(cfg: RunConfig, data: ClipBatch | None = None) -> ClipBatch:
    """What a whole run (`demo`, `benchmark`) works on: the config's data set with the
    streams its `streams` key asks for (data.streams)."""
    return with_streams(load_data(cfg) if data is None else data, cfg.streams, cfg.seed)


def fit_router(cfg: RunConfig, records: DMDRecords, switcher: Switcher,
               fusion: Fusion | None, classes: tuple[str, ...]) -> Router:
    """The router a deployment runs (`[stream] router`): the DMD switcher judging each clip
    alone, or the belief router, its switch rate and evidence weights fitted on the pool's
    unlabelled streams (switcher.stream_fit; the cloud is the teacher)."""
    sc = cfg.stream
    if sc.router == "switcher":
        return SwitcherRouter(switcher)
    streams = records.stream_lists()
    if not any(len(s) > 1 for s in streams):
        warnings.warn("the pool has no stream of two clips or more (the data names none, or "
                      "streams = \"none\"): each clip is routed alone, by the DMD switcher",
                      stacklevel=2)
        return SwitcherRouter(switcher)
    base = belief_router(sc, tuple(classes), 0.0 if fusion is None else fusion.weight)
    if not sc.fit:
        return base
    answer = records.cloud_proba if fusion is None else \
        fusion.combine(records.edge_proba, records.cloud_proba)
    return fit_belief(base, records.edge_proba, records.cloud_proba, answer, streams)


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

    `records` are the pool's DMD records; `switcher` is the DMD switcher trained on them;
    `router` is what a deployment routes with (the belief router fitted on the pool's streams,
    or the switcher per clip: `[stream] router`); `supervised` is the labelled ablation."""

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
    router: Router | None = None

    @property
    def deployed_router(self) -> Router:
        return self.router if self.router is not None else SwitcherRouter(self.switcher)

    def hybrid(self, cloud=None, **kwargs):
        """The hybrid `demo` deploys: the edge, its router at the operating point, and
        offloaded clips answered by the fusion (the cloud's answer where there is none).
        `cloud`: a client (`RemoteCloud`, ...), default this run's cloud model in process;
        `kwargs` go to `HybridClassifier` (log, shadow_rate)."""
        from edgeswitch.runtime.hybrid import HybridClassifier

        return HybridClassifier(self.edge, self.deployed_router,
                                self.cloud if cloud is None else cloud, self.operating_point,
                                fusion=self.fusion, max_streams=self.cfg.stream.max_streams,
                                **kwargs)
