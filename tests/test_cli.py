"""The `edgeswitch` command end to end, as a user runs it (real subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest

ROUTERS = {"dmd", "supervised", "max_prob", "entropy", "margin", "random", "oracle"}


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "edgeswitch", *args], capture_output=True,
                          text=True, timeout=timeout)


def _listed_commands(help_text: str) -> dict[str, str]:
    """{subcommand: its help line} of `edgeswitch --help`'s COMMAND section (a long name has
    its help on the next line)."""
    section = help_text.split("positional arguments:")[1].split("options:")[0]
    listed, name = {}, None
    for line in section.splitlines()[2:]:  # after "  COMMAND"
        if line.startswith("    ") and not line.startswith("     "):
            name, _, text = line.strip().partition(" ")
            listed[name] = text.strip()
        elif name is not None and line.strip():
            listed[name] = (listed[name] + " " + line.strip()).strip()
    return listed


def test_help_explains_every_subcommand():
    from edgeswitch.cli.main import build_parser

    r = run_cli("--help")
    assert r.returncode == 0
    listed = _listed_commands(r.stdout)
    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(listed) == set(commands)  # every subcommand, and nothing else
    assert {"demo", "train-models", "distill", "train-switcher", "calibrate", "evaluate",
            "serve-cloud", "classify", "log"} <= set(listed)
    assert all(len(text.split()) >= 3 for text in listed.values()), listed  # each explained
    r = run_cli("demo", "--help")
    assert r.returncode == 0 and "--dataset" in r.stdout and "cached" in r.stdout


def test_unknown_dataset_is_a_clear_error(tmp_path):
    r = run_cli("demo", "--dataset", str(tmp_path / "nope.npz"), "--out", str(tmp_path))
    assert r.returncode == 2
    assert "unknown data set" in r.stderr and "Traceback" not in r.stderr


def _check_results(res: dict) -> None:
    assert res["dataset"] == "basicmotions" and res["n_test"] > 0 and len(res["classes"]) == 4
    for role in ("edge", "cloud"):
        for key in ("accuracy", "macro_f1", "latency_ms"):
            assert isinstance(res[role][key], float)
        assert isinstance(res[role]["params"], int)
    assert res["switcher"]["target"] in ("hard", "soft")
    assert res["switcher"]["latency_ms"] > 0 and res["switcher"]["params"] > 0
    op = res["operating_point"]
    for key in ("threshold", "offload_rate", "accuracy", "macro_f1", "compute_vs_cloud"):
        assert key in op
    assert isinstance(op["mode"], str) and 0 <= op["offload_rate"] <= 1
    assert set(res["routers"]) == ROUTERS
    for r in res["routers"].values():
        xs = [p[0] for p in r["curve"]]
        assert len(xs) >= 21 and xs[0] == 0 and xs[-1] == 1 and xs == sorted(xs)
        assert 0 <= r["auc"] <= 1
        assert r["offload_to_match_cloud"] is None or 0 <= r["offload_to_match_cloud"] <= 1
        # both ends of every curve are edge-only and cloud-only accuracy
        assert r["curve"][0][1] == pytest.approx(res["edge"]["accuracy"], abs=1e-6)
        assert r["curve"][-1][1] == pytest.approx(res["cloud"]["accuracy"], abs=1e-6)
    assert res["routers"]["oracle"]["auc"] >= max(r["auc"] for r in res["routers"].values()) \
        - 1e-9
    # one stream of the deployed run, in time order; a kept clip gets the router's own answer
    tr = res["stream_trace"]
    n = len(tr["clips"])
    assert n >= 1 and all(len(tr[k]) == n for k in ("t", "ids", "label", "edge", "belief",
                                                     "answer", "offloaded"))
    assert tr["t"] == sorted(tr["t"])
    kept = [i for i in range(n) if not tr["offloaded"][i]]
    assert [tr["answer"][i] for i in kept] == [tr["belief"][i] for i in kept]


@pytest.mark.slow
def test_demo_on_basicmotions_end_to_end(tmp_path):
    out, cache = tmp_path / "run", tmp_path / "cache"
    # the HTTP replay's deadline: one no busy machine misses (every clip must get its answer)
    (tmp_path / "patient.toml").write_text("[runtime]\ndeadline_ms = 30000\n")
    r = run_cli("demo", "--dataset", "basicmotions", "--out", str(out), "--cache", str(cache),
                "--config", str(tmp_path / "patient.toml"), "--quiet")
    assert r.returncode == 0, r.stderr
    for name in ("results.json", "curves.png", "stream.png", "report.html", "dmd_pool.parquet"):
        assert (out / name).stat().st_size > 0
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in (out / "report.html").read_text()
    res = json.loads((out / "results.json").read_text())
    _check_results(res)
    assert "router" in r.stdout and "oracle" in r.stdout  # the printed table
    # the deployed run went over HTTP to a server the demo started, and matches in-process
    sv = res["served"]
    assert sv["transport"] == "http" and sv["url"].startswith("http://127.0.0.1:")
    assert sv["clips"] == res["n_test"] and sv["fallbacks"] == 0
    assert sv["agrees_with_in_process"] == 1.0
    assert sv["offload_rate"] == pytest.approx(res["operating_point"]["offload_rate"])
    assert sv["accuracy"] == pytest.approx(res["operating_point"]["accuracy"])
    assert "over HTTP" in r.stdout
    for name in ("edge.onnx", "cloud.onnx", "switcher.npz", "operating_point.json"):
        assert (out / name).stat().st_size > 0
    log = run_cli("log", str(out / "decisions.sqlite"), "--json", "--export-dmd",
                  str(tmp_path / "from_log.parquet"))
    assert log.returncode == 0, log.stderr
    summary = json.loads(log.stdout)
    assert summary["decisions"] == res["n_test"] and summary["fallbacks"] == 0
    assert summary["offload_rate"] == pytest.approx(sv["offload_rate"])
    assert run_cli("train-switcher", "--dmd", str(tmp_path / "from_log.parquet"), "--out",
                   str(tmp_path / "sw_from_log.npz")).returncode == 0
    # a second run finds the models in the cache and does not retrain
    models = sorted(p.name for p in (cache / "models").iterdir())
    r2 = run_cli("demo", "--dataset", "basicmotions", "--out", str(tmp_path / "run2"),
                 "--cache", str(cache), "--quiet", "--in-process")
    assert r2.returncode == 0, r2.stderr
    assert sorted(p.name for p in (cache / "models").iterdir()) == models
    res2 = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert res2["edge"]["accuracy"] == res["edge"]["accuracy"]
    assert res2["routers"]["dmd"]["auc"] == res["routers"]["dmd"]["auc"]
    assert res2["served"]["transport"] == "in-process"
    assert res2["served"]["accuracy"] == sv["accuracy"]


@pytest.mark.slow
def test_classify_against_a_running_server(tmp_path, bm_files, basicmotions):
    """serve-cloud in one process, classify in another, as on two machines."""
    from edgeswitch.data import split_by_group
    from edgeswitch.dmd import distill
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.serving.server import ServerProcess
    from edgeswitch.switcher import MLPSwitcher, calibrate_offload

    edge, cloud = OnnxClassifier(bm_files["edge"]), OnnxClassifier(bm_files["cloud"])
    pool = split_by_group(basicmotions, (0.5, 0.2, 0.1, 0.2), seed=0).pool
    rec = distill(edge, cloud, pool)
    sw = MLPSwitcher(epochs=50, target="soft").fit(rec.edge, rec.target("soft"), rec.groups)
    sw.save(tmp_path / "sw.npz")
    calibrate_offload(sw.trust(rec.edge), 0.5).save(tmp_path / "op.json")
    np.savez(tmp_path / "clips.npz", X=basicmotions.X[:30])  # unlabelled user clips
    (tmp_path / "token").write_text("s3cret")
    common = ("classify", "--data", str(tmp_path / "clips.npz"), "--edge", str(bm_files["edge"]),
              "--switcher", str(tmp_path / "sw.npz"), "--op", str(tmp_path / "op.json"),
              "--deadline-ms", "30000", "--quiet")  # no timeout even on a busy machine
    with ServerProcess(bm_files["cloud"], token="s3cret") as server:
        for protocol in ("native", "openai"):
            out = tmp_path / f"{protocol}.jsonl"
            r = run_cli(*common, "--cloud-url", server.url, "--token-file",
                        str(tmp_path / "token"), "--protocol", protocol, "--model", cloud.name,
                        "--out", str(out), "--log", str(tmp_path / f"{protocol}.sqlite"))
            assert r.returncode == 0, r.stderr
            rows = [json.loads(line) for line in out.read_text().splitlines()]
            assert len(rows) == 30 and all(row["verified"] for row in rows)
            assert {row["answered_by"] for row in rows} == {"edge", "cloud"}
            for row in rows:
                assert set(row) >= {"clip_id", "label", "answered_by", "verified",
                                    "fallback_reason", "switcher_score", "latency_ms", "proba"}
            cloud_rows = [i for i, row in enumerate(rows) if row["answered_by"] == "cloud"]
            expected = cloud.predict(basicmotions.X[cloud_rows])
            assert [rows[i]["label"] for i in cloud_rows] == [cloud.classes_[k]
                                                              for k in expected]
        bad = run_cli(*common, "--cloud-url", server.url, "--out", str(tmp_path / "x.jsonl"))
    # no token: the server refuses, and every clip still gets the edge answer, flagged; the
    # exit code says the cloud answered none of them (3), and the summary names the reason
    assert bad.returncode == 3, bad.stderr
    assert "unauthorized" in bad.stderr and "Traceback" not in bad.stderr
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    assert {r["fallback_reason"] for r in rows if not r["verified"]} <= {"unauthorized",
                                                                         "circuit_open"}
    assert any(not r["verified"] for r in rows) and all(r["answered_by"] == "edge"
                                                        for r in rows)


@pytest.mark.slow
def test_step_commands_chain_on_user_files(tmp_path, bm_files):
    """train-models -> distill -> train-switcher -> calibrate -> evaluate, as separate runs."""
    m = tmp_path / "models"
    steps = [
        ("train-models", "--data", "basicmotions", "--out", str(m), "--quiet"),
        ("distill", "--data", "basicmotions", "--edge", str(m / "edge.onnx"), "--cloud",
         str(m / "cloud.onnx"), "--out", str(tmp_path / "dmd.parquet"), "--quiet"),
        ("train-switcher", "--dmd", str(tmp_path / "dmd.parquet"), "--target", "hard",
         "--out", str(tmp_path / "sw.npz")),
        ("calibrate", "--data", "basicmotions", "--edge", str(m / "edge.onnx"), "--switcher",
         str(tmp_path / "sw.npz"), "--mode", "offload", "--rate", "0.25", "--out",
         str(tmp_path / "op.json")),
        ("evaluate", "--data", "basicmotions", "--edge", str(m / "edge.onnx"), "--cloud",
         str(m / "cloud.onnx"), "--switcher", str(tmp_path / "sw.npz"), "--op",
         str(tmp_path / "op.json"), "--out", str(tmp_path / "eval")),
    ]
    for args in steps:
        r = run_cli(*args)
        assert r.returncode == 0, (args[0], r.stderr)
    op = json.loads((tmp_path / "op.json").read_text())
    assert op["mode"] == "offload" and 0.2 <= op["calib_offload_rate"] <= 0.3
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {"dmd", "max_prob", "oracle"} <= set(res["routers"])
    assert (tmp_path / "eval" / "curves.png").exists()
    # train-switcher fitted the fusion beside the switcher, and evaluate answered with it
    fusion = json.loads((tmp_path / "fusion.json").read_text())
    assert fusion["method"] == "dmd" and res["fusion"]["weight"] == fusion["weight"]
    # the figures are the models' own: recompute the edge accuracy on the same test split
    from edgeswitch.config import load_config
    from edgeswitch.data import load_dataset, split_by_group
    from edgeswitch.models import OnnxClassifier

    cfg = load_config(dataset="basicmotions")
    test = split_by_group(load_dataset("basicmotions"), tuple(cfg.splits), cfg.seed).test
    edge = OnnxClassifier(m / "edge.onnx")
    assert res["edge"]["accuracy"] == pytest.approx(float((edge.predict(test.X) == test.y).mean()))

    # --- what a user gets wrong: each is a clear error, exit code 2, no traceback
    def fails(*args, match):
        r = run_cli(*args)
        assert r.returncode == 2, (args[0], r.stdout, r.stderr)
        assert match in r.stderr and "Traceback" not in r.stderr, r.stderr

    # string labels: classes come out sorted, not in the order the models were trained with
    X, y = test.X, np.asarray(test.classes)[test.y]
    np.savez(tmp_path / "strings.npz", X=X, y=y)
    def evaluate(*args):
        return ("evaluate", "--edge", str(m / "edge.onnx"), "--cloud", str(m / "cloud.onnx"),
                "--switcher", str(tmp_path / "sw.npz"), "--out", str(tmp_path / "bad"), *args)

    fails(*evaluate("--op", str(tmp_path / "op.json"), "--data", str(tmp_path / "strings.npz"),
                    "--split", "all"), match="differ from model")
    (tmp_path / "broken.json").write_text("{not json")
    fails(*evaluate("--op", str(tmp_path / "broken.json"), "--data", "basicmotions"),
          match="not a JSON operating point")
    # a switcher trained on another edge model's outputs (the session's 10-epoch edge)
    fails("calibrate", "--data", "basicmotions", "--edge", str(bm_files["edge"]),
          "--switcher", str(tmp_path / "sw.npz"), "--out", str(tmp_path / "op2.json"),
          match="was trained on outputs of edge model")
    fails("distill", "--data", "basicmotions", "--edge", str(m / "edge.onnx"), "--cloud",
          str(m / "cloud.onnx"), "--out", str(tmp_path), match="is a folder")
