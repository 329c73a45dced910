"""Video subcommands: `watch` (the hybrid on a camera or a file), `train-pose`, and what DMD
over a folder of videos takes (reached through `edgeswitch distill --data VIDEOS`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from edgeswitch.cli.common import (
    EXIT_CODES,
    close_hybrid,
    deployed_args,
    make_hybrid,
    need_extra,
    server_args,
)
from edgeswitch.cli.flags import config_arg, config_flags, resolve_config
from edgeswitch.config import VideoConfig
from edgeswitch.errors import EdgeSwitchError


def vlm_args(p: argparse.ArgumentParser, watch: bool) -> None:
    """A VLM cloud's settings: [video] of the config, [runtime]'s retries and breaker, and the
    prompt file. A DMD run's deadline is [distill]'s, so only `watch` has [video]'s."""
    fields = None if watch else tuple(f for f in VideoConfig.__dataclass_fields__
                                      if f != "deadline_ms")
    config_flags(p, "video", only=fields,
                 title="video clips and the openai-vlm cloud (--cloud-url)")
    config_flags(p, "runtime", only=_VLM_RUNTIME)
    p.add_argument("--prompt-file", default=None,
                   help="VLM prompt template ({n}, {seconds}, {labels}, {descriptions})")


_VLM_RUNTIME = ("retries", "backoff_ms", "backoff_max_ms", "breaker_failures", "breaker_reset_s")


def clip_spec(args):
    from edgeswitch.video.source import ClipSpec

    return ClipSpec.from_config(resolve_config(args).video)


def video_cloud_args(args) -> dict | None:
    """Keyword arguments of video.registry.video_cloud from --cloud / --cloud-url. A VLM gets
    the runtime of every remote cloud ([runtime] of --config, then the flags), with the
    deadline of a DMD run ([distill] deadline_ms) or of `watch` ([video] deadline_ms)."""
    from edgeswitch.cli.common import REMOTE_ARGS, REMOTE_KEYS, VLM_ARGS, VLM_KEYS, refuse_unused
    from edgeswitch.cli.flags import flag_values
    from edgeswitch.cloud.tokens import resolve_token

    cfg = resolve_config(args)
    if args.cloud_url:
        if cfg.runtime.protocol != "openai" and "runtime.protocol" in flag_values(args):
            raise EdgeSwitchError("a VLM --cloud-url speaks the OpenAI chat protocol; "
                                  f"--protocol {cfg.runtime.protocol} does not apply")
        if getattr(args, "tls_client_cert", None) or getattr(args, "tls_client_key", None):
            raise EdgeSwitchError("--tls-client-cert/--tls-client-key apply to sensor clouds "
                                  "only; a VLM --cloud-url takes --ca-cert and a token")
        deadline = cfg.distill.deadline_ms if args.command == "distill" else \
            cfg.video.deadline_ms
        vlm = {"frames": cfg.video.vlm_frames, "constraint": cfg.video.constraint,
               "logprobs": cfg.video.logprobs}
        if args.prompt_file:
            try:
                vlm["prompt"] = Path(args.prompt_file).read_text()
            except OSError as exc:
                raise EdgeSwitchError(f"cannot read --prompt-file: {exc}") from None
        runtime = replace(cfg.runtime, protocol="openai", deadline_ms=deadline)
        return {"spec": "openai-vlm", "url": args.cloud_url, "model": args.model,
                "token": resolve_token(args.token_file), "ca_cert": args.ca_cert,
                "runtime": runtime, **vlm}
    where = f" (--cloud {args.cloud} runs in this process)" if args.cloud else ""
    refuse_unused(args, REMOTE_KEYS + VLM_KEYS, REMOTE_ARGS + VLM_ARGS,
                  f"to --cloud-url only{where}")
    return {"spec": args.cloud} if args.cloud else None


def video_models(args, need_cloud: bool = True):
    """(edge, cloud or None) from --edge, --cloud / --cloud-url."""
    from edgeswitch.video.registry import video_cloud, video_edge

    need_extra("av", "video")
    edge = video_edge(args.edge)
    kwargs = video_cloud_args(args)
    if kwargs is None and need_cloud:
        raise EdgeSwitchError("give the cloud: --cloud-url URL --model NAME (an OpenAI-"
                              "compatible VLM), or --cloud yolo-fall | hf-video-llava:DIR")
    cloud = video_cloud(**kwargs, classes=tuple(edge.classes_)) if kwargs else None
    return edge, cloud


def video_work(args):
    """`edgeswitch distill --data VIDEOS`: the source (clips cut from every video) and the
    models (by name) that the DMD runner takes, for either kind of --out."""
    from edgeswitch.video.dmd import VideoModels, VideoSource

    need_extra("av", "video")
    if args.split is not None:
        raise EdgeSwitchError("a run over videos reads every clip of every video; --split does "
                              "not apply (split the videos into folders instead)")
    cloud = video_cloud_args(args)
    if cloud is None:
        raise EdgeSwitchError("give the cloud: --cloud-url URL --model NAME (an OpenAI-"
                              "compatible VLM), or --cloud yolo-fall | hf-video-llava:DIR")
    return VideoSource(args.data, clip_spec(args)), VideoModels(args.edge, cloud)


def cmd_train_pose(args) -> int:
    from edgeswitch.data import load_dataset
    from edgeswitch.video.edge_models import PoseClassifier
    from edgeswitch.video.synthetic import synthetic_pose_dataset

    cfg = resolve_config(args)
    if args.data:
        data = load_dataset(args.data)
    else:
        data = synthetic_pose_dataset(cfg.pose.synthetic, seed=cfg.seed)
        print(f"training on {len(data)} SYNTHETIC pose sequences (procedural falls and daily "
              "activities): a smoke run, not a fall detector", file=sys.stderr)
    name = "movenet-posecnn" if args.data else "movenet-posecnn-synthetic"  # says what it saw
    model = PoseClassifier(epochs=cfg.pose.epochs, width=cfg.pose.width, seed=cfg.seed,
                           name=name).fit(
        data, progress=not args.quiet)
    path = model.save(args.out)
    print(f"wrote {path} (classes {list(model.classes_)})")
    return 0


def _watch_items(source: str, spec):
    """One stream item per clip of the source, with its time range for the JSON line."""
    from edgeswitch.runtime.stream import StreamItem
    from edgeswitch.video.source import iter_clips

    for clip in iter_clips(source, spec):
        yield StreamItem([clip], [clip.clip_id], [clip.source],
                         [{"source": clip.source, "start_s": clip.start_s, "end_s": clip.end_s}])


def cmd_watch(args) -> int:
    """The hybrid over a file or a live source, one clip per call, JSON lines out."""
    from edgeswitch.runtime.stream import run_stream
    from edgeswitch.video.annotate import AnnotatedVideo

    edge, cloud = video_models(args, need_cloud=False)
    if cloud is None:  # edge only: the switcher still scores; clips it would offload keep
        from edgeswitch.cloud.client import NoCloud  # the edge answer, flagged "no_cloud"

        cloud = NoCloud(edge.classes_)
    hybrid = make_hybrid(args, edge, cloud)
    spec = clip_spec(args)
    try:
        out = open(args.out, "w") if args.out != "-" else sys.stdout  # noqa: SIM115
    except OSError as exc:
        close_hybrid(hybrid)
        raise EdgeSwitchError(f"cannot write --out {args.out}: {exc.strerror}") from None
    video = AnnotatedVideo(args.video_out, spec) if args.video_out else None
    try:
        summary = run_stream(hybrid, _watch_items(args.source, spec), out,
                             stop_after=args.stop_after,
                             on_result=video.add if video is not None else None)
    finally:
        if video is not None:
            video.close()
        if out is not sys.stdout:
            out.close()
        close_hybrid(hybrid)
    from edgeswitch.cli.common import stream_exit

    return stream_exit(summary, "watch", f"{summary.seconds:.1f} s, stopped at "
                       f"{summary.stopped_by}"
                       + (f"; wrote {args.video_out}" if args.video_out else ""))


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "watch", help="the hybrid on a video file, stream or webcam; JSON lines out",
        description="Cut SOURCE (a video file, an rtsp:// or http:// URL, or a webcam index) "
        "into sliding clips and classify each with the edge model, the switcher and, when the "
        "switcher doubts the edge, the cloud. One JSON line per clip: time range, label, who "
        "answered, switcher score, latencies. Ends at the end of a file, or on Ctrl-C (the "
        "outputs are closed cleanly). Without a cloud the edge answers everything. "
        + EXIT_CODES)
    p.add_argument("source", help="video file, stream URL or webcam index")
    p.add_argument("--edge", default="nfd", help="nfd (default), pose:MODEL.onnx, hf-vilt:DIR")
    deployed_args(p)
    p.add_argument("--cloud", default=None, help="yolo-fall[:MODEL.onnx] or hf-video-llava:DIR")
    p.add_argument("--cloud-url", default=None, help="an OpenAI-compatible VLM endpoint, e.g. "
                   "http://127.0.0.1:8000/v1")
    server_args(p)
    config_arg(p)
    vlm_args(p, watch=True)
    p.add_argument("--out", default="-", help="JSON lines file (default: stdout)")
    p.add_argument("--video-out", default=None, help="write an annotated video here (.mp4)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop after N clips (default: at the end of the source)")
    add_common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "train-pose", help="train the pose-sequence edge model",
        description="Train our temporal CNN on labelled pose-feature sequences [n, 32, 60] "
        "(an .npz with X, y, classes), or on SYNTHETIC procedural falls and daily activities "
        "for a smoke run. Writes an ONNX model for `--edge pose:MODEL.onnx`.")
    p.add_argument("--data", default=None, help=".npz of pose sequences (default: synthetic)")
    config_arg(p)
    config_flags(p, "pose")
    config_flags(p, "", only=("seed",))
    p.add_argument("--out", default="pose.onnx")
    add_common(p)
    p.set_defaults(func=cmd_train_pose)
