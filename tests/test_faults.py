"""The edge keeps answering whatever the cloud does: faults against the real server process and
the real client over loopback. Every clip gets an answer by its deadline (bounded with margin for
a busy machine, below the `sleep:6` fault's 6 s that a waiting call would take), the flags and
reasons are right, the log holds every decision, and the circuit opens and recovers."""

import socket
import threading
import time

import numpy as np
import pytest

from edgeswitch.cloud.remote import RemoteCloud
from edgeswitch.config import RuntimeConfig
from edgeswitch.runtime import HybridClassifier
from edgeswitch.runtime.decision_log import DecisionLog
from edgeswitch.serving.server import ServerProcess
from edgeswitch.switcher import OperatingPoint
from edgeswitch.switcher.routers import make_router

pytestmark = pytest.mark.slow

DEADLINE_MS = 2000.0  # a busy machine's server still answers a healthy request by then
# a call's bound: its deadline plus 2.5 s for a busy machine; a call that waited for the server
# (the `sleep:6` fault answers after 6 s) still fails it
BOUND_S = DEADLINE_MS / 1000 + 2.5
RUNTIME = RuntimeConfig(deadline_ms=DEADLINE_MS, retries=2, backoff_ms=10, backoff_max_ms=50,
                        breaker_failures=3, breaker_reset_s=0.5)


@pytest.fixture(scope="module")
def setup(bm_models, basicmotions):
    edge, cloud = bm_models
    router = make_router("max_prob")
    t = float(np.median(router.trust(edge.outputs(basicmotions.X))))
    return edge, cloud, router, OperatingPoint("offload", t, 0.5), basicmotions


def _stream(hybrid, X, ids, until=None):
    """One clip per call, as a device; returns (results, wall seconds per call)."""
    results, walls = [], []
    i = 0
    while (i < len(X)) if until is None else (time.monotonic() < until and i < 100 * len(X)):
        j = i % len(X)
        t0 = time.monotonic()
        results.append(hybrid.classify(X[j : j + 1], ids[j : j + 1]))
        walls.append(time.monotonic() - t0)
        i += 1
    return results, np.array(walls)


def _check_fallbacks(results, walls, log, expected_reason):
    print(f"{expected_reason}: {len(walls)} calls, slowest {walls.max() * 1000:.1f} ms")
    assert walls.max() <= BOUND_S, f"slowest call {walls.max():.3f} s"
    off = np.array([r.offloaded[0] for r in results])
    verified = np.array([r.verified[0] for r in results])
    reasons = [r.reason[0] for r in results]
    assert off.sum() > RUNTIME.breaker_failures
    assert verified[~off].all() and not verified[off].any()
    assert all(r.answered_by[0] == "edge" for r in results)
    seen = {reasons[i] for i in np.flatnonzero(off)}
    assert expected_reason in seen and seen <= {expected_reason, "circuit_open"}
    assert "circuit_open" in seen  # the circuit opened: later clips did not wait
    df = log.frame()
    assert len(df) == len(results)
    assert list(df["fallback_reason"].fillna("")) == reasons


@pytest.mark.parametrize("fault, reason", [
    ("sleep:6", "timeout"), ("http500", "http_500"), ("malformed", "malformed"),
    ("wrong_classes", "wrong_classes"),
])
def test_server_faults_fall_back_to_the_edge(setup, bm_files, tmp_path, fault, reason):
    edge, _, router, op, data = setup
    with ServerProcess(bm_files["cloud"], faults=(fault,)) as server, \
            RemoteCloud(server.url, edge.classes_, RUNTIME) as cloud, \
            DecisionLog(tmp_path / "log.sqlite", edge.classes_) as log:
        hybrid = HybridClassifier(edge, router, cloud, op, log=log)
        results, walls = _stream(hybrid, data.X, data.ids)
        _check_fallbacks(results, walls, log, reason)
        assert "open" in [s for _, s in cloud.breaker.transitions]


def test_connection_refused(setup, tmp_path):
    edge, _, router, op, data = setup
    with socket.socket() as s:  # a port nobody listens on (bound, so no test can take it)
        s.bind(("127.0.0.1", 0))
        with RemoteCloud(f"http://127.0.0.1:{s.getsockname()[1]}", edge.classes_,
                         RUNTIME) as cloud, \
                DecisionLog(tmp_path / "log.sqlite", edge.classes_) as log:
            results, walls = _stream(HybridClassifier(edge, router, cloud, op, log=log),
                                     data.X, data.ids)
            _check_fallbacks(results, walls, log, "connection")


def test_cloud_killed_mid_run_then_circuit_recovers(setup, bm_files, tmp_path):
    edge, cloud_model, router, op, data = setup
    server = ServerProcess(bm_files["cloud"]).start()
    try:
        with RemoteCloud(server.url, edge.classes_, RUNTIME) as cloud, \
                DecisionLog(tmp_path / "log.sqlite", edge.classes_) as log:
            hybrid = HybridClassifier(edge, router, cloud, op, log=log)
            killer = threading.Timer(1.5, server.kill)
            killer.start()
            t_kill = time.monotonic() + 1.5
            results, walls = _stream(hybrid, data.X, data.ids, until=time.monotonic() + 4.0)
            killer.join()
            assert walls.max() <= BOUND_S
            ends = np.cumsum(walls) + (t_kill - 1.5)
            off = np.array([r.offloaded[0] for r in results])
            ok = np.array([r.verified[0] for r in results])
            reasons = {r.reason[0] for r, o in zip(results, off, strict=True) if o}
            before, after_kill = off & (ends < t_kill - 0.05), off & (ends > t_kill + 0.5)
            assert before.sum() >= 3 and after_kill.sum() >= 3
            assert ok[before].all()                 # before the kill: the cloud answered
            assert not ok[after_kill].any()         # after it: edge fallbacks
            assert {"connection", "circuit_open"} <= reasons <= {"", "connection",
                                                                 "circuit_open", "timeout"}
            assert cloud.breaker.state != "closed"

            server.start()  # same port
            time.sleep(RUNTIME.breaker_reset_s + 0.1)
            after, walls = _stream(hybrid, data.X, data.ids)
            assert walls.max() <= BOUND_S
            assert all(r.verified[0] for r in after)
            states = [s for _, s in list(cloud.breaker.transitions)]
            assert states[-3:] == ["open", "half_open", "closed"]
            off = np.array([r.offloaded[0] for r in after])
            got = np.array([r.label[0] for r in after])
            np.testing.assert_array_equal(got[off], cloud_model.predict(data.X[off]))
            assert len(log) == len(results) + len(after)
    finally:
        server.stop()
