"""Edge metrics (runtime.metrics): what the counters say against what the run wrote, the
exporter over HTTP, `classify --metrics-port` as a real process scraped while it runs."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("prometheus_client", reason="needs the serve extra")

from edgeswitch.cli.main import main  # noqa: E402
from edgeswitch.cloud.reasons import FallbackReason  # noqa: E402
from edgeswitch.errors import EdgeSwitchError  # noqa: E402
from edgeswitch.runtime.metrics import EdgeMetrics, MetricsExporter  # noqa: E402
from tests.deployed import classify_args, jsonl, make_bundle  # noqa: E402
from tests.edge_run import edge_process, families, value, wait_for  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, bm_files, basicmotions):
    return make_bundle(tmp_path_factory.mktemp("bundle"), bm_files, basicmotions)


def _hybrid(bundle, shadow_rate=0.0, adaptive=False):
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.switcher import OperatingPoint, load_switcher
    from edgeswitch.switcher.routers import SwitcherRouter

    edge, cloud = OnnxClassifier(bundle["edge"]), OnnxClassifier(bundle["cloud"])
    op = OperatingPoint.load(bundle["op"])
    if adaptive:
        from edgeswitch.switcher import calibrate_offload

        sw = load_switcher(bundle["switcher"])
        op = calibrate_offload(sw.trust(edge.outputs(bundle["X"])), 0.3, adaptive=True)
    return HybridClassifier(edge, SwitcherRouter(load_switcher(bundle["switcher"])),
                            cloud, op, shadow_rate=shadow_rate), edge, cloud


def _sample(m: EdgeMetrics, name: str, **labels) -> float:
    v = m.registry.get_sample_value(name, labels)
    assert v is not None, f"no sample {name} {labels}"
    return v


def test_counts_match_the_stream_and_agreement_matches_the_models(bundle, tmp_path):
    """run_stream with a real edge and cloud in process, every kept clip shadowed: clips,
    offloads, cloud answers and agreement (offloaded and shadow) equal what the JSON lines
    and the two models say."""
    from edgeswitch.runtime.stream import StreamItem, run_stream

    hybrid, edge, cloud = _hybrid(bundle, shadow_rate=1.0)
    m = EdgeMetrics(edge.classes_)
    X, ids = bundle["X"], bundle["ids"]
    items = (StreamItem(X[i:i + 4], ids[i:i + 4], ["g"] * len(ids[i:i + 4]))
             for i in range(0, len(X), 4))
    with (tmp_path / "out.jsonl").open("w") as fh:
        summary = run_stream(hybrid, items, fh, metrics=m)
    rows = jsonl(tmp_path / "out.jsonl")
    off = np.array([r["answered_by"] == "cloud" for r in rows])
    assert _sample(m, "edgeswitch_edge_clips_total") == len(rows) == len(X) == summary.clips
    assert _sample(m, "edgeswitch_edge_offloads_total") == summary.offloaded == off.sum() > 0
    assert _sample(m, "edgeswitch_edge_cloud_answers_total") == off.sum()
    assert _sample(m, "edgeswitch_edge_switcher_score_count") == len(X)
    assert np.isclose(_sample(m, "edgeswitch_edge_switcher_score_sum"),
                      sum(r["switcher_score"] for r in rows))
    agree = edge.predict(X) == cloud.predict(X)
    for kind, mask in (("offloaded", off), ("shadow", ~off)):
        assert _sample(m, "edgeswitch_edge_agreement_total", kind=kind,
                       result="agree") == (agree & mask).sum()
        assert _sample(m, "edgeswitch_edge_agreement_total", kind=kind,
                       result="disagree") == (~agree & mask).sum()
    edge_label = edge.predict(X)
    for kind, mask in (("offloaded", off), ("shadow", ~off)):
        for k, c in enumerate(edge.classes_):  # every class has its series, 0 or not
            for result, hit in (("agree", agree), ("disagree", ~agree)):
                assert _sample(m, "edgeswitch_edge_class_agreement_total", kind=kind,
                               edge_class=c, result=result) == \
                    (mask & hit & (edge_label == k)).sum()
    assert _sample(m, "edgeswitch_edge_threshold") == hybrid.operating_point.threshold
    assert _sample(m, "edgeswitch_edge_cloud_latency_seconds_count") == len(range(0, len(X), 4))
    assert _sample(m, "edgeswitch_edge_fallbacks_total", reason="timeout") == 0


def test_fallbacks_by_reason_and_a_failed_clip(bundle, tmp_path):
    """No cloud: every offloaded clip is a `no_cloud` fallback; a clip the edge cannot digest
    (the wrong shape) is counted failed, not answered."""
    from edgeswitch.cloud.client import NoCloud
    from edgeswitch.runtime.hybrid import HybridClassifier
    from edgeswitch.runtime.stream import StreamItem, run_stream

    h, edge, _ = _hybrid(bundle)
    hybrid = HybridClassifier(edge, h.router, NoCloud(edge.classes_), h.operating_point)
    m = EdgeMetrics(edge.classes_)
    X = bundle["X"][:10]
    items = [StreamItem(X[i:i + 1], [f"c{i}"], ["g"]) for i in range(10)]
    items.append(StreamItem(np.zeros((1, 3, 3), np.float32), ["bad"], ["g"]))
    with (tmp_path / "o.jsonl").open("w") as fh:
        summary = run_stream(hybrid, items, fh, metrics=m)
    assert summary.failed == 1 and _sample(m, "edgeswitch_edge_clips_failed_total") == 1
    assert _sample(m, "edgeswitch_edge_clips_total") == 10
    assert _sample(m, "edgeswitch_edge_fallbacks_total", reason="no_cloud") == \
        summary.offloaded > 0
    assert _sample(m, "edgeswitch_edge_cloud_answers_total") == 0
    assert _sample(m, "edgeswitch_edge_cloud_latency_seconds_count") == 0  # nothing was sent


def test_an_adaptive_threshold_is_the_controllers(bundle, tmp_path):
    from edgeswitch.runtime.metrics import current_threshold
    from edgeswitch.runtime.stream import StreamItem, run_stream

    hybrid, edge, _ = _hybrid(bundle, adaptive=True)
    m = EdgeMetrics(edge.classes_)
    start = current_threshold(hybrid)
    items = [StreamItem(bundle["X"][i:i + 1], [f"c{i}"], ["g"]) for i in range(20)]
    with (tmp_path / "o.jsonl").open("w") as fh:
        run_stream(hybrid, items, fh, metrics=m)
    ctrl = hybrid.controller
    assert ctrl.seen == 20
    expected = float(np.interp(ctrl.level, ctrl.levels, ctrl.knots))
    assert _sample(m, "edgeswitch_edge_threshold") == pytest.approx(expected)
    assert ctrl.level != ctrl.rate and expected != pytest.approx(start)  # it moved


def test_drift_setter_and_bounded_labels():
    m = EdgeMetrics(("a", "b"))
    assert _sample(m, "edgeswitch_edge_drift_alarm") == 0
    assert np.isnan(_sample(m, "edgeswitch_edge_drift_statistic"))
    m.set_drift(True, 0.42)
    assert _sample(m, "edgeswitch_edge_drift_alarm") == 1
    assert _sample(m, "edgeswitch_edge_drift_statistic") == 0.42
    m.set_drift(False, 0.01)
    assert _sample(m, "edgeswitch_edge_drift_alarm") == 0
    # a reason that is not a FallbackReason is `error`, never a new label
    m.settled(0, None, "something odd", False, None, None)
    m.settled(0, None, "http_507", False, None, None)
    assert _sample(m, "edgeswitch_edge_fallbacks_total", reason="error") == 1
    assert _sample(m, "edgeswitch_edge_fallbacks_total", reason="http_507") == 1
    reasons = {s.labels["reason"] for f in m.registry.collect()
               if f.name == "edgeswitch_edge_fallbacks" for s in f.samples}
    assert reasons == {str(r) for r in FallbackReason} | {"http_507"}
    # every reason and every (kind, result) shows at 0 before anything happens
    assert _sample(m, "edgeswitch_edge_agreement_total", kind="shadow", result="agree") == 0
    # watch's drops count as fallbacks and as drops; the cloud's label vs the edge's
    m.settled(1, None, "queue_full", True, None, None)
    m.settled(1, 0, None, False, 0.2, 5000)
    assert _sample(m, "edgeswitch_edge_dropped_total", reason="queue_full") == 1
    assert _sample(m, "edgeswitch_edge_fallbacks_total", reason="queue_full") == 1
    assert _sample(m, "edgeswitch_edge_agreement_total", kind="offloaded",
                   result="disagree") == 1
    assert _sample(m, "edgeswitch_edge_class_agreement_total", kind="offloaded",
                   edge_class="b", result="disagree") == 1
    assert _sample(m, "edgeswitch_edge_sent_bytes_sum") == 5000
    # many classes: the per-class label is bounded
    many = EdgeMetrics([f"c{i}" for i in range(100)])
    many.settled(99, 99, None, False, None, None)
    assert _sample(many, "edgeswitch_edge_class_agreement_total", kind="offloaded",
                   edge_class="other", result="agree") == 1


def test_a_registry_of_its_own():
    from prometheus_client import REGISTRY

    a, b = EdgeMetrics(("x",)), EdgeMetrics(("x",))
    a.clip_failed()
    assert _sample(a, "edgeswitch_edge_clips_failed_total") == 1
    assert _sample(b, "edgeswitch_edge_clips_failed_total") == 0
    assert REGISTRY.get_sample_value("edgeswitch_edge_clips_failed_total") is None


def test_exporter_serves_on_loopback_and_a_port_in_use_is_a_clear_error(bundle, tmp_path,
                                                                         capsys):
    m = EdgeMetrics(("a",))
    m.set_drift(True, 3.5)
    exporter = MetricsExporter(m, "127.0.0.1", 0)
    try:
        assert exporter.url.startswith("http://127.0.0.1:")
        fams = families(exporter.url)
        assert value(fams, "edgeswitch_edge_drift_alarm") == 1
        assert all(name.startswith("edgeswitch_edge_") for name in fams)
        for fam in fams.values():
            assert fam.documentation  # help text on every family
        with pytest.raises(EdgeSwitchError, match="in use"):
            MetricsExporter(m, "127.0.0.1", exporter.port)
        # the CLI: a clear error, exit 2, no traceback
        code = main([*classify_args(bundle), "--cloud", bundle["cloud"], "--out",
                     str(tmp_path / "o.jsonl"), "--metrics-port", str(exporter.port)])
        err = capsys.readouterr().err
        assert code == 2 and f"127.0.0.1:{exporter.port}" in err and "in use" in err
        assert "Traceback" not in err
    finally:
        exporter.close()
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # closed: nobody there
        s.connect(("127.0.0.1", exporter.port))


def test_a_metrics_host_beyond_loopback_warns(bundle, tmp_path, capsys):
    code = main([*classify_args(bundle), "--cloud", bundle["cloud"], "--out",
                 str(tmp_path / "o.jsonl"), "--metrics-port", "0", "--metrics-host",
                 "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 0 and "warning: serving metrics on 0.0.0.0 without auth" in err


@pytest.mark.slow
def test_curl_metrics_during_a_classify_run(bundle, tmp_path):
    """A real server that takes 0.1 s per request, a real `classify --metrics-port 0` with
    clips one per call: GET /metrics while the run goes shows some clips, not all; after
    the run (--metrics-linger-s) the counts equal the JSON lines."""
    from edgeswitch.serving.server import ServerProcess

    out = tmp_path / "out.jsonl"
    with ServerProcess(bundle["cloud"], faults=("sleep:0.1",)) as server:
        args = [*classify_args(bundle), "--cloud-url", server.url, "--out", out,
                "--metrics-linger-s", "60",
                "--deadline-ms", "30000"]  # every offload answered, even on a busy machine
        with edge_process(args, tmp_path) as (proc, url, err):
            seen = []
            for _ in range(400):  # bounded: 40 clips, ~20 offloaded at 0.1 s each
                fams = families(url)
                n = value(fams, "edgeswitch_edge_clips_total")
                seen.append(n)
                if n >= len(bundle["ids"]):
                    break
                time.sleep(0.05)
            assert proc.poll() is None
            assert any(0 < n < len(bundle["ids"]) for n in seen), seen  # mid-run
            assert seen == sorted(seen)  # a counter only grows
            wait_for("metrics stay on", err, proc)
            fams = families(url)
            rows = jsonl(out)
            assert value(fams, "edgeswitch_edge_clips_total") == len(rows) == 40
            cloud = sum(r["answered_by"] == "cloud" for r in rows)
            assert value(fams, "edgeswitch_edge_cloud_answers_total") == cloud > 0
            assert value(fams, "edgeswitch_edge_offloads_total") == cloud
            assert value(fams, "edgeswitch_edge_cloud_latency_seconds_count") == cloud
            assert value(fams, "edgeswitch_edge_cloud_latency_seconds_sum") >= 0.1 * cloud
            assert value(fams, "edgeswitch_edge_threshold") == json.loads(
                open(bundle["op"]).read())["threshold"]
        assert proc.returncode == 0, err.read_text()  # Ctrl-C ended the linger cleanly


@pytest.mark.slow
def test_watch_metrics_port_against_its_lines(tmp_path):
    """`watch --realtime` on a SYNTHETIC fall video with an OpenAI-compatible cloud on
    loopback (tests/fake_vlm.py): the scraped counters equal what its JSON lines, its fall
    events and its own `--summary` JSON say."""
    pytest.importorskip("av", reason="needs the video extra")
    from tests.fake_vlm import FakeVLM
    from tests.test_watch_realtime import fall_video

    video, _ = fall_video(tmp_path / "fall.mp4")
    out, events, summary = tmp_path / "out.jsonl", tmp_path / "ev.jsonl", tmp_path / "m.json"
    with FakeVLM() as vlm:
        args = ["watch", video, "--realtime", "--cloud-url", vlm.url, "--model", "json",
                "--events", events, "--out", out, "--summary", summary,
                "--metrics-linger-s", "60"]
        with edge_process(args, tmp_path) as (proc, url, err):
            wait_for("metrics stay on", err, proc, timeout=180)
            fams = families(url)
    rows = jsonl(out)
    clips = [r for r in rows if r["kind"] == "clip"]
    updates = [r for r in rows if r["kind"] == "update"]
    answered = [r for r in updates if r["verified"]]
    assert value(fams, "edgeswitch_edge_clips_total") == len(clips) == 27
    assert value(fams, "edgeswitch_edge_offloads_total") == \
        sum(r["cloud"] == "pending" for r in clips) == len(updates) > 0
    assert value(fams, "edgeswitch_edge_cloud_answers_total") == len(answered) > 0
    assert value(fams, "edgeswitch_edge_agreement_total", kind="offloaded") == len(answered)
    assert value(fams, "edgeswitch_edge_fallbacks_total") == len(updates) - len(answered)
    assert value(fams, "edgeswitch_edge_sent_bytes_sum") == \
        sum(r.get("sent_bytes", 0) for r in updates)
    assert value(fams, "edgeswitch_edge_cloud_latency_seconds_count") == \
        sum(r["latency_ms"]["cloud"] is not None for r in updates)
    assert value(fams, "edgeswitch_edge_lag_seconds_count") == len(clips)  # paced: every line
    assert value(fams, "edgeswitch_edge_fall_events_total") == len(jsonl(events)) == 1
    assert value(fams, "edgeswitch_edge_queue_depth") == 0  # drained
    m = json.loads(summary.read_text())  # --summary FILE is still written, and agrees
    assert m["clips"] == 27 and m["offloaded"] == len(updates)
    assert proc.returncode == 0, err.read_text()
