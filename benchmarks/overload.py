"""Overload and cancellation of the cloud server: shed load instead of stalling, and
run no model for clients that gave up.

`overload`: `edgeswitch serve-cloud` with a slow-ish model (`--fault sleep:S`: every model
request holds the server S seconds) and room for `--max-queue-requests` requests. First its
capacity: a closed loop of that many clients (requests/s answered, and their p99). Then an open
loop (requests sent at a fixed rate whatever the answers, as a fleet does) at `--factor` x that
capacity: the p99 of accepted requests against the p99 at capacity (target within 2x), the p99
of the shed ones (503 + Retry-After, target < 20 ms), the shed share, and the server process's
RSS over the open loop (target growth < 10%; psutil if installed, else /proc/PID/status VmRSS).

`cancel`: clients that give up after `--give-up-ms` while the model is slow; counted: the
clips abandoned (no answer in time) and the clips the server's model ran (its batch-size
histogram), for (a) `--fault sleep:S`, clients without a deadline header (the server sees
them disconnect); (b) a backend that takes `--run-ms` per model run (this script serving it
in a child process), the same clients; (c) that backend, clients that send
`X-Edgeswitch-Deadline-Ms` as the edge client does. Target: the model runs for < 5% of the
abandoned clips.

Clients are aiohttp in this process (httpx queues 64+ concurrent requests client-side for
seconds), on the same machine as the server: compare figures within one run.

    python benchmarks/overload.py [--scenario both|overload|cancel] [--seconds 10]
                                  [--json PATH] [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402
from edgeswitch.cloud.transports import DEADLINE_HEADER  # noqa: E402
from edgeswitch.cloud.wire import encode_clips  # noqa: E402
from edgeswitch.config import ServeConfig  # noqa: E402
from edgeswitch.serving.server import ServerProcess  # noqa: E402
from tests.edge_run import scrape  # noqa: E402

JSON = {"Content-Type": "application/json"}
TIMEOUT_S = 10.0  # a request without an answer by then hung: reported, and the run fails


@dataclass
class Result:
    sent_at: float
    status: int | str   # HTTP status, "timeout" (gave up or hung) or an exception's name
    latency_s: float
    retry_after: str | None = None
    clip: int = -1
    proba: list | None = None


def cloud_model(dataset: str, out: Path):
    """The data set's default cloud model (trained once, then from the demo's cache, as in
    benchmarks/load.py), saved as ONNX for the server; and the test clips."""
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline import load_data, split_data, train_models

    cfg = load_config(None, dataset=dataset)
    splits = split_data(cfg, load_data(cfg))
    _edge, cloud = train_models(cfg, splits.train, cache_dir=default_cache_dir(),
                                progress=sys.stderr.isatty())
    return cloud, cloud.save(out / "cloud.onnx"), splits.test.X


def rss_bytes(pid: int) -> int:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RSS for process {pid}")


def p(values, q: float) -> float | None:
    return float(np.percentile(values, q) * 1000) if len(values) else None


async def post(session, url: str, body: str, clip: int, timeout_s: float,
               headers: dict | None = None) -> Result:
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=JSON | (headers or {}),
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            payload = await r.json()
            proba = payload.get("proba") if r.status == 200 else None
            return Result(t0, r.status, time.perf_counter() - t0, r.headers.get("Retry-After"),
                          clip, proba)
    except TimeoutError:
        return Result(t0, "timeout", time.perf_counter() - t0, clip=clip)
    except aiohttp.ClientError as exc:
        return Result(t0, type(exc).__name__, time.perf_counter() - t0, clip=clip)


async def closed_loop(url: str, bodies: list[str], clients: int, seconds: float) -> list[Result]:
    import aiohttp

    results: list[Result] = []
    until = time.perf_counter() + seconds

    async def client(c: int) -> None:
        k = c
        while time.perf_counter() < until:
            results.append(await post(session, url, bodies[k % len(bodies)], k % len(bodies),
                                      TIMEOUT_S))
            k += clients

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(c) for c in range(clients)))
    return results


async def open_loop(url: str, bodies: list[str], rate: float, seconds: float,
                    timeout_s: float = TIMEOUT_S, headers: dict | None = None,
                    on_tick=None) -> list[Result]:
    """Requests at `rate` per second for `seconds`, each in its own task, whatever the
    answers; `on_tick()` is called about 10 times a second (RSS sampling)."""
    import aiohttp

    tasks, n = [], int(rate * seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        t0, next_tick = time.perf_counter(), 0.0
        for i in range(n):
            wait = t0 + i / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(post(session, url, bodies[i % len(bodies)],
                                                  i % len(bodies), timeout_s, headers)))
            if on_tick is not None and time.perf_counter() - t0 >= next_tick:
                on_tick()
                next_tick += 0.1
        results = await asyncio.gather(*tasks)
    return list(results)


def correct(results: list[Result], expected: np.ndarray) -> int:
    """Accepted answers whose probabilities are not the model's for their clip."""
    return sum(1 for r in results if r.status == 200
               and not np.allclose(r.proba, expected[r.clip : r.clip + 1], atol=1e-4))


def bench_overload(model_path: Path, bodies: list[str], expected: np.ndarray,
                   args: argparse.Namespace) -> dict:
    cfg = ServeConfig(max_queue_requests=args.max_queue_requests, retry_after_s=1)
    faults = (f"sleep:{args.sleep_s}",) if args.sleep_s > 0 else ()  # 0: the real model alone
    with ServerProcess(model_path, cfg, faults=faults) as server:
        url = server.url + "/v1/classify"
        asyncio.run(closed_loop(url, bodies, args.max_queue_requests, 1.0))  # warm-up
        cap = asyncio.run(closed_loop(url, bodies, args.max_queue_requests, args.seconds))
        cap_ok = [r.latency_s for r in cap if r.status == 200]
        capacity = len(cap_ok) / args.seconds
        rate = args.factor * capacity
        rss = [rss_bytes(server.proc.pid)]
        over = asyncio.run(open_loop(url, bodies, rate, args.seconds,
                                     on_tick=lambda: rss.append(rss_bytes(server.proc.pid))))
        rss.append(rss_bytes(server.proc.pid))
        metrics = scrape(server.url)
    ok = [r.latency_s for r in over if r.status == 200]
    shed = [r for r in over if r.status == 503]
    other = Counter(r.status for r in over if r.status not in (200, 503))
    out = {
        "serve": {"max_queue_requests": args.max_queue_requests, "retry_after_s": 1,
                  "fault": faults[0] if faults else None},
        "capacity": {"clients": args.max_queue_requests, "requests": len(cap),
                     "ok": len(cap_ok), "requests_per_s": capacity,
                     "p50_ms": p(cap_ok, 50), "p99_ms": p(cap_ok, 99),
                     "non_200": dict(Counter(r.status for r in cap if r.status != 200))},
        "overload": {"offered_per_s": rate, "requests": len(over), "accepted": len(ok),
                     "shed": len(shed), "shed_share": len(shed) / max(1, len(over)),
                     "accepted_per_s": len(ok) / args.seconds,
                     "accepted_p50_ms": p(ok, 50), "accepted_p99_ms": p(ok, 99),
                     "shed_p50_ms": p([r.latency_s for r in shed], 50),
                     "shed_p99_ms": p([r.latency_s for r in shed], 99),
                     "shed_with_retry_after": sum(r.retry_after == "1" for r in shed),
                     "other_outcomes": {str(k): v for k, v in other.items()},
                     "wrong_answers": correct(cap + over, expected),
                     "rss_start_mb": rss[0] / 2**20, "rss_end_mb": rss[-1] / 2**20,
                     "rss_max_mb": max(rss) / 2**20,
                     "rss_growth": (rss[-1] - rss[0]) / rss[0],
                     "rss_samples": len(rss)},
        "server_shed_total": metrics.get("edgeswitch_shed_total", 0.0),
    }
    lat = out["overload"]
    lat["accepted_p99_over_capacity_p99"] = (lat["accepted_p99_ms"] / out["capacity"]["p99_ms"]
                                             if ok and cap_ok else None)
    return out


def serve_slow(args: argparse.Namespace) -> None:
    """Child mode: the cloud model behind a backend that takes `--run-ms` per model run."""
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.serving.app import create_app
    from edgeswitch.serving.server import serve

    class SlowBackend:
        def __init__(self, model, run_s: float) -> None:
            self.model, self.run_s = model, run_s
            self.classes_, self.name = model.classes_, f"slow-{model.name}"
            self.clip_shape_ = model.clip_shape_

        def predict_proba(self, X):
            time.sleep(self.run_s)  # a GPU or a VLM: the cost is per call
            return self.model.predict_proba(X)

    backend = SlowBackend(OnnxClassifier(args.serve_slow), args.run_ms / 1000)
    serve(create_app(backend, ServeConfig()), port=0, ready_file=args.ready_file)


class SlowServer:
    """`python benchmarks/overload.py --serve-slow MODEL` as a child process."""

    def __init__(self, model_path: Path, run_ms: float, tmp: Path) -> None:
        self.ready = tmp / "slow-ready.json"
        self.cmd = [sys.executable, __file__, "--serve-slow", str(model_path), "--run-ms",
                    str(run_ms), "--ready-file", str(self.ready)]

    def __enter__(self) -> SlowServer:
        import httpx

        self.proc = subprocess.Popen(self.cmd, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end and self.proc.poll() is None:
            if self.ready.exists():
                self.url = f"http://127.0.0.1:{json.loads(self.ready.read_text())['port']}"
                try:
                    if httpx.get(self.url + "/healthz", timeout=1).is_success:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the slow server did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def abandon_run(url: str, server_url: str, bodies: list[str], args: argparse.Namespace,
                deadline_header: bool) -> dict:
    """Impatient clients, open loop; clips abandoned vs clips the model ran."""
    headers = {DEADLINE_HEADER: str(int(args.give_up_ms))} if deadline_header else None
    before = scrape(server_url)
    results = asyncio.run(open_loop(url, bodies, args.cancel_rate, args.seconds,
                                    timeout_s=args.give_up_ms / 1000, headers=headers))
    time.sleep(1.0)  # whatever was still queued or sleeping has met its fate
    after = scrape(server_url)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    statuses = Counter(r.status for r in results)
    abandoned = sum(n for s, n in statuses.items() if s != 200)
    ran = delta("edgeswitch_batch_size_sum")
    ran_abandoned = ran - statuses[200]  # clips that ran for a client that got no answer
    return {"requests": len(results), "outcomes": {str(k): v for k, v in statuses.items()},
            "abandoned_clips": abandoned, "model_clips": ran,
            "model_runs": delta("edgeswitch_batch_size_count"),
            "model_clips_for_abandoned": ran_abandoned,
            "share_of_abandoned_run": ran_abandoned / abandoned if abandoned else None,
            "server_shed_total": delta("edgeswitch_shed_total")}


def bench_cancel(model_path: Path, bodies: list[str], args: argparse.Namespace,
                 tmp: Path) -> dict:
    out = {"give_up_ms": args.give_up_ms, "rate_per_s": args.cancel_rate}
    if args.sleep_s <= 0:
        raise SystemExit("the cancel scenario needs --sleep-s > 0 (a slow model)")
    with ServerProcess(model_path, faults=(f"sleep:{args.sleep_s}",)) as server:
        out[f"fault sleep:{args.sleep_s}, no deadline header"] = abandon_run(
            server.url + "/v1/classify", server.url, bodies, args, deadline_header=False)
    with SlowServer(model_path, args.run_ms, tmp) as slow:
        for header in (False, True):
            name = f"backend {args.run_ms:g} ms per run, " + \
                ("deadline header" if header else "no deadline header")
            out[name] = abandon_run(slow.url + "/v1/classify", slow.url, bodies, args, header)
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=("both", "overload", "cancel"), default="both")
    ap.add_argument("--dataset", default="basicmotions", choices=("watch", "basicmotions"))
    ap.add_argument("--seconds", type=float, default=10.0, help="per measured phase")
    ap.add_argument("--sleep-s", type=float, default=0.2,
                    help="the slow model's fault sleep (overload: 0 = the real model alone)")
    ap.add_argument("--max-queue-requests", type=int, default=16)
    ap.add_argument("--factor", type=float, default=2.0, help="overload: x capacity offered")
    ap.add_argument("--give-up-ms", type=float, default=50.0, help="cancel: client timeout")
    ap.add_argument("--run-ms", type=float, default=150.0, help="cancel: slow backend run")
    ap.add_argument("--cancel-rate", type=float, default=40.0, help="cancel: requests/s")
    output_args(ap, "overload.json")
    ap.add_argument("--serve-slow", help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--ready-file", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if args.serve_slow:
        serve_slow(args)
        return 0
    out: dict = {"benchmark": "overload", "dataset": args.dataset, "args": {
        k: v for k, v in vars(args).items() if k not in ("serve_slow", "ready_file")}}
    with tempfile.TemporaryDirectory(prefix="edgeswitch-overload-") as tmp:
        cloud, model_path, X = cloud_model(args.dataset, Path(tmp))
        X = X[:64].astype(np.float32)
        expected = cloud.predict_proba(X)
        bodies = [json.dumps({"clips": encode_clips(X[i : i + 1])}) for i in range(len(X))]
        if args.scenario in ("both", "overload"):
            out["overload"] = bench_overload(model_path, bodies, expected, args)
        if args.scenario in ("both", "cancel"):
            out["cancel"] = bench_cancel(model_path, bodies, args, Path(tmp))
    out |= {"model": str(cloud.name),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version(),
                        "load_avg_1m_at_end": os.getloadavg()[0]},
            "command": shlex.join(["python", *sys.argv]),
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    write_results(args, out, "overload.json")
    print(json.dumps({k: v for k, v in out.items() if k in ("overload", "cancel")}, indent=1,
                     default=str))
    print(f"wrote {args.json}")
    failed = "overload" in out and (out["overload"]["overload"]["other_outcomes"]
                                    or out["overload"]["overload"]["wrong_answers"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
