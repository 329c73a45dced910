"""One stream runtime: on a smartwatch test subject, `classify` and `watch` over HTTP give
the decisions of the benchmark's evaluation of the deployed router (switcher.sweep), and the
decision log records the state each decision read."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from tests.deployed import jsonl, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def watch_bundle(tmp_path_factory):
    """A small run of the whole method on the smartwatch data (few epochs: the decisions,
    not the accuracy, are under test), deployed as the demo deploys it, and one test
    subject's clips as a recording (`streams`, `t`)."""
    from edgeswitch.config import load_config
    from edgeswitch.pipeline import build
    from edgeswitch.pipeline.deploy import save_bundle

    d = tmp_path_factory.mktemp("watch-bundle")
    cfg = load_config(dataset="watch", overrides={
        "edge.epochs": 2, "cloud.epochs": 2, "cloud.arch_params": {"width": 16},
        "latency_calls": 20, "calibration.rate": 0.2})
    a = build(cfg, d, cache_dir=d / "cache", progress=False)
    assert a.router is not None and a.router.stateful
    paths = save_bundle(a, d / "bundle")
    test = a.splits.test
    one = test.subset(np.nonzero(test.streams == test.streams[0])[0])
    order = one.stream_order()
    np.savez(d / "subject.npz", X=one.X[order], ids=one.ids[order],
             streams=one.streams[order], t=one.t[order],
             classes=np.asarray(one.classes))
    return {"a": a, "paths": {k: str(v) for k, v in paths.items()},
            "clips": str(d / "subject.npz"), "subject": one.subset(order), "dir": d}


def _benchmark_decisions(b) -> tuple[dict, dict]:
    """The deployed router on the subject's stream as the benchmark evaluates it."""
    from edgeswitch.data.clips import stream_lists
    from edgeswitch.switcher.sweep import run_streams

    a, clips = b["a"], b["subject"]
    edge_out = a.edge.outputs(clips.X)
    cloud = a.cloud.predict_proba(clips.X)
    answer = a.fusion.combine(edge_out.proba, cloud)
    op = a.operating_point
    decide = op.controller().decide if op.adaptive else op.offload
    off, label, _ = run_streams(a.router, edge_out, cloud, answer,
                             stream_lists(clips.streams, clips.t), decide)
    return ({str(i): bool(o) for i, o in zip(clips.ids, off, strict=True)},
            {str(i): clips.classes[int(k)] for i, k in zip(clips.ids, label, strict=True)})


def test_classify_and_watch_over_http_give_the_benchmarks_decisions(watch_bundle, tmp_path):
    from edgeswitch.serving.server import ServerProcess

    b, p = watch_bundle, watch_bundle["paths"]
    offloaded, label = _benchmark_decisions(b)
    assert 0 < sum(offloaded.values()) < len(offloaded)
    # the benchmark's decisions assume every offloaded clip is answered: a deadline no busy
    # machine reaches (at 500 ms, six test workers on two cores made the edge answer stand)
    (tmp_path / "patient.toml").write_text("[runtime]\ndeadline_ms = 600000.0\n")
    deployed = ["--edge", p["edge"], "--switcher", p["switcher"], "--op", p["operating_point"],
                "--config", tmp_path / "patient.toml"]
    with ServerProcess(p["cloud"]) as server:
        r = run_cli("classify", "--data", b["clips"], *deployed, "--cloud-url", server.url,
                    "--log", tmp_path / "classify.sqlite", "--out", tmp_path / "c.jsonl",
                    "--quiet")
        assert r.returncode == 0, r.stderr
        w = run_cli("watch", b["clips"], *deployed, "--cloud-url", server.url, "--cloud-wait",
                    "--log", tmp_path / "watch.sqlite", "--out", tmp_path / "w.jsonl",
                    "--quiet")
        assert w.returncode == 0, w.stderr
    rows = jsonl(tmp_path / "c.jsonl")
    assert len(rows) == len(label)
    assert {r["clip_id"]: r["answered_by"] == "cloud" for r in rows} == offloaded
    assert {r["clip_id"]: r["label"] for r in rows} == label
    assert {r["stream"] for r in rows} == {str(b["subject"].streams[0])}
    # watch: a clip line per clip, an update line per offloaded clip (the final answer)
    lines = jsonl(tmp_path / "w.jsonl")
    clip_lines = [r for r in lines if r["kind"] == "clip"]
    final = {r["clip_id"]: r["label"] for r in clip_lines} | \
        {r["clip_id"]: r["label"] for r in lines if r["kind"] == "update"}
    assert [r["clip_id"] for r in clip_lines] == [r["clip_id"] for r in rows]
    assert {r["clip_id"]: r["cloud"] == "pending" for r in clip_lines} == offloaded
    assert final == label
    assert {r["cloud"] for r in lines if r["kind"] == "update"} <= {"confirmed", "overruled"}
    # the decision logs hold the same decisions and the state each one read
    for db in ("classify.sqlite", "watch.sqlite"):
        got = sqlite3.connect(tmp_path / db).execute(
            "SELECT clip_id, offloaded, label, stream, cloud_age FROM decisions").fetchall()
        assert {c: bool(o) for c, o, *_ in got} == offloaded
        assert {c: lab for c, _, lab, *_ in got} == label
        ages = [age for *_, age in got]
        assert ages[0] is None and all(a is not None for a in ages[-10:])


def test_demo_json_reports_the_stream_router_and_its_served_replay(watch_bundle):
    """What `demo` writes about the router it deployed, and its replay over HTTP."""
    from dataclasses import replace

    from edgeswitch.pipeline.deploy import serve_and_replay

    a = watch_bundle["a"]
    # a cloud deadline no busy machine reaches: at the default 500 ms, six test workers on two
    # cores once let 3 of 742 requests time out, and the edge answer stood (counted right)
    patient = replace(a.cfg, runtime=replace(a.cfg.runtime, deadline_ms=600_000.0))
    served = serve_and_replay(replace(a, cfg=patient), watch_bundle["dir"] / "served", "http")
    assert served["agrees_with_in_process"] == 1.0
    assert served["same_offloads_as_in_process"] == 1.0
    router = json.loads((watch_bundle["dir"] / "served" / "router.json").read_text())
    assert router["router"] == "belief" and router["meta"]["teacher"] == "smoothed"
