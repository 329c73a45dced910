"""The stream runtime from the command line: a recording with streams, bad streams named, one
bad clip failing alone in `watch`, exit codes that are true, and the benchmark on streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.deployed import classify_args, jsonl, make_bundle, run_cli


def _recording(b: dict, path, order=None, bad: int | None = None):
    """`b`'s clips as two streams of 20 (times 0, 1, 2 ... s); `order` permutes them in the
    file, `bad` puts a 3e38 value in that clip."""
    X = b["X"][:40].copy()
    if bad is not None:
        X[bad] = 3e38  # finite, so it passes validation; the edge's output turns non-finite
    streams = np.repeat(["left", "right"], 20)
    t = np.tile(np.arange(20.0), 2)
    idx = np.arange(40) if order is None else np.asarray(order)
    np.savez(path, X=X[idx], ids=b["ids"][:40][idx], streams=streams[idx], t=t[idx])
    return path


def test_classify_meets_a_file_s_streams_in_time_order(tmp_path, bm_files, basicmotions):
    b = make_bundle(tmp_path, bm_files, basicmotions)
    rec = _recording(b, tmp_path / "rec.npz")
    r = run_cli(*classify_args(b, str(rec)), "--cloud", b["cloud"], "--out",
                tmp_path / "out.jsonl")
    assert r.returncode == 0, r.stderr
    rows = jsonl(tmp_path / "out.jsonl")
    assert [r["stream"] for r in rows] == ["left"] * 20 + ["right"] * 20
    assert [r["clip_id"] for r in rows] == list(b["ids"][:40])
    # a file whose stream goes back in time is refused, naming the clips
    back = _recording(b, tmp_path / "back.npz", order=[1, 0, *range(2, 40)])
    r = run_cli(*classify_args(b, str(back)), "--cloud", b["cloud"], "--out",
                tmp_path / "x.jsonl")
    assert r.returncode == 2 and "out of time order" in r.stderr and "c0000" in r.stderr


@pytest.mark.slow
def test_watch_on_a_recording_fails_one_bad_clip_alone(tmp_path, bm_files, basicmotions):
    """`watch` gets classify's per-clip isolation: the 3e38 clip gets an error record, every
    other clip its line, exit 1."""
    b = make_bundle(tmp_path, bm_files, basicmotions)
    rec = _recording(b, tmp_path / "rec.npz", bad=7)
    r = run_cli("watch", rec, "--edge", b["edge"], "--switcher", b["switcher"], "--op",
                b["op"], "--cloud", b["cloud"], "--out", tmp_path / "w.jsonl",
                "--summary", tmp_path / "s.json", "--quiet")
    assert r.returncode == 1, r.stderr
    rows = [x for x in jsonl(tmp_path / "w.jsonl") if x["kind"] == "clip"]
    assert len(rows) == 40
    errors = [x for x in rows if "error" in x]
    assert [x["clip_id"] for x in errors] == [str(b["ids"][7])]
    assert "3e+38" in errors[0]["error"] and "1 clips failed" in r.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["failed"] == 1 and summary["clips"] == 39


@pytest.mark.slow
def test_a_slow_cloud_whose_clips_were_only_dropped_is_not_a_broken_one(tmp_path):
    """Every offloaded clip dropped from the queue before an answer came: the cloud was
    slow, not broken; exit 0 with a note (exit 3 would blame the URL)."""
    pytest.importorskip("av", reason="needs the video extra")
    from tests.fake_vlm import FakeVLM
    from tests.test_watch_realtime import minute_video

    video = minute_video(tmp_path / "minute.mp4")
    with FakeVLM(slow_s=600.0) as vlm:  # no answer comes back during the run, however slow
        r = run_cli("watch", video, "--cloud-url", vlm.url, "--model", "slow",
                    "--confidence", "1.0", "--cloud-workers", "1", "--cloud-queue", "1",
                    "--vlm-deadline-ms", "3600000",  # slow, never past its deadline
                    "--drain-s", "0", "--out", tmp_path / "w.jsonl", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "a slow cloud, not a broken one" in r.stderr
    updates = [x for x in jsonl(tmp_path / "w.jsonl") if x["kind"] == "update"]
    assert updates and {u["cloud"] for u in updates} == {"dropped"}


@pytest.mark.slow
def test_the_benchmark_runs_on_a_user_s_npz_with_streams(tmp_path, basicmotions):
    """BasicMotions as eight subjects' recordings with streams and times: the benchmark
    scores the stream routers (with their shuffled control) or, with --streams none, none.
    Both runs share one model cache: the folds' models do not depend on --streams."""
    from edgeswitch.cli.main import main

    X, y = basicmotions.X, np.asarray(basicmotions.classes)[basicmotions.y]
    order = np.argsort(basicmotions.y, kind="stable")   # each stream holds its activity
    groups = np.arange(len(X)) % 8
    st = np.asarray([f"s{g}-{k}" for g, k in zip(groups, basicmotions.y[order], strict=True)])
    t = np.zeros(len(X))
    for s in np.unique(st):
        t[st == s] = np.arange((st == s).sum())
    np.savez(tmp_path / "rec.npz", X=X[order], y=y[order], groups=groups, streams=st, t=t)
    for streams in ("recording", "none"):
        out = tmp_path / streams
        assert main(["benchmark", "--dataset", str(tmp_path / "rec.npz"), "--folds", "2",
                     "--streams", streams, "--out", str(out), "--cache",
                     str(tmp_path / "cache"), "--quiet"]) == 0
        s = json.loads((out / "benchmark.json").read_text())["summary"]
        assert s["streams"] == streams
        for r in s["routers"].values():
            assert set(r["gain_over_cloud_at_0.2"]) == {"mean", "ci"}
        if streams == "none":
            assert s["vs_per_clip_default"] == {} and s["default_router"] == "dmd+fusion"
        else:
            assert s["default_router"] == "belief"
            v = s["vs_per_clip_default"]["belief"]
            assert v["wins"] + v["ties"] + v["losses"] == 2
            assert not v["reference"].startswith(("belief", "abc", "dmd-abc", "oracle"))
            assert set(s["shuffled_control"]["belief"]["auc_diff_vs_per_clip"]) == \
                {"mean", "ci"}
