"""Nothing lost on a kill: a `classify` SIGKILLed at random moments leaves a decision log and a
JSON lines output that hold the same answers (runtime.stream documents the order: the log's
rows are inserted, the lines written and flushed, then the log commits); the log opens and
`edgeswitch log` reads it. A full or read-only disk stops the run with a clear error, and
the two outputs still agree."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.deployed import classify_args, jsonl, log_ids, make_bundle, run_cli

try:  # the video pipeline's fixture (DMD on synthetic videos, switcher, op), reused
    from tests.test_video_pipeline import trained
except pytest.skip.Exception:  # no video extra: the watch test is skipped, the others run
    trained = None


@pytest.fixture(scope="module")
def bundle(bm_files, basicmotions, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    b = make_bundle(d, bm_files, basicmotions, n_clips=40)
    n = 12000  # about 6 s of classify on one core: long enough to be killed mid-run
    X = np.resize(b["X"], (n, *b["X"].shape[1:])).astype(np.float32)
    np.savez(d / "many.npz", X=X, ids=np.array([f"k{i:05d}" for i in range(n)]))
    b["many"], b["many_ids"] = str(d / "many.npz"), [f"k{i:05d}" for i in range(n)]
    return b


def _agree(out, log, batch: int, ids: list[str]) -> tuple[int, int]:
    """The log's answers are all in the lines, in the same order, and the lines hold at most
    the clips of the one call in flight more. Returns (lines, rows)."""
    rows = jsonl(out)
    said = [r["clip_id"] for r in rows]
    logged = log_ids(log)
    assert said == ids[:len(said)]  # in order, no clip twice, none skipped
    assert logged == said[:len(logged)]  # the log is a prefix of the lines
    assert len(said) - len(logged) <= batch, (len(said), len(logged))
    return len(said), len(logged)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 8])
def test_sigkill_mid_run_leaves_log_and_lines_in_agreement(bundle, tmp_path, batch):
    rng = random.Random(12 + batch)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    figures = []
    # kill at random points of the run, measured in progress (bytes of output written, which
    # a full run's ~300 bytes a line makes about 3.6 MB), not in seconds: a busy machine
    # slows the run, not the test's aim
    for k, at in enumerate(sorted(rng.uniform(0.0001, 0.6) for _ in range(3))):
        out, log = tmp_path / f"out{k}.jsonl", tmp_path / f"log{k}.sqlite"
        proc = subprocess.Popen([sys.executable, "-m", "edgeswitch",
                                 *classify_args(bundle, bundle["many"]), "--cloud",
                                 bundle["cloud"], "--batch", str(batch), "--out", str(out),
                                 "--log", str(log)], stderr=subprocess.PIPE, env=env)
        t_end, target = time.monotonic() + 120, int(at * 300 * len(bundle["many_ids"]))
        while time.monotonic() < t_end and proc.poll() is None and \
                not (out.exists() and out.stat().st_size >= max(target, 1)):
            time.sleep(0.001)
        proc.kill()
        proc.wait(30)
        proc.stderr.close()
        assert proc.returncode == -9, "the run ended before the kill: make it longer"
        lines, rows = _agree(out, log, batch, bundle["many_ids"])
        figures.append((lines, rows))
        assert rows > 0
        # the log opens after the kill (its -wal holds the last rows) and `log` reads it
        assert (tmp_path / f"log{k}.sqlite-wal").exists()
        db = sqlite3.connect(log)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        r = run_cli("log", log, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["decisions"] == rows
    print(f"batch {batch}: (lines, log rows) after each SIGKILL: {figures}")


def test_a_clean_exit_checkpoints_the_log(bundle, tmp_path):
    log = tmp_path / "log.sqlite"
    r = run_cli(*classify_args(bundle), "--cloud", bundle["cloud"], "--out",
                tmp_path / "o.jsonl", "--log", log)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "log.sqlite-wal").exists()  # the file alone holds every row
    copy = tmp_path / "copy.sqlite"
    shutil.copy(log, copy)
    assert len(log_ids(copy)) == 40


def _fsize_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("limit", [60_000, 400_000])
def test_a_full_disk_stops_with_a_clear_error_and_both_outputs_agree(bundle, tmp_path,
                                                                     limit):
    """RLIMIT_FSIZE makes a write fail with EFBIG as a full disk fails with ENOSPC: the small
    limit is hit by the JSON lines first, the larger by the log's -wal."""
    out, log = tmp_path / "out.jsonl", tmp_path / "log.sqlite"
    r = subprocess.run([sys.executable, "-m", "edgeswitch",
                        *classify_args(bundle, bundle["many"]), "--cloud", bundle["cloud"],
                        "--out", str(out), "--log", str(log)], capture_output=True,
                       text=True, timeout=300, preexec_fn=_fsize_limit(limit))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "File too large" in r.stderr or "full" in r.stderr, r.stderr
    assert "stopped after" in r.stderr and "hold the same" in r.stderr
    said = [row["clip_id"] for row in jsonl(out)]
    assert 0 < len(said) < len(bundle["many_ids"])
    assert log_ids(log) == said  # exact: the failed call was undone on both sides
    n = int(r.stderr.split("stopped after ")[1].split()[0])
    assert n == len(said)
    assert run_cli("log", log, "--json").returncode == 0


def _in_mount_namespace(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300)


def _can_mount(tmp_path) -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    return _in_mount_namespace(f"mount -t tmpfs -o size=64k tmpfs {probe}").returncode == 0


@pytest.mark.slow
def test_a_full_tmpfs_and_a_read_only_folder(bundle, tmp_path):
    """A real full file system (a 256 KiB tmpfs) and a real read-only one, in a private mount
    namespace (root only)."""
    if not _can_mount(tmp_path):
        pytest.skip("needs root and unshare -m to mount a tmpfs")
    d = tmp_path / "disk"
    d.mkdir()
    cmd = " ".join([sys.executable, "-m", "edgeswitch",
                    *classify_args(bundle, bundle["many"]), "--cloud", bundle["cloud"]])
    env = f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}"
    full = _in_mount_namespace(
        f"mount -t tmpfs -o size=256k tmpfs {d} && {env} {cmd} --out {d}/o.jsonl "
        f"--log {d}/l.sqlite; echo rc=$?; cp {d}/o.jsonl {d}/l.sqlite* {tmp_path}/")
    assert "rc=2" in full.stdout and "Traceback" not in full.stderr, full.stderr
    assert "No space left on device" in full.stderr or "full" in full.stderr, full.stderr
    said = [row["clip_id"] for row in jsonl(tmp_path / "o.jsonl")]
    assert 0 < len(said) and log_ids(tmp_path / "l.sqlite") == said
    for flags, says in ((f"--out {tmp_path}/o2.jsonl --log {d}/l.sqlite",
                         "cannot open the decision log"),
                        (f"--out {d}/o.jsonl", "cannot write --out")):
        (tmp_path / "o2.jsonl").unlink(missing_ok=True)
        ro = _in_mount_namespace(f"mount -t tmpfs -o ro tmpfs {d} && {env} {cmd} {flags}; "
                                 "echo rc=$?")
        assert "rc=2" in ro.stdout and "Traceback" not in ro.stderr, ro.stderr
        assert says in ro.stderr and "read-only file system" in ro.stderr.lower(), ro.stderr
        assert not (tmp_path / "o2.jsonl").exists()  # stopped before any answer


@pytest.fixture(scope="module")
def watch_bundle(tmp_path_factory, trained):  # noqa: F811
    """The video pipeline's switcher and operating point for the shipped `nfd` edge (DMD on
    synthetic videos with the loopback VLM, computed once per run), a VLM, and a 2-minute
    video: what `watch` needs."""
    from edgeswitch.video.synthetic import synthetic_pose_sequence
    from tests.synthetic_video import render_synthetic_video
    from tests.test_video_pipeline import CLIP

    d = tmp_path_factory.mktemp("watch")
    kp = np.concatenate([synthetic_pose_sequence("walk", 48, rng=np.random.default_rng(i))
                         for i in range(20)])
    render_synthetic_video(d / "long.mp4", kp)  # 2 minutes: 117 clips
    return {"video": d / "long.mp4", "sw": trained["dir"] / "sw.npz",
            "op": trained["dir"] / "op.json", "url": trained["url"], "clip": CLIP}


@pytest.mark.slow
@pytest.mark.skipif(trained is None, reason="needs the video extra")
def test_watch_sigkilled_mid_run_leaves_log_and_lines_in_agreement(watch_bundle, tmp_path):
    b, rng, figures = watch_bundle, random.Random(3), []
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    for k, at in enumerate(sorted(rng.randint(2, 60) for _ in range(2))):
        out, log = tmp_path / f"w{k}.jsonl", tmp_path / f"w{k}.sqlite"
        proc = subprocess.Popen([sys.executable, "-m", "edgeswitch", "watch",
                                 str(b["video"]), "--switcher", str(b["sw"]), "--op",
                                 str(b["op"]), "--cloud-url", b["url"], "--model", "json",
                                 "--out", str(out), "--log", str(log), *b["clip"]],
                                stderr=subprocess.DEVNULL, env=env)
        t_end = time.monotonic() + 180
        while time.monotonic() < t_end and proc.poll() is None and \
                (not out.exists() or out.read_bytes().count(b"\n") < at):
            time.sleep(0.002)
        proc.kill()
        proc.wait(30)
        assert proc.returncode == -9, "watch ended before the kill"
        # a clip line still waiting for the cloud is no answer yet: its update line is
        rows = jsonl(out)
        said = [r["clip_id"] for r in rows if r.get("cloud") != "pending"]
        logged = log_ids(log)
        assert len(said) == len(set(said)) and logged == said[:len(logged)]
        assert len(said) - len(logged) <= 1  # the answer whose commit the kill cut
        figures.append((len(said), len(logged)))
        r = run_cli("log", log, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["decisions"] == len(logged)
    print(f"watch: (lines, log rows) after each SIGKILL: {figures}")
