"""When does a learned switcher beat a margin threshold? Two synthetic model pairs, benchmarked
from their outputs files (`edgeswitch benchmark --outputs`), as theory predicts:

* `specialist`: the cloud is right on the classes the edge always gets wrong (its blind spot,
  where the edge answers a neighbour class with confidence and keeps a trace of the true class)
  and often wrong elsewhere. The edge's margin says nothing about the blind spot; its posterior
  does, and a DMD switcher learns where the cloud disagrees: it should beat margin.
* `homogeneous`: both models are calibrated, their errors independent and uniform over the
  classes. Whether the cloud disagrees depends on the edge's confidence alone, so a DMD
  switcher can only learn a monotone function of it: it should tie with margin.

    python benchmarks/model_pairs.py            # both pairs, 5 folds; prints dmd vs margin
    python benchmarks/model_pairs.py --save     # ... and writes benchmarks/results/model_pairs.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

K = 6
BLIND = (0, 1)         # specialist: the edge answers class c + 2 for a clip of class c


def _posterior(rng, label: np.ndarray, confidence: np.ndarray, trace: np.ndarray | None = None,
               trace_mass: float = 0.0) -> np.ndarray:
    """`confidence` on `label`, `trace_mass` on `trace` (if given), the rest spread evenly."""
    n = len(label)
    p = np.zeros((n, K))
    rest = 1 - confidence - (trace_mass if trace is not None else 0.0)
    p += (rest / (K - 1 - (trace is not None)))[:, None]
    p[np.arange(n), label] = confidence
    if trace is not None:
        p[np.arange(n), trace] = trace_mass
    return p / p.sum(axis=1, keepdims=True)


def _wrong(rng, y: np.ndarray, among: np.ndarray | None = None) -> np.ndarray:
    """A class other than `y` for every clip (from `among` where given)."""
    out = y.copy()
    for i in range(len(y)):
        pool = [c for c in (range(K) if among is None else among) if c != y[i]]
        out[i] = rng.choice(pool)
    return out


def pair(kind: str, groups: int = 12, per_group: int = 80, seed: int = 0) -> dict:
    """Columns of an outputs file (clip_id, group, label, edge_proba, cloud_proba)."""
    rng = np.random.default_rng(seed)
    n = groups * per_group
    y = rng.integers(0, K, n)
    if kind == "specialist":
        blind = np.isin(y, BLIND)
        right = rng.random(n) < 0.85
        c = np.where(right, rng.uniform(0.45, 0.75, n), rng.uniform(0.3, 0.5, n))
        edge_label = np.where(blind, y + 2, np.where(right, y, _wrong(rng, y, np.arange(2, K))))
        # the edge's trace: on the blind spot the true class, elsewhere another class
        trace = np.where(blind, y, _wrong(rng, edge_label, np.arange(2, K)))
        edge = _posterior(rng, edge_label, c, trace, 0.25)
        cloud_right = np.where(blind, rng.random(n) < 0.95, rng.random(n) < 0.5)
        cloud_label = np.where(cloud_right, y, _wrong(rng, y))
        cloud = _posterior(rng, cloud_label, np.full(n, 0.6))
    elif kind == "homogeneous":
        def calibrated(low: float, high: float) -> np.ndarray:
            c = rng.uniform(low, high, n)
            label = np.where(rng.random(n) < c, y, _wrong(rng, y))
            return _posterior(rng, label, c)

        edge, cloud = calibrated(0.3, 0.95), calibrated(0.6, 0.99)
    else:
        raise ValueError(f"unknown pair {kind!r}: specialist or homogeneous")
    return {"clip_id": [f"c{i}" for i in range(n)],
            "group": [f"g{i // per_group:02d}" for i in range(n)],
            "label": [f"class{c}" for c in y],
            "edge_proba": edge.astype(np.float32), "cloud_proba": cloud.astype(np.float32)}


def write_pair(path: Path, kind: str, **kw) -> Path:
    """The pair's outputs file (Parquet, the classes in its metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = pair(kind, **kw)
    table = pa.table({k: pa.array(list(v)) if k.endswith("proba") else v
                      for k, v in cols.items()})
    classes = json.dumps([f"class{c}" for c in range(K)])
    pq.write_table(table.replace_schema_metadata({"classes": classes}), path)
    return path


def versus_margin(bench: dict) -> dict:
    """Each DMD switcher (offloads answered by the cloud) against the best confidence
    baseline (margin, max_prob or entropy, by its mean area), fold by fold."""
    s = bench["summary"]
    out = {"edge_accuracy": s["edge_accuracy"]["mean"],
           "cloud_accuracy": s["cloud_accuracy"]["mean"], "routers": {}}
    for name in SWITCHERS:
        if name not in s["vs_best_confidence"]:
            continue
        vs = s["vs_best_confidence"][name]
        out["reference"] = vs["reference"]
        out["reference_area"] = s["routers"][vs["reference"]]["auc"]
        out["routers"][name] = {"area": s["routers"][name]["auc"], "area_diff": vs["auc_diff"],
                                "wins_ties_losses": [vs["wins"], vs["ties"], vs["losses"]]}
    return out


SWITCHERS = ("dmd", "dmd-linear", "dmd-mlp", "dmd-gbt", "dmd-cv", "supervised")


def main() -> None:
    from _results import output_args, write_results  # benchmarks/_results.py

    from edgeswitch.benchmark.recorded import read_outputs
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.config import RunConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    output_args(ap, "model_pairs.json")
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("specialist", "homogeneous"):
            f = write_pair(Path(tmp) / f"{kind}.parquet", kind)
            bench = run_benchmark(RunConfig(), Path(tmp) / kind, recorded=read_outputs(f))
            out[kind] = v = versus_margin(bench)
            print(f"{kind}: edge {v['edge_accuracy']:.3f}, cloud {v['cloud_accuracy']:.3f}; "
                  f"{v['reference']} area {v['reference_area']['mean']:.4f}")
            for name, r in v["routers"].items():
                d = r["area_diff"]
                print(f"  {name:<12} area {r['area']['mean']:.4f}  vs {v['reference']} "
                      f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]  W/T/L "
                      f"{'/'.join(map(str, r['wins_ties_losses']))}")
    write_results(args, {"command": "python benchmarks/model_pairs.py --save",
                         "pairs": out}, "model_pairs.json")


if __name__ == "__main__":
    main()
