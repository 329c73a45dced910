"""Replay labelled clips through a deployed hybrid as devices meet them: the one stream loop
(runtime.stream), stream by stream, each stream in time order, one clip per call.

`edgeswitch demo` replays the test subjects through the edge runtime and the cloud server over
HTTP, so its figures include the real network path (serialisation, batching, retries).
"""

from __future__ import annotations

import io
import time

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.evaluation.quality import accuracy, macro_f1
from edgeswitch.evaluation.timing import tail_ms
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult
from edgeswitch.runtime.stream import StreamItem, StreamRunner


def replay(hybrid: HybridClassifier, clips: ClipBatch, progress: bool = False) -> dict:
    """Every clip through `hybrid`'s stream loop; answers, offloads, fallbacks and latencies."""
    from tqdm.auto import tqdm

    n = len(clips)
    label = np.empty(n, int)
    cloud = np.zeros(n, bool)
    offloaded = np.zeros(n, bool)
    call_ms: list[float] = []
    where = {cid: i for i, cid in enumerate(clips.ids)}
    order = clips.stream_order()
    bar = tqdm(total=n, desc="replay", disable=not progress, leave=False)

    def seen(item: StreamItem, res: HybridResult, rows: list[dict]) -> None:
        i = where[item.ids[0]]
        label[i], cloud[i], offloaded[i] = res.label[0], res.answered_by[0] == "cloud", \
            res.offloaded[0]
        call_ms.append(res.total_ms)
        bar.update(1)

    items = (StreamItem(clips.X[i:i + 1], clips.ids[i:i + 1], clips.groups[i:i + 1],
                        streams=clips.streams[i:i + 1]) for i in order)
    t0 = time.perf_counter()
    summary = StreamRunner(hybrid, io.StringIO(), on_result=seen).run(items)
    wall = time.perf_counter() - t0
    bar.close()
    out = {"clips": n, "calls": len(call_ms), "clips_per_call": 1,
           "offload_rate": float(offloaded.mean()), "answered_by_cloud": float(cloud.mean()),
           "fallbacks": summary.fallbacks, "fallback_reasons": dict(summary.reasons),
           "call_latency_ms": tail_ms(call_ms), "wall_s": round(wall, 3), "labels": label,
           "offloaded": offloaded}
    if clips.y is not None:
        out |= {"accuracy": accuracy(clips.y, label),
                "macro_f1": macro_f1(clips.y, label, clips.n_classes)}
    return out
