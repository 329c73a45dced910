"""Soak: a real `serve-cloud` process under hours-like mixed traffic, squeezed into minutes.

The server runs with per-device tokens (a device token file) and fault injection (some model
requests sleep, some answer an injected 500, some a cut-off body). Concurrent clients, each a
thread with its own keep-alive connection (reopened every 50 requests, and after any request it
gave up on), send a seeded mix: good classify and chat requests (answers checked against the
model run in process), invalid bodies (bad JSON, base64, shape, dtype, NaN, a 3e38 clip, an
overflowing shape, deep JSON, oversized, wrong content type, unknown model), bad or missing
tokens, the ops endpoints, and requests whose
client gives up after 50 ms (the slow ones, hit by the sleep fault, are abandoned mid-request).
Between phases a device is added to the token file and the one before revoked (reloads).

Load runs in a warm-up and then `--rounds` rounds. After each, the clients close their
connections and, once the server is quiet, its open file descriptors (/proc/PID/fd), threads
(/proc/PID/status Threads) and RSS (VmRSS) are read: growth is measured between these quiet
points, from the end of the warm-up to the end (samples under load, every second, give the
peaks). Every reply is classed as expected (with what the fault injection explains) or not: any
status >= 500 other than the injected 500 (or a 503 with Retry-After, a server shedding load)
is unexpected, and so is a dropped connection on a request the client did not give up on.

    python benchmarks/soak.py [--seconds 150] [--clients 6] [--rounds 3] [--json PATH] [--save]

Prints the figures; exits non-zero when a check fails (fd or thread growth, RSS growth >= 10%,
an unexpected reply). tests/test_soak.py runs the same soak with the test suite's model.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/, tests/

from benchmarks._results import output_args, write_results  # noqa: E402

FAULTS = ("sleep:0.2@0.05", "http500@0.03", "malformed@0.02")
GIVE_UP_S = 0.05        # the "abandon" requests' client timeout
REQUEST_TIMEOUT_S = 10  # every other request's
REOPEN_EVERY = 50       # requests per connection before the client reconnects
QUIET_S = 1.5           # settle time before a quiet sample (the server closes idle sockets)
FD_SLACK, THREAD_SLACK, RSS_LIMIT = 2, 2, 0.10
KINDS = {"classify": 40, "chat": 10, "bad_body": 20, "bad_token": 10, "ops": 10,
         "abandon": 10}


@dataclass
class Tally:
    """What the clients saw: outcomes by kind, and the unexpected ones in words."""

    outcomes: Counter = field(default_factory=Counter)   # (kind, outcome) -> count
    unexpected: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str, problem: str | None = None) -> None:
        with self.lock:
            self.outcomes[(kind, outcome)] += 1
            if problem is not None:
                self.outcomes[("unexpected", kind)] += 1
                if len(self.unexpected) < 20:
                    self.unexpected.append(f"{kind}: {problem}")


def proc_figures(pid: int) -> dict:
    """Open fds, threads and RSS (kB) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"fds": fds, "threads": int(status["Threads"]),
            "rss_kb": int(status["VmRSS"].split()[0])}


class Requests:
    """The request mix, as (method, path, httpx kwargs, what answer to expect) by kind."""

    def __init__(self, X: np.ndarray, expected: np.ndarray, tokens: list[str], model: str,
                 max_clips: int, max_body_mb: float) -> None:
        from edgeswitch.cloud.wire import encode_clips, encode_npy_data_url

        self.X, self.expected, self.tokens, self.model = X, expected, tokens, model
        self.encode_clips, self.encode_npy = encode_clips, encode_npy_data_url
        nan = X[:1].copy()
        nan[0, 0, 0] = np.nan
        poison = X[:1].copy()  # finite, far outside the model's input range: a 422 of its own
        poison[0, 0, 0] = 3e38
        good = encode_clips(X[:1])
        rows = int(max_body_mb * 2**20 / X[0].nbytes) + 8  # base64 makes it larger still
        big = encode_clips(np.zeros((rows, *X.shape[1:]), np.float32))
        json_ct = {"content-type": "application/json"}
        self.bad_bodies = [
            {"json": {"clips": good | {"b64": "%%%"}}},
            {"json": {"clips": encode_clips(nan)}},
            {"json": {"clips": encode_clips(poison)}},
            {"json": {"clips": good | {"shape": [0, 2**63, 6]}}},  # overflows before allocation
            {"content": b"[" * 100_000, "headers": json_ct},          # too deeply nested JSON
            {"json": {"clips": encode_clips(X[:1, : max(1, X.shape[1] // 2)])}},
            {"json": {"clips": good | {"dtype": "int8"}}},
            {"json": {"clips": big}},
            {"json": {"clips": good | {"shape": [max_clips + 1, *X.shape[1:]]}}},
            {"content": b"{}", "headers": {"content-type": "text/plain"}},
            {"content": b'{"clips": [', "headers": json_ct},
            {"json": {"clip": good}},
            {"json": {"clips": good, "model": "gpt-9"}},
            {"content": b"", "headers": json_ct},
        ]

    def auth(self, rng: random.Random) -> dict:
        scheme = rng.choice(("Bearer", "bearer"))
        return {"Authorization": f"{scheme} {rng.choice(self.tokens)}"}

    def classify(self, rng: random.Random) -> tuple[dict, np.ndarray]:
        i, n = rng.randrange(len(self.X)), rng.randint(1, 4)
        idx = [(i + k) % len(self.X) for k in range(n)]
        return {"json": {"clips": self.encode_clips(self.X[idx])}}, self.expected[idx]

    def chat(self, rng: random.Random) -> tuple[dict, np.ndarray]:
        i = rng.randrange(len(self.X))
        body = {"model": self.model, "logprobs": True, "top_logprobs": self.expected.shape[1],
                "messages": [{"role": "user", "content": [
                    {"type": "text", "text": "Which activity?"},
                    {"type": "file", "file": {"filename": "clip.npy",
                                              "file_data": self.encode_npy(self.X[i])}}]}]}
        return {"json": body}, self.expected[i]


def judge_model_reply(r, expected: np.ndarray, chat: bool, classes: tuple[str, ...]) -> tuple:
    """(outcome, problem or None) of a classify / chat reply."""
    if r.status_code == 200:
        try:
            body = r.json()
        except ValueError:
            return "malformed (injected)", None  # the malformed fault: a cut-off body
        try:
            if chat:
                top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
                got = dict((t["token"], np.exp(t["logprob"])) for t in top)
                proba = np.array([got[c] for c in classes])
            else:
                proba = np.asarray(body["proba"], dtype=float).reshape(expected.shape)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return "bad answer", f"200 with an unreadable answer ({exc}): {r.text[:120]}"
        if not np.allclose(proba, expected, atol=1e-4):
            return "wrong answer", f"200 with other probabilities: {proba} vs {expected}"
        return "200", None
    return judge_status(r)


def judge_status(r) -> tuple:
    """Outcome of a reply that is not a good answer: the injected 500 and a shedding 503
    are expected, any other 5xx is not."""
    code = None
    try:
        code = r.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        pass
    if r.status_code == 500 and code == "injected":
        return "500 (injected)", None
    if r.status_code == 503 and "retry-after" in r.headers:
        return "503 (shed)", None
    if r.status_code >= 500:
        return str(r.status_code), f"{r.status_code} {r.text[:160]}"
    return str(r.status_code), None


class Client:
    """One edge-like client thread: a keep-alive connection, reopened now and then."""

    def __init__(self, url: str, reqs: Requests, classes: tuple[str, ...], tally: Tally,
                 seed: int) -> None:
        self.url, self.reqs, self.classes, self.tally = url, reqs, classes, tally
        self.rng = random.Random(seed)
        self.http, self.used = None, 0
        self.kinds, self.weights = list(KINDS), list(KINDS.values())

    def connection(self):
        import httpx

        if self.http is None or self.used >= REOPEN_EVERY:
            self.close()
            self.http, self.used = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_S), 0
        self.used += 1
        return self.http

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
            self.http = None

    def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                self.one(self.rng.choices(self.kinds, self.weights)[0])
        finally:
            self.close()

    def one(self, kind: str) -> None:
        import httpx

        rng, reqs = self.rng, self.reqs
        http = self.connection()
        try:
            if kind in ("classify", "abandon"):
                kwargs, expected = reqs.classify(rng)
                timeout = GIVE_UP_S if kind == "abandon" else REQUEST_TIMEOUT_S
                r = http.post("/v1/classify", headers=reqs.auth(rng), timeout=timeout, **kwargs)
                outcome = judge_model_reply(r, expected, False, self.classes)
            elif kind == "chat":
                kwargs, expected = reqs.chat(rng)
                r = http.post("/v1/chat/completions", headers=reqs.auth(rng), **kwargs)
                outcome = judge_model_reply(r, expected, True, self.classes)
            elif kind == "bad_body":
                kwargs = dict(rng.choice(reqs.bad_bodies))
                headers = reqs.auth(rng) | kwargs.pop("headers", {})
                path = rng.choice(("/v1/classify", "/v1/chat/completions"))
                r = http.post(path, headers=headers, **kwargs)
                outcome = judge_status(r)
                if outcome[1] is None and not 400 <= r.status_code < 500 \
                        and outcome[0] != "503 (shed)":
                    outcome = (outcome[0], f"a bad body got {r.status_code}: {r.text[:120]}")
            elif kind == "bad_token":
                headers = rng.choice(({}, {"Authorization": "Bearer wrong-token"},
                                      {"Authorization": "bearer " + "x" * 43},
                                      {"Authorization": reqs.tokens[0]}))
                kwargs, _ = reqs.classify(rng)
                r = http.post("/v1/classify", headers=headers, **kwargs)
                outcome = (str(r.status_code), None if r.status_code == 401
                           else f"a bad token got {r.status_code}")
            else:  # ops
                path = rng.choice(("/healthz", "/v1/models", "/metrics"))
                r = http.get(path, headers=reqs.auth(rng))
                outcome = (str(r.status_code), None if r.status_code == 200
                           else f"GET {path} got {r.status_code}")
        except httpx.TimeoutException:
            self.close()  # an abandoned request: this connection is given up with it
            outcome = ("gave up", None if kind == "abandon" else
                       f"no answer within {REQUEST_TIMEOUT_S} s")
        except httpx.TransportError as exc:
            self.close()
            outcome = ("dropped", f"connection dropped: {type(exc).__name__}: {exc}")
        self.tally.add(kind, *outcome)


class Sampler:
    """The server process's figures every `every_s` seconds, in a thread."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        self.pid, self.every_s, self.samples = pid, every_s, []
        self.stop = threading.Event()
        self.t0 = time.monotonic()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.samples.append({"t": round(time.monotonic() - self.t0, 1)}
                                | proc_figures(self.pid))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(5)


def load_phase(url: str, reqs: Requests, classes: tuple[str, ...], tally: Tally,
               clients: int, seconds: float, seed: int) -> None:
    until = time.monotonic() + seconds
    workers = [Client(url, reqs, classes, tally, seed * 1000 + c) for c in range(clients)]
    threads = [threading.Thread(target=w.run, args=(until,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + REQUEST_TIMEOUT_S + 30)


def soak(model_path: str | Path, X: np.ndarray, expected: np.ndarray, classes: tuple[str, ...],
         seconds: float = 150.0, clients: int = 6, rounds: int = 3,
         warmup_s: float | None = None, log=print) -> dict:
    """Run the soak; the figures and the checks' verdicts as a dict (`ok`: all passed)."""
    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.credentials import add_device
    from edgeswitch.serving.server import ServerProcess

    warmup_s = warmup_s if warmup_s is not None else max(10.0, 0.2 * seconds)
    round_s = max(1.0, (seconds - warmup_s) / rounds)
    cfg = ServeConfig(max_body_mb=0.25, max_clips=16, max_batch=16)
    tally = Tally()
    with tempfile.TemporaryDirectory(prefix="edgeswitch-soak-") as tmp:
        token_file = Path(tmp) / "devices.jsonl"
        tokens = [add_device(token_file, f"soak-{i}") for i in range(3)]
        with ServerProcess(model_path, cfg, token_file=token_file, faults=FAULTS) as srv:
            pid = srv.proc.pid
            model = _served_model(srv.url, tokens[0])
            reqs = Requests(X, expected, tokens, model, cfg.max_clips, cfg.max_body_mb)
            quiet = []
            t_start = time.monotonic()
            with Sampler(pid) as sampler:
                for phase in ["warm-up"] + [f"round {i + 1}" for i in range(rounds)]:
                    s = warmup_s if phase == "warm-up" else round_s
                    load_phase(srv.url, reqs, classes, tally, clients, s, len(quiet))
                    rotate(token_file, len(quiet))  # the server reloads its file under load
                    time.sleep(QUIET_S)
                    quiet.append({"after": phase, "t": round(time.monotonic() - t_start, 1),
                                  "requests": sum(v for (k, _), v in tally.outcomes.items()
                                                  if k != "unexpected")}
                                 | proc_figures(pid))
                    log(f"  {phase}: {quiet[-1]}")
            final_check = _good_request(srv.url, tokens[1], X[:8], expected[:8])
            alive = srv.proc.poll() is None
            server_log = srv.log()
    base, end = quiet[0], quiet[-1]
    under_load = sampler.samples
    checks = {
        "fds": end["fds"] <= base["fds"] + FD_SLACK,
        "threads": end["threads"] <= base["threads"] + THREAD_SLACK,
        "rss": end["rss_kb"] <= base["rss_kb"] * (1 + RSS_LIMIT),
        "no_unexpected": not tally.unexpected,
        "good_after": final_check is None and alive,
        "no_token_in_log": not any(t in server_log for t in tokens),
        "no_traceback_in_log": "Traceback" not in server_log,
    }
    outcomes = {f"{k} {o}": v for (k, o), v in sorted(tally.outcomes.items())}
    return {
        "seconds": seconds, "warmup_s": warmup_s, "rounds": rounds, "round_s": round_s,
        "clients": clients, "faults": list(FAULTS), "kinds": KINDS,
        "requests": sum(v for (k, _), v in tally.outcomes.items() if k != "unexpected"),
        "outcomes": outcomes, "unexpected": tally.unexpected,
        "quiet": quiet, "peak_under_load": {key: max(s[key] for s in under_load)
                                            for key in ("fds", "threads", "rss_kb")}
        if under_load else {},
        "growth_after_warmup": {"fds": end["fds"] - base["fds"],
                                "threads": end["threads"] - base["threads"],
                                "rss_pct": round(100 * (end["rss_kb"] / base["rss_kb"] - 1), 2)},
        "final_check": final_check or "ok", "token_file_reloads": server_log.count("reloaded"),
        "checks": checks, "ok": all(checks.values()),
        "samples": under_load,
    }


def rotate(token_file: Path, i: int) -> None:
    """A device added and the one before it revoked: the file changes between phases."""
    from edgeswitch.serving.credentials import add_device, revoke_device

    add_device(token_file, f"rotating-{i}")
    if i:
        revoke_device(token_file, f"rotating-{i - 1}")


def _served_model(url: str, token: str) -> str:
    import httpx

    r = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return r.json()["data"][0]["id"]


def _good_request(url: str, token: str, X: np.ndarray, expected: np.ndarray) -> str | None:
    """None when a good request after the soak gets the in-process model's answer."""
    import httpx

    from edgeswitch.cloud.wire import encode_clips

    for _ in range(20):  # a fault may hit it: the injected ones are random, so ask again
        r = httpx.post(url + "/v1/classify", json={"clips": encode_clips(X)}, timeout=10,
                       headers={"Authorization": f"Bearer {token}"})
        try:
            proba = np.asarray(r.json()["proba"])
        except (ValueError, KeyError, TypeError):
            continue
        return None if np.allclose(proba, expected, atol=1e-4) else "wrong answer after soak"
    return "no good answer in 20 tries after the soak"


def report(res: dict) -> str:
    q = res["quiet"]
    lines = [f"{res['requests']} requests from {res['clients']} clients over "
             f"{res['seconds']:.0f} s (warm-up {res['warmup_s']:.0f} s, {res['rounds']} rounds "
             f"of {res['round_s']:.0f} s), faults {', '.join(res['faults'])}",
             "quiet points (after each phase): fds / threads / RSS MiB",
             *[f"  {p['after']:>8} at {p['t']:6.1f} s, {p['requests']:6d} requests: "
               f"{p['fds']:3d} / {p['threads']:2d} / {p['rss_kb'] / 1024:.1f}" for p in q],
             f"growth from the end of the warm-up: fds {res['growth_after_warmup']['fds']:+d}, "
             f"threads {res['growth_after_warmup']['threads']:+d}, "
             f"RSS {res['growth_after_warmup']['rss_pct']:+.2f}%",
             f"peak under load: {res['peak_under_load']}",
             "outcomes: " + ", ".join(f"{k}: {v}" for k, v in res["outcomes"].items()),
             f"unexpected: {res['unexpected'] or 'none'}",
             f"good request after the soak: {res['final_check']}; token file reloads "
             f"{res['token_file_reloads']}",
             "checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}"
                                    for k, v in res["checks"].items())]
    return "\n".join(lines)


def cloud_model(dataset: str, out: Path):
    """The data set's default cloud model (from the demo's cache when there), as ONNX; and
    the test clips."""
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline import load_data, split_data, train_models

    cfg = load_config(None, dataset=dataset)
    splits = split_data(cfg, load_data(cfg))
    _edge, cloud = train_models(cfg, splits.train, cache_dir=default_cache_dir(),
                                progress=sys.stderr.isatty())
    return cloud, cloud.save(out / "cloud.onnx"), splits.test.X


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=150.0, help="whole soak, warm-up included")
    ap.add_argument("--clients", type=int, default=6, help="concurrent client threads")
    ap.add_argument("--rounds", type=int, default=3, help="load rounds after the warm-up")
    ap.add_argument("--dataset", default="watch", choices=("watch", "basicmotions"))
    output_args(ap, "soak.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeswitch-soak-model-") as tmp:
        cloud, path, X = cloud_model(args.dataset, Path(tmp))
        X = np.ascontiguousarray(X[:256], np.float32)
        res = soak(path, X, cloud.predict_proba(X), tuple(cloud.classes_), args.seconds,
                   args.clients, args.rounds)
    res |= {"dataset": args.dataset, "model": str(cloud.name),
            "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                        "python": platform.python_version()},
            "command": shlex.join(["python", *sys.argv]),
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds")}
    write_results(args, res, "soak.json")
    print(report(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
