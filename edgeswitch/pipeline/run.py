"""`run_method(cfg)`, what `edgeswitch demo` calls: build every artifact, evaluate, deploy."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data import ClipBatch
from edgeswitch.data.augment import rotated_views
from edgeswitch.dmd import agreement_by_class, distill
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import check_same_classes
from edgeswitch.pipeline.calibration import calibrate_router
from edgeswitch.pipeline.costs import measure_costs
from edgeswitch.pipeline.deploy import serve_and_replay
from edgeswitch.pipeline.evaluate import evaluate_clips, label_audit
from edgeswitch.pipeline.steps import (
    Artifacts,
    fit_fusion,
    fit_router,
    run_data,
    split_data,
    train_models,
    train_switcher,
)


def build(cfg: RunConfig, out_dir: Path | None = None, cache_dir: Path | None = None,
          progress: bool = True, data: ClipBatch | None = None) -> Artifacts:
    """Load and split the data, train (or load) the models, run DMD, train the switchers,
    measure costs and calibrate. Labels of pool and calib are touched only by the supervised
    ablation."""
    from tqdm.auto import tqdm

    timings: dict[str, float] = {}
    steps = tqdm(total=6, desc="edgeswitch", disable=not progress)

    def step(name: str, t0: float) -> float:
        timings[name] = round(time.perf_counter() - t0, 3)
        steps.set_postfix_str(name)
        steps.update(1)
        return time.perf_counter()

    t = time.perf_counter()
    splits = split_data(cfg, run_data(cfg, data))
    t = step("load", t)

    edge, cloud = train_models(cfg, splits.train, cache_dir, progress)
    check_same_classes(edge, cloud)
    t = step("train models", t)

    records = distill(edge, cloud, splits.pool, cfg.distill.batch_size, progress=progress,
                      dataset=cfg.dataset)
    if out_dir is not None:
        records.to_parquet(Path(out_dir) / "dmd_pool.parquet")
    fusion = fit_fusion(cfg, records)   # on the pool's own clips, no labels
    training = records
    views = rotated_views(splits.pool, cfg.switcher.augment_views, cfg.edge.rotate_deg,
                          seed=cfg.seed)
    if views is not None:  # more DMD records from rotated views of the same unlabelled clips
        training = records.concat(distill(edge, cloud, views, cfg.distill.batch_size,
                                          progress=progress, dataset=cfg.dataset))
    t = step("DMD", t)

    switcher = train_switcher(training, cfg, fusion=fusion)
    pool_y = splits.hidden_labels["pool"]
    supervised = train_switcher(records, cfg, target=(records.edge_label == pool_y)
                                .astype(np.float32), name="supervised")
    router = fit_router(cfg, records, switcher, fusion, tuple(edge.classes_))
    t = step("switcher", t)

    costs = measure_costs(edge, router, cloud, splits.test.X, cfg.latency_calls)
    t = step("latency", t)

    op = calibrate_router(cfg, router, edge, cloud, fusion, splits.calib, costs,
                          switcher.trust(records.edge))
    step("calibrate", t)
    steps.close()
    return Artifacts(cfg, splits, edge, cloud, records, switcher, supervised, costs, op, timings,
                     fusion, router)


def run_method(cfg: RunConfig, out_dir: Path | None = None, cache_dir: Path | None = None,
               progress: bool = True, data: ClipBatch | None = None,
               serve: str | None = None) -> dict:
    """Run the whole method and return the results dict (its schema: docs/formats.md).

    `serve` ("http" or "in-process", needs `out_dir`) also deploys the result and replays the
    test clips through it (see `serve_and_replay`)."""
    t_start = time.perf_counter()
    a = build(cfg, out_dir, cache_dir, progress, data)
    t = time.perf_counter()
    shared = evaluate_clips(a.edge, a.cloud, {"dmd": a.switcher, "supervised": a.supervised},
                            a.operating_point, a.costs, a.splits.test, cfg.curve_points,
                            cfg.seed, a.fusion, a.router)
    a.timings["evaluate"] = round(time.perf_counter() - t, 3)
    served = None
    if serve is not None:
        if out_dir is None:
            raise EdgeSwitchError("serving the run needs an output folder")
        t = time.perf_counter()
        served = serve_and_replay(a, Path(out_dir), serve, progress)
        a.timings["serve"] = round(time.perf_counter() - t, 3)
    records = a.records
    return {
        "dataset": cfg.dataset,
        **shared,
        "dmd": {"n_pool": len(records), "agreement": float(records.agree.mean()),
                "mean_alignment": float(records.alignment.mean()),
                "agreement_by_edge_class": agreement_by_class(records),
                "audit": label_audit(records, a.splits.hidden_labels["pool"])},
        "splits": {name: {"groups": g, "n": len(getattr(a.splits, name))}
                   for name, g in a.splits.groups().items()},
        "models": {"edge": a.edge.meta_.get("trainer"), "cloud": a.cloud.meta_.get("trainer")},
        "config": cfg.to_dict(),
        "timings_s": a.timings | {"total": round(time.perf_counter() - t_start, 3)},
        **({"served": served} if served is not None else {}),
    }
