"""Video in, clips out: PyAV decoding of files, folders and live streams into sliding clips.

A source is a file, an `rtsp://` / `http(s)://` URL, or a webcam index ("0" = /dev/video0).
Frames are decoded once, thinned to an fps cap, resized, and cut into sliding clips of
`length_s` seconds every `stride_s` seconds; each clip keeps `frames` frames sampled evenly
in time. Live sources have no end: a consumer stops by closing the iterator.

A file that cannot be opened or decoded raises `VideoError` naming the file and the problem;
`folder_clips` records it and goes on with the next file.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.config import VideoConfig
from edgeswitch.data.files import VIDEO_SUFFIXES, corpus_files, is_video
from edgeswitch.errors import DataError, EdgeSwitchError


class VideoError(DataError):
    """A video that cannot be opened or decoded (the message names the source)."""


_DEFAULT = VideoConfig()  # the schema's [video] table holds the defaults


@dataclass(frozen=True)
class ClipSpec:
    """How a stream of frames becomes clips (defaults: the config's [video] table)."""

    length_s: float = _DEFAULT.clip_s        # clip duration
    stride_s: float = _DEFAULT.stride_s      # start of one clip to the next
    frames: int = _DEFAULT.frames            # frames kept per clip, evenly spaced in time
    fps_cap: float | None = _DEFAULT.fps_cap  # decode every frame, keep at most this many per s
    size: tuple[int, int] | None = None      # (width, height) to resize to; None = as decoded

    @classmethod
    def from_config(cls, video: VideoConfig) -> ClipSpec:
        size = tuple(int(v) for v in video.size.split("x")) if video.size else None
        return cls(length_s=video.clip_s, stride_s=video.stride_s, frames=video.frames,
                   fps_cap=video.fps_cap, size=size)

    def __post_init__(self) -> None:
        if not (self.length_s > 0 and self.stride_s > 0):
            raise EdgeSwitchError("clip length and stride must be > 0 seconds")
        if not (isinstance(self.frames, int) and self.frames >= 1):
            raise EdgeSwitchError(f"frames per clip must be an int >= 1, got {self.frames!r}")
        if self.fps_cap is not None and self.fps_cap <= 0:
            raise EdgeSwitchError(f"fps cap must be > 0, got {self.fps_cap}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise EdgeSwitchError(f"resize must be (width, height) >= 8 pixels, got {self.size}")


@dataclass
class VideoClip:
    """`frames` RGB frames [N, H, W, 3] uint8 of one clip, with their times in the source."""

    source: str
    start_s: float
    end_s: float
    frames: np.ndarray
    times: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def clip_id(self) -> str:
        return f"{self.source}@{self.start_s:09.3f}"


def open_container(source: str | int, timeout_s: float = 10.0):
    """A PyAV input container for a file, a URL or a webcam index."""
    import av

    text = str(source)
    try:
        if text.isdigit():  # a webcam: Video4Linux device
            return av.open(f"/dev/video{text}", format="v4l2", timeout=timeout_s)
        if "://" in text:
            options = {"rtsp_transport": "tcp"} if text.startswith("rtsp") else {}
            return av.open(text, options=options, timeout=timeout_s)
        if not Path(text).is_file():
            raise VideoError(f"video not found: {text}")
        return av.open(text)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{text}: cannot open as video ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class Clock:
    """The wall-clock schedule of a source: its first frame at `wall0`, a frame at stream time
    t due at `wall0 + (t - t0)`. With `pace`, a file is held to that schedule (a frame is not
    released before it is due, as a live camera delivers it); without, the schedule is only
    observed, so a live stream's lag behind real time can be measured."""

    def __init__(self, pace: bool = False) -> None:
        self.pace = pace
        self.wall0: float | None = None
        self.t0 = 0.0

    def arrive(self, t: float) -> None:
        """Frame at stream time `t` is here; with `pace`, sleep until it is due."""
        if self.wall0 is None:
            self.wall0, self.t0 = time.monotonic(), t
            return
        if self.pace:
            wait = self.due(t) - time.monotonic()
            if wait > 0:
                time.sleep(wait)

    def due(self, t: float) -> float:
        """The `time.monotonic()` instant stream time `t` is due (its real-time moment)."""
        return (self.wall0 if self.wall0 is not None else time.monotonic()) + t - self.t0

    def lag_s(self, t: float) -> float:
        """How far behind real time it is now, for the moment `t` of the stream."""
        return time.monotonic() - self.due(t)


def iter_frames(source: str | int, fps_cap: float | None = None,
                size: tuple[int, int] | None = None,
                clock: Clock | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """(time in seconds, RGB frame [H, W, 3] uint8), thinned to at most `fps_cap` per second.
    `clock` sees every decoded frame's time (and paces the source if it is told to)."""
    import av

    container = open_container(source)
    text = str(source)
    try:
        if not container.streams.video:
            raise VideoError(f"{text}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame-parallel decoding where the codec allows
        gap = 1.0 / fps_cap if fps_cap else 0.0
        next_t, n, t = -np.inf, 0, 0.0
        try:
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else n / float(
                    stream.average_rate or 25)
                n += 1
                if clock is not None:
                    clock.arrive(t)
                if t + 1e-6 < next_t:
                    continue
                # keep the grid of kept frames, but restart it after a gap in the stream
                next_t = next_t + gap if t <= next_t + gap else t + gap
                kwargs = {"width": size[0], "height": size[1]} if size else {}
                yield t, frame.to_ndarray(format="rgb24", **kwargs)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{text}: decoding failed after {n} frames ({_reason(exc)})") \
                from None
        if n == 0:
            raise VideoError(f"{text}: no frame could be decoded (empty or truncated file)")
        _check_complete(text, stream, t)
    finally:
        container.close()


def _check_complete(text: str, stream, last_t: float) -> None:
    """A file whose frames stop well before its stated duration was cut short."""
    if stream.duration is None or stream.time_base is None:
        return  # live streams and some containers state no duration
    duration = float(stream.duration * stream.time_base)
    interval = 1.0 / float(stream.average_rate or 25)
    if last_t + interval < duration - max(0.5, 0.05 * duration):
        raise VideoError(f"{text}: truncated: frames end at {last_t:.2f} s of a stated "
                         f"{duration:.2f} s")


def iter_clips(source: str | int, spec: ClipSpec | None = None,
               name: str | None = None, clock: Clock | None = None,
               on_frame=None) -> Iterator[VideoClip]:
    """Sliding clips over a source. A clip is emitted once its window has passed, so a live
    stream yields each clip `length_s` after its start. At the end of a file the last window
    counts if its frames reach its end (within one frame interval); a shorter remainder is
    dropped, since a partial clip would mislead a temporal model. `on_frame(name, t, frame)`
    sees each kept frame as it arrives (e.g. to run the pose model then, not all at once when
    the clip is complete)."""
    spec = spec or ClipSpec()
    name = name or str(source)
    window: deque[tuple[float, np.ndarray]] = deque()
    start, t = None, None
    for t, frame in iter_frames(source, spec.fps_cap, spec.size, clock):
        if start is None:
            start = t
        window.append((t, frame))
        if on_frame is not None:
            on_frame(name, t, frame)
        while t >= start + spec.length_s:  # the window [start, start + length) is complete
            inside = [(ft, f) for ft, f in window if ft < start + spec.length_s]
            if inside:
                yield _sample(name, start, spec, inside)
            start += spec.stride_s
            while window and window[0][0] < start:
                window.popleft()
    if len(window) >= 2:
        interval = float(np.median(np.diff([ft for ft, _ in window])))
        if t + interval >= start + spec.length_s - 1e-6:
            yield _sample(name, start, spec, list(window))


def _sample(name: str, start: float, spec: ClipSpec,
            inside: Sequence[tuple[float, np.ndarray]]) -> VideoClip:
    times = np.asarray([t for t, _ in inside])
    wanted = start + (np.arange(spec.frames) + 0.5) * spec.length_s / spec.frames
    pick = np.abs(times[None, :] - wanted[:, None]).argmin(axis=1)  # nearest frame in time
    return VideoClip(source=name, start_s=round(start, 3), end_s=round(start + spec.length_s, 3),
                     frames=np.stack([inside[i][1] for i in pick]), times=times[pick])


def video_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Video files of a folder (sorted), a glob, one file, or a list of these."""
    try:
        files = corpus_files(spec)  # the one reader of folders, globs and lists
    except DataError as exc:
        raise VideoError(str(exc)) from None
    bad = [f for f in files if not is_video(f)]
    if bad:
        raise VideoError(f"{bad[0]}: not a video file {VIDEO_SUFFIXES}")
    return files


@dataclass
class FolderRun:
    """What `folder_clips` met: the files it read fully and the ones it had to skip."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)        # video -> why
    failed_clips: dict[str, str] = field(default_factory=dict)  # clip id -> why (models)


def folder_clips(spec: str | Path | Sequence[str | Path], clip: ClipSpec | None = None,
                 report: FolderRun | None = None,
                 clock: Clock | None = None, on_frame=None) -> Iterator[VideoClip]:
    """Clips of every video in turn. A file that fails is recorded in `report.failed` with the
    reason and the run goes on; clips already yielded from it stand. `clock`: each file
    starts its own schedule."""
    report = report if report is not None else FolderRun()
    for path in video_files(spec):
        if clock is not None:
            clock.wall0 = None
        try:
            yield from iter_clips(path, clip, name=str(path), clock=clock,  # unique ids
                                  on_frame=on_frame)
            report.done.append(str(path))
        except VideoError as exc:
            report.failed[str(path)] = str(exc)
