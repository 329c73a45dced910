"""The whole method on one data set: train models, DMD, switcher, calibrate, evaluate.

`run(cfg)` is what `edgeswitch demo` calls; each step is also a function a user can call with
their own models or data (see the CLI subcommands).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data import ClipBatch, Splits, load_dataset, split_by_group
from edgeswitch.data.augment import rotated_views
from edgeswitch.dmd import DMDRecords, agreement_by_class, distill
from edgeswitch.errors import EdgeSwitchError, ModelError
from edgeswitch.evaluation.curves import router_curve
from edgeswitch.evaluation.metrics import accuracy, macro_f1
from edgeswitch.evaluation.timing import measure
from edgeswitch.models.base import ModelOutput, check_same_classes
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import OracleRouter, Router, SwitcherRouter, make_router
from edgeswitch.switcher.select import SwitcherSpec, dmd_targets, fit_switcher

BASELINES = ("max_prob", "entropy", "margin", "random")


@dataclass
class Costs:
    """Median per-clip latency (ms, one clip per call) and size of each part."""

    edge_ms: float
    switcher_ms: float
    cloud_ms: float
    edge_batched_ms: float
    switcher_batched_ms: float
    cloud_batched_ms: float


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


def measure_costs(edge, switcher: Switcher, cloud, clips: np.ndarray, calls: int) -> Costs:
    """Latency of each part, one clip at a time, and per clip in a batch of 256."""
    edge.outputs(clips[:1])   # validate once (shape, dtype): the timed calls skip validation
    cloud.outputs(clips[:1])
    n = len(clips)
    one = [clips[i % n : i % n + 1] for i in range(max(calls, 1))]
    edge_out = [edge.run_raw(x) for x in one]
    b1 = {
        "edge": measure(lambda i: edge.run_raw(one[i]), calls).median_ms,
        "switcher": measure(lambda i: switcher.trust(edge_out[i]), calls).median_ms,
        "cloud": measure(lambda i: cloud.run_raw(one[i]), max(calls // 5, 20)).median_ms,
    }
    batch = clips[np.arange(256) % n]
    batch_out = edge.run_raw(batch)
    per_clip = {
        "edge": measure(lambda i: edge.run_raw(batch), 30).median_ms / len(batch),
        "switcher": measure(lambda i: switcher.trust(batch_out), 30).median_ms / len(batch),
        "cloud": measure(lambda i: cloud.run_raw(batch), 5, warmup=1).median_ms / len(batch),
    }
    return Costs(b1["edge"], b1["switcher"], b1["cloud"],
                 per_clip["edge"], per_clip["switcher"], per_clip["cloud"])


def calibrate(cfg: RunConfig, calib_scores: np.ndarray, calib_disagree: np.ndarray | None,
              pool_scores: np.ndarray, costs: Costs) -> OperatingPoint:
    c = cfg.calibration
    if c.mode == "offload":
        return calibrate_offload(calib_scores, c.rate, c.adaptive, c.step)
    if c.mode == "budget":
        return calibrate_budget(calib_scores, c.budget, costs.edge_ms, costs.switcher_ms,
                                costs.cloud_ms, c.adaptive, c.step)
    if c.mode == "disagreement":
        if calib_disagree is None:
            raise EdgeSwitchError("disagreement calibration needs the cloud's calib answers")
        # the candidate thresholds come from the pool, so they are fixed before calib is seen
        grid = np.quantile(pool_scores, np.linspace(0, 1, c.grid + 1)[1:])
        return calibrate_disagreement(calib_scores, calib_disagree, c.epsilon, c.delta, grid)
    raise EdgeSwitchError(f"unknown calibration mode '{c.mode}'; use offload, budget or "
                          "disagreement")


def evaluate(edge_out: ModelOutput, cloud_proba: np.ndarray, y: np.ndarray,
             routers: dict[str, Router], op: OperatingPoint, op_router: str, costs: Costs,
             n_classes: int, points: int, seed: int,
             stream_order: np.ndarray | None = None, fusion: Fusion | None = None) -> dict:
    """Curves for every router and the hybrid at the calibrated operating point on `test`.

    `stream_order` is the order in which an adaptive operating point sees the clips (default:
    as given). With `fusion`, an offloaded clip is answered by the fused posterior (the curves,
    the oracle and the operating point alike)."""
    edge_label = edge_out.label
    cloud_label = cloud_proba.argmax(axis=1) if fusion is None else \
        fusion.combine(edge_out.proba, cloud_proba).argmax(axis=1)
    curves = {}
    scores = {}
    for name, router in routers.items():
        scores[name] = router.trust(edge_out)
        curves[name] = router_curve(scores[name], edge_label, cloud_label, y, n_classes,
                                    points, seed).to_dict()
    s = scores[op_router]
    fixed = op.offload(s)
    off = fixed
    if op.adaptive:  # the controller meets the clips as a stream, in `stream_order`
        order = np.arange(len(y)) if stream_order is None else stream_order
        off = np.zeros(len(s), dtype=bool)
        off[order] = op.controller().decide(s[order])
    pred = np.where(off, cloud_label, edge_label)
    rate = float(off.mean())
    return {
        "routers": curves,
        "operating_point": {
            "router": op_router, **op.to_dict(), "offload_rate": rate,
            "accuracy": accuracy(y, pred), "macro_f1": macro_f1(y, pred, n_classes),
            "compute_vs_cloud": (costs.edge_ms + costs.switcher_ms + rate * costs.cloud_ms)
            / costs.cloud_ms,
            "disagreement_kept": float(np.mean(edge_label[~off] != cloud_label[~off]))
            if (~off).any() else None,
            "fixed_threshold_offload_rate": float(fixed.mean()),
        },
    }


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


@dataclass
class Artifacts:
    """Everything a run builds before evaluation: reusable by benchmarks and notebooks."""

    cfg: RunConfig
    splits: Splits
    edge: object
    cloud: object
    records: DMDRecords
    dmd: Switcher
    supervised: Switcher
    costs: Costs
    operating_point: OperatingPoint
    timings: dict
    fusion: Fusion | None = None


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
    splits = split_data(cfg, load_data(cfg) if data is None else data)
    t = step("load", t)

    edge, cloud = train_models(cfg, splits.train, cache_dir, progress)
    check_same_classes(edge, cloud)
    t = step("train models", t)

    records = distill(edge, cloud, splits.pool, progress=progress)
    if out_dir is not None:
        records.to_parquet(Path(out_dir) / "dmd_pool.parquet")
    fusion = fit_fusion(cfg, records)   # on the pool's own clips, no labels
    training = records
    views = rotated_views(splits.pool, cfg.switcher.augment_views, cfg.edge.rotate_deg,
                          seed=cfg.seed)
    if views is not None:  # more DMD records from rotated views of the same unlabelled clips
        training = records.concat(distill(edge, cloud, views, progress=progress))
    t = step("DMD", t)

    dmd = train_switcher(training, cfg, fusion=fusion)
    pool_y = splits.hidden_labels["pool"]
    supervised = train_switcher(records, cfg, target=(records.edge_label == pool_y)
                                .astype(np.float32), name="supervised")
    t = step("switcher", t)

    costs = measure_costs(edge, dmd, cloud, splits.test.X, cfg.latency_calls)
    t = step("latency", t)

    calib_edge = edge.outputs(splits.calib.X)
    calib_scores = dmd.trust(calib_edge)
    calib_dis = None
    if cfg.calibration.mode == "disagreement":  # the cloud labels calib, no human does
        calib_dis = calib_edge.label != cloud.predict(splits.calib.X)
    op = calibrate(cfg, calib_scores, calib_dis, dmd.trust(records.edge), costs)
    step("calibrate", t)
    steps.close()
    return Artifacts(cfg, splits, edge, cloud, records, dmd, supervised, costs, op, timings,
                     fusion)


def check_clip_classes(clips: ClipBatch, model) -> None:
    """A data set's classes must be the model's, in the same order."""
    if tuple(clips.classes) != tuple(model.classes_):
        raise ModelError(f"{clips.name}: data classes {list(clips.classes)} differ from model "
                         f"'{model.name}' classes {list(model.classes_)} (count or order)")


def evaluate_clips(edge, cloud, switchers: dict[str, Switcher], op: OperatingPoint,
                   costs: Costs, clips: ClipBatch, points: int = 101, seed: int = 0,
                   fusion: Fusion | None = None) -> dict:
    """Every router's curve and the hybrid at `op` on labelled clips: the part of results.json
    that `demo` and `evaluate` share. The first switcher is the one `op` was calibrated for.

    An adaptive operating point meets the clips as a stream in clip-id order (recording by
    recording, in time order for the built-in loaders)."""
    y = clips.require_labels("evaluation")
    check_same_classes(edge, cloud)
    check_clip_classes(clips, edge)
    for sw in switchers.values():
        sw.check_edge(edge)
    edge_out = edge.outputs(clips.X)
    cloud_proba = cloud.predict_proba(clips.X)
    routers: dict[str, Router] = {name: SwitcherRouter(sw) for name, sw in switchers.items()}
    routers |= {name: make_router(name, seed=seed) if name == "random" else make_router(name)
                for name in BASELINES}
    answer = cloud_proba if fusion is None else fusion.combine(edge_out.proba, cloud_proba)
    routers["oracle"] = OracleRouter(answer.argmax(axis=1), y)
    first = next(iter(switchers))
    ev = evaluate(edge_out, cloud_proba, y, routers, op, first, costs, clips.n_classes, points,
                  seed, np.argsort(clips.ids, kind="stable"), fusion)
    sw, k = switchers[first], clips.n_classes
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
        "fusion": None if fusion is None else fusion.to_dict()
        | {"answer_accuracy": accuracy(y, answer.argmax(axis=1))},
        **ev,
    }


def save_bundle(a: Artifacts, out_dir: Path) -> dict[str, Path]:
    """What a deployment needs: the two models, the switcher and the operating point."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"edge": a.edge.save(out_dir / "edge.onnx"),
             "cloud": a.cloud.save(out_dir / "cloud.onnx"),
             "switcher": a.dmd.save(out_dir / "switcher.npz"),
             "operating_point": a.operating_point.save(out_dir / "operating_point.json")}
    fusion_path = out_dir / "fusion.json"
    if a.fusion is not None:
        paths["fusion"] = a.fusion.save(fusion_path)
    else:
        fusion_path.unlink(missing_ok=True)  # a bundle without it: the cloud answers
    return paths


def serve_and_replay(a: Artifacts, out_dir: Path, transport: str = "http",
                     progress: bool = False) -> dict:
    """Deploy the run and replay the test clips through it as a device stream, one clip per
    call: in process, and (transport="http") through the edge runtime to the cloud model served
    by `edgeswitch serve-cloud` in a child process on a free loopback port, with a token. Every
    decision of the deployed run goes to OUT/decisions.sqlite."""
    import secrets

    from edgeswitch.cloud.client import InProcessCloud
    from edgeswitch.models.base import model_identity
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.runtime.replay import replay

    if transport not in ("http", "in-process"):
        raise EdgeSwitchError(f"transport must be 'http' or 'in-process', got {transport!r}")
    paths = save_bundle(a, out_dir)
    log_path = out_dir / "decisions.sqlite"
    for suffix in ("", "-wal", "-shm"):  # a fresh log per run
        Path(f"{log_path}{suffix}").unlink(missing_ok=True)

    def run_with(cloud, log: DecisionLog | None) -> dict:
        hybrid = HybridClassifier(a.edge, SwitcherRouter(a.dmd), cloud, a.operating_point,
                                  log=log, fusion=a.fusion)
        return replay(hybrid, a.splits.test, progress=progress)

    local_cloud = InProcessCloud(a.cloud)
    if transport == "in-process":
        with DecisionLog(log_path, a.edge.classes_, model_identity(a.edge),
                         model_identity(a.cloud)) as log:
            served = run_with(local_cloud, log)
        served.pop("labels")
        return {"transport": "in-process", **served, "decision_log": str(log_path)}

    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.serving.server import ServerProcess

    reference = run_with(local_cloud, None)
    token = secrets.token_urlsafe(24)
    with ServerProcess(paths["cloud"], a.cfg.serve, token=token) as server, \
            RemoteCloud(server.url, a.edge.classes_, a.cfg.runtime, token=token,
                        model=a.cloud.name) as cloud, \
            DecisionLog(log_path, a.edge.classes_, model_identity(a.edge), cloud.name) as log:
        served = run_with(cloud, log)
        url = server.url
    return {"transport": "http", "url": url, **{k: v for k, v in served.items()
                                                 if k != "labels"},
            "agrees_with_in_process": float(np.mean(served["labels"] == reference["labels"])),
            "in_process_call_latency_ms": reference["call_latency_ms"],
            "decision_log": str(log_path), "bundle": {k: str(v) for k, v in paths.items()}}


def run(cfg: RunConfig, out_dir: Path | None = None, cache_dir: Path | None = None,
        progress: bool = True, data: ClipBatch | None = None,
        serve: str | None = None) -> dict:
    """Run the whole method and return the results dict (see README for its schema).

    `serve` ("http" or "in-process", needs `out_dir`) also deploys the result and replays the
    test clips through it (see `serve_and_replay`)."""
    t_start = time.perf_counter()
    a = build(cfg, out_dir, cache_dir, progress, data)
    t = time.perf_counter()
    shared = evaluate_clips(a.edge, a.cloud, {"dmd": a.dmd, "supervised": a.supervised},
                            a.operating_point, a.costs, a.splits.test, cfg.curve_points,
                            cfg.seed, a.fusion)
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
