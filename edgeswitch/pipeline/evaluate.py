"""Every router's curve and the hybrid at its operating point on labelled clips."""

from __future__ import annotations

import numpy as np

from edgeswitch.data import ClipBatch
from edgeswitch.data.clips import stream_lists
from edgeswitch.dmd import DMDRecords
from edgeswitch.evaluation.curves import offload_curve
from edgeswitch.evaluation.quality import accuracy, macro_f1
from edgeswitch.models.base import ModelOutput, check_same_classes
from edgeswitch.pipeline.costs import Costs
from edgeswitch.pipeline.steps import check_clip_classes
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import OracleRouter, Router, SwitcherRouter, make_router
from edgeswitch.switcher.sweep import run_streams, sweep

BASELINES = ("max_prob", "entropy", "margin", "random")


def evaluate(edge_out: ModelOutput, cloud_proba: np.ndarray, y: np.ndarray,
             routers: dict[str, Router], op: OperatingPoint, op_router: str, costs: Costs,
             n_classes: int, points: int, seed: int, streams: list[np.ndarray],
             fusion: Fusion | None = None) -> dict:
    """Curves for every router and the hybrid at the calibrated operating point on `test`,
    each router run over the clips' `streams` in time order (switcher.sweep). With `fusion`,
    an offloaded clip is answered by the fused posterior (the curves, the oracle and the
    operating point alike). "Offload to match the cloud" is against cloud-only accuracy."""
    answer = cloud_proba if fusion is None else fusion.combine(edge_out.proba, cloud_proba)
    cloud_acc = accuracy(y, cloud_proba.argmax(axis=1))
    curves = {name: offload_curve(sweep(router, edge_out, cloud_proba, answer, streams, seed),
                                  y, n_classes, cloud_acc, points).to_dict()
              for name, router in routers.items()}
    r = routers[op_router]
    # the deployed hybrid, as a device meets the streams one after another
    decide = op.controller().decide if op.adaptive else op.offload
    off, pred, own = run_streams(r, edge_out, cloud_proba, answer, streams, decide)
    fixed, _, _ = run_streams(r, edge_out, cloud_proba, answer, streams, op.offload)
    kept = ~off
    rate = float(off.mean())
    return {
        "routers": curves,
        "operating_point": {
            "router": op_router, **op.to_dict(), "offload_rate": rate,
            "accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred, n_classes),
            "compute_vs_cloud": (costs.edge_ms + costs.switcher_ms + rate * costs.cloud_ms)
            / costs.cloud_ms,
            "disagreement_kept": float(np.mean(pred[kept] != cloud_proba[kept].argmax(axis=1)))
            if kept.any() else None,
            "fixed_threshold_offload_rate": float(fixed.mean()),
        },
        "stream_trace": _trace(max(streams, key=len), y, edge_out.label, own, pred, off),
    }


def _trace(s: np.ndarray, y, edge_label, kept, pred, off) -> dict:
    """One stream of the deployed run, clip by clip (the longest: the most to see): the true
    class, the edge's answer, the router's own answer (a stream router's belief), the
    hybrid's answer and whether the clip was offloaded."""
    return {"clips": s.tolist(), "label": y[s].tolist(), "edge": edge_label[s].tolist(),
            "belief": kept[s].tolist(), "answer": pred[s].tolist(),
            "offloaded": off[s].tolist()}


def model_summary(model, proba: np.ndarray, y: np.ndarray, n_classes: int, latency_ms: float,
                  latency_batched_ms: float | None = None) -> dict:
    """A model's line of results.json: accuracy, macro-F1, latency and size."""
    pred = proba.argmax(axis=1)
    return {"name": model.name, "accuracy": accuracy(y, pred),
            "macro_f1": macro_f1(y, pred, n_classes), "latency_ms": latency_ms,
            "latency_batched_ms": latency_batched_ms, "params": model.n_params_,
            "macs": model.macs_}


def label_audit(records: DMDRecords, y: np.ndarray) -> dict:
    """How noisy the DMD targets are, measured against labels the method never used."""
    edge_ok = records.edge_label == y
    cloud_ok = records.cloud_label == y
    per_class = {}
    for k, name in enumerate(records.classes):
        m = y == k
        per_class[name] = {
            "n": int(m.sum()),
            "agreement": float(records.agree[m].mean()) if m.any() else None,
            "edge_accuracy": float(edge_ok[m].mean()) if m.any() else None,
            "cloud_accuracy": float(cloud_ok[m].mean()) if m.any() else None,
        }
    return {
        "dmd_label_noise": float(np.mean(records.agree != edge_ok)),
        "agree_but_edge_wrong": float(np.mean(records.agree & ~edge_ok)),
        "disagree_but_edge_right": float(np.mean(~records.agree & edge_ok)),
        "per_true_class": per_class,
    }


def evaluate_clips(edge, cloud, switchers: dict[str, Switcher], op: OperatingPoint,
                   costs: Costs, clips: ClipBatch, points: int = 101, seed: int = 0,
                   fusion: Fusion | None = None, router: Router | None = None) -> dict:
    """Every router's curve and the hybrid at `op` on labelled clips: the part of results.json
    that `demo` and `evaluate` share. `op` was calibrated for `router` (a stream router, scored
    as "belief"), else for the first switcher. Every router meets the clips stream by stream,
    each stream in time order (a file without streams: each clip alone)."""
    y = clips.require_labels("evaluation")
    check_same_classes(edge, cloud)
    check_clip_classes(clips, edge)
    for sw in switchers.values():
        sw.check_edge(edge)
    edge_out = edge.outputs(clips.X)
    cloud_proba = cloud.predict_proba(clips.X)
    routers: dict[str, Router] = {}
    if router is not None and router.stateful:
        routers[router.name] = router
    routers |= {name: SwitcherRouter(sw) for name, sw in switchers.items()}
    routers |= {name: make_router(name, seed=seed) if name == "random" else make_router(name)
                for name in BASELINES}
    answer = cloud_proba if fusion is None else fusion.combine(edge_out.proba, cloud_proba)
    routers["oracle"] = OracleRouter(answer.argmax(axis=1), y)
    first = next(iter(routers))
    ev = evaluate(edge_out, cloud_proba, y, routers, op, first, costs, clips.n_classes, points,
                  seed, stream_lists(clips.streams, clips.t), fusion)
    trace = ev["stream_trace"]
    idx = trace["clips"]
    trace |= {"stream": str(clips.streams[idx[0]]), "t": clips.t[idx].tolist(),
              "ids": np.asarray(clips.ids)[idx].astype(str).tolist()}
    sw, k = switchers[next(iter(switchers))], clips.n_classes
    return {
        "n_test": len(clips),
        "classes": list(clips.classes),
        "edge": model_summary(edge, edge_out.proba, y, k, costs.edge_ms, costs.edge_batched_ms),
        "cloud": model_summary(cloud, cloud_proba, y, k, costs.cloud_ms,
                               costs.cloud_batched_ms),
        "switcher": {"latency_ms": costs.switcher_ms,
                     "latency_batched_ms": costs.switcher_batched_ms,
                     "params": sw.n_params, "macs": sw.macs, "target": sw.target,
                     "features": list(sw.features),
                     "vs_edge": {"latency": costs.switcher_ms / costs.edge_ms,
                                 "latency_batched": costs.switcher_batched_ms
                                 / costs.edge_batched_ms,
                                 "macs": sw.macs / edge.macs_ if edge.macs_ else None}},
        "router": router.to_dict(tuple(edge.classes_)) | {"meta": {
            k: v for k, v in router.meta.items() if k != "grid"}}
        if router is not None and router.stateful else {"router": "switcher"},
        "fusion": None if fusion is None else fusion.to_dict()
        | {"answer_accuracy": accuracy(y, answer.argmax(axis=1))},
        **ev,
    }
