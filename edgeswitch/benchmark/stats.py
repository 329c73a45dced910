"""Statistics across folds: means with bootstrap confidence intervals, paired differences.

Intervals are percentile bootstraps over folds (each fold's figure is one draw; clips within a
fold are not resampled), so they describe how a figure varies with which subjects are tested.
With few folds they are optimistic; the per-fold wins / ties / losses are shown beside them.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.benchmark.evaluate import CONFIDENCE, ENSEMBLE_ROUTERS, STREAM_ROUTERS

TIE = 1e-4   # paired area differences this small count as ties


def mean_ci(values: list[float], n_boot: int, seed: int = 0) -> dict:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return {"mean": float(v[0]), "ci": [float(v[0]), float(v[0])]}
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    boots = v[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(v.mean()), "ci": [float(lo), float(hi)]}


def fold_metrics(fold: dict, name: str) -> dict[str, float]:
    """The per-fold figures that are summarised (a never-reached match counts as 1.0)."""
    r = fold["routers"][name]
    match = r["offload_to_match_cloud"]
    share = r.get("oracle_gain_share")
    op = r.get("operating_point") or {}   # the oracle has none: it needs test labels
    nan = float("nan")
    return {"auc": r["auc"], "offload_to_match_cloud": 1.0 if match is None else match,
            "oracle_gain_share": np.nan if share is None else share,
            **{f"gain_over_cloud_at_{x}": r["accuracy_at"][x] - fold["cloud_accuracy"]
               for x in ("0.1", "0.2", "0.35", "0.5")},
            "accuracy_at_operating_point": op.get("accuracy", nan),
            "offload_at_operating_point": op.get("offload_rate", nan),
            "compute_vs_cloud": nan if op.get("compute_vs_cloud") is None
            else op["compute_vs_cloud"]}


def paired(folds: list[dict], name: str, ref: str, n_boot: int, part: str = "routers") -> dict:
    """`name`'s area minus `ref`'s, fold by fold (`name`'s from `part`: the routers, or the
    shuffled control): mean with CI, and wins / ties / losses."""
    d = np.array([f[part][name]["auc"] - f["routers"][ref]["auc"] for f in folds])
    return {"reference": ref, "auc_diff": mean_ci(d.tolist(), n_boot),
            "wins": int((d > TIE).sum()), "ties": int((np.abs(d) <= TIE).sum()),
            "losses": int((d < -TIE).sum())}


def per_clip_default(folds: list[dict], suffix: str) -> str | None:
    """The best per-clip router a device could run with the answers a stream router gives:
    the same edge model (no ensemble), offloaded clips answered the same way (`suffix`:
    "+fusion" or ""), no oracle or label; by its mean area over all folds."""
    names = [n for n in folds[0]["routers"] if n not in STREAM_ROUTERS
             and n.endswith(suffix) and (suffix or not n.endswith("+fusion"))
             and n.removesuffix(suffix) not in ("oracle", "supervised", *ENSEMBLE_ROUTERS)]
    if not names:
        return None
    return max(names, key=lambda n: np.mean([f["routers"][n]["auc"] for f in folds]))


def summarise(folds: list[dict], n_boot: int, default_router: str, streams: str = "none",
              answers: str = "+fusion") -> dict:
    """The summary of benchmark.json; `streams` names the run's streams, `answers` the suffix
    of the per-clip routers whose offloaded clips are answered as the stream routers' are."""
    names = list(folds[0]["routers"])
    routers = {}
    for name in names:
        per = [fold_metrics(f, name) for f in folds]
        routers[name] = {}
        for key in per[0]:
            values = [p[key] for p in per if np.isfinite(p[key])]
            routers[name][key] = mean_ci(values, n_boot) if values else None
    vs = {}
    for suffix in ("", "+fusion"):
        conf = [c + suffix for c in CONFIDENCE if c + suffix in routers]
        if not conf:
            continue
        best = max(conf, key=lambda c: routers[c]["auc"]["mean"])
        for name in names:
            if not name.endswith(suffix) or (suffix == "" and name.endswith("+fusion")) \
                    or name in STREAM_ROUTERS:
                continue
            vs[name] = paired(folds, name, best, n_boot)
    ref = per_clip_default(folds, answers)
    stream = [n for n in STREAM_ROUTERS if n in folds[0]["routers"]]
    vs_clip = {n: paired(folds, n, ref, n_boot) for n in stream} if ref else {}
    shuffled = {n: {"reference": ref, "auc_diff_vs_per_clip":
                    paired(folds, n, ref, n_boot, "shuffled")["auc_diff"]}
                for n in stream if ref and all(n in f.get("shuffled", {}) for f in folds)}
    edge = [f["edge_accuracy"] for f in folds]
    cloud = [f["cloud_accuracy"] for f in folds]
    gap = np.asarray(cloud) - np.asarray(edge)
    return {"routers": routers, "vs_best_confidence": vs, "default_router": default_router,
            "streams": streams, "vs_per_clip_default": vs_clip, "shuffled_control": shuffled,
            "edge_accuracy": mean_ci(edge, n_boot), "cloud_accuracy": mean_ci(cloud, n_boot),
            "cloud_minus_edge": mean_ci(gap.tolist(), n_boot) | {
                "folds_at_least_3_points": int((gap >= 0.03).sum()), "folds": len(folds)}}
