"""A stream router on video: a carried "adl" never holds back a fall the edge claims. On a
SYNTHETIC fall video, `watch` with the belief router (alarm class `fall`) offloads every clip
the edge calls a fall, and the fall is one event confirmed by the cloud, alerted once, as
with the shipped per-clip router; the edge's own lines say so when the cloud is down."""

from __future__ import annotations

import pytest

pytest.importorskip("av", reason="needs the video extra")
pytest.importorskip("ai_edge_litert", reason="needs the video extra")

from tests.fake_vlm import FakeVLM  # noqa: E402
from tests.test_alerts import Receiver, closed_port  # noqa: E402
from tests.test_watch_realtime import fall_video, lines  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fall(tmp_path_factory):
    return fall_video(tmp_path_factory.mktemp("fall") / "fall.mp4")


def _belief_files(tmp_path):
    """A belief router that carries the cloud's answers a long time (switch 0.01, a heavy
    cloud weight: the carried answer is hard to move) with `fall` as its alarm class, and
    an operating point calibrated for it."""
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.switcher.stream import BeliefRouter

    router = BeliefRouter((0.01, 1.0), edge_weight=0.2, cloud_weight=4.0, alarm=(1,))
    router.save(tmp_path / "router.json", ("adl", "fall"))
    OperatingPoint("offload", 0.3, 0.0, {"router": "belief"}).save(tmp_path / "op.json")
    return ["--router", str(tmp_path / "router.json"), "--op", str(tmp_path / "op.json")]


def test_a_carried_adl_never_holds_back_a_fall_the_edge_claims(fall, tmp_path):
    from edgeswitch.cli.main import main

    video, fell_at = fall
    runs = {}
    for name, routing in (("per-clip", []), ("belief", _belief_files(tmp_path))):
        d = tmp_path / name
        d.mkdir()
        with FakeVLM(slow_s=0.1) as vlm, Receiver() as receiver:
            assert main(["watch", str(video), *routing, "--cloud-url", vlm.url, "--model",
                         "json", "--events", str(d / "events.jsonl"), "--alert-url",
                         receiver.url, "--out", str(d / "out.jsonl"), "--quiet"]) == 0
        runs[name] = (lines(d / "out.jsonl"), lines(d / "events.jsonl"), receiver.posts)
    clip_rows = {n: [r for r in rows if r["kind"] == "clip"] for n, (rows, *_) in runs.items()}
    # the clips the edge calls a fall (the shipped router sends each of them)
    claims = {r["clip_id"] for r in clip_rows["per-clip"] if r["label"] == "fall"}
    assert claims
    belief = {r["clip_id"]: r for r in clip_rows["belief"]}
    assert all(belief[c]["cloud"] == "pending" and belief[c]["label"] == "fall"
               for c in claims), "a fall claim was kept on the device"
    # ... and the belief router offloads far fewer of the other clips
    others = [r for r in clip_rows["belief"] if r["clip_id"] not in claims]
    assert sum(r["cloud"] == "pending" for r in others) < len(others) / 2
    for name, (_, events, posts) in runs.items():
        assert len(events) == 1, (name, events)
        ev = events[0]
        assert ev["start_s"] <= fell_at <= ev["end_s"] and ev["confirmed_by"] == "cloud"
        assert len(posts) == 1 and posts[0][1]["id"] == ev["id"]


def test_with_the_cloud_down_the_edge_s_fall_claim_stands(fall, tmp_path):
    """No cloud to confirm: each fall claim is answered `fall` (unverified) and the fall is
    one event raised by the edge."""
    from edgeswitch.cli.main import main

    video, fell_at = fall
    with closed_port() as port:
        code = main(["watch", str(video), *_belief_files(tmp_path), "--cloud-url",
                     f"http://127.0.0.1:{port}/v1", "--model", "json", "--events",
                     str(tmp_path / "events.jsonl"), "--out", str(tmp_path / "out.jsonl"),
                     "--quiet"])
    assert code == 3  # offloaded clips and not one answer: the exit code says so
    rows = lines(tmp_path / "out.jsonl")
    updates = [r for r in rows if r["kind"] == "update"]
    assert updates and all(not r["verified"] for r in updates)
    claims = [r for r in rows if r["kind"] == "clip" and r["label"] == "fall"]
    assert claims and {u["clip_id"]: u["label"] for u in updates if u["clip_id"] in
                       {c["clip_id"] for c in claims}} == {c["clip_id"]: "fall" for c in claims}
    events = lines(tmp_path / "events.jsonl")
    assert len(events) == 1 and events[0]["start_s"] <= fell_at <= events[0]["end_s"]
    assert events[0]["confirmed_by"] == "edge"
