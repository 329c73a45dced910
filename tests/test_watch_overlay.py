"""`watch --video-out`'s overlay: text that scales with the frame, the cloud's status on it;
and `--vlm-crop`'s box around the tracked person."""

from __future__ import annotations

import numpy as np

from edgeswitch.video.annotate import clip_text, font_px, overlay, update_text
from edgeswitch.video.pose import Person
from edgeswitch.video.privacy import crop_clip, person_box
from edgeswitch.video.source import VideoClip


def band_rows(img) -> int:
    """Rows of the black band at the top (where the text is drawn)."""
    a = np.asarray(img).astype(int)
    dark = a[:, :4].max(axis=(1, 2)) == 0  # the left margin: band, never glyphs
    return int(np.argmin(dark)) if not dark.all() else len(dark)


def test_overlay_text_scales_with_the_frame():
    assert font_px(720) == 30 and font_px(272) == 11 and font_px(100) == 10
    big = overlay(np.full((720, 1280, 3), 200, np.uint8), "12.0s FALL", (255, 0, 0), "note")
    small = overlay(np.full((272, 640, 3), 200, np.uint8), "12.0s FALL", (255, 0, 0), "note")
    assert band_rows(big) > 2.4 * band_rows(small) > 0
    ink = np.asarray(big)[: band_rows(big)]
    assert (ink[..., 0] > 200).sum() > 200  # the red text itself, large enough to read


def test_the_overlay_says_pending_then_the_cloud_s_verdict():
    clip = VideoClip("cam", 12.0, 16.0, np.zeros((1, 8, 8, 3), np.uint8), np.zeros(1))
    row = {"label": "fall", "answered_by": "edge", "switcher_score": 0.0, "cloud": "pending"}
    assert clip_text(clip, row).endswith("cloud pending")
    upd = {"label": "fall", "cloud": "confirmed", "start_s": 12.0, "end_s": 16.0}
    assert update_text(upd) == "cloud on 12.0-16.0s: confirmed"
    upd |= {"label": "adl", "cloud": "overruled"}
    assert update_text(upd).endswith("overruled: now ADL")
    upd |= {"cloud": "dropped", "fallback_reason": "queue_full"}
    assert update_text(upd).endswith("dropped (queue_full)")


class _Pose:
    def __init__(self, boxes):
        self.boxes = boxes

    def people(self, clip):
        return [[Person(np.zeros((17, 3), np.float32), np.asarray(b, np.float32), 0.9)]
                if b is not None else [] for b in self.boxes]


class _Edge:
    def __init__(self, boxes):
        self.pose = _Pose(boxes)


def test_the_crop_is_the_padded_box_of_the_person_over_the_clip():
    clip = VideoClip("cam", 0.0, 4.0, np.zeros((3, 100, 200, 3), np.uint8), np.arange(3.0))
    box = person_box(_Edge([[0.4, 0.2, 0.5, 0.6], None, [0.45, 0.3, 0.6, 0.7]]), clip)
    assert np.allclose(box, [0.37, 0.125, 0.63, 0.775])  # the union, padded 15%
    cut = crop_clip(clip, box)
    assert cut.frames.shape == (3, 66, 53, 3) and cut.meta["crop"] == [74, 12, 127, 78]
    assert person_box(_Edge([None, None, None]), clip) is None  # nobody: nothing to send
