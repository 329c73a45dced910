"""`edgeswitch dashboard`'s API (FastAPI test client): its figures equal what the decision
log's own reader says, it waits for a log that does not exist yet, reads the drift table and
the watch events when there are any, never changes the file, refuses a database that is not a
log, and asks for a bearer token when given credentials (the CLI requires one off loopback).
The page in a real browser: tests/test_dashboard_browser.py."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient

from edgeswitch.errors import DataError
from edgeswitch.runtime.decision_log import Decision, DecisionLog
from edgeswitch.serving.credentials import Credentials
from edgeswitch.serving.dashboard.app import STATIC, create_dashboard
from edgeswitch.serving.dashboard.view import LogView
from tests.deployed import run_cli

CLASSES = ("walk", "run", "fall")


def _decisions(n: int, seed: int = 0, t0: float = 1_000.0) -> list[Decision]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        edge = rng.dirichlet(np.ones(3))
        offloaded, shadow = bool(rng.random() < 0.4), False
        shadow = not offloaded and bool(rng.random() < 0.1)
        asked = offloaded or shadow
        failed = asked and rng.random() < 0.2
        cloud = None if not asked or failed else rng.dirichlet(np.ones(3))
        out.append(Decision(
            clip_id=f"c{i:04d}", group="s1", label=CLASSES[int(np.argmax(
                cloud if cloud is not None and offloaded else edge))],
            answered_by="cloud" if cloud is not None and offloaded else "edge",
            verified=not failed, fallback_reason="timeout" if failed else None,
            offloaded=offloaded, shadow=shadow, score=float(rng.random()), edge_proba=edge,
            edge_embedding=None, cloud_proba=cloud, edge_ms=float(rng.uniform(1, 3)),
            cloud_ms=float(rng.uniform(10, 50)) if cloud is not None else None,
            total_ms=float(rng.uniform(2, 60)), attempts=int(asked), time=t0 + i * 0.5,
            device=("cam-01" if i % 3 else "cam-02") if asked else None))
    return out


@pytest.fixture
def log_path(tmp_path):
    path = tmp_path / "decisions.sqlite"
    with DecisionLog(path, CLASSES, "edge-x", "cloud-y") as log:
        log.append(_decisions(300))
    return path


def _client(path, events=None, credentials=None) -> TestClient:
    return TestClient(create_dashboard(LogView(path, events), credentials))


def test_figures_equal_the_decision_logs_own_summary(log_path):
    s = _client(log_path).get("/api/summary", params={"buckets": 7, "last": 5}).json()
    with DecisionLog(log_path) as log:
        ref = log.summary(buckets=7)
    assert s["status"] == "ok" and s["clips"] == ref["decisions"] == 300
    assert s["offload_rate"] == pytest.approx(ref["offload_rate"])
    assert s["fallbacks"] == ref["fallbacks"] > 0
    assert s["fallback_reasons"] == ref["fallback_reasons"]
    assert s["devices"] == ref["devices"] and set(s["devices"]) == {"cam-01", "cam-02"}
    assert s["agreement"]["all"]["rate"] == pytest.approx(ref["agreement"])
    for c in CLASSES:
        assert s["agreement"]["by_class"][c]["edge_said"] == \
            ref["agreement_by_edge_class"][c]["edge_said"]
        assert s["agreement"]["by_class"][c]["rate"] == \
            pytest.approx(ref["agreement_by_edge_class"][c]["cloud_agreed"])
    for col in ("edge_ms", "cloud_ms", "total_ms"):  # 300 rows: all inside the window
        assert s["latency_ms"][col] == pytest.approx(ref["latency_ms"][col])
    assert [b["clips"] for b in s["over_time"]] == [b["decisions"] for b in ref["over_time"]]
    assert [b["offload_rate"] for b in s["over_time"]] == \
        pytest.approx([b["offload_rate"] for b in ref["over_time"]])
    assert [r["clip_id"] for r in s["last"]] == [f"c{i:04d}" for i in range(299, 294, -1)]
    shadow = s["agreement"]["shadow"]
    assert shadow["answered"] > 0 and s["shadow"] >= shadow["answered"]
    assert s["drift"] == {"monitored": False, "message": "no drift monitor"}
    assert s["events"] == {"given": False}


def test_reading_never_changes_the_log(log_path):
    before = hashlib.sha256(log_path.read_bytes()).hexdigest()
    client = _client(log_path)
    for _ in range(3):
        assert client.get("/api/summary").status_code == 200
    assert hashlib.sha256(log_path.read_bytes()).hexdigest() == before
    wal = log_path.parent / "decisions.sqlite-wal"  # a WAL reader may make it: empty
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_log_that_appears_later_is_followed_as_it_grows(tmp_path):
    path = tmp_path / "later.sqlite"
    client = _client(path)
    s = client.get("/api/summary").json()
    assert s["status"] == "waiting" and "waiting for" in s["message"]
    log = DecisionLog(path, CLASSES, "edge-x")
    rows = _decisions(20)
    try:
        log.append(rows[:10])
        assert client.get("/api/summary").json()["clips"] == 10
        log.append(rows[10:])  # the writer is open (WAL): the reader sees each commit
        assert client.get("/api/summary").json()["clips"] == 20
    finally:
        log.close()


def test_the_drift_table_gives_the_latest_state(log_path):
    db = sqlite3.connect(log_path)
    with db:
        db.execute("CREATE TABLE IF NOT EXISTS drift (time REAL NOT NULL, state TEXT NOT NULL, "
                   "statistic TEXT NOT NULL, value REAL, threshold REAL, window INTEGER)")
    s = _client(log_path).get("/api/summary").json()["drift"]
    assert s["monitored"] and s["state"] == "clear" and s["alarms"] == 0
    with db:
        db.executemany("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?)",
                       [(2000.0, "alarm", "psi", 0.41, 0.25, 200),
                        (2100.0, "clear", "psi", 0.08, 0.25, 200),
                        (2200.0, "alarm", "psi", 0.52, 0.25, 200)])
    db.close()
    s = _client(log_path).get("/api/summary").json()["drift"]
    assert s == {"monitored": True, "time": 2200.0, "state": "alarm", "statistic": "psi",
                 "value": 0.52, "threshold": 0.25, "window": 200, "alarms": 2}


def test_fall_events_from_watch(log_path, tmp_path):
    events = tmp_path / "events.jsonl"
    client = _client(log_path, events)
    assert client.get("/api/summary").json()["events"]["count"] == 0  # not written yet
    lines = [{"id": f"e{i}", "source": "cam.mp4", "start_s": 4.0 * i, "end_s": 4.0 * i + 3,
              "ended": True, "peak_probability": 0.9, "confirmed_by": "cloud",
              "clip_ids": ["a", "b"]} for i in range(3)]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines) + "not json\n"
                      + '{"id": "e3", "cut mid-wri')
    ev = client.get("/api/summary").json()["events"]
    assert ev["count"] == 3 and ev["unreadable_lines"] == 1
    assert [e["id"] for e in ev["events"]] == ["e2", "e1", "e0"]  # newest first
    assert ev["events"][0]["clips"] == 2 and ev["events"][0]["confirmed_by"] == "cloud"


def test_a_database_that_is_not_a_log_is_refused_and_unchanged(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(DataError, match="not an edgeswitch decision log"):
        LogView(other).check()
    r = run_cli("dashboard", other, "--port", "0", timeout=60)
    assert r.returncode == 2 and "not an edgeswitch decision log" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert other.read_bytes() == before


def test_off_loopback_without_a_token_is_refused(tmp_path):
    r = run_cli("dashboard", tmp_path / "x.sqlite", "--host", "0.0.0.0", "--port", "0",
                timeout=60, env={"EDGESWITCH_TOKEN": ""})
    assert r.returncode == 2 and "--token-file" in r.stderr and "Traceback" not in r.stderr


def test_the_api_needs_the_token_and_the_page_does_not(log_path):
    client = _client(log_path, credentials=Credentials.single("s3cret-token"))
    r = client.get("/api/summary")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.get("/api/summary", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    r = client.get("/api/summary", headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.json()["clips"] == 300
    for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/healthz"):
        assert client.get(path).status_code == 200, path


def test_bad_requests_answer_in_the_error_shape(log_path):
    client = _client(log_path)
    for params in ({"buckets": 0}, {"last": 10_000}, {"buckets": "x"}):
        r = client.get("/api/summary", params=params)
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request", params
    for path in ("/static/../view.py", "/static/index.html.bak", "/nope"):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
    r = client.post("/api/summary")
    assert r.status_code == 405 and "error" in r.json()


def test_the_page_loads_nothing_from_the_network(log_path):
    r = _client(log_path).get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for f in STATIC.iterdir():  # vendored files only: no CDN, no absolute URL but the SVG ns
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+", f.read_text()))
        assert urls <= {"http://www.w3.org"}, (f.name, urls)  # SVG namespace


def test_the_command_serves_the_log_on_the_port_it_prints(log_path, tmp_path):
    """A real `edgeswitch dashboard --port 0` process: the banner names the bound port, and
    with --token-file the API there answers only the token."""
    import os
    import subprocess
    import sys
    import time

    import httpx

    (tmp_path / "token").write_text("tok-123\n")
    err = tmp_path / "err.txt"
    with err.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "edgeswitch", "dashboard", str(log_path),
                                 "--port", "0", "--token-file", str(tmp_path / "token")],
                                stderr=fh, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    try:
        url, t_end = None, time.monotonic() + 60
        while url is None and time.monotonic() < t_end and proc.poll() is None:
            m = re.search(r"on (http://127\.0\.0\.1:(\d+))/ \(auth on, 1 devices\)",
                          err.read_text())
            url = m and m.group(1)
            time.sleep(0.1)
        assert url and not url.endswith(":0"), err.read_text()
        assert httpx.get(url + "/api/summary", timeout=10).status_code == 401
        r = httpx.get(url + "/api/summary", headers={"Authorization": "Bearer tok-123"},
                      timeout=10)
        assert r.status_code == 200 and r.json()["clips"] == 300
        assert "edgeswitch" in httpx.get(url + "/", timeout=10).text
    finally:
        proc.terminate()
        proc.wait(15)
    # uvicorn shuts down cleanly on SIGTERM, then re-raises it (exit -15), as serve-cloud does
    assert proc.returncode in (0, -15) and "Traceback" not in err.read_text(), err.read_text()
