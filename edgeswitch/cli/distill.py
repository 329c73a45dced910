"""`edgeswitch distill`: DMD records from an edge and a cloud model over unlabelled clips.

The command builds a source from `--data` (a split of a data set in memory, a corpus of `.npz`
files in shards, or a folder of videos), a sink from `--out` (a `.parquet` file: the records in
memory, written once; a folder: one Parquet part per unit, resumable) and calls the one DMD
runner (edgeswitch.dmd.runner) on the embedded engine (`--engine local`, the default) or on
Ray (`--engine ray`, folders only).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from edgeswitch.cli.common import config_section
from edgeswitch.errors import EdgeSwitchError


def _cloud_spec(args):
    from edgeswitch.cloud.spec import CloudSpec
    from edgeswitch.cloud.tokens import resolve_token

    if args.deadline_ms is None:
        args.deadline_ms = 60_000.0  # DMD is offline work: a slow cloud is waited for
    runtime = config_section(args, "runtime")
    return CloudSpec(model=args.cloud, url=args.cloud_url, served_model=args.model,
                     token=resolve_token(args.token_file) if args.cloud_url else None,
                     ca_cert=args.ca_cert, runtime=runtime)


def cmd_distill(args) -> int:
    """Source from --data, sink from --out, then the runner."""
    from edgeswitch.cli.video import is_video_source, video_work
    from edgeswitch.dmd.runner import run
    from edgeswitch.dmd.sinks import FolderSink, MemorySink

    settings = config_section(args, "distill")  # [distill] of --config, then flags
    to_file = Path(args.out).suffix == ".parquet"
    if to_file and settings.engine != "local":
        raise EdgeSwitchError("the ray engine writes a sharded folder: give --out a folder "
                              "name, not a .parquet file")
    if is_video_source(args.data):
        source, models = video_work(args)
    elif to_file:
        source, models = _split_work(args)
    else:
        source, models = _corpus_work(args, settings)
    sink = MemorySink() if to_file else FolderSink(args.out)
    engine = None
    if settings.engine == "ray":
        from edgeswitch.cli.common import need_extra
        from edgeswitch.scale.ray_distill import RayEngine

        need_extra("ray", "ray")
        engine = RayEngine(settings.workers, settings.ray_address or None,
                           settings.cpus_per_worker)
    summary = run(source, models, sink, settings.batch_size, engine, progress=not args.quiet)
    if to_file:
        return _distill_file(args, sink, summary)
    return _distill_sharded(args, summary)


def _split_work(args):
    """A split (default: pool) of a data set, in memory, and the ONNX models."""
    from edgeswitch.cli.steps import _load_split
    from edgeswitch.dmd.sources import MemorySource, OnnxModels
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.pipeline import check_clip_classes

    edge = OnnxClassifier(args.edge)
    args.split = args.split or "pool"
    clips, _, _ = _load_split(args, edge.classes_)
    check_clip_classes(clips, edge)
    return MemorySource(clips), OnnxModels(args.edge, _cloud_spec(args))


def _corpus_work(args, settings):
    """A corpus of .npz files in shards, and the ONNX models."""
    from edgeswitch.data.loaders import BUILTIN
    from edgeswitch.dmd.sources import NpzSource, OnnxModels

    if args.data.lower() in BUILTIN:
        raise EdgeSwitchError(f"--out {args.out} is a folder, which means a sharded run over a "
                              f"corpus of .npz files; for the built-in data set {args.data!r} "
                              "give --out FILE.parquet")
    if args.split not in (None, "all"):
        raise EdgeSwitchError("a sharded run reads every clip of the corpus; --split does not "
                              "apply (split the files instead)")
    return NpzSource([args.data], settings.shard_size), OnnxModels(args.edge, _cloud_spec(args))


def _report_failures(failed_units: dict, failed_clips: dict) -> None:
    for source, why in failed_units.items():
        print(f"edgeswitch: skipped {source}: {why}", file=sys.stderr)
    for clip, why in list(failed_clips.items())[:10]:
        print(f"edgeswitch: no cloud answer for {clip}: {why}", file=sys.stderr)
    if len(failed_clips) > 10:
        print(f"edgeswitch: ... and {len(failed_clips) - 10} more clips without a cloud answer",
              file=sys.stderr)


def _distill_file(args, sink, summary) -> int:
    """`--out FILE.parquet`: the run's records, written once."""
    from edgeswitch.cli.steps import _out_file

    records = sink.records
    path = records.to_parquet(_out_file(args.out))
    _report_failures(sink.failed_units, sink.failed_clips)
    print(f"{len(records)} clips from {summary.shards - len(sink.failed_units)} of "
          f"{summary.shards} units ({len(sink.failed_units)} unreadable, "
          f"{len(sink.failed_clips)} clips without a cloud answer), edge/cloud agreement "
          f"{records.agree.mean():.1%}, mean alignment {records.alignment.mean():.3f}; "
          f"wrote {path}")
    return 0


def _distill_sharded(args, summary) -> int:
    """`--out FOLDER`: what this run did, and what the folder holds (earlier runs included)."""
    from edgeswitch.dmd.parts import agreement, clip_failures, failures

    bad = failures(args.out)
    _report_failures(bad, clip_failures(args.out))
    agree = agreement(args.out)
    result = asdict(summary) | {"clips_per_s": summary.clips_per_s, "failed": len(bad),
                                "failed_clips": len(summary.failed_clips),
                                "failed_units": len(summary.failed_units),
                                "agreement": agree, "out": args.out}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{summary.shards} shards ({summary.skipped} already done, {summary.written} "
              f"written, {len(bad)} unreadable), {summary.computed_clips} clips computed on "
              f"{summary.engine} in {summary.seconds:.1f} s; edge/cloud agreement {agree:.1%}; "
              f"wrote {args.out}", file=sys.stderr)
    return 0


def add_parser(sub, add_common) -> None:
    from edgeswitch.cli.common import runtime_flags

    p = sub.add_parser(
        "distill", help="DMD: edge+cloud over unlabelled clips -> Parquet",
        description="Run the edge and cloud models over unlabelled clips and write DMD records "
        "(edge probabilities and embedding, cloud probabilities, agreement, alignment) to "
        "Parquet. Labels, if the data has any, are never read.\n\n"
        "--out FILE.parquet: one data set (--data, --split) in one file.\n"
        "--out FOLDER: a corpus of .npz files (--data is a folder, a glob or one file) cut "
        "into shards of --shard-size clips, one Parquet part each. Such a run resumes: run "
        "the same command again after a crash and only the missing shards are computed. "
        "--engine ray runs the shards on Ray Data actor pools (a local cluster, or --ray-address "
        "of a running one); the records are identical to --engine local.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="watch, basicmotions, a .npz / .ts / .arff file or UEA folder; with a "
                   "folder --out: a folder or glob of .npz files; or a folder of videos "
                   "(then --edge nfd | pose:MODEL.onnx, and --cloud-url URL --model NAME for "
                   "an OpenAI-compatible VLM, or --cloud yolo-fall)")
    p.add_argument("--split", default=None, choices=["all", "train", "pool", "calib", "test"],
                   help="which group split of --data (default: pool; a sharded run reads all)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default from config)")
    p.add_argument("--config", default=None,
                   help="TOML config: split shares, [runtime], [distill] (flags override it)")
    p.add_argument("--edge", required=True, help="edge model (.onnx; for video: nfd, "
                   "pose:MODEL.onnx, hf-vilt:DIR)")
    p.add_argument("--cloud", default=None, help="cloud model (.onnx), run in the worker")
    p.add_argument("--cloud-url", default=None,
                   help="or: a cloud server (edgeswitch serve-cloud or OpenAI-compatible)")
    p.add_argument("--model", default=None, help="model name to ask the server for")
    p.add_argument("--token-file", default=None,
                   help="file with the server's bearer token (default: $EDGESWITCH_TOKEN)")
    p.add_argument("--ca-cert", default=None,
                   help="CA or self-signed certificate to trust for an https --cloud-url")
    runtime_flags(p)
    p.add_argument("--out", default="dmd.parquet",
                   help="a .parquet file, or a folder for a sharded, resumable run")
    p.add_argument("--engine", choices=["local", "ray"], default=None,
                   help="local: this process (default); ray: Ray Data actor pools")
    p.add_argument("--shard-size", type=int, default=None,
                   help="clips per shard (default 2048)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="clips per model call or HTTP request (default 256)")
    p.add_argument("--workers", type=int, default=None,
                   help="ray: actors per pool (edge and cloud; default 2)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="ray: CPUs each actor reserves (default 1)")
    p.add_argument("--ray-address", default=None,
                   help="ray: a running cluster (e.g. 10.0.0.5:6379 or auto); default: start "
                   "a local one for this run")
    p.add_argument("--json", action="store_true", help="print a JSON summary (sharded runs)")
    from edgeswitch.cli.video import clip_args, vlm_args

    clip_args(p)
    vlm_args(p)
    add_common(p)
    p.set_defaults(func=cmd_distill)
