"""`edgeswitch benchmark`: cross-validated evaluation of every router on one data set."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgeswitch.cli.common import model_cache, run_args
from edgeswitch.cli.flags import config_flags
from edgeswitch.errors import EdgeSwitchError


def cmd_benchmark(args: argparse.Namespace) -> int:
    from edgeswitch.benchmark.report import text_table, write_all
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.cli.flags import resolve_config

    recorded = None
    if args.outputs:
        from edgeswitch.benchmark.recorded import read_outputs

        recorded = read_outputs(args.outputs, args.labels)
    elif args.labels:
        raise EdgeSwitchError("--labels goes with --outputs (the labels of its clips)")
    if args.write_outputs and Path(args.write_outputs).suffix.lower() not in (".parquet", ".pq"):
        raise EdgeSwitchError(f"--write-outputs writes Parquet: give a .parquet file, not "
                              f"{args.write_outputs}")   # said before the run, not after it
    if recorded is not None and args.write_outputs:
        raise EdgeSwitchError("--write-outputs writes the outputs of a run on clips; with "
                              "--outputs the file is already there")
    bench = run_benchmark(resolve_config(args), Path(args.out), model_cache(args),
                          progress=not args.quiet, recorded=recorded,
                          write_outputs=Path(args.write_outputs) if args.write_outputs
                          else None)
    paths = write_all(bench, Path(args.out))
    print(text_table(bench))
    if args.write_outputs:
        paths["outputs"] = Path(args.write_outputs)
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
        "reuses each finished fold (OUT/folds/). With --outputs FILE it trains nothing: the "
        "routers are fitted and scored on recorded outputs of any model pair (one row per "
        "clip; schema in docs/formats.md), such as a video VLM's run on a GPU elsewhere.")
    run_args(p, "runs/benchmark")
    p.add_argument("--outputs", default=None, metavar="FILE",
                   help="benchmark recorded model outputs (.parquet, .csv or .jsonl: clip_id, "
                   "group, label, edge_proba, cloud_proba, ...) instead of clips: no training; "
                   "--dataset is not read")
    p.add_argument("--labels", default=None, metavar="CSV",
                   help="with --outputs: a CSV of clip_id,label for a file without labels "
                   "(e.g. the DMD records `distill` wrote)")
    p.add_argument("--write-outputs", default=None, metavar="FILE",
                   help="also write every fold's model outputs as one .parquet outputs file "
                   "(benchmark --outputs FILE then gives the same figures without training)")
    config_flags(p, "benchmark")
    add_common(p)
    p.set_defaults(func=cmd_benchmark)
