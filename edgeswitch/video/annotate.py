"""`watch --video-out`: the source's frames with each clip's answer drawn on top, as H.264."""

from __future__ import annotations

from edgeswitch.errors import EdgeSwitchError


def overlay(frame, text: str, color) -> object:
    from PIL import Image, ImageDraw

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width, 22], fill=(0, 0, 0))
    draw.text((6, 5), text, fill=color)
    return img


class AnnotatedVideo:
    """--video-out: each clip's frames with its answer drawn on top. A clip shows the frames of
    its first stride, so the output has no repeats; the last clip's other frames come at the
    end."""

    def __init__(self, path: str, spec) -> None:
        self.path, self.spec = path, spec
        self.writer: VideoWriter | None = None
        self.last = None

    def _write(self, clip, text: str, color, first_stride: bool) -> None:
        import numpy as np

        cut = clip.start_s + self.spec.stride_s
        for t, frame in zip(clip.times, clip.frames, strict=True):
            if (t < cut) == first_stride:
                self.writer.write(np.asarray(overlay(frame, text, color)))

    def add(self, item, res, rows) -> None:
        clip, row = item.inputs[0], rows[0]
        self.writer = self.writer or VideoWriter(self.path, clip.frames[0].shape, self.spec)
        color = (255, 80, 80) if row["label"] == "fall" else (120, 255, 120)
        text = (f"{clip.start_s:7.1f}s {row['label'].upper()} by {row['answered_by']} "
                f"score {row['switcher_score']:.2f}")
        self._write(clip, text, color, first_stride=True)
        self.last = (clip, text, color)

    def close(self) -> None:
        if self.writer is not None:
            self._write(*self.last, first_stride=False)
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
