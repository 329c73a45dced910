"""The device artifact against today's split runtime, on the watch demo's bundle.

* size: edge.onnx (+ switcher and router files) against device.onnx and device.int8.onnx;
* latency per clip, one clip per call, one thread, from Python: the split path (the edge ONNX
  model through onnxruntime, then the router's step and observe in numpy: what
  HybridClassifier runs for a kept clip) against one onnxruntime call of device.onnx and of
  device.int8.onnx; and the whole per-clip call of each runtime (HybridClassifier.classify
  against DeviceRunner.classify_clip). Methods are interleaved clip by clip, so a busy machine
  slows them alike; the ratios are the figures to quote, the milliseconds are this machine's;
* int8: accuracy and offload rate of the hybrid at the bundle's operating point on the test
  split (every test recording a stream, the cloud in process), float graph against int8, and
  the edge alone.

    python benchmarks/device.py                 # the demo's config (models from the cache)
    python benchmarks/device.py --quick         # 2-epoch models: a smoke run
    python benchmarks/device.py --save          # ... writes benchmarks/results/device.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import output_args, write_results  # noqa: E402

QUICK = {"edge.epochs": 2, "cloud.epochs": 2, "cloud.arch_params": {"width": 16}}


def build_bundle(quick: bool, out: Path):
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline import build
    from edgeswitch.pipeline.deploy import save_bundle

    cfg = load_config(dataset="watch", overrides=(QUICK if quick else {}) | {"latency_calls": 20})
    a = build(cfg, out, cache_dir=default_cache_dir(), progress=False)
    save_bundle(a, out / "bundle")
    return a


def feeds(runner, X: np.ndarray) -> list[dict]:
    st = runner.initial_state()
    return [{"clip": X[i:i + 1], "belief": st.belief, "age": np.asarray([st.age], np.float32),
             "last": np.asarray([st.last], np.float32),
             "cloud_proba": np.zeros((1, runner.k), np.float32),
             "cloud_mask": np.zeros(1, np.float32),
             "threshold": np.asarray([runner.threshold], np.float32)} for i in range(len(X))]


def latency(a, art: Path, X: np.ndarray) -> dict:
    """ms per clip of each path, interleaved; medians and ratios to the split path."""
    from edgeswitch.cloud.client import NoCloud
    from edgeswitch.device.runner import DeviceRunner
    from edgeswitch.models.base import ModelOutput
    from edgeswitch.runtime.hybrid import HybridClassifier

    router = a.deployed_router
    k = len(a.edge.classes_)
    floats, int8 = DeviceRunner(art), DeviceRunner(art, variant="int8")
    f_feeds, q_feeds = feeds(floats, X), feeds(int8, X)
    hybrid = HybridClassifier(a.edge, router, NoCloud(a.edge.classes_), a.operating_point,
                              fusion=a.fusion)
    runner = DeviceRunner(art)   # no cloud: offloads fall back, as the hybrid's do
    state = router.start(1, k)

    def split(i: int) -> None:
        nonlocal state
        out = a.edge.run_raw(X[i:i + 1])
        step = router.step(state, ModelOutput(out.proba, out.embedding))
        a.operating_point.offload(step.trust)
        state = router.observe(state, step, None, np.zeros(1, bool))

    paths = {"split_edge_onnx_plus_numpy_router": split,
             "device_onnx": lambda i: floats.session.run(None, f_feeds[i]),
             "device_int8_onnx": lambda i: int8.session.run(None, q_feeds[i]),
             "hybrid_classify_call": lambda i: hybrid.classify(X[i:i + 1]),
             "device_runner_call": lambda i: runner.classify_clip(X[i])}
    times = {name: [] for name in paths}
    for i in range(min(50, len(X))):   # warm-up
        for fn in paths.values():
            fn(i)
    for i in range(len(X)):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - t0) * 1000)
    med = {name: float(np.median(t)) for name, t in times.items()}
    base, call = med["split_edge_onnx_plus_numpy_router"], med["hybrid_classify_call"]
    return {"clips": len(X), "threads": 1,
            "median_ms": {n: round(v, 4) for n, v in med.items()},
            "p90_ms": {n: round(float(np.percentile(t, 90)), 4) for n, t in times.items()},
            "ratio_to_split_path": {
                "device_onnx": round(med["device_onnx"] / base, 3),
                "device_int8_onnx": round(med["device_int8_onnx"] / base, 3)},
            "ratio_device_runner_to_hybrid_call": round(med["device_runner_call"] / call, 3)}


def accuracy(a, art: Path) -> dict:
    """The hybrid at the bundle's operating point over the test recordings, float vs int8."""
    from edgeswitch.device.runner import DeviceRunner

    test = a.splits.test
    order = test.stream_order()
    X, y, streams = test.X[order], test.y[order], test.streams[order]
    out = {}
    for variant in ("float", "int8"):
        r = DeviceRunner(art, variant=variant, cloud=a.cloud)
        rows = [r.classify_clip(X[i], streams[i], str(i)) for i in range(len(X))]
        label = np.array([r.classes.index(row["label"]) for row in rows])
        edge = np.concatenate([r.session.run(["edge_proba"], f)[0] for f in feeds(r, X)])
        out[variant] = {"accuracy": round(float(np.mean(label == y)), 4),
                        "offload_rate": round(float(np.mean([row["offloaded"] for row in rows])),
                                              4),
                        "edge_only_accuracy": round(float(np.mean(edge.argmax(1) == y)), 4),
                        "labels": label, "edge_labels": edge.argmax(1)}
    f, q = out["float"], out["int8"]
    summary = {v: {k: x for k, x in out[v].items() if "labels" not in k} for v in out}
    summary["int8_minus_float"] = {
        "accuracy": round(q["accuracy"] - f["accuracy"], 4),
        "offload_rate": round(q["offload_rate"] - f["offload_rate"], 4),
        "edge_only_accuracy": round(q["edge_only_accuracy"] - f["edge_only_accuracy"], 4)}
    summary["int8_same_answer_share"] = round(float(np.mean(q["labels"] == f["labels"])), 4)
    summary["int8_same_edge_label_share"] = round(float(np.mean(q["edge_labels"]
                                                                == f["edge_labels"])), 4)
    summary["clips"] = len(X)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2-epoch models (a smoke run)")
    ap.add_argument("--clips", type=int, default=500, help="clips timed per path")
    output_args(ap, "device.json")
    args = ap.parse_args()

    from edgeswitch.device.export import export_device

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        a = build_bundle(args.quick, d)
        desc = export_device(d / "bundle", d / "device", int8=True, sample_rate_hz=50.0)
        art = d / "device"
        sizes = {"edge_onnx": (d / "bundle" / "edge.onnx").stat().st_size,
                 "switcher_router_op_fusion": sum((d / "bundle" / f).stat().st_size for f in (
                     "switcher.npz", "router.json", "fusion.json") if (d / "bundle" / f).exists()),
                 "device_onnx": desc["graphs"]["float"]["bytes"],
                 "device_int8_onnx": desc["graphs"]["int8"]["bytes"],
                 "device_json": (art / "device.json").stat().st_size}
        test = a.splits.test
        X = test.X[test.stream_order()][:args.clips]
        result = {"config": "quick (2 epochs)" if args.quick else "demo (watch preset)",
                  "router": desc["router"], "operating_point": {
                      k: desc["operating_point"][k] for k in ("mode", "threshold", "adaptive")},
                  "fusion_weight": desc["fusion"]["edge_weight"], "bytes": sizes,
                  "int8_size_ratio": round(sizes["device_int8_onnx"] / sizes["device_onnx"], 3),
                  "latency": latency(a, art, X), "int8": accuracy(a, art)}
    import json

    print(json.dumps(result, indent=1))
    write_results(args, result, "device.json")


if __name__ == "__main__":
    main()
