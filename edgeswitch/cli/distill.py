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
from dataclasses import asdict, replace
from pathlib import Path

from edgeswitch.cli.common import (
    REMOTE_ARGS,
    REMOTE_KEYS,
    VLM_ARGS,
    cloud_args,
    data_args,
    load_split,
    out_file,
    refuse_unused,
)
from edgeswitch.cli.flags import config_flags, renamed_flag, resolve_config
from edgeswitch.config import VideoConfig
from edgeswitch.errors import EdgeSwitchError


def _cloud_spec(args):
    from edgeswitch.cloud.spec import CloudSpec
    from edgeswitch.cloud.tokens import resolve_token

    cfg = resolve_config(args)
    # DMD is offline work: a slow cloud is waited for ([distill] cloud_timeout_ms, not the
    # live deadline of [runtime])
    runtime = replace(cfg.runtime, deadline_ms=cfg.distill.cloud_timeout_ms)
    return CloudSpec(model=args.cloud, url=args.cloud_url, served_model=args.model,
                     token=resolve_token(args.token_file) if args.cloud_url else None,
                     ca_cert=args.ca_cert, client_cert=args.tls_client_cert,
                     client_key=args.tls_client_key, runtime=runtime)


def cmd_distill(args) -> int:
    """Source from --data, sink from --out, then the runner."""
    from edgeswitch.cli.video import video_work
    from edgeswitch.data.files import is_video_source

    settings = resolve_config(args).distill
    to_file = Path(args.out).suffix == ".parquet"
    if to_file and settings.engine != "local":
        raise EdgeSwitchError("the ray engine writes a sharded folder: give --out a folder "
                              "name, not a .parquet file")
    if is_video_source(args.data):
        source, models = video_work(args)
        return _finish(args, source, models, settings, to_file)
    refuse_unused(args, tuple(f"video.{f}" for f in VideoConfig.__dataclass_fields__), VLM_ARGS,
                  "to video input only (--data is not a video source)")
    if not args.cloud_url:
        refuse_unused(args, REMOTE_KEYS, REMOTE_ARGS,
                      f"to --cloud-url only (--cloud {args.cloud} runs in the worker)")
    if to_file:
        source, models = _split_work(args)
    else:
        source, models = _corpus_work(args, settings)
    return _finish(args, source, models, settings, to_file)


def _finish(args, source, models, settings, to_file: bool) -> int:
    """The one runner, on the configured engine, into the sink --out names."""
    from edgeswitch.dmd.runner import run
    from edgeswitch.dmd.sinks import FolderSink, MemorySink

    sink = MemorySink() if to_file else FolderSink(args.out, dataset=args.data)
    engine = None
    if settings.engine == "ray":
        from edgeswitch.extras import need_extra
        from edgeswitch.scale.ray_distill import RayEngine

        need_extra("ray", "ray")
        engine = RayEngine(settings.workers, resolve_config(args).ray.address or None,
                           settings.cpus_per_worker)
    summary = run(source, models, sink, settings.batch_size, engine, progress=not args.quiet)
    if to_file:
        return _distill_file(args, sink, summary)
    return _distill_sharded(args, summary)


def _split_work(args):
    """A split (default: pool) of a data set, in memory, and the ONNX models."""
    from edgeswitch.dmd.sources import MemorySource, OnnxModels
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.pipeline import check_clip_classes

    edge = OnnxClassifier(args.edge)
    clips, _, _ = load_split(args, edge.classes_, split=args.split or "pool")
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
        print(f"edgeswitch: left out {clip}: {why}", file=sys.stderr)
    if len(failed_clips) > 10:
        print(f"edgeswitch: ... and {len(failed_clips) - 10} more clips left out",
              file=sys.stderr)


def _distill_file(args, sink, summary) -> int:
    """`--out FILE.parquet`: the run's records, written once."""
    records = replace(sink.records, dataset=args.data)  # its preset: the next steps' defaults
    path = records.to_parquet(out_file(args.out))
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
    data_args(p, None, help_extra="; with a folder --out: a folder or glob of .npz files; or "
              "a folder of videos (then --edge nfd | pose:MODEL.onnx, and --cloud-url URL "
              "--model NAME for an OpenAI-compatible VLM, or --cloud yolo-fall)")
    p.add_argument("--edge", required=True, help="edge model (.onnx; for video: nfd, "
                   "pose:MODEL.onnx, hf-vilt:DIR)")
    cloud_args(p, "cloud model (.onnx) run in the worker; for video: yolo-fall or "
               "hf-video-llava:DIR")
    p.add_argument("--out", default="dmd.parquet",
                   help="a .parquet file, or a folder for a sharded, resumable run")
    config_flags(p, "distill")
    config_flags(p, "ray", prefix="ray-")
    renamed_flag(p, "--deadline-ms", "--cloud-timeout-ms")
    config_flags(p, "runtime", only=("protocol",))
    p.add_argument("--json", action="store_true", help="print a JSON summary (sharded runs)")
    from edgeswitch.cli.video import vlm_args

    vlm_args(p, watch=False)
    add_common(p)
    p.set_defaults(func=cmd_distill)
