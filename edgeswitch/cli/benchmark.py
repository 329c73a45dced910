"""`edgeswitch benchmark`: cross-validated evaluation of every router on one data set."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_benchmark(args: argparse.Namespace) -> int:
    from edgeswitch.benchmark.report import text_table, write_all
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.config import load_config, validate
    from edgeswitch.models.cache import default_cache_dir

    cfg = load_config(args.config, dataset=args.dataset, seed=args.seed)
    if args.folds is not None:
        cfg.benchmark.folds = args.folds
    if args.repeats is not None:
        cfg.benchmark.repeats = args.repeats
    validate(cfg)
    cache = None if args.no_cache else Path(args.cache or default_cache_dir())
    bench = run_benchmark(cfg, Path(args.out), cache, progress=not args.quiet)
    paths = write_all(bench, Path(args.out))
    print(text_table(bench))
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "benchmark", help="cross-validated evaluation of every router, with CIs",
        description="Rotate which groups (subjects / recordings) are the test split so that every "
        "group is tested once; in each fold deal the others to train / pool / calib, train the "
        "edge and cloud models (cached), run DMD on the unlabelled pool, fit fusion and every "
        "switcher without labels, and score every router on the test groups, with offloaded "
        "clips answered by the cloud and by fusion. Prints the summary and writes "
        "OUT/benchmark.json, OUT/benchmark.png and OUT/benchmark.html. A rerun or a killed run "
        "reuses each finished fold (OUT/folds/).")
    p.add_argument("--dataset", default=None,
                   help="watch (default), basicmotions, or a path to .npz / .ts / .arff / a "
                   "UEA folder (groups from the file; without groups every clip is its own)")
    p.add_argument("--folds", type=int, default=None,
                   help="folds per repeat (default 5; watch: 5 folds of 2 subjects)")
    p.add_argument("--repeats", type=int, default=None,
                   help="re-deal the folds with other seeds (default 1)")
    p.add_argument("--out", default="runs/benchmark", help="output folder")
    p.add_argument("--seed", type=int, default=None, help="seed of the first repeat")
    p.add_argument("--config", default=None, help="TOML config file (see configs/watch.toml)")
    p.add_argument("--cache", default=None,
                   help="model cache folder (default: $EDGESWITCH_CACHE or ~/.cache/edgeswitch)")
    p.add_argument("--no-cache", action="store_true", help="always retrain the models")
    add_common(p)
    p.set_defaults(func=cmd_benchmark)
