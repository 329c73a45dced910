"""Per-clip latency of edge, switcher, cloud and the hybrid at the operating point.

One process, one run: compare the figures as ratios (the machines are shared and noisy).
Models come from the demo's cache (trained on first use). Prints a Markdown table for
docs/benchmarks.md; --json PATH / --save write the raw figures as JSON.

    python benchmarks/latency.py [--dataset watch] [--calls 500] [--json PATH] [--save]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402
from edgeswitch.config import load_config  # noqa: E402
from edgeswitch.evaluation.timing import Latency, measure  # noqa: E402
from edgeswitch.models.cache import default_cache_dir  # noqa: E402
from edgeswitch.pipeline import build  # noqa: E402
from edgeswitch.runtime import HybridClassifier  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="watch")
    ap.add_argument("--calls", type=int, default=500, help="timed calls per part")
    output_args(ap, "latency.json")
    args = ap.parse_args()

    cfg = load_config(None, dataset=args.dataset)
    a = build(cfg, cache_dir=default_cache_dir(), progress=False)
    X = a.splits.test.X
    n = len(X)
    one = [X[i % n : i % n + 1] for i in range(args.calls)]
    edge_out = [a.edge.run_raw(x) for x in one]
    m = len(one)  # measure's warm-up and the cloud's 20 calls may outnumber --calls: cycle
    def new_hybrid() -> HybridClassifier:  # a fresh rate controller for each pass
        return a.hybrid()  # what demo deploys: the fusion answers offloaded clips

    # the hybrid over the whole test stream in time order (as in demo), one clip per call and
    # every call timed; warm-up runs on another instance so it does not move this controller
    stream = X[np.argsort(a.splits.test.ids, kind="stable")]
    warm = new_hybrid()
    for i in range(10):
        warm.classify(stream[i : i + 1])
    hybrid, times, offloaded = new_hybrid(), [], []
    for i in range(len(stream)):
        t0 = time.perf_counter()
        offloaded.append(hybrid.classify(stream[i : i + 1]).offloaded[0])
        times.append((time.perf_counter() - t0) * 1e3)
    offloaded = np.asarray(offloaded)
    hybrid_ms = Latency(float(np.median(times)), float(np.mean(times)),
                        float(np.percentile(times, 90)), len(times))

    # one clip per call: what a device sees
    b1 = {
        "edge": measure(lambda i: a.edge.run_raw(one[i % m]), args.calls),
        "switcher": measure(lambda i: a.switcher.trust(edge_out[i % m]), args.calls),
        "cloud": measure(lambda i: a.cloud.run_raw(one[i % m]), max(args.calls // 5, 20)),
        "hybrid": hybrid_ms,
        "edge_only_path": measure(lambda i: a.edge.outputs(one[i % m]), args.calls),
    }
    # per clip inside a batch of 256: throughput view, framework overhead amortised
    batch = X[np.arange(256) % n]
    bo = a.edge.run_raw(batch)
    batched = {
        "edge": measure(lambda i: a.edge.run_raw(batch), 50).median_ms / 256,
        "switcher": measure(lambda i: a.switcher.trust(bo), 50).median_ms / 256,
        "cloud": measure(lambda i: a.cloud.run_raw(batch), 10, warmup=2).median_ms / 256,
    }
    fresh = new_hybrid()
    t0 = time.perf_counter()
    fresh.classify(X)
    batched["hybrid"] = (time.perf_counter() - t0) * 1e3 / n

    cloud_ms = b1["cloud"].median_ms
    macs = {"edge": a.edge.macs_, "switcher": a.switcher.macs, "cloud": a.cloud.macs_}
    rows = [
        ("edge", b1["edge"].median_ms, batched["edge"]),
        ("switcher", b1["switcher"].median_ms, batched["switcher"]),
        ("cloud", cloud_ms, batched["cloud"]),
        # kept clips cost ~edge, offloaded ones ~cloud: the mean is the figure that adds up
        (f"hybrid, mean (offload {offloaded.mean():.1%})", b1["hybrid"].mean_ms,
         batched["hybrid"]),
    ]
    out = {
        "dataset": args.dataset, "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores", "python": platform.python_version(),
        "offload_rate_test": float(offloaded.mean()),
        "one_clip_per_call_ms": {k: v.to_dict() for k, v in b1.items()},
        "batched_per_clip_ms": batched,
        "hybrid_mean_one_clip_ms_expected": b1["edge_only_path"].median_ms
        + b1["switcher"].median_ms + offloaded.mean() * cloud_ms,
        "macs": macs,
        "params": {"edge": a.edge.n_params_, "switcher": a.switcher.n_params,
                   "cloud": a.cloud.n_params_},
    }
    write_results(args, out, "latency.json")

    print("| part | ms/clip, 1 clip per call | x cloud | ms/clip, batch of 256 | x cloud "
          "| MACs/clip |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ms, bms in rows:
        m = macs.get(name.split()[0])
        print(f"| {name} | {ms:.4f} | {ms / cloud_ms:.3f} | {bms:.5f} | "
              f"{bms / batched['cloud']:.3f} | {m if m else '-'} |")
    print(f"\nswitcher / edge: {b1['switcher'].median_ms / b1['edge'].median_ms:.1%} "
          f"(1 clip per call), {batched['switcher'] / batched['edge']:.1%} (batched), "
          f"{a.switcher.macs / a.edge.macs_:.2%} (MACs)")
    print(f"edge / cloud: {b1['edge'].median_ms / cloud_ms:.1%} (1 clip), "
          f"params {a.edge.n_params_ / a.cloud.n_params_:.1%}")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
