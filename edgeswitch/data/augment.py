"""Label-free views of clips: random sensor-frame rotations (a watch sits differently on every
wrist). Used to generate more DMD records from the same unlabelled pool."""

from __future__ import annotations

import numpy as np

from edgeswitch.data.clips import ClipBatch


def random_rotations(n: int, max_deg: float, rng: np.random.Generator) -> np.ndarray:
    """`[n, 3, 3]` rotations about random axes by angles uniform in [-max_deg, max_deg]."""
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    theta = rng.uniform(-1, 1, size=n) * np.radians(max_deg)
    k = np.zeros((n, 3, 3))
    k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
    k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
    k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
    return np.eye(3) + np.sin(theta)[:, None, None] * k \
        + (1 - np.cos(theta))[:, None, None] * (k @ k)


def rotated_views(clips: ClipBatch, views: int, max_deg: float, seed: int = 0
                  ) -> ClipBatch | None:
    """`views` rotated copies of every clip (all xyz triplets of a clip turned together), with
    ids `ID~rotV` and the clip's group; labels dropped. None when rotation does not apply
    (channels not in triplets, no views or no angle)."""
    X = clips.X
    c = X.shape[2]
    if views < 1 or max_deg <= 0 or c % 3:
        return None
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(views):
        rot = random_rotations(len(X), max_deg, rng).astype(np.float32)
        parts = [np.einsum("ntc,ndc->ntd", X[:, :, i : i + 3], rot) for i in range(0, c, 3)]
        out.append(np.concatenate(parts, axis=2))
    ids = np.concatenate([np.char.add(clips.ids.astype(str), f"~rot{v + 1}")
                          for v in range(views)])
    return ClipBatch(X=np.concatenate(out), y=None, groups=np.tile(clips.groups, views),
                     classes=clips.classes, ids=ids, name=f"{clips.name}:rotated",
                     sample_rate_hz=clips.sample_rate_hz)
