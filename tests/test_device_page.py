"""The device in the browser (`edgeswitch device-page`) and the cloud's CORS option.

The CORS tests run in-process (fast). The browser tests (slow) drive headless Chromium, the
OS package through playwright as tests/test_dashboard_browser.py does, against real
`serve-cloud` and `device-page` processes on loopback.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.device.page import find_ort
from edgeswitch.errors import EdgeSwitchError
from tests.browser import CHROMIUM, NO_BROWSER, sync_playwright_or_fail
from tests.deployed import export_bundle, make_bundle, run_cli

PAGE_ORIGIN = "http://127.0.0.1:8060"


class _Model:
    classes_ = ("a", "b")
    name = "tiny"
    clip_shape_ = (4, 2)

    def predict_proba(self, X):
        return np.tile([0.25, 0.75], (len(X), 1))


def _classify(client, origin: str, token: str = "t"):
    from edgeswitch.cloud.wire import encode_clips

    return client.post("/v1/classify", json={"clips": encode_clips(np.zeros((1, 4, 2)))},
                       headers={"Origin": origin, "Authorization": f"Bearer {token}"})


def _preflight(client, origin: str):
    return client.options("/v1/classify", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_is_off_by_default():
    from fastapi.testclient import TestClient

    from edgeswitch.serving.app import create_app

    with TestClient(create_app(_Model(), token="t")) as client:
        r = _classify(client, PAGE_ORIGIN)
        assert r.status_code == 200  # answered (a browser would refuse to show it) ...
        assert "access-control-allow-origin" not in r.headers  # ... with no CORS header
        r = _preflight(client, PAGE_ORIGIN)
        assert "access-control-allow-origin" not in r.headers
        assert r.status_code == 401  # no CORS: a preflight is a request without a token


def test_cors_allows_the_configured_origins_only():
    from fastapi.testclient import TestClient

    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.app import create_app

    app = create_app(_Model(), ServeConfig(cors_origins=[PAGE_ORIGIN]), token="t")
    with TestClient(app) as client:
        r = _preflight(client, PAGE_ORIGIN)  # no token needed to ask
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = _classify(client, PAGE_ORIGIN)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        r = _classify(client, PAGE_ORIGIN, token="wrong")  # the page can read the refusal
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == PAGE_ORIGIN
        other = "http://127.0.0.1:9999"
        assert "access-control-allow-origin" not in _classify(client, other).headers
        assert _preflight(client, other).status_code == 400


def test_a_cors_origin_must_be_an_origin(tmp_path):
    from edgeswitch.config import load_config
    from edgeswitch.errors import EdgeSwitchError

    path = tmp_path / "c.toml"
    path.write_text('[serve]\ncors_origins = ["http://127.0.0.1:8060/page"]\n')
    with pytest.raises(EdgeSwitchError, match="cors_origins"):
        load_config(path)


# ---- the page server (in-process, no browser) ------------------------------------------------

def _artifact(d: Path) -> Path:
    """A folder that passes the page server's checks (what it serves, not a runnable graph)."""
    import json

    d.mkdir()
    (d / "device.onnx").write_bytes(b"not run here")
    (d / "device.json").write_text(json.dumps({
        "format": "edgeswitch-device", "format_version": 1, "artifact_id": "x",
        "classes": ["a", "b"], "clip_shape": [4, 2], "input_bound": 10.0, "threshold": 0.5,
        "operating_point": {"adaptive": False}, "state": {"J": 1, "K": 2},
        "initial_state": {"belief": [[[-0.7, -0.7]]], "age": 1e9, "last": -1},
        "graphs": {"float": {"file": "device.onnx", "sha256": "0"}}}))
    return d


def _ort(d: Path) -> Path:
    from edgeswitch.device.page import ORT_FILES

    d.mkdir()
    for name in ORT_FILES:
        (d / name).write_text("// " + name)
    return d


def test_the_page_server_serves_its_files_and_nothing_else(tmp_path):
    from fastapi.testclient import TestClient

    from edgeswitch.device.page import create_page, replay_json

    X = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2)
    np.savez(tmp_path / "clips.npz", X=X, ids=np.array(["a0", "b0", "a1"]),
             streams=np.array(["a", "b", "a"]), t=np.array([0.0, 0.0, 1.0]), sample_rate_hz=25)
    replay = replay_json(tmp_path / "clips.npz", ("a", "b"))
    app = create_page(_artifact(tmp_path / "art"), "http://127.0.0.1:9000/", "tok", replay,
                      250.0, _ort(tmp_path / "ort"))
    with TestClient(app) as client:
        r = client.get("/")
        assert r.status_code == 200 and "device.js" in r.text
        csp = r.headers["content-security-policy"]
        assert "script-src 'self' 'wasm-unsafe-eval';" in csp
        assert "connect-src 'self' http://127.0.0.1:9000;" in csp
        assert client.get("/config.json").json() == {
            "cloud_url": "http://127.0.0.1:9000", "token": "tok", "deadline_ms": 250.0,
            "replay": True}
        body = client.get("/replay.json").json()
        assert body["ids"] == ["a0", "a1", "b0"]  # stream by stream, each in time order
        assert body["streams"] == ["a", "a", "b"]
        assert body["clips"]["shape"] == [3, 4, 2] and body["classes"] == ["a", "b"]
        assert body["sample_rate_hz"] == 25.0  # the file's: the page checks it
        for path in ("/static/device.js", "/static/device.css", "/ort/ort.wasm.min.js",
                     "/ort/ort-wasm-simd-threaded.wasm", "/model/device.onnx",
                     "/model/device.json"):
            assert client.get(path).status_code == 200, path
        assert client.get("/ort/ort-wasm-simd-threaded.wasm").headers["content-type"] == \
            "application/wasm"
        for path in ("/ort/ort.min.js", "/model/edge.onnx", "/static/index.html",
                     "/model/device.int8.onnx",  # listed, but not exported here
                     "/model/..%2Fdevice.json"):
            assert client.get(path).status_code == 404, path
        assert client.post("/config.json").status_code == 405


def test_the_page_server_says_what_is_missing(tmp_path):
    from edgeswitch.device.page import create_page

    with pytest.raises(EdgeSwitchError, match="npm ci"):
        create_page(_artifact(tmp_path / "art"), None, None, ort_dir=tmp_path)
    with pytest.raises(EdgeSwitchError, match="device.json"):
        create_page(tmp_path, None, None, ort_dir=_ort(tmp_path / "ort"))
    r = run_cli("device-page", tmp_path / "art", "--host", "0.0.0.0", timeout=120)
    assert r.returncode == 2 and "--ssl-certfile" in r.stderr, r.stderr


# ---- the page in a browser ------------------------------------------------------------------

ARTIFACTS = Path(os.environ.get("EDGESWITCH_ARTIFACTS",
                                Path(__file__).parent / "artifacts"))
PATIENT_MS = 600_000  # the page's cloud deadline: no busy machine reaches it


def _browser():
    """playwright's Chromium launcher for the OS browser, and onnxruntime-web's files; a
    clear failure without them."""
    sync_playwright = sync_playwright_or_fail()
    try:
        find_ort()
    except EdgeSwitchError as exc:
        pytest.fail(str(exc))
    return sync_playwright


@pytest.fixture(scope="module")
def watch_device(tmp_path_factory):
    """A small run of the whole method on the smartwatch data (few epochs: the decisions, not
    the accuracy, are under test), deployed as the demo deploys it and exported with
    `edgeswitch export-device`; one test subject's clips as a recording."""
    from edgeswitch.config import load_config
    from edgeswitch.pipeline import build
    from edgeswitch.pipeline.deploy import save_bundle

    d = tmp_path_factory.mktemp("watch-device")
    cfg = load_config(dataset="watch", overrides={
        "edge.epochs": 2, "cloud.epochs": 2, "cloud.arch_params": {"width": 16},
        "latency_calls": 20, "calibration.rate": 0.2})
    a = build(cfg, d, cache_dir=d / "cache", progress=False)
    assert a.router is not None and a.router.stateful and a.operating_point.adaptive
    paths = save_bundle(a, d / "bundle")
    r = run_cli("export-device", d / "bundle", "--out", d / "device", "--sample-rate", "50",
                "--channels", "ax,ay,az,wx,wy,wz")
    assert r.returncode == 0, r.stderr
    test = a.splits.test
    one = test.subset(np.nonzero(test.streams == test.streams[0])[0])
    one = one.subset(one.stream_order())
    np.savez(d / "subject.npz", X=one.X, ids=one.ids, streams=one.streams, t=one.t,
             classes=np.asarray(one.classes))
    return {"a": a, "cloud": str(paths["cloud"]), "device": d / "device", "subject": one,
            "clips": d / "subject.npz", "dir": d}


class _Page:
    """`edgeswitch device-page` in a child process on a free loopback port."""

    def __init__(self, tmp_path: Path, artifact: Path, clips: Path, *extra: str) -> None:
        self.err = tmp_path / f"page-{secrets.token_hex(4)}.err"
        with self.err.open("w") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgeswitch", "device-page", str(artifact), "--port",
                 "0", "--replay", str(clips), "--deadline-ms", str(PATIENT_MS), *extra],
                stderr=fh, stdout=subprocess.DEVNULL,
                env=os.environ | {"PYTHONUNBUFFERED": "1", "EDGESWITCH_TOKEN": ""})
        while self.proc.poll() is None:  # bounded by the test's timeout
            m = re.search(r"on (http://127\.0\.0\.1:\d+)/", self.err.read_text())
            if m:
                self.url = m.group(1)
                return
            time.sleep(0.1)
        pytest.fail(f"device-page exited: {self.err.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextmanager
def _page_and_cloud(tmp_path: Path, cloud_model: str, artifact: Path, clips: Path,
                    token: str) -> Iterator[tuple[_Page, object]]:
    """The page and serve-cloud (the page's origin allowed, a token), both on free ports: the
    page needs the cloud's URL and the cloud the page's origin, so a first server finds a
    free port, the page starts with it, and the cloud restarts there with the origin."""
    from edgeswitch.config import ServeConfig
    from edgeswitch.serving.server import ServerProcess

    (tmp_path / "token").write_text(token)
    probe = ServerProcess(cloud_model, token=token).start()
    port = probe.port
    probe.stop()
    page = _Page(tmp_path, artifact, clips, "--cloud", f"http://127.0.0.1:{port}",
                 "--token-file", str(tmp_path / "token"))
    try:
        with ServerProcess(cloud_model, ServeConfig(cors_origins=[page.url]), token=token,
                           port=port) as server:
            yield page, server
    finally:
        page.stop()


def _open(browser, url: str, path: str = "/"):
    """The page, loaded (ready or failed); script errors and console errors collected."""
    page = browser.new_page()
    page.problems = []
    page.on("pageerror", lambda e: page.problems.append(f"error: {e}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(m.text))
    page.goto(url + path)
    page.wait_for_selector('#status[data-state="ready"], #status[data-state="failed"]',
                           timeout=0)  # no clock: the test's own timeout bounds it
    return page


def _replay(page) -> str:
    """Replay the page's stream to its end (or its failure): the status reached."""
    page.click("#start-replay")
    page.wait_for_selector('#status[data-state="done"], #status[data-state="failed"]',
                           timeout=0)
    return page.get_attribute("#status", "data-state")


def _replayed(browser, url: str, cloud_down: bool = False):
    """(the page's log of every clip, the page) after a whole replay with no error (but the
    browser's own console line for each refused connection, when the cloud is down)."""
    page = _open(browser, url)
    assert page.get_attribute("#status", "data-state") == "ready", page.inner_text("#error")
    assert _replay(page) == "done", page.inner_text("#error")
    refused = "net::ERR_CONNECTION_REFUSED"
    assert [p for p in page.problems if not (cloud_down and refused in p)] == []
    return page.evaluate("() => window.deviceLog"), page


def _failure(browser, url: str, path: str = "/") -> str:
    """The error the page shows, loading or replaying."""
    page = _open(browser, url, path)
    if page.get_attribute("#status", "data-state") == "ready":
        assert _replay(page) == "failed"
    assert page.is_visible("#error")
    return page.inner_text("#error")


def _runner_rows(device: Path, clips, cloud_url: str, token: str) -> list[dict]:
    """The Python device runner on the same stream, asking the same server (both see the
    same cloud answers, rounded as the server sends them)."""
    from edgeswitch.device.runner import DeviceRunner

    runner = DeviceRunner(device, cloud=_remote(cloud_url, clips.classes, token))
    try:
        return runner.classify(clips.X, streams=clips.streams, ids=clips.ids)
    finally:
        runner.close()


def _hybrid_rows(w: dict, cloud_url: str, token: str) -> dict:
    """HybridClassifier (what `classify` runs) on the stream clip by clip, same server."""
    clips = w["subject"]
    cloud = _remote(cloud_url, clips.classes, token)
    hybrid = w["a"].hybrid(cloud)
    try:
        rows = [hybrid.classify(clips.X[i:i + 1], streams=clips.streams[i:i + 1])
                for i in range(len(clips))]
    finally:
        cloud.close()
    return {"offloaded": [bool(r.offloaded[0]) for r in rows],
            "label": [clips.classes[int(r.label[0])] for r in rows],
            "verified": [bool(r.verified[0]) for r in rows]}


def _remote(url: str, classes, token: str):
    from edgeswitch.cloud.remote import RemoteCloud
    from edgeswitch.config import RuntimeConfig

    return RemoteCloud(url, tuple(classes), RuntimeConfig(deadline_ms=PATIENT_MS, retries=0),
                       token=token)


def _screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot), full_page=True)
    return shot


def browser_test(test):
    """Slow, skipped with EDGESWITCH_NO_BROWSER=1, on one worker (the watch artifact is built
    once for both), with room for a busy machine."""
    for mark in (pytest.mark.slow, NO_BROWSER, pytest.mark.xdist_group("device_page"),
                 pytest.mark.timeout(1800)):
        test = mark(test)
    return test


@browser_test
def test_the_page_decides_as_the_python_runtime_and_survives_the_cloud(watch_device,
                                                                        tmp_path):
    """A watch test subject replayed in the page: each clip's offload decision and answer are
    the Python runtime's (the device runner and HybridClassifier, against the same server);
    then, the cloud stopped, the page keeps answering, every offloaded clip flagged."""
    sync_playwright = _browser()
    w, token = watch_device, secrets.token_urlsafe(16)
    clips = w["subject"]
    with _page_and_cloud(tmp_path, w["cloud"], w["device"], w["clips"], token) as \
            (page_server, server), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        want = _runner_rows(w["device"], clips, server.url, token)
        hybrid = _hybrid_rows(w, server.url, token)
        assert all(hybrid["verified"])
        got, page = _replayed(browser, page_server.url)
        assert [r["id"] for r in got] == [str(i) for i in clips.ids]
        assert [r["offload"] for r in got] == [r["offloaded"] for r in want] == \
            hybrid["offloaded"]
        assert [r["label"] for r in got] == [r["label"] for r in want] == hybrid["label"]
        assert [r["by"] for r in got] == [r["answered_by"] for r in want]
        assert all(r["verified"] for r in got)
        assert all(r["model_ms"] >= 0 for r in got)  # the step's session.run, timed
        np.testing.assert_allclose([r["trust"] for r in got],
                                   [r["switcher_score"] for r in want], atol=1e-5)
        n, off = len(got), sum(r["offload"] for r in got)
        assert 0 < off < n
        assert page.inner_text("#clips") == str(n)
        assert float(page.get_attribute("#offload-rate", "data-value")) == \
            pytest.approx(off / n, abs=1e-12)
        assert page.inner_text("#offload-rate") == f"{100 * off / n:.1f}%"
        assert page.inner_text("#unverified") == "0"
        assert page.inner_text("#answer") == got[-1]["label"]
        shot = _screenshot(page, "device-page.png")

        server.stop()  # the cloud goes down: the device answers alone, offloads flagged
        want = _runner_rows(w["device"], clips, server.url, token)
        got, page = _replayed(browser, page_server.url, cloud_down=True)
        assert [r["offload"] for r in got] == [r["offloaded"] for r in want]
        assert [r["label"] for r in got] == [r["label"] for r in want]
        flagged = [r for r in got if r["offload"]]
        assert flagged and all(r["by"] == "edge (cloud down)" and not r["verified"]
                               for r in flagged)
        assert all(r["by"] == "edge" and r["verified"] for r in got if not r["offload"])
        assert page.inner_text("#unverified") == str(len(flagged))
        assert "unreachable" in page.inner_text("#cloud-error")
        _screenshot(page, "device-page-cloud-down.png")
        browser.close()
    print(f"\nscreenshot: {shot}\n{n} clips, {off} offloaded ({off / n:.1%}); cloud down: "
          f"{len(flagged)} offloaded clips answered by the edge, flagged")


def _bm_device(tmp_path: Path, bm_files, basicmotions) -> Path:
    """A device artifact of another model: the BasicMotions edge (4 classes, clips of the
    watch's shape [100, 6]) with a per-clip switcher."""
    return export_bundle(make_bundle(tmp_path, bm_files, basicmotions),
                         tmp_path / "bm-bundle", tmp_path / "bm-device")


@browser_test
def test_the_page_says_what_is_wrong(watch_device, bm_files, basicmotions, tmp_path):
    """Clips of the wrong shape, a graph of another export beside device.json, an artifact
    of another model than the cloud's: each a clear error on the page, nothing run."""
    sync_playwright = _browser()
    w, token = watch_device, secrets.token_urlsafe(16)
    clips = w["subject"]
    short = tmp_path / "short.npz"  # 1 s clips for a model of 2 s clips
    np.savez(short, X=clips.X[:8, :50], ids=clips.ids[:8], classes=np.asarray(clips.classes))
    mixed = tmp_path / "mixed"      # device.json of the watch export, graph of another
    shutil.copytree(w["device"], mixed)
    bm = _bm_device(tmp_path, bm_files, basicmotions)
    shutil.copy(bm / "device.onnx", mixed / "device.onnx")
    unnamed = tmp_path / "unnamed.npz"  # watch clips naming no classes: the artifact's
    np.savez(unnamed, X=clips.X[:40], ids=clips.ids[:40])
    pages = [_Page(tmp_path, w["device"], short), _Page(tmp_path, mixed, w["clips"])]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            said = _failure(browser, pages[0].url)
            assert "[50, 6]" in said and "[100, 6]" in said, said
            said = _failure(browser, pages[1].url)
            assert "device.onnx is not the graph device.json describes" in said, said
            with _page_and_cloud(tmp_path, w["cloud"], bm, unnamed, token) as (page, _):
                page = _open(browser, page.url)
                assert _replay(page) == "failed"
                said = page.inner_text("#error")
                assert "an artifact of another model" in said, said
                assert all(c in said for c in clips.classes + basicmotions.classes), said
                assert len(page.evaluate("() => window.deviceLog")) < 40  # it stopped
            browser.close()
    finally:
        for p in pages:
            p.stop()


@browser_test
def test_the_page_refuses_clips_of_another_sample_rate(watch_device, tmp_path):
    """A replay file sampled at 25 Hz for a model of 50 Hz clips: the page names both rates
    and runs nothing (as DeviceRunner refuses them); `?graph=int8` of an artifact exported
    without --int8 says so."""
    sync_playwright = _browser()
    w = watch_device
    clips = w["subject"]
    slow = tmp_path / "25hz.npz"  # clips of the right shape, said to be sampled at 25 Hz
    np.savez(slow, X=clips.X[:4], ids=clips.ids[:4], classes=np.asarray(clips.classes),
             sample_rate_hz=25.0)
    page_server = _Page(tmp_path, w["device"], slow)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = _open(browser, page_server.url)
            assert _replay(page) == "failed"
            said = page.inner_text("#error")
            assert "sampled at 25 Hz" in said and "takes 50 Hz clips" in said, said
            assert page.evaluate("() => window.deviceLog") == []  # nothing ran
            said = _failure(browser, page_server.url, "/?graph=int8")  # exported without
            assert "no int8 graph" in said and "--int8" in said, said
            browser.close()
    finally:
        page_server.stop()


@browser_test
def test_the_page_reads_the_motion_sensors(watch_device, tmp_path):
    """DeviceMotion from Chromium's virtual sensors (CDP Emulation.setSensorOverride*: the
    accelerometer and gyroscope held at distinct values on each axis): the page cuts a clip
    of T samples in device.json's channel order and units, and decides on it as the Python
    runner decides on that clip."""
    import math

    sync_playwright = _browser()
    w = watch_device
    page_server = _Page(tmp_path, w["device"], w["clips"])  # no cloud: the device alone
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            cdp = page.context.new_cdp_session(page)
            readings = {"accelerometer": (0.5, 9.8, -1.3), "gyroscope": (0.1, -0.2, 0.3),
                        "linear-acceleration": (0.0, 0.0, 0.0)}
            for kind, (x, y, z) in readings.items():
                cdp.send("Emulation.setSensorOverrideEnabled", {"enabled": True, "type": kind})
                cdp.send("Emulation.setSensorOverrideReadings",
                         {"type": kind, "reading": {"xyz": {"x": x, "y": y, "z": z}}})
            page.goto(page_server.url + "/")
            page.wait_for_selector('#status[data-state="ready"]', timeout=0)
            page.evaluate("""() => { window.seen = null;  // what the browser reported
                window.addEventListener("devicemotion", (e) => { window.seen = [
                  e.accelerationIncludingGravity.x, e.accelerationIncludingGravity.y,
                  e.accelerationIncludingGravity.z, e.rotationRate.alpha,
                  e.rotationRate.beta, e.rotationRate.gamma]; }); }""")
            page.click("#start-sensors")
            page.wait_for_selector('#clips:not([data-value="0"])', timeout=0)
            got = page.evaluate("() => window.deviceLog")[0]
            seen = page.evaluate("() => window.seen")
            ran = page.evaluate("() => window.deviceLastClip")
            assert page.inner_text("#error") == ""
            browser.close()
    finally:
        page_server.stop()
    # m/s² to g, deg/s to rad/s, in the page's order of operations
    ax, ay, az = (v / 9.80665 for v in seen[:3])
    wx, wy, wz = (v * math.pi / 180 for v in seen[3:])
    assert wx > 0 > wy and wz > wx and ay > 0.9  # the axes held apart
    T, C = w["subject"].clip_shape
    clip = np.tile(np.asarray([ax, ay, az, wx, wy, wz], np.float32), (T, 1))
    # what the model ran: T samples of the sensors, in device.json's channel order and units
    assert np.array_equal(np.asarray(ran, np.float32).reshape(T, C), clip)
    from edgeswitch.device.runner import DeviceRunner

    want = DeviceRunner(w["device"]).classify_clip(clip, "live", "live-1")
    assert got["id"] == "live-1" and got["stream"] == "live"
    assert (got["label"], got["offload"]) == (want["label"], want["offloaded"])
    assert got["trust"] == pytest.approx(want["switcher_score"], abs=1e-5)
