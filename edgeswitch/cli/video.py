"""Video subcommands: `watch` (the hybrid on a camera or a file), `train-pose`, and what DMD
over a folder of videos takes (reached through `edgeswitch distill --data VIDEOS`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edgeswitch.cli.common import fusion_arg, load_fusion, need_extra
from edgeswitch.errors import EdgeSwitchError


def is_video_source(data: str) -> bool:
    """A video file, a folder holding videos, a stream URL or a webcam index."""
    from edgeswitch.data.files import is_video

    path = Path(data)
    if "://" in data or data.isdigit() or is_video(path):
        return True
    return path.is_dir() and any(is_video(p) for p in path.iterdir())


def clip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video clips")
    g.add_argument("--clip-s", type=float, default=4.0, help="clip length in seconds (default "
                   "4: the NFD fall head reads 32 poses at 8 fps)")
    g.add_argument("--stride-s", type=float, default=1.0, help="seconds between clip starts")
    g.add_argument("--frames", type=int, default=32, help="frames kept per clip (default 32)")
    g.add_argument("--fps-cap", type=float, default=8.0,
                   help="decode every frame, keep at most this many per second (default 8)")
    g.add_argument("--size", default=None, metavar="WxH", help="resize frames, e.g. 640x360")


def vlm_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("openai-vlm cloud (--cloud-url)")
    g.add_argument("--vlm-frames", type=int, default=4, help="images sent per clip (default 4)")
    g.add_argument("--constraint", choices=["json_schema", "guided_choice", "none"],
                   default="json_schema", help="how the answer is constrained (default "
                   "json_schema; guided_choice for vLLM)")
    g.add_argument("--prompt-file", default=None,
                   help="prompt template ({n}, {seconds}, {labels}, {descriptions})")
    g.add_argument("--no-logprobs", action="store_true",
                   help="do not ask for logprobs (servers that refuse them)")
    g.add_argument("--vlm-timeout-s", type=float, default=60.0, help="per request")


def clip_spec(args):
    from edgeswitch.video.source import ClipSpec

    size = None
    if args.size:
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise EdgeSwitchError(f"--size must be WxH, e.g. 640x360, got {args.size!r}") \
                from None
        size = (w, h)
    return ClipSpec(length_s=args.clip_s, stride_s=args.stride_s, frames=args.frames,
                    fps_cap=args.fps_cap, size=size)


def video_cloud_args(args) -> dict | None:
    """Keyword arguments of video.registry.video_cloud from --cloud / --cloud-url."""
    from edgeswitch.cloud.tokens import resolve_token

    if args.cloud_url:
        vlm = {"frames": args.vlm_frames, "constraint": args.constraint,
               "logprobs": not args.no_logprobs, "timeout_s": args.vlm_timeout_s}
        if args.prompt_file:
            try:
                vlm["prompt"] = Path(args.prompt_file).read_text()
            except OSError as exc:
                raise EdgeSwitchError(f"cannot read --prompt-file: {exc}") from None
        return {"spec": "openai-vlm", "url": args.cloud_url, "model": args.model,
                "token": resolve_token(args.token_file), **vlm}
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
    cloud = video_cloud_args(args)
    if cloud is None:
        raise EdgeSwitchError("give the cloud: --cloud-url URL --model NAME (an OpenAI-"
                              "compatible VLM), or --cloud yolo-fall | hf-video-llava:DIR")
    return VideoSource(args.data, clip_spec(args)), VideoModels(args.edge, cloud)


def cmd_train_pose(args) -> int:
    from edgeswitch.data import load_dataset
    from edgeswitch.video.edge_models import PoseClassifier
    from edgeswitch.video.synthetic import synthetic_pose_dataset

    if args.data:
        data = load_dataset(args.data)
    else:
        data = synthetic_pose_dataset(args.synthetic, seed=args.seed)
        print(f"training on {len(data)} SYNTHETIC pose sequences (procedural falls and daily "
              "activities): a smoke run, not a fall detector", file=sys.stderr)
    name = "movenet-posecnn" if args.data else "movenet-posecnn-synthetic"  # says what it saw
    model = PoseClassifier(epochs=args.epochs, seed=args.seed, name=name).fit(
        data, progress=not args.quiet)
    path = model.save(args.out)
    print(f"wrote {path} (classes {list(model.classes_)})")
    return 0


def _overlay(frame, text: str, color) -> object:
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width, 22], fill=(0, 0, 0))
    draw.text((6, 5), text, fill=color)
    return img


def cmd_watch(args) -> int:
    """The hybrid over a file or a live source, one clip per call, JSON lines out."""
    import time

    import numpy as np

    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.switcher import OperatingPoint, load_switcher
    from edgeswitch.switcher.routers import SwitcherRouter
    from edgeswitch.video.source import iter_clips

    edge, cloud = video_models(args, need_cloud=False)
    sw = load_switcher(args.switcher)
    sw.check_edge(edge)
    op = OperatingPoint.load(args.op)
    if cloud is None:  # edge only: the switcher still scores; clips it would offload keep
        from edgeswitch.cloud.client import NoCloud  # the edge answer, flagged "no_cloud"

        cloud = NoCloud(edge.classes_)
    log = None
    if args.log:
        from edgeswitch.models.base import model_identity

        log = DecisionLog(args.log, edge.classes_, model_identity(edge), cloud.name)
    hybrid = HybridClassifier(edge, SwitcherRouter(sw), cloud, op, log=log,
                              fusion=load_fusion(args))
    spec = clip_spec(args)
    writer = None
    try:
        out = open(args.out, "w") if args.out != "-" else sys.stdout  # noqa: SIM115
    except OSError as exc:
        raise EdgeSwitchError(f"cannot write --out {args.out}: {exc.strerror}") from None
    n, t0, reason, last = 0, time.perf_counter(), "end of source", None
    stop = _StopOnCtrlC()
    try:
        for clip in iter_clips(args.source, spec):
            res = hybrid.classify([clip], [clip.clip_id], [clip.source])
            label = edge.classes_[int(res.label[0])]
            row = {"source": clip.source, "start_s": clip.start_s, "end_s": clip.end_s,
                   "label": label, "answered_by": str(res.answered_by[0]),
                   "verified": bool(res.verified[0]),
                   "fallback_reason": str(res.reason[0]) or None,
                   "switcher_score": round(float(res.score[0]), 5),
                   "proba": dict(zip(edge.classes_, res.proba[0].round(5).tolist(),
                                     strict=True)),
                   "latency_ms": {"edge": round(res.edge_ms, 2), "cloud": round(res.cloud_ms, 2),
                                  "total": round(res.total_ms, 2)}}
            out.write(json.dumps(row) + "\n")
            out.flush()
            if args.video_out:
                writer = writer or _VideoWriter(args.video_out, clip.frames[0].shape, spec)
                color = (255, 80, 80) if label == "fall" else (120, 255, 120)
                text = (f"{clip.start_s:7.1f}s {label.upper()} by {row['answered_by']} "
                        f"score {row['switcher_score']:.2f}")
                # each clip shows the frames of its first stride, so the output has no
                # repeats; the last clip's remaining frames are written after the loop
                last = (clip, text, color)
                for t, frame in zip(clip.times, clip.frames, strict=True):
                    if t < clip.start_s + spec.stride_s:
                        writer.write(np.asarray(_overlay(frame, text, color)))
            n += 1
            if args.max_clips and n >= args.max_clips:
                reason = f"--max-clips {args.max_clips}"
                break
            if stop.requested:  # checked between clips, so no output is left half-written
                reason = "Ctrl-C"
                break
    except KeyboardInterrupt:  # a second Ctrl-C, or one while waiting for a stream
        reason = "Ctrl-C"
    finally:
        stop.restore()
        if writer is not None:
            clip, text, color = last
            for t, frame in zip(clip.times, clip.frames, strict=True):
                if t >= clip.start_s + spec.stride_s:
                    writer.write(np.asarray(_overlay(frame, text, color)))
            writer.close()
        if out is not sys.stdout:
            out.close()
        if log is not None:
            log.close()
        if hasattr(cloud, "close"):
            cloud.close()
    print(f"watch: {n} clips in {time.perf_counter() - t0:.1f} s, stopped at {reason}"
          + (f"; wrote {args.video_out}" if args.video_out else ""), file=sys.stderr)
    return 0


class _StopOnCtrlC:
    """The first Ctrl-C asks `watch` to stop after the current clip; a second one interrupts."""

    def __init__(self) -> None:
        import signal

        self.requested = False
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            self._old = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _VideoWriter:
    """H.264 output at the clip spec's frame rate."""

    def __init__(self, path: str, shape, spec) -> None:
        import av

        try:
            self.container = av.open(path, "w")
        except (OSError, av.error.FFmpegError) as exc:
            raise EdgeSwitchError(f"cannot write --video-out {path}: {exc}") from None
        # the rate the clips' frames were sampled at, so the video plays in real time
        self.stream = self.container.add_stream("libx264",
                                                rate=round(spec.frames / spec.length_s))
        self.stream.height, self.stream.width = shape[0] // 2 * 2, shape[1] // 2 * 2
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame) -> None:
        import av

        frame = frame[: self.stream.height, : self.stream.width]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "watch", help="the hybrid on a video file, stream or webcam; JSON lines out",
        description="Cut SOURCE (a video file, an rtsp:// or http:// URL, or a webcam index) "
        "into sliding clips and classify each with the edge model, the switcher and, when the "
        "switcher doubts the edge, the cloud. One JSON line per clip: time range, label, who "
        "answered, switcher score, latencies. Ends at the end of a file, or on Ctrl-C (the "
        "outputs are closed cleanly). Without a cloud the edge answers everything.")
    p.add_argument("source", help="video file, stream URL or webcam index")
    p.add_argument("--edge", default="nfd", help="nfd (default), pose:MODEL.onnx, hf-vilt:DIR")
    p.add_argument("--switcher", required=True, help="switcher (.npz) from train-switcher")
    p.add_argument("--op", required=True, help="operating point JSON from calibrate")
    fusion_arg(p)
    p.add_argument("--cloud", default=None, help="yolo-fall[:MODEL.onnx] or hf-video-llava:DIR")
    p.add_argument("--cloud-url", default=None, help="an OpenAI-compatible VLM endpoint, e.g. "
                   "http://127.0.0.1:8000/v1")
    p.add_argument("--model", default=None, help="the VLM's model name")
    p.add_argument("--token-file", default=None, help="bearer token (default $EDGESWITCH_TOKEN)")
    clip_args(p)
    vlm_args(p)
    p.add_argument("--out", default="-", help="JSON lines file (default: stdout)")
    p.add_argument("--video-out", default=None, help="write an annotated video here (.mp4)")
    p.add_argument("--log", default=None, help="append every decision to this SQLite file")
    p.add_argument("--max-clips", type=int, default=None, help="stop after this many clips")
    add_common(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser(
        "train-pose", help="train the pose-sequence edge model",
        description="Train our temporal CNN on labelled pose-feature sequences [n, 32, 60] "
        "(an .npz with X, y, classes), or on SYNTHETIC procedural falls and daily activities "
        "for a smoke run. Writes an ONNX model for `--edge pose:MODEL.onnx`.")
    p.add_argument("--data", default=None, help=".npz of pose sequences (default: synthetic)")
    p.add_argument("--synthetic", type=int, default=2000,
                   help="SYNTHETIC sequences to generate when no --data (default 2000)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="pose.onnx")
    add_common(p)
    p.set_defaults(func=cmd_train_pose)
