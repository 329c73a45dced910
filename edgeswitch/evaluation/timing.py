"""Latency measurement: median wall time per call, after warm-up, one clip at a time.

Figures are for comparison within one run on one machine (ratios), not absolute claims.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    median_ms: float
    mean_ms: float
    p90_ms: float
    calls: int

    def to_dict(self) -> dict:
        return asdict(self)


def tail_ms(values_ms) -> dict | None:
    """p50, p99, mean and max of latencies in ms (None when there are none): the summary of
    a served stream, where the tail matters more than the median."""
    v = np.asarray(values_ms, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return None
    return {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "mean": float(v.mean()), "max": float(v.max())}


def measure(fn: Callable[[int], object], calls: int, warmup: int = 10,
            max_seconds: float = 10.0) -> Latency:
    """Time `fn(i)` for i = 0..calls-1 (bounded by `max_seconds`)."""
    for i in range(warmup):
        fn(i)
    times = []
    deadline = time.perf_counter() + max_seconds
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
        if time.perf_counter() > deadline and len(times) >= 5:
            break
    t = np.asarray(times) * 1e3
    return Latency(float(np.median(t)), float(np.mean(t)), float(np.percentile(t, 90)), len(t))
