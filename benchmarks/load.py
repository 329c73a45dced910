"""Load on the cloud HTTP server: batching on vs off, or the FastAPI server vs Ray Serve.

`--compare batching` (default): batching on (the ServeConfig defaults), off (max_batch=1), and
on with a 5 ms wait for batches to fill. `--compare servers`: `serve-cloud --server fastapi`
vs `--server ray` (Ray Serve: one model replica and the same API), both with the default
ServeConfig; this mode runs itself inside a loopback-only network namespace (needs root), since
Ray binds to the machine's address otherwise.

For each setting one run starts `edgeswitch serve-cloud` in a child process on a
free loopback port, with a token, and drives it with N edge clients for T seconds. Each client
is a thread with its own RemoteCloud (native protocol, retries 0) in a closed loop: one test
clip per request, the next request when the answer arrives. Figures per setting: requests,
errors (by reason), throughput (clips/s), p50/p99 client-side latency, and the server's mean
batch size from GET /metrics.

Clients and server share one machine (and the clients share one Python process, GIL included):
compare the two settings as ratios, not as absolute capacity. Writes JSON, prints a table, and
exits non-zero if any request failed.

    python benchmarks/load.py [--compare batching|servers] [--dataset watch] [--clients 16]
                              [--seconds 10] [--json PATH] [--save]
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402
from edgeswitch.cloud.remote import RemoteCloud  # noqa: E402
from edgeswitch.config import RuntimeConfig, ServeConfig, load_config  # noqa: E402
from edgeswitch.evaluation.timing import tail_ms  # noqa: E402
from edgeswitch.models import OnnxClassifier  # noqa: E402
from edgeswitch.models.cache import default_cache_dir  # noqa: E402
from edgeswitch.pipeline import load_data, split_data, train_models  # noqa: E402
from edgeswitch.serving.server import ServerProcess  # noqa: E402
from tests.edge_run import scrape  # noqa: E402

# name: (server, server config, extra serve-cloud flags); the first two are compared as a
# ratio (first / second)
SETTINGS = {
    # the default first (batches what queued while the model ran, no added wait)
    "batching": {"batching on": ("fastapi", ServeConfig(), ()),
                 "batching off": ("fastapi", ServeConfig(max_batch=1), ()),
                 "batching on, wait 5 ms": ("fastapi", ServeConfig(max_wait_ms=5), ())},
    "servers": {"ray serve": ("ray", ServeConfig(), ()),
                "fastapi": ("fastapi", ServeConfig(), ()),
                "ray serve, 2 replicas": ("ray", ServeConfig(), ("--replicas", "2"))},
}
IN_NETNS = "EDGESWITCH_BENCH_IN_NETNS"
WARMUP_REQUESTS = 3      # per client, untimed: connection setup and first model runs
ANSWER_ATOL = 1e-4       # served vs in-process probabilities (batching changes float order)


@dataclass
class Sample:
    latency_ms: float
    reason: str | None   # None: a correct answer
    detail: str = ""


@dataclass
class Window:
    """The timed window, opened by the start barrier so every client shares one clock."""

    seconds: float
    start: float = 0.0
    end: float = 0.0
    batches_before: tuple[float, float] = (0.0, 0.0)   # server histogram at the start

    def open(self, batches_before: tuple[float, float]) -> None:
        self.batches_before = batches_before
        self.start = time.perf_counter()
        self.end = self.start + self.seconds


@dataclass
class ClientRun:
    samples: list[Sample] = field(default_factory=list)
    finished: float = 0.0
    warmup_failures: list[Sample] = field(default_factory=list)


def cloud_model(dataset: str, out: Path,
                progress: bool) -> tuple[OnnxClassifier, Path, np.ndarray]:
    """The data set's default cloud model (trained once, then from the demo's cache), saved as
    ONNX for the server; and the test clips."""
    cfg = load_config(None, dataset=dataset)
    splits = split_data(cfg, load_data(cfg))
    _edge, cloud = train_models(cfg, splits.train, cache_dir=default_cache_dir(),
                                progress=progress)
    return cloud, cloud.save(out / "cloud.onnx"), splits.test.X


def one_request(cloud: RemoteCloud, clip: np.ndarray, expected: np.ndarray) -> Sample:
    t0 = time.perf_counter()
    reply = cloud.request(clip)
    ms = (time.perf_counter() - t0) * 1e3
    if not reply.ok:
        return Sample(ms, reply.reason or "unknown", reply.detail)
    # an answer for another client's clip (rows mixed up in a batch) is a failure, not a reply
    if not np.allclose(reply.proba, expected, atol=ANSWER_ATOL):
        return Sample(ms, "wrong_answer", f"max diff {np.abs(reply.proba - expected).max():.2g}")
    return Sample(ms, None)


def client(cloud: RemoteCloud, X: np.ndarray, expected: np.ndarray, offset: int, stride: int,
           barrier: threading.Barrier, window: Window, max_requests: int) -> ClientRun:
    """One edge device: a closed loop of one-clip requests until the window or the cap ends."""
    run, n = ClientRun(), len(X)
    for k in range(WARMUP_REQUESTS):
        i = (offset + k * stride) % n
        s = one_request(cloud, X[i : i + 1], expected[i : i + 1])
        if s.reason is not None:
            run.warmup_failures.append(s)
    barrier.wait()  # all clients start together, so the load is N from the first request
    # clients walk the test clips interleaved, so concurrent requests carry different clips
    for k in range(max_requests):
        if time.perf_counter() >= window.end:
            break
        i = (offset + k * stride) % n
        run.samples.append(one_request(cloud, X[i : i + 1], expected[i : i + 1]))
    run.finished = time.perf_counter()
    return run


def scrape_batches(url: str, token: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-size histogram: clips and model runs so far."""
    m = scrape(url, token)
    return m.get("edgeswitch_batch_size_sum", 0.0), m.get("edgeswitch_batch_size_count", 0.0)


def run_clients(url: str, token: str, classes: tuple[str, ...], X: np.ndarray,
                expected: np.ndarray, args: argparse.Namespace) -> tuple[list[ClientRun], Window]:
    """All clients, from warm-up to the end of the window; the server is scraped at the start
    barrier, when every client waits and nothing is in flight, so warm-up runs drop out."""
    # breaker off (a huge threshold): every timed request must be a real round trip, never a
    # local fast-fail that would pass for server behaviour
    rcfg = RuntimeConfig(protocol="native", deadline_ms=args.deadline_ms, retries=0,
                         breaker_failures=10**9)
    window = Window(args.seconds)
    barrier = threading.Barrier(args.clients,
                                action=lambda: window.open(scrape_batches(url, token)))
    runs: list[ClientRun | None] = [None] * args.clients
    clouds = [RemoteCloud(url, classes, rcfg, token=token, seed=c) for c in range(args.clients)]

    def work(c: int) -> None:
        runs[c] = client(clouds[c], X, expected, c, args.clients, barrier, window,
                         args.max_requests)

    threads = [threading.Thread(target=work, args=(c,), name=f"client-{c}")
               for c in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for cloud in clouds:
        cloud.close()
    if any(r is None for r in runs):  # a thread raised (its traceback is on stderr)
        raise RuntimeError("a client thread died; see the traceback above")
    return runs, window


def summarize(runs: list[ClientRun], window: Window, batches: tuple[float, float]) -> dict:
    samples = [s for r in runs for s in r.samples]
    ok = np.asarray([s.latency_ms for s in samples if s.reason is None])
    failed = [s for s in samples + [s for r in runs for s in r.warmup_failures] if s.reason]
    # closed loop: requests started before the window closed still count, so time runs until
    # the last client is done
    elapsed = max(r.finished for r in runs) - window.start
    clips, model_runs = batches

    return {
        "requests": len(samples), "ok": len(ok), "errors": len(failed),
        "errors_by_reason": dict(Counter(s.reason for s in failed)),
        "error_examples": {s.reason: s.detail for s in failed},
        "warmup_errors": sum(len(r.warmup_failures) for r in runs),
        "seconds": elapsed, "throughput_clips_s": len(ok) / elapsed,
        "latency_ms": tail_ms(ok) or dict.fromkeys(("p50", "p99", "mean", "max")),
        "server_model_runs": int(model_runs), "server_clips": int(clips),
        "server_mean_batch": clips / model_runs if model_runs else None,
    }


def bench_setting(name: str, server_kind: str, serve: ServeConfig, extra: tuple[str, ...],
                  model_path: Path, classes: tuple[str, ...], X: np.ndarray,
                  expected: np.ndarray, args: argparse.Namespace) -> dict:
    token = secrets.token_urlsafe(24)
    with ServerProcess(model_path, serve, token=token, server=server_kind, extra_args=extra,
                       start_timeout_s=180) as server:
        runs, window = run_clients(server.url, token, classes, X, expected, args)
        after = scrape_batches(server.url, token)
    before = window.batches_before
    batches = (after[0] - before[0], after[1] - before[1])
    if "--replicas" in extra:  # /metrics is per replica: two scrapes may see different ones
        batches = (0.0, 0.0)   # so no batch figure rather than a wrong one
    return {"setting": name, "server": server_kind, "serve": asdict(serve), "flags": list(extra),
            **summarize(runs, window, batches)}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def compare(on: dict, off: dict) -> dict:
    """Batching on / batching off: above 1 is better for throughput, worse for latency."""
    return {"throughput": ratio(on["throughput_clips_s"], off["throughput_clips_s"]),
            "p50": ratio(on["latency_ms"]["p50"], off["latency_ms"]["p50"]),
            "p99": ratio(on["latency_ms"]["p99"], off["latency_ms"]["p99"])}


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(results: list[dict], ratios: dict, args: argparse.Namespace) -> None:
    print(f"\n{args.clients} clients x {args.seconds:g} s, closed loop, one clip per request, "
          f"loopback ({args.dataset} cloud model)\n")
    print("| setting | requests | errors | clips/s | p50 ms | p99 ms | mean batch |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        lat = r["latency_ms"]
        print(f"| {r['setting']} | {r['requests']} | {r['errors']} | "
              f"{r['throughput_clips_s']:.1f} | {fmt(lat['p50'], '.2f')} | "
              f"{fmt(lat['p99'], '.2f')} | {fmt(r['server_mean_batch'], '.2f')} |")
    first, second = results[0]["setting"], results[1]["setting"]
    print(f"\n{first} / {second}: throughput x{fmt(ratios['throughput'], '.2f')}, "
          f"p50 x{fmt(ratios['p50'], '.2f')}, p99 x{fmt(ratios['p99'], '.2f')}")
    for r in results:
        if r["errors"]:
            print(f"{r['setting']}: {r['errors']} failed requests {r['errors_by_reason']}; "
                  f"e.g. {r['error_examples']}", file=sys.stderr)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compare", choices=("batching", "servers"), default="batching",
                    help="batching on/off (FastAPI), or FastAPI vs Ray Serve")
    ap.add_argument("--dataset", default="watch", choices=("watch", "basicmotions"),
                    help="basicmotions: small model, for a quick run")
    ap.add_argument("--clients", type=int, default=16, help="concurrent edge clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="timed window per setting")
    ap.add_argument("--max-requests", type=int, default=20000,
                    help="cap per client and setting (bounds a run whatever the speed)")
    ap.add_argument("--deadline-ms", type=float, default=2000.0,
                    help="client deadline per request; a late answer is an error")
    output_args(ap, "load.json (load_servers.json with --compare servers)")
    args = ap.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.max_requests < 1:
        ap.error("--clients and --max-requests must be >= 1, --seconds > 0")
    return args


def in_netns() -> int:
    """This script again, inside a loopback-only network namespace (for Ray)."""
    import subprocess

    from edgeswitch.scale.netns import RAY_ENV, LoopbackNetns

    with LoopbackNetns() as ns:
        env = os.environ | RAY_ENV | {IN_NETNS: "1"}
        return subprocess.run(ns.wrap([sys.executable, *sys.argv]), env=env).returncode


def main() -> int:
    args = parse_args()
    if args.compare == "servers" and not os.environ.get(IN_NETNS):
        return in_netns()
    settings = SETTINGS[args.compare]
    with tempfile.TemporaryDirectory(prefix="edgeswitch-load-") as tmp:
        cloud, model_path, X = cloud_model(args.dataset, Path(tmp), sys.stderr.isatty())
        # the in-process answers, to check that each served reply is for the clip it asked about
        expected = cloud.predict_proba(X)
        results = [bench_setting(name, kind, serve, extra, model_path, tuple(cloud.classes_),
                                 X, expected, args)
                   for name, (kind, serve, extra) in settings.items()]
    ratios = {f"{results[0]['setting']} / {results[1]['setting']}":
              compare(results[0], results[1])}
    ratios[f"{results[2]['setting']} / {results[1]['setting']}"] = compare(results[2],
                                                                          results[1])
    out = {
        "benchmark": "load", "compare": args.compare, "dataset": args.dataset,
        "model": str(cloud.name),
        "clients": args.clients, "seconds": args.seconds, "max_requests": args.max_requests,
        "deadline_ms": args.deadline_ms, "test_clips": len(X), "clip_shape": list(X.shape[1:]),
        "settings": results, "ratios": ratios,
        "machine": {"platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "command": shlex.join(["python", *sys.argv]),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print_table(results, next(iter(ratios.values())), args)
    write_results(args, out, "load.json" if args.compare == "batching" else "load_servers.json")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
