"""What each part costs: median latency per clip, one clip per call and batched."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeswitch.evaluation.timing import measure
from edgeswitch.switcher.base import Switcher
from edgeswitch.switcher.routers import Router, SwitcherRouter


@dataclass
class Costs:
    """Median per-clip latency (ms, one clip per call) and size of each part."""

    edge_ms: float
    switcher_ms: float
    cloud_ms: float
    edge_batched_ms: float
    switcher_batched_ms: float
    cloud_batched_ms: float


def measure_costs(edge, router: Router | Switcher, cloud, clips: np.ndarray,
                  calls: int) -> Costs:
    """Latency of each part, one clip at a time, and per clip in a batch of 256 (the router:
    one step of a stream's state, or a batch of 256 streams' states)."""
    if isinstance(router, Switcher):
        router = SwitcherRouter(router)
    edge.outputs(clips[:1])   # validate once (shape, dtype): the timed calls skip validation
    cloud.outputs(clips[:1])
    n = len(clips)
    one = [clips[i % n : i % n + 1] for i in range(min(n, max(calls, 20)))]
    edge_out = [edge.run_raw(x) for x in one]
    k = edge_out[0].proba.shape[1]
    state = router.start(1, k)
    m = len(one)  # measure's warm-up and the cloud's 20 calls may outnumber `calls`: cycle
    b1 = {
        "edge": measure(lambda i: edge.run_raw(one[i % m]), calls).median_ms,
        "switcher": measure(lambda i: router.step(state, edge_out[i % m]), calls).median_ms,
        "cloud": measure(lambda i: cloud.run_raw(one[i % m]), max(calls // 5, 20)).median_ms,
    }
    batch = clips[np.arange(256) % n]
    batch_out = edge.run_raw(batch)
    states = router.start(len(batch), k)
    per_clip = {
        "edge": measure(lambda i: edge.run_raw(batch), 30).median_ms / len(batch),
        "switcher": measure(lambda i: router.step(states, batch_out), 30).median_ms
        / len(batch),
        "cloud": measure(lambda i: cloud.run_raw(batch), 5, warmup=1).median_ms / len(batch),
    }
    return Costs(b1["edge"], b1["switcher"], b1["cloud"],
                 per_clip["edge"], per_clip["switcher"], per_clip["cloud"])
