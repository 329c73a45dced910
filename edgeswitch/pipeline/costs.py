"""What each part costs: median latency per clip, one clip per call and batched."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.evaluation.timing import measure
from edgeswitch.switcher.base import Switcher


@dataclass
class Costs:
    """Median per-clip latency (ms, one clip per call) and size of each part."""

    edge_ms: float
    switcher_ms: float
    cloud_ms: float
    edge_batched_ms: float
    switcher_batched_ms: float
    cloud_batched_ms: float


def measure_costs(edge, switcher: Switcher, cloud, clips: np.ndarray, calls: int) -> Costs:
    """Latency of each part, one clip at a time, and per clip in a batch of 256."""
    edge.outputs(clips[:1])   # validate once (shape, dtype): the timed calls skip validation
    cloud.outputs(clips[:1])
    n = len(clips)
    one = [clips[i % n : i % n + 1] for i in range(min(n, max(calls, 20)))]
    edge_out = [edge.run_raw(x) for x in one]
    m = len(one)  # measure's warm-up and the cloud's 20 calls may outnumber `calls`: cycle
    b1 = {
        "edge": measure(lambda i: edge.run_raw(one[i % m]), calls).median_ms,
        "switcher": measure(lambda i: switcher.trust(edge_out[i % m]), calls).median_ms,
        "cloud": measure(lambda i: cloud.run_raw(one[i % m]), max(calls // 5, 20)).median_ms,
    }
    batch = clips[np.arange(256) % n]
    batch_out = edge.run_raw(batch)
    per_clip = {
        "edge": measure(lambda i: edge.run_raw(batch), 30).median_ms / len(batch),
        "switcher": measure(lambda i: switcher.trust(batch_out), 30).median_ms / len(batch),
        "cloud": measure(lambda i: cloud.run_raw(batch), 5, warmup=1).median_ms / len(batch),
    }
    return Costs(b1["edge"], b1["switcher"], b1["cloud"],
                 per_clip["edge"], per_clip["switcher"], per_clip["cloud"])
