"""DMD test kit: a corpus of .npz files as devices would upload it, and bit-identical records
(for the sharded, Ray and resume tests and benchmarks/distill_scale.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.dmd.records import DMDRecords


def write_corpus(clips: ClipBatch, out: str | Path, files: int) -> list[Path]:
    """Split clips into `files` unlabelled `.npz` files (ids, groups, classes, X): a corpus as
    devices would upload it. Labels are dropped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(clips)), files)):
        p = out / f"clips-{i:04d}.npz"
        np.savez(p, X=clips.X[idx].astype(np.float32), ids=np.asarray(clips.ids)[idx].astype(str),
                 groups=np.asarray(clips.groups)[idx].astype(str),
                 classes=np.asarray(clips.classes, dtype=str))
        paths.append(p)
    return paths


def records_equal(a: DMDRecords, b: DMDRecords) -> bool:
    """Bit-identical records (ids, groups, every array, classes and model names)."""
    return (a.classes == b.classes and a.edge_model == b.edge_model
            and a.cloud_model == b.cloud_model and np.array_equal(a.ids, b.ids)
            and np.array_equal(a.groups, b.groups)
            and all((getattr(a, k) is None) == (getattr(b, k) is None) and (
                getattr(a, k) is None or np.array_equal(getattr(a, k), getattr(b, k)))
                for k in ("streams", "t"))
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("edge_proba", "edge_embedding", "cloud_proba")))
