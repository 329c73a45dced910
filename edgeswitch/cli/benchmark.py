"""`edgeswitch benchmark`: cross-validated evaluation of every router on one data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeswitch.cli.flags import config_arg, config_flags


def cmd_benchmark(args: argparse.Namespace) -> int:
    from edgeswitch.benchmark.report import text_table, write_all
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.cli.flags import resolve_config
    from edgeswitch.models.cache import default_cache_dir

    cfg = resolve_config(args)
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
    p.add_argument("--out", default="runs/benchmark", help="output folder")
    config_arg(p)
    config_flags(p, "", only=("dataset", "seed"))
    config_flags(p, "benchmark")
    p.add_argument("--cache", default=None,
                   help="model cache folder (default: $EDGESWITCH_CACHE or ~/.cache/edgeswitch)")
    p.add_argument("--no-cache", action="store_true", help="always retrain the models")
    add_common(p)
    p.set_defaults(func=cmd_benchmark)
