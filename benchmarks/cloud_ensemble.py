"""What the cloud ensemble buys: one ResNet (the ensemble's first member, same seed) against the
three-ResNet ensemble, on the benchmark's folds (test accuracy, and the gap over the edge).

    edgeswitch benchmark --out runs/benchmark
    python benchmarks/cloud_ensemble.py runs/benchmark/benchmark.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench", help="benchmark.json of a run with the default config")
    p.add_argument("--cache", default=None, help="model cache (default: edgeswitch's)")
    args = p.parse_args()

    from edgeswitch.benchmark.folds import make_folds
    from edgeswitch.benchmark.stats import mean_ci
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir, fit_or_load
    from edgeswitch.pipeline import estimator, load_data

    bench = json.loads(Path(args.bench).read_text())
    cfg = load_config(dataset=bench["dataset"])
    data = load_data(cfg)
    b = cfg.benchmark
    folds = make_folds(data, b.folds, b.repeats, cfg.seed, tuple(cfg.splits))
    cache = Path(args.cache) if args.cache else default_cache_dir()
    rows = []
    for fold, res in zip(folds, bench["folds"], strict=True):
        splits = fold.split(data)
        single = estimator(cfg, "cloud", fold.seed, ensemble=1)  # the ensemble's first member
        model, _ = fit_or_load(single, splits.train, cache)
        acc = float(np.mean(model.predict_proba(splits.test.X).argmax(1) == splits.test.y))
        rows.append((fold.test_groups, res["edge_accuracy"], acc, res["cloud_accuracy"]))
        print(f"{' '.join(fold.test_groups)}: edge {100 * res['edge_accuracy']:.1f}%, one ResNet "
              f"{100 * acc:.1f}%, three {100 * res['cloud_accuracy']:.1f}%", flush=True)
    edge, one, three = (np.array([r[i] for r in rows]) for i in (1, 2, 3))
    for name, v in (("one ResNet - edge", one - edge), ("three ResNets - edge", three - edge),
                    ("three - one", three - one)):
        m = mean_ci((100 * v).tolist(), 2000)
        print(f"{name}: {m['mean']:+.1f} points [{m['ci'][0]:+.1f}, {m['ci'][1]:+.1f}], "
              f">= 3 points on {int((v >= 0.03).sum())} of {len(v)} folds")


if __name__ == "__main__":
    main()
