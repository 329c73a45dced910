"""Ray for real: `distill --engine ray` and `serve-cloud --server ray`, each run inside a
network namespace this test creates, whose only interface is loopback (Ray binds to the
machine's address otherwise). Needs root and iproute2, as on the CI machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.cloud.spec import CloudSpec
from edgeswitch.data.clips import ClipBatch
from edgeswitch.dmd import DMDRecords
from edgeswitch.dmd.runner import run
from edgeswitch.dmd.sinks import FolderSink
from edgeswitch.dmd.sources import NpzSource, OnnxModels
from edgeswitch.errors import DataError
from tests.corpus import records_equal, write_corpus
from tests.netns import RAY_ENV, TEST_NICE, LoopbackNetns

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[1]
ENV = os.environ | RAY_ENV | {"PYTHONUNBUFFERED": "1"}
SHARD = 20
SHARDS = 8 * 13  # 8 files of 250 clips, 13 shards each


@pytest.fixture(scope="module")
def corpus(basicmotions, tmp_path_factory):
    """Real BasicMotions clips, repeated 25 times under new ids (2000 clips in 8 files, 104
    shards), so a run lasts long enough to be killed midway. Labels are dropped."""
    reps = 25
    X = np.concatenate([basicmotions.X] * reps)
    ids = np.concatenate([[f"r{r:02d}/{i}" for i in basicmotions.ids] for r in range(reps)])
    groups = np.concatenate([np.asarray(basicmotions.groups).astype(str)] * reps)
    clips = ClipBatch(X=X, y=None, groups=groups, classes=basicmotions.classes, ids=ids)
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(clips, folder, files=8)
    return folder


@pytest.fixture(scope="module")
def reference(corpus, bm_files, tmp_path_factory):
    """The uninterrupted run, on the embedded engine."""
    out = tmp_path_factory.mktemp("dmd") / "local"
    run(NpzSource([str(corpus)], SHARD),
        OnnxModels(bm_files["edge"], CloudSpec(model=str(bm_files["cloud"]))), FolderSink(out),
        batch_size=16)
    return DMDRecords.from_parquet(out)


def _distill_cmd(corpus, bm_files, out, *extra) -> list[str]:
    return [sys.executable, "-m", "edgeswitch", "distill", "--engine", "ray", "--data",
            str(corpus), "--edge", str(bm_files["edge"]), "--out", str(out), "--shard-size",
            str(SHARD), "--batch-size", "16", "--workers", "2", "--quiet", "--json", *extra]


def _parts(out: Path) -> int:
    return len(list(out.glob("part-*.parquet")))


def test_ray_engine_equals_local(corpus, bm_files, reference, tmp_path):
    out = tmp_path / "ray"
    with LoopbackNetns(nice=TEST_NICE) as ns:
        r = subprocess.run(ns.wrap(_distill_cmd(corpus, bm_files, out, "--cloud",
                                                str(bm_files["cloud"]))),
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["engine"] == "ray" and summary["written"] == summary["shards"] == SHARDS
    assert records_equal(DMDRecords.from_parquet(out), reference)


# two points: before any part is written (the plan alone), and mid-run with parts to skip
# (every mid-run point takes that one path; each point costs a Ray cluster and two runs)
@pytest.mark.parametrize("point", ["startup", "two_thirds"])
def test_sigkill_then_resume_gives_the_uninterrupted_records(point, corpus, bm_files, reference,
                                                             tmp_path):
    """SIGKILL every process of the run (driver, raylet, workers) at a point, resume, compare."""
    out = tmp_path / "ray"
    cmd = _distill_cmd(corpus, bm_files, out, "--cloud", str(bm_files["cloud"]))
    target = {"startup": 0, "two_thirds": 2 * SHARDS // 3}[point]
    with LoopbackNetns(nice=TEST_NICE) as ns:
        proc = subprocess.Popen(ns.wrap(cmd), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        t_end = time.monotonic() + 240
        while time.monotonic() < t_end and proc.poll() is None:
            # startup: the plan is written, no shard is done yet (Ray is still starting)
            ready = (out / "_edgeswitch_dmd.json").exists() if target == 0 \
                else _parts(out) >= target
            if ready:
                break
            time.sleep(0.01)
        done_at_kill = _parts(out)
        ns.kill_all()
        proc.wait(10)
    assert proc.returncode == -9, "the run ended before it could be killed"
    assert (done_at_kill == 0) if target == 0 else (target <= done_at_kill < SHARDS)
    with pytest.raises(DataError, match="unfinished run"):
        DMDRecords.from_parquet(out)
    with LoopbackNetns(nice=TEST_NICE) as ns:  # resume: same command
        r = subprocess.run(ns.wrap(cmd), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"killed at {point}: {done_at_kill} of {SHARDS} parts done; resume skipped "
          f"{summary['skipped']}, wrote {summary['written']}")  # shown with pytest -s
    assert summary["skipped"] >= done_at_kill and summary["skipped"] + summary["written"] == SHARDS
    assert not list(out.glob(".part-*"))  # no temp file left behind
    assert records_equal(DMDRecords.from_parquet(out), reference)


def _start_server(ns, bm_files, tmp_path, *flags) -> tuple[subprocess.Popen, int]:
    """`serve-cloud` inside the namespace (the test process cannot reach it; Ray workers can)."""
    ready, token = tmp_path / "ready.json", tmp_path / "token"
    token.write_text("ray-test-token")
    server = subprocess.Popen(ns.wrap([
        sys.executable, "-m", "edgeswitch", "serve-cloud", "--cloud", str(bm_files["cloud"]),
        "--port", "0", "--ready-file", str(ready), "--token-file", str(token), *flags]),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_end = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < t_end and server.poll() is None:
        time.sleep(0.05)
    assert ready.exists(), f"server did not start: {server.poll()} {server.stderr.read()[-2000:]}"
    return server, json.loads(ready.read_text())["port"]


def test_ray_with_the_cloud_over_http(corpus, bm_files, reference, tmp_path):
    """Cloud actors reach `serve-cloud` over HTTP (inside the same namespace)."""
    out = tmp_path / "ray_http"
    with LoopbackNetns(nice=TEST_NICE) as ns:
        _server, port = _start_server(ns, bm_files, tmp_path)
        r = subprocess.run(ns.wrap(_distill_cmd(
            corpus, bm_files, out, "--cloud-url", f"http://127.0.0.1:{port}", "--token-file",
            str(tmp_path / "token"))), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    got = DMDRecords.from_parquet(out)
    served = reference.cloud_model.split("@")[0]  # the server names its model without a hash
    assert got.cloud_model == f"remote:http://127.0.0.1:{port}#{served}"
    np.testing.assert_array_equal(got.ids, reference.ids)
    np.testing.assert_array_equal(got.edge_proba, reference.edge_proba)  # edge: bit-identical
    np.testing.assert_allclose(got.cloud_proba, reference.cloud_proba, atol=1e-6)  # JSON wire


def test_a_failing_cloud_ends_the_ray_run_with_its_reason(corpus, bm_files, tmp_path):
    """Every classify call gets HTTP 500: the run stops, says why, and leaves no part."""
    out = tmp_path / "ray_500"
    with LoopbackNetns(nice=TEST_NICE) as ns:
        _server, port = _start_server(ns, bm_files, tmp_path, "--fault", "http500")
        r = subprocess.run(ns.wrap(_distill_cmd(
            corpus, bm_files, out, "--cloud-url", f"http://127.0.0.1:{port}", "--token-file",
            str(tmp_path / "token"), "--retries", "0")), env=ENV, capture_output=True, text=True,
            timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    message = r.stderr.strip().splitlines()[-1]
    print(message)  # shown with pytest -s
    assert "the Ray DMD run failed; finished shards are kept" in message, message
    assert "http_500" in message and "Traceback" not in r.stderr, message
    assert _parts(out) == 0


def _summary(r: subprocess.CompletedProcess) -> str:
    """What an inner pytest run says failed: its summary lines (FAILED, ERROR, the counts)
    and its output's end."""
    lines = r.stdout.splitlines()
    said = [ln for ln in lines if ln.startswith(("FAILED", "ERROR")) or " passed" in ln
            or " failed" in ln or " error" in ln]
    return "\n".join(said) + "\n--- end of its output ---\n" + r.stdout[-3000:] + \
        r.stderr[-2000:]


@pytest.mark.xdist_group("ray-serve")  # after the Ray fuzz run, beside Ray's DMD tests
@pytest.mark.timeout(1800)  # a pytest run of its own inside (subprocess timeout 900 s)
def test_service_api_tests_pass_on_ray_serve():
    """tests/test_service.py, unchanged, against `serve-cloud --server ray`."""
    with LoopbackNetns(nice=TEST_NICE) as ns:
        r = subprocess.run(ns.wrap([sys.executable, "-m", "pytest", "-q", "-p",
                                    "no:cacheprovider", "-m", "slow",
                                    str(ROOT / "tests" / "test_service.py")]),
                           env=ENV | {"EDGESWITCH_TEST_ENGINE": "ray"}, capture_output=True,
                           text=True, timeout=900, cwd=ROOT)
    tail = r.stdout[-4000:]
    assert r.returncode == 0, _summary(r)
    passed = re.search(r"(\d+) passed", tail)
    collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p",
                                "no:cacheprovider", "-m", "slow",
                                str(ROOT / "tests" / "test_service.py")],
                               capture_output=True, text=True, cwd=ROOT, timeout=120)
    n_tests = len([ln for ln in collected.stdout.splitlines() if "::" in ln])
    assert n_tests >= 7 and passed and int(passed.group(1)) == n_tests, tail


def test_ray_over_a_folder_of_videos_equals_local(tmp_path):
    """Video shards (one per video) on Ray, with the OpenAI-compatible cloud on loopback:
    the same records as the local engine, and an unreadable video recorded, not fatal."""
    pytest.importorskip("av", reason="needs the video extra")
    from edgeswitch.dmd.parts import failures
    from tests.test_video_pipeline import synthetic_videos

    folder = synthetic_videos(tmp_path / "videos", 4, 11)
    (folder / "zz-broken.mp4").write_bytes(b"not a video")
    ready = tmp_path / "vlm.url"
    clip = ["--clip-s", "4", "--stride-s", "1", "--frames", "32", "--fps-cap", "8"]
    with LoopbackNetns(nice=TEST_NICE) as ns:
        vlm = subprocess.Popen(ns.wrap([sys.executable, "-m", "tests.fake_vlm", str(ready)]),
                               env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        t_end = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < t_end and vlm.poll() is None:
            time.sleep(0.05)
        assert ready.exists(), "the test VLM server did not start"
        runs = {}
        for engine in ("local", "ray"):
            out = tmp_path / engine
            r = subprocess.run(ns.wrap([
                sys.executable, "-m", "edgeswitch", "distill", "--engine", engine, "--data",
                str(folder), "--edge", "nfd", "--cloud-url", ready.read_text(), "--model",
                "json", "--out", str(out), "--workers", "2", "--quiet", "--json", *clip]),
                env=ENV, capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-3000:]
            runs[engine] = json.loads(r.stdout.strip().splitlines()[-1])
            assert runs[engine]["failed"] == 1 and "zz-broken.mp4" in str(failures(out))
    assert runs["ray"]["engine"] == "ray" and runs["ray"]["computed_clips"] == 12
    assert records_equal(DMDRecords.from_parquet(tmp_path / "ray"),
                         DMDRecords.from_parquet(tmp_path / "local"))
