"""One request never fails because of another: a clip the model cannot digest fails its own
request (422 naming it), never the dynamic batch it shared; declared sizes are refused before
anything is allocated, and the keep-alive connection stays usable."""

from __future__ import annotations

import asyncio
import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from edgeswitch.cloud.wire import NPY_DATA_PREFIX, encode_clips, encode_npy_data_url
from edgeswitch.config import ServeConfig
from edgeswitch.data.clips import DEFAULT_INPUT_BOUND, check_clip_range, input_bound
from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput
from tests.test_app import Toy

# the slow tests below run against `serve-cloud --server ray` too (tests/test_fuzz_server.py
# runs them inside a loopback-only namespace with EDGESWITCH_TEST_ENGINE=ray)
ENGINE = os.environ.get("EDGESWITCH_TEST_ENGINE", "fastapi")
POISON = 7.0  # a clip whose first value is this is one the backends below cannot digest


class NanRows(Toy):
    """Returns NaN rows for poison clips, probabilities for the others."""

    name = "nan-rows"

    def predict_proba(self, X):
        p = super().predict_proba(X)
        p[X[:, 0, 0] == POISON] = np.nan
        return p


class Refuses(NanRows):
    """Refuses a whole run holding a poison clip, as our ONNX models do (ModelOutput)."""

    name = "refuses"

    def predict_proba(self, X):
        p = super().predict_proba(X)
        return ModelOutput(p, np.zeros((len(X), 1))).proba


def _clips(n: int, poison: set[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        x = rng.normal(size=(1, 5, 3)).astype(np.float32)
        if i in poison:
            x[0, 0, 0] = POISON
        out.append(x)
    return out


@pytest.mark.parametrize("backend", [NanRows, Refuses])
def test_a_poison_clip_fails_its_own_request_not_the_shared_batch(backend):
    """20 concurrent one-clip requests share dynamic batches; 2 hold a clip the model cannot
    digest: those 2 get 422 naming the clip, the 18 others their probabilities."""
    from edgeswitch.serving.app import create_app
    from edgeswitch.serving.state import state_of

    model = backend()
    app = create_app(model, ServeConfig(max_batch=32, max_wait_ms=50))
    clips = _clips(20, poison={3, 13})

    async def burst():
        state = state_of(app)
        await state.batcher.start()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                return await asyncio.gather(*[
                    c.post("/v1/classify", json={"clips": encode_clips(x)}) for x in clips])
        finally:
            await state.batcher.stop()

    replies = asyncio.run(burst())
    runs = state_of(app).metrics.batch_size.collect()[0].samples
    count = next(s.value for s in runs if s.name.endswith("_count"))
    assert count < 20  # the requests did share model runs
    for i, (x, r) in enumerate(zip(clips, replies, strict=True)):
        if i in (3, 13):
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "non_finite_output" and "clip index 0" in err["message"]
        else:
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(r.json()["proba"], Toy().predict_proba(x), atol=1e-6)


class RayLikeBatch:
    """A runner shaped like Ray Serve's ingress (scale.ray_serve.CloudService): concurrent
    calls are gathered, `run_model` runs once on their concatenation, each gets its rows."""

    def __init__(self, model) -> None:
        self.model, self.items, self.runs = model, [], 0

    async def __call__(self, X):
        from edgeswitch.serving.inference import run_model

        fut = asyncio.get_running_loop().create_future()
        self.items.append((X, fut))
        if len(self.items) == 1:
            await asyncio.sleep(0.05)  # let the burst arrive, as @serve.batch waits
            items, self.items = self.items, []
            self.runs += 1
            proba = await asyncio.to_thread(run_model, self.model, np.concatenate(
                [x for x, _ in items]), len(self.model.classes_))
            start = 0
            for x, f in items:
                f.set_result(proba[start : start + len(x)])
                start += len(x)
        return await fut


@pytest.mark.parametrize("backend", [NanRows, Refuses])
def test_the_ray_serve_path_isolates_a_poison_clip_too(backend):
    from edgeswitch.serving.app import create_app

    runner = RayLikeBatch(backend())
    app = create_app(backend(), runner=runner)
    clips = _clips(10, poison={4})

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await asyncio.gather(*[
                c.post("/v1/classify", json={"clips": encode_clips(x)}) for x in clips])

    replies = asyncio.run(burst())
    assert runner.runs < 10
    assert [r.status_code for r in replies] == [422 if i == 4 else 200 for i in range(10)]
    assert replies[4].json()["error"]["code"] == "non_finite_output"


@pytest.mark.parametrize("value", [3e38, -3e38, 1e30])
def test_a_clip_outside_the_input_range_is_a_422_naming_clip_and_value(value):
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    X = np.zeros((4, 5, 3), np.float32)
    X[2, 1, 2] = value
    with TestClient(create_app(Toy())) as client:  # Toy records no range: the default
        r = client.post("/v1/classify", json={"clips": encode_clips(X)})
        assert r.status_code == 422
        err = r.json()["error"]
        assert err["code"] == "out_of_range" and "clip index 2" in err["message"]
        assert f"{value:.6g}" in err["message"] and f"{DEFAULT_INPUT_BOUND:.6g}" in err["message"]
        chat = client.post("/v1/chat/completions", json={"model": "toy", "messages": [
            {"role": "user", "content": [{"type": "file",
                                          "file": {"file_data": encode_npy_data_url(X[2])}}]}]})
        assert chat.status_code == 422 and chat.json()["error"]["code"] == "out_of_range"
        assert client.post("/v1/classify", json={"clips": encode_clips(X[:2])}).status_code == 200


def test_the_range_check_names_the_first_clip_outside():
    X = np.zeros((5, 4, 2), np.float32)
    X[3, 0, 1], X[4, 2, 0] = -60.0, 99.0
    with pytest.raises(DataError, match=r"clip index 3 holds -60, .*\|x\| <= 50 \(2 clip"):
        check_clip_range(X, 50.0, "clips")
    assert check_clip_range(X, 99.0) is X  # the bound itself is inside
    assert input_bound(X) == 990.0 and input_bound(np.zeros((1, 2, 2))) == 1.0


def test_a_trained_model_records_its_input_range_and_an_old_one_gets_the_default(bm_models,
                                                                                  basicmotions):
    import onnx

    from edgeswitch.models import OnnxClassifier

    cloud = bm_models[1]
    bound = cloud.input_bound_
    assert bound == pytest.approx(input_bound(basicmotions.X), rel=0.5)  # trained on a split
    assert float(np.abs(basicmotions.X).max()) < bound < 1e4
    proto = onnx.load_from_string(cloud.onnx_bytes_)
    kept = [p for p in proto.metadata_props if p.key != "edgeswitch.input_bound"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    old = OnnxClassifier(proto.SerializeToString())  # exported before the range was recorded
    assert old.input_bound_ == DEFAULT_INPUT_BOUND


def _npy_header_only(shape, descr="<f4") -> str:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return NPY_DATA_PREFIX + base64.b64encode(buf.getvalue()).decode()


def _chat(url: str, model: str = "toy") -> dict:
    return {"model": model, "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": url}}]}]}


class AnyShape(Toy):
    """A backend that takes any (T, C): only the size limits stand between a header and RAM."""

    clip_shape_ = None


@pytest.mark.parametrize("model, shape, status", [
    (Toy, [0, 9223372036854775808, 6], 422), (Toy, [0, 10**30, 6], 422),
    (Toy, [0, 2**40, 2**40], 422), (Toy, [2000, 5, 3], 413),
    (AnyShape, [0, 9223372036854775808, 6], 422), (AnyShape, [1, 10**30, 6], 413),
    (AnyShape, [3, 2**40, 2**40], 413), (AnyShape, [1, 0, 6], 422)])
def test_huge_declared_shapes_are_refused_before_allocation(model, shape, status):
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    with TestClient(create_app(model())) as client:
        r = client.post("/v1/classify", json={"clips": {"shape": shape, "b64": ""}})
        assert r.status_code == status, r.text
        assert set(r.json()["error"]) == {"message", "type", "code"}


@pytest.mark.parametrize("model, shape, status", [
    (Toy, (100000000000, 6), 422), (Toy, (1, 10**12, 3), 422), (Toy, (2, 5, 3), 422),
    (AnyShape, (100000000000, 6), 413), (AnyShape, (1, 2**40, 2**40), 413)])
def test_npy_headers_claiming_huge_shapes_are_refused_before_allocation(model, shape, status):
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    with TestClient(create_app(model())) as client:
        r = client.post("/v1/chat/completions", json=_chat(_npy_header_only(shape)))
        assert r.status_code == status, r.text
        assert set(r.json()["error"]) == {"message", "type", "code"}


def test_npy_with_fewer_data_bytes_than_its_header_claims_is_a_400():
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    with TestClient(create_app(Toy())) as client:
        r = client.post("/v1/chat/completions", json=_chat(_npy_header_only((5, 3))))
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_npy"


def _local_port(r: httpx.Response) -> int:
    return r.extensions["network_stream"].get_extra_info("client_addr")[1]


@pytest.fixture(scope="module")
def real_server(bm_files):
    """One real `serve-cloud` for the two tests below (on Ray Serve each start is a cluster):
    1 MB bodies, dynamic batches of up to 32 clips gathered for 5 ms."""
    from edgeswitch.serving.server import ServerProcess

    with ServerProcess(bm_files["cloud"], ServeConfig(max_body_mb=1, max_batch=32,
                                                      max_wait_ms=5),
                       server=ENGINE, start_timeout_s=600) as srv:
        yield srv


@pytest.mark.slow
def test_huge_shapes_keep_the_keep_alive_connection_usable(real_server, bm_models,
                                                           basicmotions):
    """On a real server: each refusal is a 413/422 in our shape, never a 500, and the next
    request goes over the same connection (no reset) and gets the model's probabilities."""
    cloud, X, srv = bm_models[1], basicmotions.X[:2], real_server
    bad_shapes = ([0, 9223372036854775808, 6], [0, 10**30, 6], [0, 2**40, 2**40])
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        ports = set()
        for shape in bad_shapes:
            r = client.post("/v1/classify", json={"clips": {"shape": shape, "b64": ""}})
            assert r.status_code in (413, 422) and set(r.json()["error"]) == {
                "message", "type", "code"}, r.text
            ports.add(_local_port(r))
        r = client.post("/v1/chat/completions", json=_chat(_npy_header_only((100000000000, 6)),
                                                                cloud.name))
        assert r.status_code == 422 and "got [1, 100000000000, 6]" in r.json()["error"]["message"]
        deep = client.post("/v1/classify", content="[" * 100_000 + "]" * 100_000,
                           headers={"content-type": "application/json"})
        assert deep.status_code == 400 and deep.json()["error"]["code"] == "bad_json"
        good = client.post("/v1/classify", json={"clips": encode_clips(X)})
        assert good.status_code == 200
        ports |= {_local_port(r), _local_port(deep), _local_port(good)}
        assert len(ports) == 1  # one keep-alive connection throughout
        np.testing.assert_allclose(good.json()["proba"], cloud.predict_proba(X), atol=1e-6)
        assert ENGINE == "ray" or "Traceback" not in srv.log()


@pytest.mark.slow
def test_poison_burst_fails_only_the_poison_requests(real_server, bm_models, basicmotions):
    """A burst of 200 concurrent one-clip requests to a real server, every 10th holding 3e38
    (or -3e38, 1e30): the 180 clean ones 200 with the in-process model's probabilities, the
    20 bad ones 422 naming their clip."""
    from tests.edge_run import scrape

    cloud, srv = bm_models[1], real_server
    X = np.concatenate([basicmotions.X] * 4)[:200].copy()
    poison = [3e38, -3e38, 1e30]
    bad = {i: poison[(i // 10) % 3] for i in range(0, 200, 10)}
    for i, v in bad.items():
        X[i, 5, i % X.shape[2]] = v
    expected = cloud.predict_proba(np.delete(X, list(bad), axis=0))
    batches = scrape(srv.url).get("edgeswitch_batch_size_count", 0)  # the module's server
    # a connection per request: a thread starved for the server's 5 s keep-alive (a loaded
    # machine) would send on one the server has just closed, and read a reset
    with httpx.Client(base_url=srv.url, timeout=30,
                      limits=httpx.Limits(max_connections=200,
                                          max_keepalive_connections=0)) as client:
        def send(i):
            return client.post("/v1/classify", json={"clips": encode_clips(X[i : i + 1])})

        with ThreadPoolExecutor(64) as pool:
            replies = list(pool.map(send, range(200)))
    batches = scrape(srv.url).get("edgeswitch_batch_size_count", 200) - batches
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) == 180 and statuses.count(422) == 20, statuses
    for i, v in bad.items():
        err = replies[i].json()["error"]
        assert err["code"] == "out_of_range" and f"{v:.6g}" in err["message"], err
        assert "clip index 0" in err["message"]
    got = np.array([replies[i].json()["proba"][0] for i in range(200) if i not in bad])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert batches < 180  # batches were shared
