"""Generated traffic against a real `edgeswitch serve-cloud` process: hypothesis draws batches
of requests, valid and invalid (poison clips, huge shapes, lying `.npy` headers, broken and
deeply nested JSON, random JSON of every type, wrong methods, paths, tokens and content
types), sent concurrently over kept-alive connections. No response may be a 5xx (other than a
deliberate 503 with Retry-After), no connection may drop, every valid request gets the
in-process model's probabilities and every poison clip a 422; afterwards a good request still
gets them.

`EDGESWITCH_FUZZ_REQUESTS` sets the count (5,000 by default: each of its 14 kinds of request
about 300 times or more; hypothesis draws the same ones every run); tests/test_ray.py-style: the
Ray Serve run is `test_fuzz_on_ray_serve`, this file inside a loopback-only namespace.
"""

from __future__ import annotations

import base64
import collections
import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from edgeswitch.cloud.wire import NPY_DATA_PREFIX, encode_clips, encode_npy_data_url
from edgeswitch.config import ServeConfig
from edgeswitch.serving.server import ServerProcess

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENGINE = os.environ.get("EDGESWITCH_TEST_ENGINE", "fastapi")
N_REQUESTS = int(os.environ.get("EDGESWITCH_FUZZ_REQUESTS", "5000"))
PER_EXAMPLE = 25   # requests drawn per hypothesis example, sent concurrently
THREADS = 8
# schemathesis examples per operation: the same app's schema is covered by the FastAPI run;
# behind Ray Serve (the proxy's path) fewer examples, as each crosses three processes, one
# after the other, and the Ray run is the suite's longest chain
SCHEMA_EXAMPLES = 100 if ENGINE == "fastapi" else 50
TOKEN = "fuzz-server-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POISON = [3e38, -3e38, 1e30, float("nan"), float("inf"), 1e7]


@dataclass
class Spec:
    """One generated request and what its answer must be (`expect`: a status, or None for
    "any status < 500")."""

    kind: str
    method: str
    path: str
    headers: dict = field(default_factory=dict)
    content: bytes | None = None
    expect: int | None = None
    rows: list[int] | None = None  # valid clips: their indices into the reference data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8)
huge = st.sampled_from([0, 1, 2, 5, 6, 100, 2**31, 2**40, 2**63, 2**64, 10**30, -1])


def _json(body) -> bytes:
    return json.dumps(body).encode()


def _npy(shape, descr="<f4", data=b"") -> str:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return NPY_DATA_PREFIX + base64.b64encode(buf.getvalue() + data).decode()


def _chat_body(url, model) -> dict:
    return {"model": model, "logprobs": True, "top_logprobs": 4, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "which?"},
                                     {"type": "file", "file": {"file_data": url}}]}]}


@st.composite
def request_specs(draw, X: np.ndarray, model: str) -> Spec:
    kind = draw(st.sampled_from([
        "classify", "classify", "classify", "chat", "chat", "poison", "poison_chat",
        "shape", "fields", "npy_header", "random_json", "raw", "method", "path", "auth",
        "ctype", "get"]))
    json_h = {"content-type": "application/json"} | AUTH
    if kind == "classify":
        rows = draw(st.lists(st.integers(0, len(X) - 1), min_size=1, max_size=8))
        return Spec(kind, "POST", "/v1/classify", json_h,
                    _json({"clips": encode_clips(X[rows])} | draw(st.sampled_from(
                        [{}, {"model": model}, {"model": None}]))), 200, rows)
    if kind == "chat":
        row = draw(st.integers(0, len(X) - 1))
        return Spec(kind, "POST", "/v1/chat/completions", json_h,
                    _json(_chat_body(encode_npy_data_url(X[row]), model)), 200, [row])
    if kind in ("poison", "poison_chat"):
        rows = draw(st.lists(st.integers(0, len(X) - 1), min_size=1, max_size=4))
        clips = X[rows].copy()
        i, t, c = (draw(st.integers(0, s - 1)) for s in clips.shape)
        if kind == "poison_chat":
            clips, i = clips[:1], 0
        clips[i, t, c] = draw(st.sampled_from(POISON))
        body = {"clips": encode_clips(clips)} if kind == "poison" else \
            _chat_body(encode_npy_data_url(clips[0]), model)
        path = "/v1/classify" if kind == "poison" else "/v1/chat/completions"
        return Spec(kind, "POST", path, json_h, _json(body), 422)
    if kind == "shape":
        shape = draw(st.lists(huge, min_size=0, max_size=4) | json_values)
        b64 = draw(st.sampled_from(["", "AAAA", encode_clips(X[:1])["b64"]]))
        return Spec(kind, "POST", "/v1/classify", json_h,
                    _json({"clips": {"shape": shape, "dtype": "float32", "b64": b64}}))
    if kind == "fields":
        good = encode_clips(X[:2])
        key = draw(st.sampled_from(["shape", "dtype", "b64", "clips", "model"]))
        value = draw(json_values)
        body = {"clips": good} | ({"clips": value} if key == "clips" else {"model": value}
                                  if key == "model" else {"clips": good | {key: value}})
        return Spec(kind, "POST", "/v1/classify", json_h, _json(body))
    if kind == "npy_header":
        shape = tuple(draw(st.lists(huge.filter(lambda v: v >= 0), max_size=4)))
        descr = draw(st.sampled_from(["<f4", "<f8", "|u1", "|b1", "<c8", "|O", "<U3"]))
        data = draw(st.sampled_from([b"", b"\0" * 16, X[0].tobytes()]))
        return Spec(kind, "POST", "/v1/chat/completions", json_h,
                    _json(_chat_body(_npy(shape, descr, data), model)))
    if kind == "random_json":
        path = draw(st.sampled_from(["/v1/classify", "/v1/chat/completions"]))
        return Spec(kind, "POST", path, json_h, _json(draw(json_values)))
    if kind == "raw":
        body = draw(st.sampled_from([
            b'{"clips": [', b"[" * 50_000 + b"]" * 50_000, b'{"a": ' * 3000, b"\xff\xfe{}",
            b"", b"null", b"1e999999", b'{"clips": {"shape": [1e400, 1, 1], "b64": ""}}',
            b'{"clips": {"shape": [1, 100, 6], "b64": "' + b"A" * 300_000 + b'"}}']))
        body = body if draw(st.booleans()) else body + draw(st.binary(max_size=20))
        path = draw(st.sampled_from(["/v1/classify", "/v1/chat/completions"]))
        return Spec(kind, "POST", path, json_h, body)
    if kind == "method":
        method = draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]))
        path = draw(st.sampled_from(["/v1/classify", "/v1/chat/completions", "/healthz"]))
        return Spec(kind, method, path, AUTH)
    if kind == "path":
        path = "/" + draw(st.text(st.characters(codec="ascii", categories=["L", "N"],
                                                include_characters="/._-"), max_size=20))
        return Spec(kind, draw(st.sampled_from(["GET", "POST"])), path, json_h, b"{}")
    if kind == "auth":
        auth = draw(st.sampled_from(["", "Bearer", "Bearer wrong", TOKEN, "Basic eA==",
                                     f"Bearer {TOKEN}x", "Bearer " + "x" * 3000]))
        path = draw(st.sampled_from(["/v1/classify", "/v1/models", "/metrics"]))
        headers = {"content-type": "application/json"} | ({"Authorization": auth} if auth
                                                          else {})
        return Spec(kind, "POST" if path == "/v1/classify" else "GET", path, headers,
                    _json({"clips": encode_clips(X[:1])}) if path == "/v1/classify" else None,
                    401)
    if kind == "ctype":
        ctype = draw(st.sampled_from(["text/plain", "", "application/x-www-form-urlencoded",
                                      "application/json; charset=latin-1", "multipart/form"]))
        body = _json({"clips": encode_clips(X[:1])})
        return Spec(kind, "POST", "/v1/classify", AUTH | ({"content-type": ctype} if ctype
                                                          else {}), body)
    path = draw(st.sampled_from(["/healthz", "/metrics", "/v1/models"]))
    return Spec("get", "GET", path, AUTH, None, 200)


@dataclass
class Tally:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)
    dropped: list = field(default_factory=list)
    wrong: list = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values()) + len(self.dropped)


def _send(client: httpx.Client, spec: Spec, expected: np.ndarray, classes, tally: Tally) -> None:
    try:
        r = client.request(spec.method, spec.path, headers=spec.headers, content=spec.content)
    except httpx.TransportError as exc:
        tally.dropped.append((spec.kind, spec.path, repr(exc)[:200]))
        return
    tally.statuses[r.status_code] += 1
    tally.kinds[spec.kind] += 1
    problem = None
    if r.status_code >= 500 and not (r.status_code == 503 and "retry-after" in r.headers):
        problem = "5xx"
    elif spec.expect is not None and r.status_code != spec.expect:
        problem = f"expected {spec.expect}"
    elif r.status_code >= 400 and spec.method != "HEAD":
        try:
            err = r.json()["error"]
            if set(err) != {"message", "type", "code"}:
                problem = "error shape"
        except (ValueError, KeyError, TypeError):
            problem = "error shape"
    elif r.status_code == 200 and spec.rows is not None:
        body = r.json()
        if spec.kind == "classify":
            got = np.asarray(body["proba"])
        else:
            top = {t["token"]: np.exp(t["logprob"])
                   for t in body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}
            got = np.array([[top[c] for c in classes]])
        if not np.allclose(got, expected[spec.rows], atol=1e-5):
            problem = "wrong probabilities"
    if problem:
        tally.wrong.append((problem, spec.kind, spec.method, spec.path, r.status_code,
                            r.text[:300]))


def fuzz(url: str, X: np.ndarray, expected: np.ndarray, classes, model: str,
         n_requests: int) -> Tally:
    """`n_requests` generated requests to `url`, `PER_EXAMPLE` at a time, concurrently."""
    tally = Tally()
    examples = -(-n_requests // PER_EXAMPLE)
    limits = httpx.Limits(max_connections=THREADS, max_keepalive_connections=THREADS)
    with httpx.Client(base_url=url, timeout=30, limits=limits) as client, \
            ThreadPoolExecutor(THREADS) as pool:

        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(specs=st.lists(request_specs(X, model), min_size=PER_EXAMPLE,
                              max_size=PER_EXAMPLE))
        def run(specs):
            list(pool.map(lambda s: _send(client, s, expected, classes, tally), specs))

        run()
    return tally


def test_generated_requests_get_no_5xx_and_drop_no_connection(live_server, bm_models,
                                                              basicmotions):
    """On this file's one server (schemathesis below gets it next: it must be healthy)."""
    cloud = bm_models[1]
    X = basicmotions.X[:40]
    expected = cloud.predict_proba(X)
    srv = live_server
    t0 = time.monotonic()
    tally = fuzz(srv.url, X, expected, cloud.classes_, cloud.name, N_REQUESTS)
    took = time.monotonic() - t0
    good = httpx.post(srv.url + "/v1/classify", headers=AUTH,
                      json={"clips": encode_clips(X[:8])}, timeout=30)
    log = srv.log()
    report = (f"engine {ENGINE}: {tally.sent} requests in {took:.0f} s; statuses "
              f"{dict(sorted(tally.statuses.items()))}; kinds {dict(sorted(tally.kinds.items()))};"
              f" dropped {len(tally.dropped)}; wrong {len(tally.wrong)}")
    print(report)  # shown with pytest -s
    assert tally.sent >= N_REQUESTS
    assert not tally.dropped, tally.dropped[:5]
    assert not tally.wrong, tally.wrong[:5]
    assert sum(v for k, v in tally.statuses.items() if k >= 500 and k != 503) == 0
    assert tally.statuses[200] > N_REQUESTS // 5 and tally.statuses[422] > N_REQUESTS // 20
    assert good.status_code == 200
    np.testing.assert_allclose(good.json()["proba"], expected[:8], atol=1e-6)
    if ENGINE == "fastapi":  # Ray's own log lines go to its session folder
        assert "Traceback" not in log and "Exception in ASGI" not in log, log[-3000:]


@pytest.fixture(scope="module")
def live_server(bm_files):
    """One real server for this file's tests (on Ray Serve, each start costs a cluster)."""
    cfg = ServeConfig(max_body_mb=0.25, max_clips=64, max_batch=32, max_wait_ms=2)
    with ServerProcess(bm_files["cloud"], cfg, token=TOKEN, server=ENGINE,
                       start_timeout_s=600 if ENGINE == "ray" else 120) as srv:
        yield srv


@pytest.fixture(scope="module")
def live_schema(live_server):
    """The real server's own /openapi.json, with a valid example body per model endpoint."""
    from tests.test_fuzz_api import schema_with_examples

    raw = httpx.get(live_server.url + "/openapi.json", headers=AUTH, timeout=10).json()
    clip = tuple(httpx.get(live_server.url + "/healthz", timeout=10).json()["clip_shape"])
    return schema_with_examples(raw, clip, httpx.get(live_server.url + "/v1/models",
                                                     headers=AUTH).json()["data"][0]["id"],
                                SCHEMA_EXAMPLES)


@schemathesis.pytest.from_fixture("live_schema").parametrize()
def test_schemathesis_against_a_real_server(case, live_server):
    """schemathesis over HTTP to a real `serve-cloud` (the dynamic batcher's path),
    `SCHEMA_EXAMPLES` per operation: no 5xx, every answer matching the schema."""
    from tests.test_fuzz_api import CHECKS

    case.call_and_validate(base_url=live_server.url, headers=AUTH, checks=CHECKS, timeout=30)


@pytest.mark.ray
@pytest.mark.xdist_group("ray-serve")  # beside the other Ray tests (tests/conftest.py)
@pytest.mark.timeout(2400)  # a pytest run of its own inside (subprocess timeout 1800 s)
def test_fuzz_on_ray_serve():
    """This file's test against `serve-cloud --server ray`, 300 requests, and the poison burst
    and huge shapes of tests/test_isolation.py, inside a loopback-only network namespace (see
    tests/test_ray.py)."""
    from tests.netns import RAY_ENV, TEST_NICE, LoopbackNetns

    reason = LoopbackNetns.available()
    if reason:
        pytest.skip(reason)
    env = os.environ | RAY_ENV | {"PYTHONUNBUFFERED": "1", "EDGESWITCH_TEST_ENGINE": "ray",
                                  "EDGESWITCH_FUZZ_REQUESTS": "300"}
    with LoopbackNetns(nice=TEST_NICE) as ns:
        r = subprocess.run(ns.wrap([sys.executable, "-m", "pytest", "-q", "-s", "-p",
                                    "no:cacheprovider", "--durations=8", "-m", "slow and not ray",
                                    str(Path(__file__)),
                                    str(ROOT / "tests" / "test_isolation.py")]),
                           env=env, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    tail = r.stdout[-4000:]
    print(tail)
    passed = re.search(r"(\d+) passed", tail)
    said = "\n".join(ln for ln in r.stdout.splitlines() if ln.startswith(("FAILED", "ERROR")))
    assert r.returncode == 0 and passed and int(passed.group(1)) >= 3, \
        said + "\n--- end of its output ---\n" + tail + r.stderr[-2000:]
    assert "engine ray: " in tail
