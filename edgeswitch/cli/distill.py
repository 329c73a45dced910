"""`edgeswitch distill`: DMD records from an edge and a cloud model over unlabelled clips.

Two shapes of run. `--out FILE.parquet` (the default): one data set in memory, one file.
`--out FOLDER`: a corpus of `.npz` files in shards, one Parquet part per shard, resumable,
on the embedded engine (`--engine local`, the default) or on Ray (`--engine ray`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from edgeswitch.cli.common import cloud_args, data_args, load_split, out_file
from edgeswitch.cli.flags import config_flags, resolve_config
from edgeswitch.errors import EdgeSwitchError


def _cloud_spec(args):
    from edgeswitch.cloud.spec import CloudSpec
    from edgeswitch.cloud.tokens import resolve_token

    cfg = resolve_config(args, dataset=args.data)
    # DMD is offline work: a slow cloud is waited for ([distill] deadline_ms, not [runtime]'s)
    runtime = replace(cfg.runtime, deadline_ms=cfg.distill.deadline_ms)
    return CloudSpec(model=args.cloud, url=args.cloud_url, served_model=args.model,
                     token=resolve_token(args.token_file) if args.cloud_url else None,
                     ca_cert=args.ca_cert, runtime=runtime)


def cmd_distill(args) -> int:
    from edgeswitch.cli.video import distill_videos, is_video_source, video_work

    if is_video_source(args.data):
        if Path(args.out).suffix == ".parquet":
            return distill_videos(args)
        return _distill_sharded(args, None, resolve_config(args).distill, video_work(args))
    spec = _cloud_spec(args)
    settings = resolve_config(args, dataset=args.data).distill
    if Path(args.out).suffix == ".parquet":
        if settings.engine != "local":
            raise EdgeSwitchError("the ray engine writes a sharded folder: give --out a folder "
                                  "name, not a .parquet file")
        return _distill_file(args, spec, settings)
    return _distill_sharded(args, spec, settings)


def _distill_file(args, spec, settings) -> int:
    from edgeswitch.dmd import distill
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.pipeline import check_clip_classes

    edge = OnnxClassifier(args.edge)
    clips, _, _ = load_split(args, edge.classes_, split=args.split or "pool")
    check_clip_classes(clips, edge)
    cloud = spec.build(edge.classes_)
    try:
        records = distill(edge, cloud, clips, batch_size=settings.batch_size,
                          progress=not args.quiet)
    finally:
        if hasattr(cloud, "close"):
            cloud.close()
    path = records.to_parquet(out_file(args.out))
    print(f"{len(records)} clips, edge/cloud agreement {records.agree.mean():.1%}, "
          f"mean alignment {records.alignment.mean():.3f}; wrote {path}")
    return 0


def _distill_sharded(args, spec, settings, video=None) -> int:
    """A sharded, resumable run over a corpus of .npz files, or of videos (`video` set)."""
    from edgeswitch.data.loaders import BUILTIN
    from edgeswitch.dmd.shards import DistillJob, agreement, failures, run_local

    if args.data.lower() in BUILTIN:
        raise EdgeSwitchError(f"--out {args.out} is a folder, which means a sharded run over a "
                              f"corpus of .npz files; for the built-in data set {args.data!r} "
                              "give --out FILE.parquet")
    if args.split not in (None, "all"):
        raise EdgeSwitchError("a sharded run reads every clip of the corpus; --split does not "
                              "apply (split the files instead)")
    d = settings
    job = DistillJob(corpus=[args.data], out=args.out, edge=args.edge, cloud=spec,
                     shard_size=d.shard_size, batch_size=d.batch_size, video=video)
    if d.engine == "ray":
        from edgeswitch.cli.common import need_extra
        from edgeswitch.scale.ray_distill import run_ray

        need_extra("ray", "ray")
        summary = run_ray(job, workers=d.workers, address=d.ray_address or None,
                          cpus_per_worker=d.cpus_per_worker, progress=not args.quiet)
    else:
        summary = run_local(job, progress=not args.quiet)
    bad = failures(args.out)
    for source, why in bad.items():
        print(f"edgeswitch: skipped {source}: {why}", file=sys.stderr)
    agree = agreement(args.out)
    result = asdict(summary) | {"clips_per_s": summary.clips_per_s, "failed": len(bad),
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
    config_flags(p, "runtime", only=("protocol",))
    p.add_argument("--json", action="store_true", help="print a JSON summary (sharded runs)")
    from edgeswitch.cli.video import vlm_args

    vlm_args(p, watch=False)
    add_common(p)
    p.set_defaults(func=cmd_distill)
