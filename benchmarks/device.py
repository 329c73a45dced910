"""The device artifact against today's split runtime, on the watch demo's bundle.

* size: edge.onnx (+ switcher and router files) against device.onnx and device.int8.onnx;
* latency per clip, one clip per call, one thread, from Python: the split path (the edge ONNX
  model through onnxruntime, then the router's step and observe in numpy: what
  HybridClassifier runs for a kept clip) against one onnxruntime call of device.onnx and of
  device.int8.onnx; and the whole per-clip call of each runtime (HybridClassifier.classify
  against DeviceRunner.classify_clip). Methods are interleaved clip by clip, so a busy machine
  slows them alike; the ratios are the figures to quote, the milliseconds are this machine's;
* with --browser, latency per clip in onnxruntime-web (WASM, one thread) in headless
  Chromium (the OS browser through playwright, as tests/test_device_page.py drives it): the
  device page (`edgeswitch device-page`, no cloud) replays the same clips with device.onnx
  and with device.int8.onnx (`?graph=int8`) and records each step's session.run, timed in the
  page with performance.now() (`model_ms` in window.deviceLog), the page served
  cross-origin isolated for a 5 us clock (PageServer). The Python paths and the page take
  turns (--rounds), and the ratios are to the split path's figure of the same run;
* int8: accuracy and offload rate of the hybrid at the bundle's operating point on the test
  split (every test recording a stream, the cloud in process), float graph against int8, and
  the edge alone.

    python benchmarks/device.py                 # the demo's config (models from the cache)
    python benchmarks/device.py --quick         # 2-epoch models: a smoke run
    python benchmarks/device.py --browser       # ... and onnxruntime-web in Chromium
    python benchmarks/device.py --browser --save  # ... writes benchmarks/results/device.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import output_args, write_results  # noqa: E402

QUICK = {"edge.epochs": 2, "cloud.epochs": 2, "cloud.arch_params": {"width": 16}}
CHROMIUM = os.environ.get("EDGESWITCH_CHROMIUM", "/usr/bin/chromium")
WARMUP = 50   # clips run before timing starts (each path; each page load)
SPLIT = "split_edge_onnx_plus_numpy_router"


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


def python_times(a, art: Path, X: np.ndarray) -> dict[str, list[float]]:
    """ms per clip of each Python path, interleaved clip by clip (after a warm-up)."""
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
    for i in range(min(WARMUP, len(X))):
        for fn in paths.values():
            fn(i)
    for i in range(len(X)):
        for name, fn in paths.items():
            t0 = time.perf_counter()
            fn(i)
            times[name].append((time.perf_counter() - t0) * 1000)
    return times


def latency(times: dict[str, list[float]], clips: int, rounds: int) -> dict:
    """Medians (and p90, means) of the Python paths' times; ratios to the split path."""
    med = {name: float(np.median(t)) for name, t in times.items()}
    base, call = med[SPLIT], med["hybrid_classify_call"]
    return {"clips": clips, "rounds": rounds, "threads": 1,
            "median_ms": {n: round(v, 4) for n, v in med.items()},
            "p90_ms": {n: round(float(np.percentile(t, 90)), 4) for n, t in times.items()},
            "mean_ms": {n: round(float(np.mean(t)), 4) for n, t in times.items()},
            "ratio_to_split_path": {
                "device_onnx": round(med["device_onnx"] / base, 3),
                "device_int8_onnx": round(med["device_int8_onnx"] / base, 3)},
            "ratio_device_runner_to_hybrid_call": round(med["device_runner_call"] / call, 3)}


# ---- onnxruntime-web in Chromium: the device page, replaying the clips ----------------------

class PageServer:
    """The device page's app (device.page.create_page: what `edgeswitch device-page ART
    --replay CLIPS` serves, no cloud) on a free loopback port, in a thread, with two headers
    more: COOP and COEP make the page cross-origin isolated, where Chromium's
    performance.now() steps by 5 us instead of 100 us. The page runs as it does without them
    (one WASM thread, its own origin only)."""

    ISOLATED = [(b"cross-origin-opener-policy", b"same-origin"),
                (b"cross-origin-embedder-policy", b"require-corp")]

    def __init__(self, art: Path, clips: Path) -> None:
        import threading

        import uvicorn

        from edgeswitch.device.page import create_page, replay_json
        from edgeswitch.device.spec import read_spec
        from edgeswitch.serving.server import bind_socket

        page = create_page(art, None, None, replay_json(clips, tuple(read_spec(art)["classes"])))

        async def app(scope, receive, send):
            async def send_with(message):
                if message["type"] == "http.response.start":
                    message = message | {"headers": [*message.get("headers", ()),
                                                     *self.ISOLATED]}
                await send(message)

            await page(scope, receive, send_with)

        sock = bind_socket("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                sys.exit("the device page's server did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def replay_file(a, X: np.ndarray, order: np.ndarray, path: Path) -> Path:
    """The timed clips as a clip file (.npz) the page replays, streams in time order."""
    test = a.splits.test
    np.savez(path, X=X, ids=test.ids[order], streams=test.streams[order], t=test.t[order],
             classes=np.asarray(test.classes), sample_rate_hz=50.0)
    return path


def page_times(browser, url: str, graph: str) -> list[float]:
    """One replay of the page with `graph` (float or int8): each clip's session.run, ms, as
    the page timed it, past the warm-up."""
    page = browser.new_page()
    try:
        page.goto(url + ("" if graph == "float" else f"?graph={graph}"))
        page.wait_for_selector('#status[data-state="ready"], #status[data-state="failed"]',
                               timeout=120_000)
        page.click("#start-replay")
        page.wait_for_selector('#status[data-state="done"], #status[data-state="failed"]',
                               timeout=600_000)
        if page.get_attribute("#status", "data-state") != "done":
            sys.exit(f"the device page ({graph}) failed: {page.inner_text('#error')}")
        if not page.evaluate("() => crossOriginIsolated"):
            sys.exit("the device page is not cross-origin isolated: its clock steps 100 us")
        log = page.evaluate("() => window.deviceLog.map((r) => r.model_ms)")
    finally:
        page.close()
    return [float(ms) for ms in log[WARMUP:]]


def browser_summary(times: dict[str, list[float]], py: dict[str, list[float]],
                    version: str) -> dict:
    """The page's figures beside the Python paths' of the same run: ratios to the split path
    (medians; means, which the page's slow clips pull up), and to ORT from Python."""
    med = {n: float(np.median(t)) for n, t in times.items()}
    mean = {n: float(np.mean(t)) for n, t in times.items()}
    split_med, split_mean = float(np.median(py[SPLIT])), float(np.mean(py[SPLIT]))
    ort_web = json.loads((Path(__file__).resolve().parents[1] / "device" / "package.json")
                         .read_text())["dependencies"]["onnxruntime-web"]
    return {"engine": f"onnxruntime-web {ort_web} (WASM, 1 thread), {version} headless",
            "clips_timed": {n: len(t) for n, t in times.items()},
            "timer_resolution_ms": 0.005,
            "median_ms": {n: round(v, 4) for n, v in med.items()},
            "p90_ms": {n: round(float(np.percentile(t, 90)), 4) for n, t in times.items()},
            "mean_ms": {n: round(v, 4) for n, v in mean.items()},
            "ratio_to_split_path": {n: round(v / split_med, 3) for n, v in med.items()},
            "mean_ratio_to_split_path": {n: round(v / split_mean, 3) for n, v in mean.items()},
            "ratio_to_python_same_graph": {
                n: round(v / float(np.median(py[n])), 3) for n, v in med.items()},
            "mean_ratio_to_python_same_graph": {
                n: round(v / float(np.mean(py[n])), 3) for n, v in mean.items()}}


def machine() -> dict:
    import onnxruntime

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__}


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
    ap.add_argument("--browser", action="store_true",
                    help="also time device.onnx and device.int8.onnx in onnxruntime-web in "
                    f"headless Chromium ({CHROMIUM}; $EDGESWITCH_CHROMIUM), through the "
                    "device page")
    ap.add_argument("--rounds", type=int, default=3,
                    help="turns of the Python paths and the page (each times --clips clips)")
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
        order = test.stream_order()[:args.clips]
        X = test.X[order]
        py: dict[str, list[float]] = {}
        web: dict[str, list[float]] = {}
        if args.browser:
            from playwright.sync_api import sync_playwright

            server = PageServer(art, replay_file(a, X, order, d / "replay.npz"))
            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for r in range(args.rounds):   # the Python paths and the page take turns
                for name, t in python_times(a, art, X).items():
                    py.setdefault(name, []).extend(t)
                if args.browser:
                    for graph in ("float", "int8") if r % 2 == 0 else ("int8", "float"):
                        name = "device_onnx" if graph == "float" else "device_int8_onnx"
                        web.setdefault(name, []).extend(page_times(browser, server.url, graph))
            if args.browser:
                version = f"Chromium {browser.version}"
        finally:
            if args.browser:
                browser.close()
                pw.stop()
                server.stop()
        result = {"config": "quick (2 epochs)" if args.quick else "demo (watch preset)",
                  "command": "python benchmarks/device.py " + " ".join(sys.argv[1:]),
                  "machine": machine(),
                  "router": desc["router"], "operating_point": {
                      k: desc["operating_point"][k] for k in ("mode", "threshold", "adaptive")},
                  "fusion_weight": desc["fusion"]["edge_weight"], "bytes": sizes,
                  "int8_size_ratio": round(sizes["device_int8_onnx"] / sizes["device_onnx"], 3),
                  "latency": latency(py, len(X), args.rounds)}
        if args.browser:
            result["browser"] = browser_summary(web, py, version)
        result["int8"] = accuracy(a, art)

    print(json.dumps(result, indent=1))
    write_results(args, result, "device.json")


if __name__ == "__main__":
    main()
