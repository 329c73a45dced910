"""`watch --video-out`: the source's frames with each clip's answer drawn on top, as H.264."""

from __future__ import annotations

from edgeswitch.errors import EdgeSwitchError


def font_px(height: int) -> int:
    """Text height for a frame: 1/24 of it (30 px at 720p, 11 px at 272p), at least 10 px."""
    return max(10, round(height / 24))


def overlay(frame, text: str, color, note: str = "") -> object:
    """`text` (and a second line, `note`) on a black band at the top, scaled to the frame."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    px = font_px(img.height)
    font = ImageFont.load_default(size=px)
    lines = [text] + ([note] if note else [])
    draw.rectangle([0, 0, img.width, round(px * (1.35 * len(lines) + 0.4))], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((px // 2, round(px * (0.25 + 1.35 * i))), line, font=font,
                  fill=color if i == 0 else (230, 230, 230))
    return img


def clip_text(clip, row: dict) -> str:
    """A clip's first overlay line: time, answer, who gave it, and the cloud's status."""
    status = {"pending": ", cloud pending", "no_cloud": ", no cloud"}.get(row.get("cloud"), "")
    return (f"{clip.start_s:7.1f}s {row['label'].upper()} by {row['answered_by']} "
            f"score {row['switcher_score']:.2f}{status}")


def update_text(row: dict) -> str:
    """The latest cloud verdict, shown under the clips that follow it."""
    verdict = {"confirmed": "confirmed", "overruled": "overruled: now "
               + row["label"].upper()}.get(row["cloud"], f"{row['cloud']} "
                                           f"({row.get('fallback_reason')})")
    return (f"cloud on {row['start_s']:.1f}-{row['end_s']:.1f}s: {verdict}" if "start_s" in row
            else f"cloud: {verdict}")


class AnnotatedVideo:
    """--video-out: each clip's frames with its answer drawn on top. A clip shows the frames of
    its first stride, so the output has no repeats; the last clip's other frames come at the
    end. The frames are written as the clip is answered (the stream does not wait for the
    cloud), so a pending clip says "cloud pending" and the cloud's verdict on it, when it
    comes, is the second line of the clips after it (`note`)."""

    def __init__(self, path: str, spec) -> None:
        self.path, self.spec = path, spec
        self.writer: VideoWriter | None = None
        self.last = None
        self.note = ""

    def _write(self, clip, text: str, color, first_stride: bool, note: str = "") -> None:
        import numpy as np

        cut = clip.start_s + self.spec.stride_s
        for t, frame in zip(clip.times, clip.frames, strict=True):
            if (t < cut) == first_stride:
                self.writer.write(np.asarray(overlay(frame, text, color, note)))

    def show(self, clip, row: dict, note: str | None = None) -> None:
        self.writer = self.writer or VideoWriter(self.path, clip.frames[0].shape, self.spec)
        color = (255, 80, 80) if row["label"] == "fall" else (120, 255, 120)
        text = clip_text(clip, row)
        note = self.note if note is None else note
        self._write(clip, text, color, first_stride=True, note=note)
        self.last = (clip, text, color)

    def close(self) -> None:
        if self.writer is not None:
            self._write(*self.last, first_stride=False, note=self.note)
            self.writer.close()


class VideoWriter:
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
