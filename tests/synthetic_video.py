"""SYNTHETIC videos for the video tests and benchmarks: a keypoint sequence of
edgeswitch.video.synthetic drawn as a flat mannequin, as an H.264 file. Nothing here is real
footage."""

from __future__ import annotations

import numpy as np

from edgeswitch.video.pose import SKELETON


def _draw_figure(kp: np.ndarray, size: tuple[int, int]):
    """A flat mannequin: dark clothes on limbs and torso, a skin-coloured head and hands, and
    eyes, so that MoveNet finds a person in some frames (45% in a 12-video DMD run; a thin
    stick figure it found in 6 of 192)."""
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, (190, 185, 175))
    draw = ImageDraw.Draw(img)
    pts = [(float(x * w), float(y * h)) for x, y, _ in kp]
    body = max(np.ptp(kp[:, 0]) * w, np.ptp(kp[:, 1]) * h)
    width = max(4, int(body * 0.09))
    shirt, trousers, skin = (40, 70, 140), (60, 50, 40), (225, 180, 150)
    draw.polygon([pts[5], pts[6], pts[12], pts[11]], fill=shirt)
    for a, b in SKELETON:
        if a >= 5:  # limbs (the face edges are drawn as a head below)
            draw.line([pts[a], pts[b]], fill=shirt if b <= 10 else trousers, width=width)
    for j in (9, 10):  # hands
        r = width * 0.6
        draw.ellipse([pts[j][0] - r, pts[j][1] - r, pts[j][0] + r, pts[j][1] + r], fill=skin)
    r = body * 0.075
    draw.ellipse([pts[0][0] - r, pts[0][1] - r, pts[0][0] + r, pts[0][1] + r], fill=skin)
    for j in (1, 2):  # eyes
        e = max(1.5, r * 0.15)
        draw.ellipse([pts[j][0] - e, pts[j][1] - e, pts[j][0] + e, pts[j][1] + e],
                     fill=(30, 30, 30))
    return np.asarray(img)


def render_synthetic_video(path, keypoints: np.ndarray, fps: float = 8.0,
                           size: tuple[int, int] = (640, 272), repeat: int = 1) -> None:
    """Draw a SYNTHETIC keypoint sequence as a flat mannequin on a plain background, as an
    H.264 video (each pose shown for `repeat` frames)."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=round(fps * repeat))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for kp in keypoints:
            frame = av.VideoFrame.from_ndarray(_draw_figure(kp, size), format="rgb24")
            for _ in range(repeat):
                for packet in stream.encode(frame):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
