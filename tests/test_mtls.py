"""Mutual TLS: `serve-cloud --tls-ca` lets in only clients whose certificate that CA signed.
Every certificate is made here with `cryptography`: the server's own (self-signed, which the
client trusts), a client CA with a device certificate, and a second CA the server never heard
of."""

import datetime
import ipaddress
import ssl
import subprocess
import sys

import httpx
import numpy as np
import pytest

from edgeswitch.config import RuntimeConfig
from edgeswitch.errors import EdgeSwitchError

TOKEN = "mtls-token-0123456789"


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key, issuer=None, issuer_key=None, ca: bool = False, ip: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _write(d, stem: str, cert, key) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization

    c, k = d / f"{stem}.crt", d / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(c), str(k)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    server_key = _key()
    server = _write(d, "server", _cert("127.0.0.1", server_key, ca=True, ip=True), server_key)
    ca_key, other_key = _key(), _key()
    ca, other = _cert("edge fleet CA", ca_key, ca=True), _cert("another CA", other_key, ca=True)
    ca_file = _write(d, "ca", ca, ca_key)[0]
    dev_key, stranger_key = _key(), _key()
    device = _write(d, "cam-01", _cert("cam-01", dev_key, ca, ca_key), dev_key)
    stranger = _write(d, "stranger", _cert("cam-01", stranger_key, other, other_key),
                      stranger_key)
    return {"server": server, "ca": ca_file, "device": device, "stranger": stranger}


def test_client_certificate_files_are_checked_before_any_request(pki, tmp_path):
    from edgeswitch.cloud.remote import RemoteCloud, tls_context

    ctx = tls_context(pki["server"][0], pki["device"])
    assert isinstance(ctx, ssl.SSLContext)
    with pytest.raises(EdgeSwitchError, match="--tls-client-key"):
        tls_context(True, (pki["device"][0], str(tmp_path / "missing.key")))
    with pytest.raises(EdgeSwitchError, match="cannot use client certificate"):
        tls_context(True, (pki["device"][0], pki["stranger"][1]))  # key of another cert
    with pytest.raises(EdgeSwitchError, match="--tls-client-cert"):
        RemoteCloud("https://127.0.0.1:1", ("a",), client_cert=(None, pki["device"][1]))
    # the CLI's spec hands the pair to the client (classify, distill)
    from edgeswitch.cloud.spec import CloudSpec

    spec = CloudSpec(url="https://127.0.0.1:1", ca_cert=pki["server"][0],
                     client_cert=pki["device"][0], client_key=pki["device"][1])
    remote = spec.build(("a",))
    assert remote.transport.http.client_cert and isinstance(remote.transport.http.verify,
                                                            ssl.SSLContext)


def test_serve_cloud_refuses_tls_ca_without_tls(pki, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "edgeswitch", "serve-cloud", "--cloud",
                        str(tmp_path / "m.onnx"), "--tls-ca", pki["ca"]],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--tls-ca" in r.stderr and "--ssl-certfile" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_mutual_tls_lets_in_only_certificates_of_the_ca(pki, bm_files, bm_models, basicmotions):
    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.serving.server import ServerProcess

    cloud = bm_models[1]
    server_cert = pki["server"][0]
    X = basicmotions.X[:3]
    with ServerProcess(bm_files["cloud"], token=TOKEN, tls=pki["server"], tls_ca=pki["ca"],
                       client_cert=pki["device"]) as srv:
        # a good client certificate: 200, the right probabilities, its device named
        for protocol in ("native", "openai"):
            with RemoteCloud(srv.url, cloud.classes_,  # a busy machine: no deadline in the way
                             RuntimeConfig(protocol=protocol, deadline_ms=60_000),
                             token=TOKEN, model=cloud.name, verify=server_cert,
                             client_cert=pki["device"]) as remote:
                reply = remote.request(X)
            assert reply.ok, reply
            np.testing.assert_allclose(reply.proba, cloud.predict_proba(X), atol=1e-5)
            assert reply.device == "default"
        # without one, or with one from another CA: refused in the handshake; the edge says
        # why in its fallback reason (no traceback)
        for cert in (None, pki["stranger"]):
            with RemoteCloud(srv.url, cloud.classes_,
                             RuntimeConfig(retries=0, deadline_ms=60_000),
                             token=TOKEN, verify=server_cert, client_cert=cert) as remote:
                reply = remote.request(X)
            assert not reply.ok and reply.reason == "connection", reply
            assert "requires client certificates" in reply.detail, reply.detail
            assert ("not one its CA signed" if cert else "none was given") in reply.detail
            assert "Traceback" not in reply.detail
            print(f"client cert {cert and cert[0]}: {reply.reason}: {reply.detail}")
        # below httpx too: the TLS handshake itself is refused, before any HTTP
        ctx = ssl.create_default_context(cafile=server_cert)
        with pytest.raises(httpx.HTTPError):
            httpx.get(srv.url + "/healthz", verify=ctx, timeout=5)
        # /healthz with the device certificate
        assert httpx.get(srv.url + "/healthz", verify=srv.verify(), timeout=5).status_code == 200
        log = srv.log()
    assert "Traceback" not in log and TOKEN not in log
