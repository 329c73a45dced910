"""Which clips form a stream, and in what order a device meets them.

A data set's loader says what it knows: the smartwatch set's streams are its recordings (one
exercise each), a `.npz` names them in `streams` / `t`, and clips of a file without them each
stand alone. `with_streams` then builds what a run evaluates on (the `streams` config key):

* `recording`: the loader's streams as they are;
* `subject`: each group's streams one after another, in a seeded random order, as a wearer
  moves from one exercise to the next (an activity change at every recording's end);
* `none`: every clip alone (per-clip routing is all there is).
"""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import numpy as np

from edgeswitch.config import StreamMode
from edgeswitch.data.clips import ClipBatch, stream_lists  # noqa: F401 (re-exported)
from edgeswitch.errors import DataError

STREAM_MODES: tuple[str, ...] = get_args(StreamMode)


def with_streams(data: ClipBatch, mode: str, seed: int = 0) -> ClipBatch:
    """`data` with the streams `mode` asks for (see the module doc)."""
    if mode not in STREAM_MODES:
        raise DataError(f"streams must be one of {list(STREAM_MODES)}, got {mode!r}")
    if mode == "recording":
        return data
    if mode == "none":
        return replace(data, streams=data.ids.copy(), t=np.zeros(len(data)), meta=dict(data.meta))
    return _concatenated(data, seed)


def _concatenated(data: ClipBatch, seed: int) -> ClipBatch:
    """Per group, its streams end to end in a seeded random order; each stream's clips keep
    their spacing, and the next stream starts one typical step after the last clip."""
    rng = np.random.default_rng(seed)
    streams, t = data.streams.astype(object), data.t.copy()   # object: no truncated names
    order = data.stream_order()
    for g in sorted(set(data.groups.tolist())):
        in_group = order[data.groups[order] == g]
        names = list(dict.fromkeys(data.streams[in_group].tolist()))   # first-seen order
        offset = 0.0
        for k in rng.permutation(len(names)):
            idx = in_group[data.streams[in_group] == names[k]]
            tt = data.t[idx]
            step = float(np.median(np.diff(tt))) if len(tt) > 1 else 1.0
            t[idx] = offset + tt - tt[0]
            offset = float(t[idx][-1]) + max(step, 1e-3)
            streams[idx] = g
    return replace(data, streams=streams.astype(str), t=t, meta=dict(data.meta))

