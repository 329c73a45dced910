"""Stage 2 of a fold: fit fusion, switchers and stream routers on its unlabelled pool, and score
every router on its test streams.

Every router is a `switcher.routers.Router`, the object a device runs, and is scored the same
way (switcher.sweep, evaluation.curves): run over the fold's test streams, each stream in time
order, at every threshold, its curve read at the offload rates; its operating point calibrated
on the fold's unlabelled calib streams and met by the test streams as a device meets them.
Per-clip routers are scored twice, with offloaded clips answered by the cloud and by the fused
posterior (`NAME+fusion`), each beside the oracle for the same answers; stream routers answer
with the run's fusion (or the cloud's, without one), from their belief where they say so.
A **shuffled control** runs each stream router again on the test streams with their clips in
random order (time carries nothing there).

Nothing here reads a label except `y_test` (to evaluate, after every choice is made) and the
pool's hidden labels (only for the `supervised` ablation).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from edgeswitch.benchmark.outputs import PARTS, FoldOutputs
from edgeswitch.config import RunConfig
from edgeswitch.evaluation.curves import accuracy_at, offload_curve
from edgeswitch.evaluation.quality import macro_f1
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.calibrate import calibrate_offload, stream_point, threshold_search
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import (
    AbcRouter,
    OracleRouter,
    RandomRouter,
    Router,
    SwitcherRouter,
    ensemble_view,
    make_router,
)
from edgeswitch.switcher.select import (
    FitCache,
    SwitcherSpec,
    dmd_targets,
    fit_switcher,
    select_switcher,
)
from edgeswitch.switcher.stream import belief_router
from edgeswitch.switcher.stream_fit import fit_belief, fit_belief_switcher, switcher_records
from edgeswitch.switcher.sweep import run_searches, run_streams_twins, sweep, sweep_search, sweeps

EVAL_VERSION = 4   # bump when the evaluation changes, so stored fold figures are redone
RATES = (0.1, 0.2, 0.35, 0.5)
CONFIDENCE = ("max_prob", "entropy", "margin")
# routers that read the stream (their names carry no +fusion: they answer with the run's)
STREAM_ROUTERS = ("belief", "belief-fusion-answers", "belief-unfitted",
                  "belief-switcher-linear", "belief-switcher-mlp", "belief-switcher-gbt")
# routers that read other edge models than the deployed one (they answer with theirs)
ENSEMBLE_ROUTERS = ("abc", "dmd-abc")
# the stream switcher families: the belief's trust learned by DMD from the state's features
STREAM_SWITCHERS = {
    "belief-switcher-linear": SwitcherSpec("linear", "hard"),
    "belief-switcher-mlp": SwitcherSpec("mlp", "hard", epochs=100),
    "belief-switcher-gbt": SwitcherSpec("gbt", "hard",
                                        features=("proba", "confidence", "embedding")),
}

# DMD-trained switcher variants scored beside the configured one ("dmd"); what each buys is the
# point of the benchmark. "dmd-cv" picks among CV_CANDIDATES by group CV on the DMD records.
VARIANTS: dict[str, SwitcherSpec] = {
    "dmd-mlp": SwitcherSpec("mlp", "hard"),                      # the paper's switcher
    "dmd-linear": SwitcherSpec("linear", "hard"),
    "dmd-gbt": SwitcherSpec("gbt", "hard", features=("proba", "confidence")),
    "dmd-gain": SwitcherSpec("linear", "gain"),
    "dmd-aug": SwitcherSpec("mlp", "hard", augment_views=8),
}


@dataclass
class Entry:
    """A router to score, and what it reads on the device."""

    name: str
    router: Router
    test: ModelOutput      # its view of the test clips (the edge's outputs, or an ensemble's)
    calib: ModelOutput     # ... of the calibration clips
    macs: float            # device-side cost per clip (edge models + router), in the
                           # run's cost unit (MACs; recorded outputs: MACs, ms or none)
    twins: tuple[Entry, ...] = ()   # entries whose routers decide as this one's, on the same
                                    # views (switcher.sweep): scored from its replays


def _records(o: FoldOutputs, views: int) -> tuple[ModelOutput, np.ndarray, np.ndarray]:
    """DMD records of the fold: the pool, plus `views` rotated views of each pool clip."""
    pe, ee, pc, g = o["edge_pool_p"], o["edge_pool_e"], o["cloud_pool_p"], o["groups_pool"]
    if views and "edge_aug_p" in o.arrays:
        n = len(pe)
        take = slice(0, n * views)  # views are stored view by view
        pe = np.concatenate([pe, o["edge_aug_p"][take]])
        ee = np.concatenate([ee, o["edge_aug_e"][take]])
        pc = np.concatenate([pc, o["cloud_aug_p"][take]])
        g = np.concatenate([g, o["groups_aug"][take]])
    return ModelOutput(pe, ee), pc, g


def _router_cost(o: FoldOutputs, switcher) -> float:
    """A switcher's cost per clip in the run's unit: its MACs, or nothing where costs are
    times (recorded outputs: the edge's recorded time holds no switcher)."""
    return switcher.macs if o.cost_unit == "macs" else 0.0


def baseline_routers(o: FoldOutputs, seed: int) -> list[Entry]:
    """The training-free routers: confidence, random and Agreement-Based Cascading."""
    t, c, macs = o.edge("test"), o.edge("calib"), o["macs"][0]
    out = [Entry(name, make_router(name), t, c, macs) for name in
           ("max_prob", "margin", "entropy")]
    out.append(Entry("random", RandomRouter(seed), t, c, macs))
    if "members_test_p" in o.arrays:  # recorded outputs may have no ensemble
        out.append(Entry("abc", AbcRouter(), ensemble_view(o.members("test")),
                         ensemble_view(o.members("calib")), o["macs"][2]))
    return out


def learned_routers(cfg: RunConfig, o: FoldOutputs, fusion: Fusion, seed: int,
                    info: dict, cache: FitCache | None = None) -> list[Entry]:
    """Every switcher fitted on the fold's DMD records, with targets relative to the answer
    `fusion` gives an offloaded clip; the supervised ablation on the pool's hidden labels.
    `info` receives each switcher's family, size and (for dmd-cv) its selection table.
    `cache` (one per fold) fits each distinct spec and record set once (see FitCache)."""
    t, c, macs = o.edge("test"), o.edge("calib"), o["macs"][0]
    out = []

    def add(name: str, sw, entry: dict, test=t, calib=c, device=macs):
        out.append(Entry(name, SwitcherRouter(sw), test, calib,
                         device + _router_cost(o, sw)))
        info[name] = entry | {"macs": sw.macs, "params": sw.n_params}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant target warns; the figures show it
        for name, spec in {"dmd": SwitcherSpec.from_config(cfg.switcher), **VARIANTS}.items():
            edge_rec, cloud_rec, groups = _records(o, spec.augment_views)
            target = dmd_targets(edge_rec.proba, fusion.combine(edge_rec.proba, cloud_rec),
                                 spec.target)
            add(name, fit_switcher(spec, edge_rec, target, groups, seed, cache=cache),
                {"family": spec.family, "target": spec.target})
        edge_rec, cloud_rec, groups = _records(o, 8)
        sel, table = select_switcher(edge_rec, fusion.combine(edge_rec.proba, cloud_rec), groups,
                                     seed, n_original=len(o["edge_pool_p"]), cache=cache)
        add("dmd-cv", sel, {"chosen": sel.meta.get("spec"), "cv": table})
        if "members_pool_p" in o.arrays:
            # stretch: a DMD switcher that reads the ABC ensemble (the edge cost of `abc`)
            ens_pool, ens_c, ens_t = (ensemble_view(o.members(p)) for p in PARTS)
            target = dmd_targets(ens_pool.proba,
                                 fusion.combine(ens_pool.proba, o["cloud_pool_p"]), "gain")
            ens_sw = fit_switcher(SwitcherSpec("linear", "gain"), ens_pool, target,
                                  o["groups_pool"], seed, cache=cache)
            add("dmd-abc", ens_sw, {"family": "linear", "target": "gain"}, ens_t, ens_c,
                o["macs"][2])
        if "hidden_y_pool" not in o.arrays:  # recorded outputs with unlabelled pool clips
            return out
        # the supervised ablation: the configured switcher on the pool's true "edge is
        # correct" labels (no rotated views: they have no labels)
        sup_spec = replace(SwitcherSpec.from_config(cfg.switcher), augment_views=0)
        truth = (o["edge_pool_p"].argmax(axis=1) == o["hidden_y_pool"]).astype(float)
        add("supervised", fit_switcher(sup_spec, o.edge("pool"), truth, o["groups_pool"], seed,
                                       cache=cache),
            {"family": sup_spec.family, "target": "true labels"})
    return out


def stream_routers(cfg: RunConfig, o: FoldOutputs, fusion: Fusion, info: dict) -> list[Entry]:
    """The belief router fitted on the fold's unlabelled pool streams (what `demo` deploys
    with `[stream] router = "belief"`), two ablations (its offloaded clips answered by the
    per-clip fusion; the config's settings unfitted), and the stream switcher families (its
    trust learned by DMD from the edge's outputs and the state)."""
    pool = o.stream_lists("pool")
    if not any(len(s) > 1 for s in pool):
        return []   # clips that stand alone: nothing to carry
    t, c, macs = o.edge("test"), o.edge("calib"), o["macs"][0]
    base = belief_router(cfg.stream, o.classes, fusion.weight)
    answer = fusion.combine(o["edge_pool_p"], o["cloud_pool_p"])
    fitted = fit_belief(base, o["edge_pool_p"], o["cloud_pool_p"], answer, pool)
    routers = {"belief": replace(fitted, answers="belief"),
               "belief-fusion-answers": replace(fitted, answers="fusion"),
               "belief-unfitted": replace(base, answers="belief")}
    records = switcher_records(routers["belief"], o.edge("pool"), o["cloud_pool_p"], answer,
                               pool)
    for name, spec in STREAM_SWITCHERS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a constant target warns; the figures show it
            routers[name] = fit_belief_switcher(routers["belief"], spec, records)
    out = {}
    for name, r in routers.items():
        sw = getattr(r, "switcher", None)
        info[name] = {"family": "belief" if sw is None else f"belief+{sw.family}",
                      "switch": list(r.switch), "edge_weight": r.edge_weight,
                      "cloud_weight": r.cloud_weight, "answers": r.answers,
                      "fitted": name != "belief-unfitted"}
        out[name] = Entry(name, r, t, c, macs + (0 if sw is None else _router_cost(o, sw)))
    # the fusion-answers ablation is the fitted belief answering otherwise: its decisions are
    # the belief's, so the belief's replays score it too (fold 0: 1.2 s of the stream task's
    # 17 s CPU)
    out["belief"] = replace(out["belief"], twins=(out.pop("belief-fusion-answers"),))
    return list(out.values())


def router_metrics(path, y: np.ndarray, cloud_acc: float, n_classes: int) -> dict:
    """Area, offload to reach cloud-only accuracy, accuracy / macro-F1 at the fixed rates."""
    curve = offload_curve(path, y, n_classes, cloud_acc)
    at = accuracy_at(path, y, RATES)
    return {"auc": curve.auc, "offload_to_match_cloud": curve.offload_to_match_cloud,
            "accuracy_at": {str(r): float(a) for r, a in zip(RATES, at, strict=True)},
            "macro_f1_at": {str(r): macro_f1(y, path.labels(r), n_classes) for r in RATES},
            "curve": [round(float(a), 5) for a in curve.accuracy]}


def operating_points(e: Entry, cloud: dict, answer: dict, streams: dict, y: np.ndarray,
                     cfg: RunConfig, macs: np.ndarray, found: tuple | None = None
                     ) -> list[dict]:
    """The hybrid at the operating point calibrated on the fold's unlabelled calib streams,
    met by the test streams as a device meets them: `e`'s, then each twin's (the same point
    and decisions, their own answers). `found`: a stream router's calibration, as
    `stream_thresholds` finds it (`_score` runs it beside the router's sweeps)."""
    c = cfg.calibration
    if e.router.stateful:
        op, _ = stream_point(e.router, c.rate, found, c.adaptive, c.step)
    else:
        op = calibrate_offload(e.router.trust(e.calib), c.rate, c.adaptive, c.step)
    decide = op.controller().decide if op.adaptive else op.offload
    off, preds, _ = run_streams_twins(e.router, [t.router for t in e.twins], e.test,
                                      cloud["test"], answer["test"], streams["test"], decide)
    rate = float(off.mean())
    return [{"offload_rate": rate, "accuracy": float(np.mean(pred == y)),
             "compute_vs_cloud": float((entry.macs + rate * macs[1]) / macs[1]) if macs[1] > 0
             else None}   # recorded outputs without costs
            for entry, pred in zip((e, *e.twins), preds, strict=True)]


STREAM_TASK = "stream"


def fold_tasks(cfg: RunConfig) -> tuple[str, ...]:
    """A fold's evaluation in parts that need nothing of each other, so that processes can
    share them out (benchmark.run): the per-clip routers in each answer mode ("" and
    "+fusion") and the stream routers (fitted and scored in the deployed mode). The stream
    task, the costliest, comes first."""
    return (STREAM_TASK, "", "+fusion") if cfg.streams != "none" else ("", "+fusion")


def evaluate_fold(cfg: RunConfig, o: FoldOutputs, seed: int) -> dict:
    """Every router's figures on one fold (see the benchmark.json schema, docs/formats.md)."""
    tasks = fold_tasks(cfg)
    return merge_tasks(cfg, dict(zip(tasks, (evaluate_task(cfg, o, seed, t) for t in tasks),
                                     strict=True)))


@dataclass
class _Fold:
    """What every task of a fold reads: test labels and answers, streams, the two modes."""

    y: np.ndarray
    k: int
    pe: np.ndarray
    pc: np.ndarray
    el: np.ndarray
    cloud_acc: float
    streams: dict
    shuffled: list
    cloud: dict
    fused: Fusion
    modes: dict
    deployed: str     # the mode (suffix) the stream routers answer in

    @classmethod
    def of(cls, cfg: RunConfig, o: FoldOutputs, seed: int) -> _Fold:
        y = o["y_test"]
        pe, pc = o["edge_test_p"], o.cloud("test")
        streams = {part: o.stream_lists(part) for part in ("calib", "test")}
        # the benchmark scores both answer modes whatever the config deploys
        fused = Fusion(cfg.fusion.method if cfg.fusion.method != "none" else "dmd",
                       cfg.fusion.edge_weight).fit(o["edge_pool_p"], o["cloud_pool_p"])
        return cls(y=y, k=len(o.classes), pe=pe, pc=pc, el=pe.argmax(axis=1),
                   cloud_acc=float(np.mean(pc.argmax(axis=1) == y)), streams=streams,
                   shuffled=[np.random.default_rng(seed + 7 + i).permutation(s)
                             for i, s in enumerate(streams["test"])],
                   cloud={part: o.cloud(part) for part in ("calib", "test")}, fused=fused,
                   modes={"": Fusion("none").fit(pe, pc), "+fusion": fused},
                   deployed="+fusion" if cfg.fusion.method != "none" else "")


def evaluate_task(cfg: RunConfig, o: FoldOutputs, seed: int, task: str) -> dict:
    """One task of `fold_tasks`: its routers' figures, switchers and shuffled controls."""
    f = _Fold.of(cfg, o, seed)
    suffix = f.deployed if task == STREAM_TASK else task
    fusion = f.modes[suffix]
    out: dict = {"edge_accuracy": float(np.mean(f.el == f.y)), "cloud_accuracy": f.cloud_acc,
                 "fusion": f.fused.to_dict(), "routers": {}, "switchers": {}, "shuffled": {}}
    info: dict = {}
    if task == STREAM_TASK:
        entries = stream_routers(cfg, o, fusion, info)
    else:
        entries = baseline_routers(o, seed) + learned_routers(cfg, o, fusion, seed, info,
                                                              FitCache())
    out["switchers"] = {(n if n in STREAM_ROUTERS else n + suffix): v for n, v in info.items()}
    answer_el = fusion.combine(f.pe, f.pc).argmax(axis=1)
    oracle_path = sweep(OracleRouter(answer_el, f.y), o.edge("test"), f.pc,
                        fusion.combine(f.pe, f.pc), f.streams["test"], seed)
    oracle = router_metrics(oracle_path, f.y, f.cloud_acc, f.k)
    for e in entries:
        _score(e, o, f, fusion, oracle, seed, cfg, suffix, out)
    if task != STREAM_TASK:
        oracle["oracle_gain_share"] = 1.0
        oracle["answer_accuracy"] = float(np.mean(answer_el == f.y))
        out["routers"]["oracle" + suffix] = oracle
    return out


def _score(e: Entry, o: FoldOutputs, f: _Fold, fusion: Fusion, oracle: dict, seed: int,
           cfg: RunConfig, suffix: str, out: dict) -> None:
    """The figures of a router and its twins into `out` (and a stream router's shuffled
    control), each replay run once for them all."""
    y, pc = f.y, f.pc
    twins = [t.router for t in e.twins]
    answer = {part: fusion.combine((e.test if part == "test" else e.calib).proba,
                                   f.cloud[part]) for part in ("calib", "test")}
    found = None
    if e.router.stateful:
        # the test streams, the control (the same streams, their clips shuffled) and the
        # calibration on the calib streams: three searches, their rounds run side by side
        c = cfg.calibration
        paths, control, (found,) = run_searches(
            e.router, twins, [(e.test, pc, answer["test"]),
                              (e.calib, f.cloud["calib"], answer["calib"])],
            [(0, f.streams["test"], sweep_search(f.streams["test"])),
             (0, f.shuffled, sweep_search(f.shuffled)),
             (1, f.streams["calib"], threshold_search([c.rate]))])
        shuffled = [control]
    else:
        paths, *shuffled = sweeps(e.router, twins, e.test, pc, answer["test"],
                                  [f.streams["test"]], seed)
    kept = e.test.proba.argmax(axis=1)
    ans = answer["test"].argmax(axis=1)
    # random routing's expected area is the mean of its two ends (the chord)
    rand = (float(np.mean(kept == y)) + float(np.mean(ans == y))) / 2
    orc = oracle if e.test is not None and np.array_equal(kept, f.el) else router_metrics(
        sweep(OracleRouter(ans, y), e.test, pc, answer["test"], f.streams["test"], seed),
        y, f.cloud_acc, f.k)
    span = orc["auc"] - rand
    points = operating_points(e, f.cloud, answer, f.streams, y, cfg, o["macs"], found)
    for i, entry in enumerate((e, *e.twins)):
        m = router_metrics(paths[i], y, f.cloud_acc, f.k)
        m["oracle_gain_share"] = float((m["auc"] - rand) / span) if span > 1e-9 else None
        m["operating_point"] = points[i]
        m["answer_accuracy"] = float(np.mean(ans == y))
        name = entry.name if e.router.stateful else entry.name + suffix
        out["routers"][name] = m
        if shuffled:
            out["shuffled"][name] = router_metrics(shuffled[0][i], y, f.cloud_acc, f.k)


def merge_tasks(cfg: RunConfig, parts: dict[str, dict]) -> dict:
    """The fold's result from its tasks' (`fold_tasks`), in the order one pass writes it: per
    answer mode its per-clip routers, then (in the deployed mode) the stream routers, then
    that mode's oracle."""
    deployed = "+fusion" if cfg.fusion.method != "none" else ""
    first = parts[""]
    result: dict = {k: first[k] for k in ("edge_accuracy", "cloud_accuracy", "fusion")}
    result |= {"routers": {}, "switchers": {}, "shuffled": {}}
    for suffix in ("", "+fusion"):
        mode = dict(parts[suffix]["routers"])
        oracle = mode.pop("oracle" + suffix)
        result["switchers"] |= parts[suffix]["switchers"]
        result["routers"] |= mode
        if suffix == deployed and STREAM_TASK in parts:
            stream = parts[STREAM_TASK]
            result["switchers"] |= stream["switchers"]
            result["routers"] |= stream["routers"]
            result["shuffled"] |= stream["shuffled"]
        result["routers"]["oracle" + suffix] = oracle
    return result
