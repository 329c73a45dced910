"""Stage 2 of a fold: fit fusion and switchers on its DMD records, score every router on its
test groups.

Nothing here reads a label except `y_test` (to evaluate, after every choice is made) and the
pool's hidden labels (only for the `supervised` ablation). Every router is evaluated twice: with
offloaded clips answered by the cloud, and by the fused posterior (`NAME+fusion`), each against
the oracle for the same answers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from edgeswitch.benchmark.outputs import PARTS, FoldOutputs
from edgeswitch.config import RunConfig
from edgeswitch.evaluation.curves import accuracy_by_k, offload_order, trapezoid_auc
from edgeswitch.evaluation.quality import macro_f1
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.calibrate import calibrate_offload
from edgeswitch.switcher.features import confidence
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import oracle_scores
from edgeswitch.switcher.select import SwitcherSpec, dmd_targets, fit_switcher, select_switcher

EVAL_VERSION = 2   # bump when the evaluation changes, so stored fold figures are redone
RATES = (0.1, 0.2, 0.35, 0.5)
CONFIDENCE = ("max_prob", "entropy", "margin")

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
class Router:
    name: str
    test: np.ndarray                 # scores on test (low = offload first)
    calib: np.ndarray                # scores on calib (for the operating point)
    kept_proba: np.ndarray           # [n_test, K] the answer when the clip stays on the device
    edge_macs: int                   # device-side MACs per clip (edge models + router)


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


def abc_scores(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Agreement-Based Cascading (Kolawole et al. 2024): trust = share of the k edge members
    voting for the ensemble's answer; ties broken by the ensemble's mean top probability.
    Returns (scores, the ensemble's mean probabilities: its answer when it keeps a clip)."""
    mean = members.mean(axis=0)
    answer = mean.argmax(axis=1)
    votes = (members.argmax(axis=2) == answer[None, :]).mean(axis=0)
    return votes + 1e-3 * mean.max(axis=1), mean


def ensemble_view(members: np.ndarray) -> ModelOutput:
    """What a switcher may read from the ABC ensemble: its mean probabilities, and as the
    'embedding' the members' vote share for that answer and each member's top probability."""
    mean = members.mean(axis=0)
    votes = (members.argmax(axis=2) == mean.argmax(axis=1)[None, :]).mean(axis=0)
    return ModelOutput(mean, np.column_stack([votes, members.max(axis=2).T]))


def router_metrics(scores: np.ndarray, kept_label: np.ndarray, answer_label: np.ndarray,
                   y: np.ndarray, cloud_acc: float, n_classes: int, seed: int) -> dict:
    """Area, offload to reach cloud-only accuracy, accuracy / macro-F1 at the fixed rates."""
    n = len(y)
    order = offload_order(scores, seed)
    acc_k = accuracy_by_k(kept_label == y, answer_label == y, order)
    ks = np.rint(np.linspace(0.0, 1.0, 101) * n).astype(int)
    reach = np.nonzero(acc_k >= cloud_acc - 1e-12)[0]
    at, f1_at = {}, {}
    for r in RATES:
        k = int(np.rint(r * n))
        pred = kept_label.copy()
        pred[order[:k]] = answer_label[order[:k]]
        at[str(r)] = float(acc_k[k])
        f1_at[str(r)] = macro_f1(y, pred, n_classes)
    return {"auc": trapezoid_auc(ks / n, acc_k[ks]),
            "offload_to_match_cloud": float(reach[0] / n) if len(reach) else None,
            "accuracy_at": at, "macro_f1_at": f1_at,
            "curve": [round(float(a), 5) for a in acc_k[ks]]}


def operating_point(r: Router, kept_label: np.ndarray, answer_label: np.ndarray, y: np.ndarray,
                    order: np.ndarray, cfg: RunConfig, macs: np.ndarray) -> dict:
    """The hybrid at the operating point calibrated on the fold's unlabelled calib clips."""
    c = cfg.calibration
    op = calibrate_offload(r.calib, c.rate, c.adaptive, c.step)
    off = op.offload(r.test)
    if op.adaptive:  # the controller meets the test clips as a stream, in clip-id order
        off = np.zeros(len(y), dtype=bool)
        off[order] = op.controller().decide(r.test[order])
    pred = np.where(off, answer_label, kept_label)
    rate = float(off.mean())
    return {"offload_rate": rate, "accuracy": float(np.mean(pred == y)),
            "compute_vs_cloud": float((r.edge_macs + rate * macs[1]) / macs[1])}


def baseline_routers(o: FoldOutputs, seed: int) -> list[Router]:
    """The training-free routers: confidence, random and Agreement-Based Cascading."""
    pe, pc_ = o["edge_test_p"], o["edge_calib_p"]
    conf_t, conf_c = confidence(pe), confidence(pc_)
    macs = int(o["macs"][0])
    routers = [Router("max_prob", conf_t[:, 0], conf_c[:, 0], pe, macs),
               Router("margin", conf_t[:, 1], conf_c[:, 1], pe, macs),
               Router("entropy", 1 - conf_t[:, 2], 1 - conf_c[:, 2], pe, macs),
               Router("random", np.random.default_rng(seed).random(len(pe)),
                      np.random.default_rng(seed + 1).random(len(pc_)), pe, macs)]
    abc_t, abc_mean_t = abc_scores(o.members("test"))
    abc_c, _ = abc_scores(o.members("calib"))
    routers.append(Router("abc", abc_t, abc_c, abc_mean_t, int(o["macs"][2])))
    return routers


def learned_routers(cfg: RunConfig, o: FoldOutputs, fusion: Fusion, seed: int,
                    info: dict) -> list[Router]:
    """Every switcher fitted on the fold's DMD records, with targets relative to the answer
    `fusion` gives an offloaded clip; the supervised ablation on the pool's hidden labels.
    `info` receives each switcher's family, size and (for dmd-cv) its selection table."""
    edge_t, edge_c = o.edge("test"), o.edge("calib")
    pe, macs = edge_t.proba, int(o["macs"][0])
    routers = []

    def add(name: str, sw, entry: dict, test=edge_t, calib=edge_c, kept=pe, device=macs):
        routers.append(Router(name, sw.trust(test), sw.trust(calib), kept, device + sw.macs))
        info[name] = entry | {"macs": sw.macs, "params": sw.n_params}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant target warns; the figures show it
        for name, spec in {"dmd": SwitcherSpec.from_config(cfg.switcher), **VARIANTS}.items():
            edge_rec, cloud_rec, groups = _records(o, spec.augment_views)
            target = dmd_targets(edge_rec.proba, fusion.combine(edge_rec.proba, cloud_rec),
                                 spec.target)
            add(name, fit_switcher(spec, edge_rec, target, groups, seed),
                {"family": spec.family, "target": spec.target})
        edge_rec, cloud_rec, groups = _records(o, 8)
        sel, table = select_switcher(edge_rec, fusion.combine(edge_rec.proba, cloud_rec), groups,
                                     seed, n_original=len(o["edge_pool_p"]))
        add("dmd-cv", sel, {"chosen": sel.meta.get("spec"), "cv": table})
        # stretch: a DMD switcher that reads the ABC ensemble (the same edge cost as `abc`)
        ens_pool, ens_c, ens_t = (ensemble_view(o.members(p)) for p in PARTS)
        target = dmd_targets(ens_pool.proba, fusion.combine(ens_pool.proba, o["cloud_pool_p"]),
                             "gain")
        ens_sw = fit_switcher(SwitcherSpec("linear", "gain"), ens_pool, target,
                              o["groups_pool"], seed)
        add("dmd-abc", ens_sw, {"family": "linear", "target": "gain"}, ens_t, ens_c,
            ens_t.proba, int(o["macs"][2]))
        # the supervised ablation: the configured switcher on the pool's true "edge is
        # correct" labels (no rotated views: they have no labels)
        sup_spec = replace(SwitcherSpec.from_config(cfg.switcher), augment_views=0)
        truth = (o["edge_pool_p"].argmax(axis=1) == o["hidden_y_pool"]).astype(float)
        add("supervised", fit_switcher(sup_spec, o.edge("pool"), truth, o["groups_pool"], seed),
            {"family": sup_spec.family, "target": "true labels"})
    return routers


def evaluate_fold(cfg: RunConfig, o: FoldOutputs, seed: int) -> dict:
    """Every router's figures on one fold (see the benchmark.json schema in the README)."""
    y = o["y_test"]
    k = len(o.classes)
    pe, pc = o["edge_test_p"], o.cloud("test")
    el = pe.argmax(axis=1)
    cloud_acc = float(np.mean(pc.argmax(axis=1) == y))
    order = np.argsort(o["ids_test"], kind="stable")
    # the benchmark scores both answer modes whatever the config deploys
    fused = Fusion(cfg.fusion.method if cfg.fusion.method != "none" else "dmd",
                   cfg.fusion.edge_weight).fit(o["edge_pool_p"], o["cloud_pool_p"])
    result: dict = {"edge_accuracy": float(np.mean(el == y)), "cloud_accuracy": cloud_acc,
                    "fusion": fused.to_dict(), "routers": {}, "switchers": {}}
    for suffix, fusion in {"": Fusion("none").fit(pe, pc), "+fusion": fused}.items():
        info: dict = {}
        routers = baseline_routers(o, seed) + learned_routers(cfg, o, fusion, seed, info)
        result["switchers"] |= {name + suffix: v for name, v in info.items()}
        answer = fusion.combine(pe, pc).argmax(axis=1)
        oracle = router_metrics(oracle_scores(el, answer, y), el, answer, y, cloud_acc, k, seed)
        for r in routers:
            kept = r.kept_proba.argmax(axis=1)
            # ABC keeps its ensemble's answer and fuses that with the cloud
            ans = answer if r.kept_proba is pe else fusion.combine(r.kept_proba, pc).argmax(1)
            m = router_metrics(r.test, kept, ans, y, cloud_acc, k, seed)
            # random routing's expected area is the mean of its two ends (the chord)
            rand = (float(np.mean(kept == y)) + float(np.mean(ans == y))) / 2
            orc = oracle if ans is answer else router_metrics(
                oracle_scores(kept, ans, y), kept, ans, y, cloud_acc, k, seed)
            span = orc["auc"] - rand
            m["oracle_gain_share"] = float((m["auc"] - rand) / span) if span > 1e-9 else None
            m["operating_point"] = operating_point(r, kept, ans, y, order, cfg, o["macs"])
            m["answer_accuracy"] = float(np.mean(ans == y))
            result["routers"][r.name + suffix] = m
        oracle["oracle_gain_share"] = 1.0
        oracle["answer_accuracy"] = float(np.mean(answer == y))
        result["routers"]["oracle" + suffix] = oracle
    return result
