"""Video subcommands: `watch` (the hybrid on a camera or a file), `train-pose`, and what DMD
over a folder of videos takes (reached through `edgeswitch distill --data VIDEOS`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from edgeswitch.cli.common import (
    EXIT_CLIPS_FAILED,
    EXIT_CODES,
    EXIT_OK,
    cloud_never_answered,
    fusion_arg,
    positive_int,
    router_arg,
    server_args,
)
from edgeswitch.cli.flags import config_arg, config_flags, renamed_flag, resolve_config
from edgeswitch.cli.metrics import linger, metrics_args, start_metrics
from edgeswitch.config import VideoConfig
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.extras import need_extra


def vlm_args(p: argparse.ArgumentParser, watch: bool) -> None:
    """A VLM cloud's settings: [video] of the config, [runtime]'s retries and breaker, and the
    prompt file. A DMD run waits [distill] cloud_timeout_ms, so only `watch` has [video]
    vlm_deadline_ms."""
    fields = None if watch else tuple(f for f in VideoConfig.__dataclass_fields__
                                      if f not in WATCH_ONLY)
    config_flags(p, "video", only=fields,
                 title="video clips and the openai-vlm cloud (--cloud-url)")
    config_flags(p, "runtime", only=_VLM_RUNTIME)
    p.add_argument("--prompt-file", default=None,
                   help="VLM prompt template ({n}, {seconds}, {labels}, {descriptions})")


# [video] settings only `watch` acts on (a DMD run has [distill]'s timeout, no queue)
WATCH_ONLY = ("vlm_deadline_ms", "vlm_crop", "confidence", "realtime", "cloud_workers",
              "cloud_queue", "drain_s", "cloud_wait", "event_on", "event_off", "event_gap",
              "alert_retries", "alert_timeout_s")
# ... and of those, the ones only a VLM cloud (--cloud-url) acts on
_VLM_ONLY = ("video.vlm_size", "video.vlm_crop")
_VLM_RUNTIME = ("retries", "backoff_ms", "backoff_max_ms", "breaker_failures", "breaker_reset_s")


def clip_spec(args):
    from edgeswitch.video.source import ClipSpec

    return ClipSpec.from_config(resolve_config(args).video)


def video_cloud_args(args) -> dict | None:
    """Keyword arguments of video.registry.video_cloud from --cloud / --cloud-url. A VLM gets
    the runtime of every remote cloud ([runtime] of --config, then the flags), with the
    timeout of a DMD run ([distill] cloud_timeout_ms) or the deadline of `watch` ([video]
    vlm_deadline_ms) as its deadline."""
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
        deadline = cfg.distill.cloud_timeout_ms if args.command == "distill" else \
            cfg.video.vlm_deadline_ms
        vlm = {"frames": cfg.video.vlm_frames, "constraint": cfg.video.constraint,
               "logprobs": cfg.video.logprobs, "max_side": cfg.video.vlm_size}
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
    refuse_unused(args, REMOTE_KEYS + VLM_KEYS + _VLM_ONLY, REMOTE_ARGS + VLM_ARGS,
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


def _watch_clips(source: str, spec, clock, edge):
    """The clips of a file, a folder of videos (a file that fails is named on stderr and the
    run goes on), a stream URL or a webcam index. In real time (a paced file, a live source)
    a pose edge finds the people in each frame as it arrives: a clip's poses are then ready
    when its last frame comes, instead of 32 frames' worth at the first clip."""
    from edgeswitch.video.source import FolderRun, folder_clips, iter_clips

    on_frame = edge.pose.frame_people if clock is not None and hasattr(edge, "pose") else None
    if not Path(source).is_dir():
        yield from iter_clips(source, spec, clock=clock, on_frame=on_frame)
        return
    report = FolderRun()
    yield from folder_clips(source, spec, report, clock=clock, on_frame=on_frame)
    for video, why in report.failed.items():
        print(f"watch: skipped {video}: {why}", file=sys.stderr)


def _watch_routing(args, edge):
    """(router, operating point, fusion, what to say): --switcher and --op (with the stream
    router beside them, or --router), or the shipped default, the edge's confidence
    (video.routing)."""
    from edgeswitch.cli.common import check_router_op, load_fusion, load_router
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.video.routing import default_routing

    routed = bool(args.switcher) or args.router not in (None, "none")
    if routed != bool(args.op):
        raise EdgeSwitchError("--switcher (or --router) and --op go together (a router's "
                              "scores mean nothing without the threshold calibrated for them)")
    if routed:
        router = load_router(args, edge)
        op = OperatingPoint.load(args.op)
        check_router_op(router, op, args.op)
        what = f"the {router.name} router" if router.stateful else f"switcher {args.switcher}"
        fusion = load_fusion(args) if args.switcher or args.fusion else None
        return router, op, fusion, f"{what} at --op {args.op}"
    if args.fusion not in (None, "none"):
        raise EdgeSwitchError("--fusion applies with --switcher (the fusion is fitted on its "
                              "DMD records)")
    threshold = resolve_config(args).video.confidence
    router, op = default_routing(tuple(edge.classes_), threshold)
    return router, op, None, (f"the edge's confidence (offload below {threshold:g} and every "
                              "fall; no --switcher)")


def _open(path: str | None, what: str):
    if path is None:
        return None
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise EdgeSwitchError(f"cannot write {what} {path}: {exc.strerror}") from None


def _alerts(args, cfg):
    if not (args.alert_url or args.alert_cmd):
        return None
    from edgeswitch.cloud.tokens import resolve_token
    from edgeswitch.video.alerts import AlertSender

    token = resolve_token(args.alert_token_file, env="EDGESWITCH_ALERT_TOKEN")
    return AlertSender(args.alert_url, args.alert_cmd, token, cfg.alert_retries,
                       cfg.alert_timeout_s)


def _warm_up(edge) -> None:
    """One call on a blank clip before the source opens: the first real clip must not pay
    for the model's first run (hundreds of ms) on a live camera."""
    import numpy as np

    from edgeswitch.video.source import VideoClip

    clip = VideoClip("warm-up", 0.0, 1.0, np.zeros((2, 64, 64, 3), np.uint8),
                     np.asarray([0.0, 0.5]))
    edge.outputs([clip])


def _sensor_models(args, runtime):
    """(edge, cloud or None) for a recorded sensor stream: --edge MODEL.onnx and, like
    classify, --cloud MODEL.onnx in this process or --cloud-url a cloud server."""
    from edgeswitch.cli.serve import make_cloud
    from edgeswitch.models import OnnxClassifier

    if not args.edge.endswith(".onnx"):
        raise EdgeSwitchError(f"a sensor recording ({args.source}) needs a sensor edge model: "
                              f"--edge MODEL.onnx, not {args.edge!r}")
    edge = OnnxClassifier(args.edge)
    cloud = make_cloud(args, tuple(edge.classes_), runtime) \
        if args.cloud or args.cloud_url else None
    return edge, cloud


def _sensor_clips(path: str, edge, pace: bool):
    """A recording of sensor clips (.npz, as classify reads it) as a live source would give
    them: stream by stream, each in time order; `pace`: each clip released at its time (its
    start plus the clip's length, after the stream's first)."""
    import time

    import numpy as np

    from edgeswitch.data import load_dataset

    clips = load_dataset(path, classes=tuple(edge.classes_))
    length = clips.X.shape[1] / clips.sample_rate_hz if clips.sample_rate_hz else 0.0
    streams = clips.streams if clips.streams_given else \
        np.full(len(clips), clips.name).astype(str)
    t0, wall0, last = None, time.monotonic(), None
    for i in clips.stream_order():
        s, t = str(streams[i]), float(clips.t[i])
        if pace:
            if s != last:
                t0, wall0, last = t, time.monotonic(), s
            time.sleep(max(0.0, wall0 + (t - t0) + length - time.monotonic()))
        yield clips.X[i], str(clips.ids[i]), s, t, t + length


def cmd_watch(args) -> int:
    """The edge answers every clip at once; offloaded clips go to the cloud in the background
    (video.live); JSON lines out."""
    from edgeswitch.cloud.client import NoCloud
    from edgeswitch.models.base import model_identity
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.video.annotate import AnnotatedVideo
    from edgeswitch.video.live import WatchOutputs, watch
    from edgeswitch.video.privacy import check_can_crop
    from edgeswitch.video.source import Clock

    full_cfg = resolve_config(args)
    cfg = full_cfg.video
    sensors = args.source.endswith(".npz")
    edge, cloud = _sensor_models(args, full_cfg.runtime) if sensors else \
        video_models(args, need_cloud=False)
    opened: list = []
    try:
        # everything that can refuse the run comes before the first output is opened: a
        # refused run leaves --out, --events, --log and --video-out as they were
        router, op, fusion, routing = _watch_routing(args, edge)
        if cfg.vlm_crop:
            check_can_crop(edge)
        if args.events is not None and "fall" not in edge.classes_:
            raise EdgeSwitchError(f"--events needs a 'fall' class; the edge has "
                                  f"{list(edge.classes_)}")
        spec = None if sensors else clip_spec(args)
        live = "://" in args.source or args.source.isdigit()
        clock = Clock(pace=cfg.realtime) if (cfg.realtime or live) and not sensors else None
        alerts = _alerts(args, cfg)
        # the hybrid routes and logs (its log is opened below, with the outputs); with a
        # cloud, the stream loop's queue asks it
        hybrid = HybridClassifier(edge, router, NoCloud(edge.classes_), op, fusion=fusion,
                                  max_streams=full_cfg.stream.max_streams)
        exporter = start_metrics(args, edge.classes_, hybrid)  # None without --metrics-port
        opened.append(exporter)
        out = _open(args.out, "--out")
        opened.append(out)
        events = _open(args.events, "--events")
        opened.append(events)
        log = DecisionLog(args.log, edge.classes_, model_identity(edge),
                          cloud.name if cloud is not None else "no-cloud") if args.log else None
        opened.append(log)
        hybrid.log = log
        video = AnnotatedVideo(args.video_out, spec) if args.video_out else None
        opened.append(video)
        where = (f"{cloud.name}, {cfg.cloud_workers} request(s) at once, queue of "
                 f"{cfg.cloud_queue}" if cloud is not None else "none (edge only: give "
                 "--cloud-url URL --model NAME to check doubtful clips)")
        print(f"watch: edge {edge.name}; router: {routing}; cloud: {where}"
              + ("; paced at the source's frame rate" if cfg.realtime else ""),
              file=sys.stderr)
        from edgeswitch.runtime.drift import open_drift

        drift = open_drift(op, full_cfg.drift, len(edge.classes_), log)
        outputs = WatchOutputs(out, events, video, alerts,
                               exporter.metrics if exporter else None, drift)
        if sensors:
            clips = _sensor_clips(args.source, edge, cfg.realtime)
        else:
            _warm_up(edge)
            clips = _watch_clips(args.source, spec, clock, edge)
        summary = watch(hybrid, cloud, outputs, cfg, clips, clock, crop=cfg.vlm_crop,
                        stop_after=args.stop_after,
                        deadline_ms=full_cfg.runtime.deadline_ms if sensors else None)
        linger(exporter, args.metrics_linger_s)
    finally:
        for f in reversed(opened):
            if f is not None and f is not sys.stdout:
                f.close()
        if cloud is not None and hasattr(cloud, "close"):
            cloud.close()
    m = summary.metrics()
    if args.summary:
        try:
            Path(args.summary).write_text(json.dumps(m, indent=1) + "\n")
        except OSError as exc:
            raise EdgeSwitchError(f"cannot write --summary {args.summary}: {exc.strerror}") \
                from None
    lag = m["lag_ms"]
    print(f"watch: {summary.clips} clips in {summary.seconds:.1f} s, stopped at "
          f"{summary.stopped_by}; {summary.offloaded} offloaded"
          + (f", cloud: {m['cloud_outcomes']}" if cloud is not None else "")
          + (f"; lag p99 {lag['p99']} ms" if lag["n"] else "")
          + (f"; {summary.events} fall event(s)" if events is not None else "")
          + (f"; alert deliveries {alerts.stats.sent} ok, {alerts.stats.failed} failed"
             if alerts is not None else "")
          + (f"; wrote {args.video_out}" if args.video_out else ""), file=sys.stderr)
    if summary.failed:
        print(f"edgeswitch: error: {summary.failed} clips failed (an error record each in the "
              "output): " + "; ".join(summary.errors), file=sys.stderr)
    if summary.cloud_never_answered():
        return cloud_never_answered(summary.offloaded, m["fallback_reasons"])
    if summary.asked == 0 and summary.outcomes.get("dropped"):
        print(f"watch: the cloud was asked about none of the {summary.offloaded} offloaded "
              f"clips before newer ones pushed them out ({m['fallback_reasons']}): a slow "
              "cloud, not a broken one (--cloud-workers, --cloud-queue)", file=sys.stderr)
    return EXIT_CLIPS_FAILED if summary.failed else EXIT_OK


def add_parsers(sub, add_common) -> None:
    p = sub.add_parser(
        "watch", help="the hybrid on a video file, folder, stream or webcam; JSON lines out",
        description="Cut SOURCE (a video file, a folder of videos, an rtsp:// or http:// URL, "
        "or a webcam index) into sliding clips and answer each with the edge model at once; "
        "clips the router doubts go to the cloud in the background (a bounded queue, "
        "--cloud-workers requests at once) and get an update line when it answers, times "
        "out or is dropped. With no other flag: the shipped edge model (nfd), the edge's "
        "confidence as the router, no cloud. One JSON line per clip: time range, label, who "
        "answered, router score, latencies; --events for fall events, --alert-url / "
        "--alert-cmd to be told of them. Ends at the end of a file, or on Ctrl-C (the "
        "outputs are closed cleanly, pending cloud answers awaited up to --drain-s). " + EXIT_CODES)
    p.add_argument("source", help="video file, folder of videos, stream URL or webcam index; "
                   "or a recording of sensor clips (.npz, each of its streams replayed in time "
                   "order, with --edge MODEL.onnx)")
    p.add_argument("--edge", default="nfd", help="nfd (default), pose:MODEL.onnx, hf-vilt:DIR; "
                   "a sensor recording: MODEL.onnx")
    p.add_argument("--switcher", default=None, help="switcher (.npz) from train-switcher "
                   "(default: the edge's confidence, see --confidence)")
    router_arg(p)
    p.add_argument("--op", default=None, help="operating point JSON from calibrate (with "
                   "--switcher)")
    fusion_arg(p)
    p.add_argument("--log", default=None, help="append every decision to this SQLite file")
    p.add_argument("--cloud", default=None, help="yolo-fall[:MODEL.onnx] or hf-video-llava:DIR")
    p.add_argument("--cloud-url", default=None, help="an OpenAI-compatible VLM endpoint, e.g. "
                   "http://127.0.0.1:8000/v1")
    server_args(p)
    config_arg(p)
    vlm_args(p, watch=True)
    config_flags(p, "drift", prefix="drift-")
    renamed_flag(p, "--deadline-ms", "--vlm-deadline-ms")
    p.add_argument("--out", default="-", help="JSON lines file (default: stdout)")
    p.add_argument("--video-out", default=None, help="write an annotated video here (.mp4)")
    p.add_argument("--stop-after", type=positive_int, default=None, metavar="N",
                   help="stop after N clips, N >= 1 (default: at the end of the source)")
    p.add_argument("--events", default=None, help="write fall events here, JSON lines (id, "
                   "start, end, peak probability, confirmed_by, clip ids)")
    p.add_argument("--alert-url", default=None, help="POST each confirmed fall event here "
                   "as JSON")
    p.add_argument("--alert-token-file", default=None, help="file with a bearer token for "
                   "--alert-url (default: $EDGESWITCH_ALERT_TOKEN)")
    p.add_argument("--alert-cmd", default=None, help="run this command for each confirmed "
                   "fall event, the event's JSON on its stdin")
    p.add_argument("--summary", default=None, metavar="FILE",
                   help="write the run's summary here at the end (JSON: lag, cloud outcomes, "
                   "queue, bytes sent per offloaded clip)")
    renamed_flag(p, "--metrics", "--summary")
    metrics_args(p)  # --metrics-port: Prometheus while it runs (--summary: a JSON at the end)
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
