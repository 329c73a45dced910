"""schemathesis drives the app's own OpenAPI schema in process (ASGI): generated requests,
valid and invalid, to every endpoint, with the token, without it, and on an app with no auth.
No response may be a 5xx, and every response must match the schema (the error shape
included: 4XX and 5XX are documented as `{"error": {"message", "type", "code"}}`)."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from edgeswitch.cloud.wire import encode_clips, encode_npy_data_url
from edgeswitch.config import ServeConfig
from edgeswitch.serving.app import create_app
from edgeswitch.serving.inference import run_model
from tests.test_app import Toy

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
ENDPOINTS = ("/v1/classify", "/v1/chat/completions", "/v1/models", "/healthz", "/metrics")


async def runner(X):
    """The model run in a thread, as Ray Serve's ingress runs it (a `runner`): schemathesis
    runs the app's lifespan around every call, and a batcher stopped once stays stopped. The
    batcher path is fuzzed on a real server (tests/test_fuzz_server.py)."""
    return await asyncio.to_thread(run_model, Toy(), X, 3)


CFG = ServeConfig(max_body_mb=0.25, max_clips=64)
APP = create_app(Toy(), CFG, token=TOKEN, runner=runner)
OPEN_APP = create_app(Toy(), CFG, runner=runner)


def schema_with_examples(raw: dict, clip_shape: tuple[int, int], model: str,
                         max_examples: int):
    """A schema plus one valid body per model endpoint as its example (schemathesis sends
    explicit examples first): generation alone rarely hits base64 that fits its shape."""
    raw = copy.deepcopy(raw)
    X = np.random.default_rng(0).normal(size=(2, *clip_shape)).astype(np.float32)
    bodies = raw["components"]["schemas"]
    bodies["ClassifyRequest"]["example"] = {"clips": encode_clips(X)}
    bodies["ChatRequest"]["example"] = {"model": model, "logprobs": True, "top_logprobs": 3,
                                        "messages": [{"role": "user", "content": [
                                            {"type": "file", "file": {
                                                "file_data": encode_npy_data_url(X[0])}}]}]}
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.config.generation.update(modes=list(GenerationMode), max_examples=max_examples)
    return loaded


def with_examples(app, max_examples: int):
    loaded = schema_with_examples(app.openapi(), Toy.clip_shape_, Toy.name, max_examples)
    loaded.app = app  # calls go to the ASGI app in process
    return loaded


schema = with_examples(APP, 60)
open_schema = with_examples(OPEN_APP, 30)
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck))


def test_the_schema_covers_every_endpoint():
    paths = APP.openapi()["paths"]
    assert sorted(paths) == sorted(ENDPOINTS)
    clips = APP.openapi()["components"]["schemas"]["Clips"]
    assert clips["required"] == ["shape", "b64"] and clips["properties"]["shape"]["maxItems"] == 3
    for path, ops in paths.items():
        for op in ops.values():
            assert {"4XX", "5XX"} <= set(op["responses"]), path  # our error shape, documented
            assert "422" not in op["responses"], path  # not FastAPI's {"detail": ...}


@schema.parametrize()
@FUZZ
def test_generated_requests_with_the_token(case):
    case.call_and_validate(headers=AUTH, checks=CHECKS)


@schema.parametrize()
@settings(FUZZ, max_examples=15)
def test_generated_requests_without_the_token(case):
    """Every path but /healthz is a 401 in the documented shape, whatever the body."""
    case.headers = {k: v for k, v in (case.headers or {}).items()
                    if k.lower() != "authorization"}
    response = case.call_and_validate(checks=CHECKS)
    if case.path != "/healthz":
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"


@open_schema.parametrize()
@FUZZ
def test_generated_requests_to_an_app_without_auth(case):
    case.call_and_validate(checks=CHECKS)


@pytest.mark.parametrize("path, method", [("/nowhere", "GET"), ("/v1/classify", "GET"),
                                          ("/healthz", "POST"), ("/v1/models", "DELETE")])
def test_unknown_routes_and_methods_answer_in_the_error_shape(path, method):
    from fastapi.testclient import TestClient

    with TestClient(OPEN_APP) as client:
        r = client.request(method, path, headers={"content-type": "application/json"})
    assert r.status_code in (404, 405) and set(r.json()) == {"error"}
    assert set(r.json()["error"]) == {"message", "type", "code"}
    if r.status_code == 405:
        assert r.headers["allow"]


@pytest.mark.parametrize("name, body, status, code", [
    ("broken JSON", b'{"clips": [', 400, "bad_json"),
    ("deeply nested JSON (RecursionError)", b"[" * 100_000 + b"]" * 100_000, 400, "bad_json"),
    ("deeply nested object", b'{"a": ' * 20_000 + b"1" + b"}" * 20_000, 400, "bad_json"),
    ("not UTF-8", b'{"clips": "\xff\xfe"}', 400, "bad_json"),
    ("a number", b"1e999999", 422, "bad_request"),
    ("wrong types", b'{"clips": {"shape": "x", "b64": 5}}', 422, "bad_request"),
    ("a float shape", b'{"clips": {"shape": [1e400, 5, 3], "b64": ""}}', 422, "bad_request"),
])
def test_the_frameworks_own_errors_answer_in_our_shape(name, body, status, code):
    """Regression: a deeply nested body answered FastAPI's `{"detail": ...}`, not our shape."""
    from fastapi.testclient import TestClient

    with TestClient(OPEN_APP) as client:
        r = client.post("/v1/classify", content=body,
                        headers={"content-type": "application/json"})
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (name, r.text)
        assert set(r.json()) == {"error"}
        ok = client.post("/v1/classify", json={"clips": encode_clips(np.zeros((1, 5, 3)))})
        assert ok.status_code == 200


def test_an_unexpected_exception_is_a_500_in_our_shape_and_counted():
    """The catch-all: nothing else answers a bug, and the request is counted as internal."""
    from fastapi.testclient import TestClient

    from edgeswitch.serving.state import state_of

    app = create_app(Toy(), CFG, runner=runner)

    async def boom():
        raise KeyError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500 and r.json() == {"error": {
            "message": "internal server error", "type": "server_error", "code": "internal_error"}}
        assert client.get("/healthz").status_code == 200
    errors = {s.labels["kind"]: s.value for s in state_of(app).metrics.errors.collect()[0].samples
              if s.name.endswith("_total")}
    assert errors.get("internal") == 1
