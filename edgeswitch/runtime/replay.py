"""Replay clips through a deployed hybrid as a device stream, one call per `batch` clips.

`edgeswitch demo` replays the test subjects through the edge runtime and the cloud server over
HTTP, so its figures include the real network path (serialisation, batching, retries).
"""

from __future__ import annotations

import time

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.evaluation.quality import accuracy, macro_f1
from edgeswitch.evaluation.timing import tail_ms
from edgeswitch.runtime.hybrid import HybridClassifier


def replay(hybrid: HybridClassifier, clips: ClipBatch, batch: int = 1,
           progress: bool = False) -> dict:
    """Stream `clips` in clip-id order; answers, fallbacks and latencies of every call."""
    from tqdm.auto import tqdm

    order = np.argsort(clips.ids, kind="stable")
    n = len(clips)
    label = np.empty(n, int)
    cloud = np.zeros(n, bool)
    offloaded = np.zeros(n, bool)
    reasons: dict[str, int] = {}
    call_ms = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, n, batch), desc="replay", disable=not progress, leave=False):
        idx = order[start : start + batch]
        res = hybrid.classify(clips.X[idx], clips.ids[idx], clips.groups[idx])
        label[idx], cloud[idx], offloaded[idx] = res.label, res.answered_by == "cloud", \
            res.offloaded
        call_ms.append(res.total_ms)
        for r in res.reason[~res.verified]:
            reasons[r] = reasons.get(r, 0) + 1
    wall = time.perf_counter() - t0
    out = {"clips": n, "calls": len(call_ms), "clips_per_call": batch,
           "offload_rate": float(offloaded.mean()), "answered_by_cloud": float(cloud.mean()),
           "fallbacks": int(sum(reasons.values())), "fallback_reasons": reasons,
           "call_latency_ms": tail_ms(call_ms),
           "wall_s": round(wall, 3), "labels": label}
    if clips.y is not None:
        out |= {"accuracy": accuracy(clips.y, label),
                "macro_f1": macro_f1(clips.y, label, clips.n_classes)}
    return out
