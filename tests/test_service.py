"""The cloud server for real: a child process on loopback, reached over HTTP(S)."""

import datetime
import ipaddress
import os
import threading

import httpx
import numpy as np
import pytest

from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.cloud.wire import encode_clips, encode_npy_data_url
from edgeswitch.config import RuntimeConfig, ServeConfig
from edgeswitch.serving.server import ServerProcess
from tests.edge_run import scrape

pytestmark = pytest.mark.slow
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The same tests run against `serve-cloud --server ray` (Ray Serve): tests/test_ray.py runs this
# file inside a loopback-only network namespace with EDGESWITCH_TEST_ENGINE=ray.
ENGINE = os.environ.get("EDGESWITCH_TEST_ENGINE", "fastapi")


def _server(model, cfg=None, **kwargs) -> ServerProcess:
    return ServerProcess(model, cfg, server=ENGINE, start_timeout_s=600 if ENGINE == "ray"
                         else 60, **kwargs)


@pytest.fixture(scope="module")
def server(bm_files):
    cfg = ServeConfig(max_body_mb=0.25, max_clips=64, max_batch=32, max_wait_ms=20)
    with _server(bm_files["cloud"], cfg, token=TOKEN) as srv:
        yield srv


def _metric(url: str, name: str) -> float:
    return scrape(url, TOKEN).get(name, 0.0)


def test_auth_refuses_before_anything_runs(server, basicmotions, bm_models):
    body = {"clips": encode_clips(basicmotions.X[:2])}
    runs = _metric(server.url, "edgeswitch_batch_size_count")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = httpx.post(server.url + "/v1/classify", json=body, headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"]["message"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert _metric(server.url, "edgeswitch_batch_size_count") == runs  # no model run
    r = httpx.post(server.url + "/v1/classify", json=body, headers=AUTH)
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["proba"], bm_models[1].predict_proba(basicmotions.X[:2]),
                               atol=1e-5)
    assert httpx.get(server.url + "/healthz").status_code == 200  # open for load balancers
    assert httpx.get(server.url + "/metrics").status_code == 401


def _bad_requests(X):
    nan = X[:1].copy()
    nan[0, 0, 0] = np.nan
    good = encode_clips(X[:1])
    big = {"clips": encode_clips(np.zeros((120, *X.shape[1:]), np.float32))}  # > 0.25 MB
    return [
        ("bad base64", {"json": {"clips": good | {"b64": "%%%"}}}, 400, "base64"),
        ("NaN", {"json": {"clips": encode_clips(nan)}}, 422, "NaN"),
        ("wrong shape", {"json": {"clips": encode_clips(X[:1, :10])}}, 422, "(T, C)"),
        ("wrong dtype", {"json": {"clips": good | {"dtype": "int8"}}}, 422, "float32"),
        ("oversized", {"json": big}, 413, "exceeds"),
        ("too many clips", {"json": {"clips": good | {"shape": [65, *X.shape[1:]]}}}, 413,
         "at most 64"),
        ("content type", {"content": b"{}", "headers": {"content-type": "text/plain"}}, 415,
         "application/json"),
        ("malformed JSON", {"content": b'{"clips": [', "headers":
                            {"content-type": "application/json"}}, 400, "not valid JSON"),
        ("missing field", {"json": {"clip": good}}, 422, "clips"),
        ("unknown model", {"json": {"clips": good, "model": "gpt-9"}}, 404, "gpt-9"),
    ]


def test_bad_payloads_get_4xx_with_a_message(server, basicmotions):
    for name, kwargs, status, words in _bad_requests(basicmotions.X):
        headers = AUTH | kwargs.pop("headers", {})
        r = httpx.post(server.url + "/v1/classify", headers=headers, **kwargs)
        assert r.status_code == status, (name, r.text)
        assert words in r.json()["error"]["message"], (name, r.text)


def test_oversized_chunked_upload_without_length_is_refused(server, basicmotions):
    def chunks():
        for _ in range(64):
            yield b" " * 8192  # 512 KiB in all, no Content-Length header
    r = httpx.post(server.url + "/v1/classify", content=chunks(),
                   headers=AUTH | {"content-type": "application/json"})
    assert r.status_code == 413


def test_burst_of_bad_requests_leaves_the_server_healthy(server, basicmotions, bm_models):
    X = basicmotions.X
    bad = _bad_requests(X) * 5

    def send(kwargs):
        kwargs = dict(kwargs)
        httpx.post(server.url + "/v1/classify", headers=AUTH | kwargs.pop("headers", {}),
                   timeout=60, **kwargs)  # a busy machine (Ray Serve) may take seconds

    threads = [threading.Thread(target=send, args=(kw,)) for _, kw, _, _ in bad]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    with RemoteCloud(server.url, bm_models[1].classes_, RuntimeConfig(deadline_ms=60_000),
                     token=TOKEN) as cloud:  # its answers, not their latency, are under test
        for i in range(0, 40, 8):
            reply = cloud.request(X[i : i + 8])
            assert reply.ok, reply
            np.testing.assert_allclose(reply.proba, bm_models[1].predict_proba(X[i : i + 8]),
                                       atol=1e-5)
    assert _metric(server.url, "edgeswitch_errors_total") >= len(bad)


def test_concurrent_requests_are_batched(server, basicmotions):
    before_runs = _metric(server.url, "edgeswitch_batch_size_count")
    before_clips = _metric(server.url, "edgeswitch_batch_size_sum")
    classes = tuple(httpx.get(server.url + "/healthz").json()["classes"])
    replies = []
    with RemoteCloud(server.url, classes, RuntimeConfig(deadline_ms=5000), token=TOKEN) as c:
        threads = [threading.Thread(target=lambda i=i: replies.append(
            c.request(basicmotions.X[i : i + 1]))) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert len(replies) == 16 and all(r.ok for r in replies)
    runs = _metric(server.url, "edgeswitch_batch_size_count") - before_runs
    clips = _metric(server.url, "edgeswitch_batch_size_sum") - before_clips
    assert clips == 16 and runs < 16  # several requests shared a model run
    text = httpx.get(server.url + "/metrics", headers=AUTH).text
    assert 'edgeswitch_requests_total{endpoint="/v1/classify",status="200"}' in text
    assert "edgeswitch_request_latency_seconds_bucket" in text


def test_openai_protocol_with_the_official_client(server, basicmotions, bm_models):
    import openai

    cloud = bm_models[1]
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=TOKEN, max_retries=0)
    assert [m.id for m in client.models.list().data] == [cloud.name]
    x = basicmotions.X[3]
    reply = client.chat.completions.create(
        model=cloud.name, logprobs=True, top_logprobs=len(cloud.classes_),
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Which activity?"},
            {"type": "file", "file": {"filename": "clip.npy",
                                      "file_data": encode_npy_data_url(x)}}]}])
    expected = cloud.predict_proba(x[None])[0]
    assert reply.choices[0].message.content == cloud.classes_[int(expected.argmax())]
    top = {t.token: np.exp(t.logprob) for t in reply.choices[0].logprobs.content[0].top_logprobs}
    np.testing.assert_allclose([top[c] for c in cloud.classes_], expected, atol=1e-5)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user",
                                                                  "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong",
                      max_retries=0).models.list()
    # the edge runtime on the same protocol
    with RemoteCloud(server.url, cloud.classes_,  # the answer is under test, not its latency
                     RuntimeConfig(protocol="openai", deadline_ms=60_000),
                     token=TOKEN, model=cloud.name) as remote:
        reply = remote.request(basicmotions.X[:6])
    assert reply.ok
    np.testing.assert_allclose(reply.proba, cloud.predict_proba(basicmotions.X[:6]), atol=1e-5)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def test_tls_with_a_self_signed_certificate(bm_files, bm_models, basicmotions, tmp_path):
    cert, key = _self_signed(tmp_path)
    cloud = bm_models[1]
    with _server(bm_files["cloud"], token=TOKEN, tls=(cert, key)) as srv:
        assert srv.url.startswith("https://")
        for protocol in ("native", "openai"):
            # a deadline no busy machine misses: the test is about TLS, not latency
            with RemoteCloud(srv.url, cloud.classes_,
                             RuntimeConfig(protocol=protocol, deadline_ms=60_000),
                             token=TOKEN, model=cloud.name, verify=cert) as remote:
                reply = remote.request(basicmotions.X[:4])
            assert reply.ok, reply
            np.testing.assert_allclose(reply.proba, cloud.predict_proba(basicmotions.X[:4]),
                                       atol=1e-5)
        with RemoteCloud(srv.url, cloud.classes_, RuntimeConfig(retries=0, deadline_ms=60_000),
                         token=TOKEN) as untrusting:  # system CAs do not know this cert
            reply = untrusting.request(basicmotions.X[:1])
        assert reply.reason == "connection" and "CERTIFICATE" in reply.detail.upper()
        plain = srv.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):
            httpx.get(plain + "/healthz", timeout=2)
