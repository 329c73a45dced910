"""`edgeswitch benchmark`: cross-validated evaluation of every router on one data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeswitch.cli.common import model_cache, run_args
from edgeswitch.cli.flags import config_flags


def cmd_benchmark(args: argparse.Namespace) -> int:
    from edgeswitch.benchmark.report import text_table, write_all
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.cli.flags import resolve_config

    bench = run_benchmark(resolve_config(args), Path(args.out), model_cache(args),
                          progress=not args.quiet)
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
    run_args(p, "runs/benchmark")
    config_flags(p, "benchmark")
    add_common(p)
    p.set_defaults(func=cmd_benchmark)
