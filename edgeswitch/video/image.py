"""Letterboxing: what both on-frame detectors (MoveNet, YOLO) need before they run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Letterbox:
    image: np.ndarray   # [size, size, 3] uint8
    scale: float        # frame pixels -> letterbox pixels
    px: int             # left padding
    py: int             # top padding
    rw: int             # resized width
    rh: int             # resized height


def letterbox(frame: np.ndarray, size: int, pad: int = 0) -> Letterbox:
    """Resize keeping the aspect ratio (bilinear) and pad to size x size, centred."""
    from PIL import Image

    h, w = frame.shape[:2]
    scale = min(size / w, size / h)
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    px, py = (size - rw) // 2, (size - rh) // 2
    out = np.full((size, size, 3), pad, np.uint8)
    out[py:py + rh, px:px + rw] = np.asarray(Image.fromarray(frame).resize((rw, rh),
                                                                          Image.BILINEAR))
    return Letterbox(out, scale, px, py, rw, rh)
