"""deploy/grafana/edgeswitch.json: a well-formed dashboard, and every metric (and label) its
PromQL names is one that a real `serve-cloud` and a real `classify --metrics-port` expose."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="needs the serve extra")

from tests.deployed import classify_args, jsonl, make_bundle  # noqa: E402
from tests.edge_run import edge_process, families, value, wait_for  # noqa: E402

DASHBOARD = Path(__file__).parent.parent / "deploy" / "grafana" / "edgeswitch.json"
METRIC = re.compile(r"\bedgeswitch_[A-Za-z0-9_]+")
BY = re.compile(r"\bby\s*\(([^)]*)\)")
SELECTOR = re.compile(r"\{([^}]*)\}")
# names no process exposes but PromQL and Grafana supply
BUILTIN_LABELS = {"instance", "job"}


def _targets(dash: dict):
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        for target in panel["targets"]:
            yield panel, target


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert 36 <= dash["schemaVersion"] <= 41 and dash["uid"] and dash["title"]
    (var,) = [v for v in dash["templating"]["list"] if v["type"] == "datasource"]
    assert var["query"] == "prometheus" and var["name"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in dash["panels"]}
    for want in ("Offload rate", "Fallbacks by reason", "Cloud latency (edge side)",
                 "Edge/cloud agreement", "Threshold", "Drift", "Requests by status",
                 "Shed by reason", "Batch size", "Requests by device"):
        assert want in titles
    for panel, target in _targets(dash):
        assert panel["datasource"]["uid"] == target["datasource"]["uid"] == "${datasource}"
        assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
        assert METRIC.search(target["expr"]), target["expr"]
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0
    exprs = " ".join(t["expr"] for _, t in _targets(dash))
    assert "histogram_quantile(0.99, sum by (le) (rate(edgeswitch_edge_cloud_latency_seconds" \
        "_bucket" in exprs
    assert "rate(edgeswitch_edge_offloads_total[$__rate_interval])) / sum(rate(" \
        "edgeswitch_edge_clips_total" in exprs


@pytest.mark.slow
def test_every_metric_the_dashboard_names_is_exposed(tmp_path, bm_files, basicmotions):
    import httpx

    from edgeswitch.serving.server import ServerProcess

    bundle = make_bundle(tmp_path, bm_files, basicmotions)
    (tmp_path / "token").write_text("s3cret")
    out = tmp_path / "out.jsonl"
    with ServerProcess(bundle["cloud"], token="s3cret") as server:
        args = [*classify_args(bundle), "--cloud-url", server.url, "--token-file",
                tmp_path / "token", "--out", out, "--metrics-linger-s", "60",
                "--deadline-ms", "30000"]  # every offload answered, even on a busy machine
        with edge_process(args, tmp_path) as (proc, url, err):
            wait_for("metrics stay on", err, proc)
            edge = families(url)
            # one refused request: the server's error family has a sample only once an
            # error happened (a labelled counter shows no series before its first label)
            bad = httpx.post(server.url + "/v1/classify", content=b"{not json",
                             headers={"Authorization": "Bearer s3cret",
                                      "Content-Type": "application/json"}, timeout=5)
            assert bad.status_code == 400
            cloud = families(server.url + "/metrics", token="s3cret")
    assert proc.returncode == 0, err.read_text()
    rows = jsonl(out)
    assert value(edge, "edgeswitch_edge_clips_total") == len(rows) == len(bundle["ids"])
    offloaded = sum(r["answered_by"] == "cloud" for r in rows)
    assert value(edge, "edgeswitch_edge_offloads_total") == offloaded > 0
    assert value(cloud, "edgeswitch_clips_total") == offloaded  # the server saw those clips

    labels: dict[str, set[str]] = {}
    for fam in (*edge.values(), *cloud.values()):
        for s in fam.samples:
            labels.setdefault(s.name, set()).update(s.labels)
    assert not set(edge) & set(cloud)  # the edge's names never collide with the server's
    dash = json.loads(DASHBOARD.read_text())
    checked = set()
    for panel, target in _targets(dash):
        expr = target["expr"]
        names = set(METRIC.findall(expr))
        missing = names - set(labels)
        assert not missing, f"panel {panel['title']!r}: {sorted(missing)} not exposed"
        have = set().union(*(labels[n] for n in names)) | BUILTIN_LABELS
        used = {lab.strip() for group in BY.findall(expr) for lab in group.split(",")}
        used |= {m.split("=")[0].strip(" !~") for group in SELECTOR.findall(expr)
                 for m in group.split(",") if "=" in m}
        assert used <= have, f"panel {panel['title']!r}: labels {sorted(used - have)}"
        checked |= names
    # the server's and the edge's families are both on the dashboard
    assert {"edgeswitch_requests_total", "edgeswitch_shed_total", "edgeswitch_batch_size_bucket",
            "edgeswitch_device_requests_total", "edgeswitch_edge_drift_alarm",
            "edgeswitch_edge_threshold"} <= checked
