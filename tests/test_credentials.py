"""Per-device credentials: a hashed device token file, the device named in the access log, the
metrics and the decision log, revocation without a restart, and no token in any log."""

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from edgeswitch.cloud.wire import encode_clips
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.serving import credentials as cr

CLIPS = np.zeros((2, 5, 3), np.float32)


class Toy:
    classes_ = ("a", "b", "c")
    name = "toy"
    clip_shape_ = (5, 3)

    def predict_proba(self, X):
        return np.full((len(X), 3), 1 / 3)


def _client(creds):
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    app = create_app(Toy(), token=creds)
    return TestClient(app)


def _post(client, token, scheme="Bearer"):
    return client.post("/v1/classify", json={"clips": encode_clips(CLIPS)},
                       headers={"Authorization": f"{scheme} {token}"})


def test_add_revoke_and_the_file_holds_only_hashes(tmp_path):
    f = tmp_path / "devices.jsonl"
    one, two = cr.add_device(f, "cam-01"), cr.add_device(f, "watch.7")
    assert len(one) >= 40 and one != two
    text = f.read_text()
    assert one not in text and two not in text and cr.digest(one) in text
    assert oct(f.stat().st_mode & 0o777) == "0o600"
    creds = cr.Credentials.from_file(f)
    assert creds.device(one) == "cam-01" and creds.device(two) == "watch.7"
    assert creds.device("nope") is None and creds.device(one + "x") is None
    with pytest.raises(EdgeSwitchError, match="already has a token"):
        cr.add_device(f, "cam-01")
    for bad in ("other", "unauthenticated", "-x", "a b", "x" * 65, ""):
        with pytest.raises(EdgeSwitchError, match="bad device name"):
            cr.add_device(f, bad)
    cr.revoke_device(f, "cam-01")
    assert cr.list_devices(f).keys() == {"watch.7"}
    with pytest.raises(EdgeSwitchError, match="no device 'cam-01'"):
        cr.revoke_device(f, "cam-01")
    cr.revoke_device(f, "watch.7")  # every device revoked: still a device file, none in it
    assert cr.Credentials.from_file(f).devices == {}


def test_a_plain_token_file_or_the_environment_is_one_device(tmp_path, monkeypatch):
    (tmp_path / "token").write_text("s3cret-word\n")
    creds = cr.resolve_credentials(str(tmp_path / "token"))
    assert creds.devices == {"default": cr.digest("s3cret-word")}
    monkeypatch.setenv("EDGESWITCH_TOKEN", "env-token")
    assert cr.resolve_credentials(None).device("env-token") == "default"
    monkeypatch.delenv("EDGESWITCH_TOKEN")
    assert cr.resolve_credentials(None) is None


@pytest.mark.parametrize("line, problem", [
    ('{"device": "a"}', "not a device entry"),
    ('{"device": "a", "sha256": "xyz"}', "64 lower-case hex"),
    ('{"device": "a b", "sha256": "' + "0" * 64 + '"}', "bad device name"),
    ('{"device": "a", "sha256": "' + "0" * 64 + '"}\n{"device": "a", "sha256": "' + "1" * 64
     + '"}', "listed twice"),
    ('{"device": "a", "sha256": "' + "0" * 64 + '"}\n{"device": "b", "sha256": "' + "0" * 64
     + '"}', "same token"),
    ("{not json", "not a device entry"),
])
def test_a_bad_device_file_names_its_line(tmp_path, line, problem):
    f = tmp_path / "devices.jsonl"
    f.write_text(cr.HEADER + "\n" + line + "\n")
    with pytest.raises(EdgeSwitchError, match=problem) as err:
        cr.Credentials.from_file(f)
    assert f"{f} line" in str(err.value)


def test_reload_on_change_keeps_the_last_good_set_on_a_bad_edit(tmp_path, caplog):
    f = tmp_path / "devices.jsonl"
    tok = cr.add_device(f, "cam-01")
    creds = cr.Credentials.from_file(f)
    t = time.monotonic() + 10
    creds.refresh(now=t - cr.POLL_S)  # looked at the file then
    new = cr.add_device(f, "cam-02")
    creds.refresh(now=t - cr.POLL_S / 2)  # within POLL_S of that look: not looked at again
    assert creds.names() == ["cam-01"]
    creds.refresh(now=t)
    assert creds.names() == ["cam-01", "cam-02"] and creds.device(new) == "cam-02"
    good = f.read_text()
    f.write_text(good + "{broken\n")
    with caplog.at_level(logging.WARNING, "edgeswitch.serving"):
        creds.refresh(now=t + 1)
    assert "keeping the 2 devices" in caplog.text and creds.device(tok) == "cam-01"
    assert tok not in caplog.text and new not in caplog.text
    # SIGHUP: re-read now, even if the poll interval has not passed
    f.write_text(good)
    cr.revoke_device(f, "cam-01")
    creds.mark_stale(signal.SIGHUP, None)
    assert creds.device(tok) is None and creds.device(new) == "cam-02"


def test_bearer_scheme_is_case_insensitive_and_the_device_is_named(tmp_path):
    f = tmp_path / "devices.jsonl"
    tok = cr.add_device(f, "cam-01")
    with _client(cr.Credentials.from_file(f)) as client:
        for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
            r = _post(client, tok, scheme)
            assert r.status_code == 200, (scheme, r.text)
            assert r.headers["x-edgeswitch-device"] == "cam-01"
        r = client.post("/v1/classify", json={"clips": encode_clips(CLIPS)},
                        headers={"Authorization": f"bearer   {tok}  "})  # 1*SP, then trimmed
        assert r.status_code == 200
        for auth in (f"Basic {tok}", tok, "Bearer", "Bearer ", f"Bearerx {tok}",
                     f"Bearer {tok}x"):
            r = client.post("/v1/classify", json={"clips": encode_clips(CLIPS)},
                            headers={"Authorization": auth})
            assert r.status_code == 401 and "x-edgeswitch-device" not in r.headers
            assert tok not in r.text
        assert client.get("/healthz").status_code == 200  # open paths name no device


def _device_counts(text: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.labels["device"], s.labels["status"]): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples if s.name == "edgeswitch_device_requests_total"}


def test_metrics_count_per_device_with_a_bounded_number_of_labels(tmp_path, monkeypatch):
    from edgeswitch.serving import middleware

    monkeypatch.setattr(middleware, "MAX_DEVICE_LABELS", 3)
    f = tmp_path / "devices.jsonl"
    tokens = {f"cam-{i}": cr.add_device(f, f"cam-{i}") for i in range(6)}
    with _client(cr.Credentials.from_file(f)) as client:
        for name, tok in tokens.items():
            assert _post(client, tok).headers["x-edgeswitch-device"] == name
        assert _post(client, "wrong").status_code == 401
        counts = _device_counts(client.get("/metrics",
                                           headers={"Authorization": "Bearer "
                                                    + tokens["cam-0"]}).text)
    assert counts == {("cam-0", "2xx"): 1, ("cam-1", "2xx"): 1, ("cam-2", "2xx"): 1,
                      ("other", "2xx"): 3, ("unauthenticated", "4xx"): 1}


def test_the_access_log_names_the_device_never_the_token(tmp_path, caplog):
    f = tmp_path / "devices.jsonl"
    tok = cr.add_device(f, "cam-01")
    with caplog.at_level(logging.INFO, "edgeswitch.access"), \
            _client(cr.Credentials.from_file(f)) as client:
        _post(client, tok)
        _post(client, "guessed-" + tok[:10])
        client.get("/healthz?x=" + tok)  # the query string is not logged
        client.get("/nope%0Aforged%20line")
    lines = [r.getMessage() for r in caplog.records if r.name == "edgeswitch.access"]
    assert lines[0].startswith("device=cam-01 method=POST path=/v1/classify status=200 ms=")
    assert lines[1].startswith("device=- method=POST path=/v1/classify status=401")
    assert lines[2].startswith("device=- method=GET path=/healthz status=200")
    assert len(lines) == 4 and "\n" not in lines[3]
    assert tok not in caplog.text and tok[:10] not in caplog.text


def test_tokens_cli_prints_the_token_once(tmp_path):
    f = str(tmp_path / "devices.jsonl")
    r = _cli("tokens", "add", "cam-01", "--file", f)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert cr.Credentials.from_file(f).device(token) == "cam-01" and token not in r.stderr
    assert _cli("tokens", "list", "--file", f).stdout.startswith("cam-01\t")
    r = _cli("tokens", "add", "cam-01", "--file", f)
    assert r.returncode == 2 and "already has a token" in r.stderr and "Traceback" not in r.stderr
    assert _cli("tokens", "revoke", "cam-01", "--file", f).returncode == 0
    r = _cli("tokens", "revoke", "cam-01", "--file", f)
    assert r.returncode == 2 and "no device 'cam-01'" in r.stderr


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeswitch", *args], capture_output=True,
                          text=True, timeout=60)


def _old_log(path):
    """A decision log as written before the device column."""
    from edgeswitch.runtime.decision_log import SCHEMA

    head, rest = SCHEMA.split("attempts INTEGER,", 1)
    db = sqlite3.connect(path)
    db.executescript(head + "attempts INTEGER\n);" + rest.split(");", 1)[1])
    db.execute("INSERT INTO meta VALUES ('classes', ?)", (json.dumps(["a", "b"]),))
    db.execute("INSERT INTO decisions (time, clip_id, grp, label, answered_by, verified, "
               "offloaded, shadow, score, edge_label, edge_proba) VALUES "
               "(1, 'old', 'g', 'a', 'edge', 1, 0, 0, 0.9, 'a', '[0.9, 0.1]')")
    db.commit()
    db.close()


def _columns(path):
    return [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(decisions)")]


def test_an_old_decision_log_gets_the_device_column_only_when_written(tmp_path):
    from edgeswitch.runtime.decision_log import Decision, DecisionLog, summary_text

    path = tmp_path / "old.sqlite"
    _old_log(path)
    assert "device" not in _columns(path)
    with DecisionLog(path) as log:  # a reader changes nothing
        assert log.frame()["device"].isna().all()
    assert "device" not in _columns(path)
    with DecisionLog(path, ("a", "b")) as log:
        log.append([Decision("new", "g", "a", "cloud", True, None, True, False, 0.1,
                             np.array([0.6, 0.4]), None, np.array([0.8, 0.2]), 0.1, 2.0, 2.5,
                             1, device="cam-01")])
        df = log.frame()
        assert list(df["clip_id"]) == ["old", "new"]
        assert df["device"].isna().tolist() == [True, False] and df["device"][1] == "cam-01"
        assert log.summary()["devices"] == {"cam-01": 1}
        assert "cloud requests by device: cam-01 1" in summary_text(log.summary())
    assert _columns(path)[-3:] == ["device", "stream", "cloud_age"]


# --- against a real server process ---

@pytest.fixture(scope="module")
def cloud_file(bm_files):
    return bm_files["cloud"]


def _wait_for(pred, timeout_s: float) -> float:
    """Seconds until pred() held (polled every 20 ms), or fail after timeout_s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.mark.slow
def test_devices_against_a_real_server_revocation_within_a_second(cloud_file, tmp_path,
                                                                   basicmotions, bm_models):
    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.config import RuntimeConfig
    from edgeswitch.runtime import HybridClassifier
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.serving.server import ServerProcess
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.switcher.routers import make_router

    f = tmp_path / "devices.jsonl"
    tokens = {name: _cli("tokens", "add", name, "--file", str(f)).stdout.strip()
              for name in ("cam-01", "cam-02")}
    assert all(len(t) >= 40 for t in tokens.values())
    body = {"clips": encode_clips(basicmotions.X[:2])}

    def status(token):
        return httpx.post(srv.url + "/v1/classify", json=body, timeout=5,
                          headers={"Authorization": f"bearer {token}"}).status_code

    edge, cloud = bm_models
    with ServerProcess(cloud_file, token_file=f, extra_args=("--log-level", "debug")) as srv:
        assert status(tokens["cam-01"]) == 200 and status(tokens["cam-02"]) == 200
        # the edge: its reply names its device, and the decision log records it
        with RemoteCloud(srv.url, cloud.classes_, RuntimeConfig(deadline_ms=5000),
                         token=tokens["cam-02"]) as remote, \
                DecisionLog(tmp_path / "log.sqlite", edge.classes_) as log:
            hybrid = HybridClassifier(edge, make_router("max_prob"), remote,
                                      OperatingPoint("offload", float("inf"), 1.0), log=log)
            result = hybrid.classify(basicmotions.X[:3], ids=["a", "b", "c"])
            assert result.verified.all() and (result.answered_by == "cloud").all()
            assert set(log.frame()["device"]) == {"cam-02"}
        # revoke cam-01 with the CLI: 401 within a second, no restart; cam-02 unaffected
        assert _cli("tokens", "revoke", "cam-01", "--file", str(f)).returncode == 0
        seen: list[int] = []  # cam-01's answers until the revocation took hold
        took = _wait_for(lambda: seen.append(status(tokens["cam-01"])) or seen[-1] == 401, 1.0)
        assert status(tokens["cam-02"]) == 200
        # a device added while the server runs is let in just as fast
        new = _cli("tokens", "add", "cam-03", "--file", str(f)).stdout.strip()
        took_add = _wait_for(lambda: status(new) == 200, 1.0)
        # SIGHUP re-reads at once
        cr.revoke_device(f, "cam-02")
        os.kill(srv.proc.pid, signal.SIGHUP)
        _wait_for(lambda: status(tokens["cam-02"]) == 401, 1.0)
        assert srv.proc.poll() is None  # SIGHUP did not end the server
        metrics = httpx.get(srv.url + "/metrics", headers={"Authorization": f"Bearer {new}"}).text
        counts = _device_counts(metrics)
        # cam-01: its first request, and any answered before the reload saw the revocation
        assert counts[("cam-01", "2xx")] == 1 + seen.count(200) and counts[("cam-02", "2xx")] >= 2
        assert counts[("unauthenticated", "4xx")] >= 2
        # a guessed token: refused, and not logged either
        assert status("guess-" + tokens["cam-02"][:12]) == 401
        time.sleep(0.2)
        log_text = srv.log()
    print(f"revoked -> 401 after {took * 1000:.0f} ms; added -> 200 after {took_add * 1000:.0f} ms")
    access = [ln for ln in log_text.splitlines() if " access device=" in ln]
    assert any("device=cam-01 method=POST path=/v1/classify status=200" in ln for ln in access)
    assert any("device=cam-02 method=POST path=/v1/classify status=200" in ln for ln in access)
    assert any("device=- method=POST path=/v1/classify status=401" in ln for ln in access)
    assert "reloaded" in log_text and "revoked ['cam-01']" in log_text
    for tok in [*tokens.values(), new]:
        assert tok not in log_text and tok[:12] not in log_text
        assert tok not in f.read_text()
