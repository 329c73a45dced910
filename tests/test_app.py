"""The FastAPI app in process (fastapi's TestClient): what needs no real server."""

import numpy as np
import pytest

from edgeswitch.cloud.wire import encode_clips


class Broken:
    """A backend that returns one row too many: the rows no longer match the clips."""

    classes_ = ("a", "b")
    name = "broken"
    clip_shape_ = (5, 3)

    def predict_proba(self, X):
        return np.full((len(X) + 1, 2), 0.5)


@pytest.mark.parametrize("max_batch", [1, 32])  # thread pool path and batcher path
def test_a_backend_with_the_wrong_shape_is_a_500_not_an_answer(max_batch):
    from fastapi.testclient import TestClient

    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.app import create_app

    app = create_app(Broken(), ServeConfig(max_batch=max_batch))
    with TestClient(app) as client:
        r = client.post("/v1/classify", json={"clips": encode_clips(np.zeros((3, 5, 3),
                                                                            np.float32))})
    assert r.status_code == 500 and r.json()["error"]["code"] == "backend_error"


class Toy:
    """A backend of three classes whose answer depends on the clip, so rows are checkable."""

    classes_ = ("a", "b", "c")
    name = "toy"
    clip_shape_ = (5, 3)

    def predict_proba(self, X):
        s = np.abs(X.reshape(len(X), -1)).sum(1)
        p = np.stack([s + 1, np.ones_like(s), np.full_like(s, 2.0)], 1)
        return p / p.sum(1, keepdims=True)


def _post(client, clips=None, **headers):
    clips = np.zeros((2, 5, 3), np.float32) if clips is None else clips
    return client.post("/v1/classify", json={"clips": encode_clips(clips)}, headers=headers)


def _errors(client, token=None) -> dict[str, float]:
    """edgeswitch_errors_total by kind, from the app's own /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    text = client.get("/metrics", headers=headers).text
    return {s.labels["kind"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "edgeswitch_errors_total"}


def test_every_route_and_handler_is_registered_once():
    from fastapi.exceptions import RequestValidationError

    from edgeswitch.cloud.wire import WireError
    from edgeswitch.serving import errors
    from edgeswitch.serving.app import API_ROUTERS, ENDPOINTS, create_app

    expected = [("/healthz", "GET"), ("/metrics", "GET"), ("/v1/chat/completions", "POST"),
                ("/v1/classify", "POST"), ("/v1/models", "GET")]
    ours = [(r.path, m) for router in API_ROUTERS for r in router.routes for m in r.methods]
    assert sorted(ours) == expected  # each route in exactly one module, once
    assert ENDPOINTS == {path for path, _ in expected}  # the metrics' endpoint labels
    app = create_app(Toy(), token="t")
    served = app.openapi()["paths"]
    assert sorted((p, m.upper()) for p in served for m in served[p]) == expected
    assert app.exception_handlers[WireError] is errors.wire_error
    assert app.exception_handlers[RequestValidationError] is errors.validation_error
    assert [m.cls.__name__ for m in app.user_middleware] == [  # outermost first
        "CatchAll", "RequestMetrics", "AccessLog", "BearerAuth", "JsonContentType", "Admission",
        "BodyLimit"]
    assert "BearerAuth" not in [m.cls.__name__ for m in create_app(Toy()).user_middleware]


def test_the_middleware_refuses_in_order_and_counts_every_refusal():
    """Auth before the content type, the content type before the size: an unauthenticated
    request is a 401 whatever its body, and nothing refused reaches the model."""
    from fastapi.testclient import TestClient

    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.app import create_app

    big = np.zeros((3000, 5, 3), np.float32)  # ~240 kB > 0.1 MB
    app = create_app(Toy(), ServeConfig(max_body_mb=0.1), token="t")
    with TestClient(app) as client:
        r = client.post("/v1/classify", content=b"x" * 200_000,
                        headers={"content-type": "text/plain"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.post("/v1/classify", content=b"x" * 200_000,
                        headers={"content-type": "text/plain", "Authorization": "Bearer t"})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        assert _post(client, big, Authorization="Bearer t").status_code == 413
        chunked = client.post("/v1/classify", content=[b" " * 8192] * 16,  # no Content-Length
                              headers={"content-type": "application/json",
                                       "Authorization": "Bearer t"})
        assert chunked.status_code == 413 and "exceeds" in chunked.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200  # open
        assert _post(client, Authorization="Bearer t").status_code == 200
        assert _errors(client, "t") == {"unauthorized": 1, "unsupported_media_type": 1,
                                        "too_large": 2}
        text = client.get("/metrics", headers={"Authorization": "Bearer t"}).text
    assert 'edgeswitch_requests_total{endpoint="/v1/classify",status="401"} 1.0' in text
    assert 'edgeswitch_requests_total{endpoint="/v1/classify",status="413"} 2.0' in text
    assert "edgeswitch_batch_size_count 1.0" in text  # only the accepted request ran


@pytest.mark.parametrize("spec, status, code", [
    ("http500", 500, "injected"), ("malformed", 200, None), ("wrong_classes", 200, None),
    ("sleep:0.01", 200, None)])
def test_each_injected_fault_answers_as_its_kind_says(spec, status, code):
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import Fault, create_app

    with TestClient(create_app(Toy(), faults=(Fault.parse(spec),))) as client:
        r = _post(client)
        assert r.status_code == status
        kind = spec.split(":")[0]
        assert _errors(client) == {f"injected_{kind}": 1}
    if code is not None:
        assert r.json()["error"]["code"] == code
    elif kind == "malformed":
        with pytest.raises(ValueError):
            r.json()
    else:
        assert len(r.json()["proba"][0]) == (2 if kind == "wrong_classes" else 3)


def test_a_fault_rate_hits_a_seeded_share_of_requests():
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import Fault, create_app

    def statuses(seed):
        app = create_app(Toy(), faults=(Fault.parse("http500@0.5"),), seed=seed)
        with TestClient(app) as client:
            return [_post(client).status_code for _ in range(40)]

    first = statuses(1)
    assert first == statuses(1) and first != statuses(2)  # repeatable, and the seed matters
    assert 8 <= first.count(500) <= 32 and set(first) == {200, 500}


def test_a_runner_hook_replaces_the_batcher_and_is_checked_too():
    """Ray Serve's ingress: the app runs the model through `runner`, still checking shapes."""
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app
    from edgeswitch.serving.state import state_of

    calls = []

    async def runner(X):
        calls.append(len(X))
        return Toy().predict_proba(X)

    async def short(X):
        return np.full((len(X), 2), 0.5)  # a class missing

    app = create_app(Toy(), runner=runner, model_id="served")
    assert state_of(app).batcher is None
    X = np.random.default_rng(0).normal(size=(3, 5, 3)).astype(np.float32)
    with TestClient(app) as client:
        r = _post(client, X)
    assert calls == [3] and r.json()["model"] == "served"
    np.testing.assert_allclose(r.json()["proba"], Toy().predict_proba(X), atol=1e-6)
    with TestClient(create_app(Toy(), runner=short)) as client:
        r = _post(client)
    assert r.status_code == 500 and r.json()["error"]["code"] == "backend_error"


def test_apps_do_not_share_state():
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    one, two = create_app(Toy(), model_id="one"), create_app(Toy(), model_id="two")
    with TestClient(one) as a, TestClient(two) as b:
        assert a.get("/healthz").json()["model"] == "one"
        assert b.get("/healthz").json()["model"] == "two"
        a.post("/v1/classify", json={"clip": 1})
        assert _errors(a) == {"bad_request": 1} and _errors(b) == {}
