"""SYNTHETIC pose sequences of falls and daily activities, for smoke training and tests.

Nothing here is real data. A stick body of 17 MoveNet keypoints is posed procedurally:
standing, walking, sitting down, bending over and lying down slowly (activities of daily
living, "adl"), and falls forwards, backwards or sideways ("fall": the body tips over within
about half a second and stays down). Camera distance, position, timing, keypoint jitter,
confidence and dropped keypoints are random. Every function and output says "synthetic".

Use it to check that the video pipeline trains and runs, never to claim fall-detection
accuracy: a model that learns these sequences has learned our generator.
"""

from __future__ import annotations

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.video.pose import N_KEYPOINTS, Person, pose_features

SYNTHETIC_CLASSES = ("adl", "fall")
ADL = ("stand", "walk", "sit_down", "bend", "lie_down_slowly")
FALLS = ("fall_forward", "fall_backward", "fall_sideways")

# upright body: (x offset, height above the ankles), in body heights
_BODY = np.array([
    (0.00, 0.93), (-0.02, 0.95), (0.02, 0.95), (-0.05, 0.94), (0.05, 0.94),  # head
    (-0.12, 0.82), (0.12, 0.82), (-0.16, 0.66), (0.16, 0.66), (-0.17, 0.50), (0.17, 0.50),
    (-0.08, 0.52), (0.08, 0.52), (-0.07, 0.27), (0.07, 0.27), (-0.06, 0.0), (0.06, 0.0)])
_UPPER = np.arange(0, 11)   # head, shoulders, arms
_HIPS, _KNEES = np.array([11, 12]), np.array([13, 14])


def _rotate(points: np.ndarray, pivot: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    d = points - pivot
    return pivot + np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], axis=1)


def _ramp(t: np.ndarray, start: float, duration: float) -> np.ndarray:
    """0 before start, 1 after start + duration, smooth (accelerating) in between."""
    u = np.clip((t - start) / max(duration, 1e-3), 0, 1)
    return u * u * (3 - 2 * u)


def _body(kind: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[T, 17, 2] body coordinates (x right, y up, in body heights, ankles at the origin)."""
    T, out = len(t), np.repeat(_BODY[None], len(t), axis=0).copy()
    start = rng.uniform(0.5, max(0.6, t[-1] - 1.5))
    if kind == "walk":
        phase = 2 * np.pi * rng.uniform(0.8, 1.4) * t
        out[:, 15, 0] += 0.12 * np.sin(phase)
        out[:, 16, 0] -= 0.12 * np.sin(phase)
        out[:, 13, 0] += 0.06 * np.sin(phase)
        out[:, 14, 0] -= 0.06 * np.sin(phase)
        out[:, :, 0] += rng.choice([-1, 1]) * rng.uniform(0.3, 0.8) * t[:, None]
    elif kind == "sit_down":
        k = _ramp(t, start, rng.uniform(1.0, 2.0))[:, None]
        out[:, _HIPS, 1] -= 0.25 * k
        out[:, _UPPER, 1] -= 0.25 * k
        out[:, _KNEES, 0] += 0.15 * k
        out[:, _KNEES, 1] += 0.05 * k
    elif kind in ("bend", "lie_down_slowly") or kind.startswith("fall"):
        if kind == "bend":  # upper body tips over the hips and comes back up
            k = _ramp(t, start, 0.8) - _ramp(t, start + rng.uniform(1.0, 1.6), 0.8)
            angle = rng.uniform(0.8, 1.2) * k * rng.choice([-1, 1])
            for i in range(T):
                out[i, _UPPER] = _rotate(out[i, _UPPER], out[i, 11:13].mean(0), angle[i])
            return out
        duration = rng.uniform(2.0, 3.0) if kind == "lie_down_slowly" else rng.uniform(0.3, 0.7)
        direction = {"fall_forward": 1, "fall_backward": -1}.get(kind, rng.choice([-1, 1]))
        k = _ramp(t, start, duration)
        if kind == "lie_down_slowly":  # crouch first, then lie down
            out[:, _HIPS, 1] -= 0.2 * _ramp(t, start - 0.8, 0.8)[:, None]
        angle = direction * rng.uniform(1.35, 1.57) * k
        for i in range(T):
            out[i] = _rotate(out[i], np.zeros(2), angle[i])
        out[:, :, 1] -= out[:, :, 1].min(axis=1, keepdims=True) * k[:, None]  # onto the floor
    return out


def synthetic_pose_sequence(kind: str, steps: int = 32, fps: float = 8.0,
                            rng: np.random.Generator | None = None) -> np.ndarray:
    """SYNTHETIC keypoints [steps, 17, 3] (x, y in [0, 1] of the frame, y down; score)."""
    rng = rng or np.random.default_rng()
    if kind not in ADL + FALLS:
        raise ValueError(f"unknown synthetic activity {kind!r}; known: {ADL + FALLS}")
    t = np.arange(steps) / fps
    body = _body(kind, t, rng)
    scale = rng.uniform(0.25, 0.7)  # body height in frame heights
    x0, ground = rng.uniform(0.3, 0.7), rng.uniform(0.75, 0.95)
    xy = np.stack([x0 + scale * body[..., 0], ground - scale * body[..., 1]], axis=-1)
    xy += rng.normal(0, 0.01 * scale, xy.shape)
    score = rng.uniform(0.35, 0.95, (steps, N_KEYPOINTS))
    score[rng.random((steps, N_KEYPOINTS)) < 0.05] = 0.05  # dropped keypoints
    return np.concatenate([xy.clip(0, 1), score[..., None]], axis=-1).astype(np.float32)


def _person(kp: np.ndarray) -> Person:
    lo, hi = kp[:, :2].min(axis=0), kp[:, :2].max(axis=0)
    pad = np.maximum((hi - lo) * 0.08, 0.02)
    box = np.concatenate([(lo - pad).clip(0, 1), (hi + pad).clip(0, 1)]).astype(np.float32)
    return Person(kp, box, float(kp[:, 2].mean()))


def synthetic_pose_features(keypoints: np.ndarray) -> np.ndarray:
    """[steps, 60] features of a SYNTHETIC keypoint sequence, as the video models see them."""
    return np.stack([pose_features(_person(kp)) for kp in keypoints])


def synthetic_pose_dataset(n: int, steps: int = 32, fps: float = 8.0,
                           seed: int = 0) -> ClipBatch:
    """n SYNTHETIC labelled pose-feature clips [n, steps, 60], half falls, half activities.
    Groups are synthetic 'subjects' of 20 clips, so group-wise splits work."""
    rng = np.random.default_rng(seed)
    kinds = [FALLS[i % len(FALLS)] if i % 2 else ADL[(i // 2) % len(ADL)] for i in range(n)]
    X = np.stack([synthetic_pose_features(synthetic_pose_sequence(k, steps, fps, rng))
                  for k in kinds])
    y = np.asarray([1 if k in FALLS else 0 for k in kinds])
    return ClipBatch(X=X, y=y, groups=np.asarray([f"synthetic{i // 20:03d}" for i in range(n)]),
                     classes=SYNTHETIC_CLASSES,
                     ids=np.asarray([f"synthetic/{i:06d}-{k}" for i, k in enumerate(kinds)]),
                     name="synthetic-poses")
