"""`benchmark --outputs`: the benchmark on recorded model outputs, its round trip from a run
on clips, what theory predicts for two model pairs, and a clear error for each bad input."""

import csv
import json
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.model_pairs import versus_margin, write_pair
from edgeswitch.benchmark.recorded import read_outputs
from edgeswitch.errors import DataError

CLASSES = ["a", "b", "c"]


def _columns(n_groups=6, per=10, seed=0):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    return {"clip_id": [f"c{i}" for i in range(n)],
            "group": [f"g{i // per}" for i in range(n)],
            "label": [CLASSES[i % 3] for i in range(n)],
            "edge_proba": rng.dirichlet(np.ones(3), n).tolist(),
            "cloud_proba": rng.dirichlet(np.ones(3), n).tolist()}


def _parquet(path, cols, classes=CLASSES, meta=None):
    table = pa.table(cols)
    table = table.replace_schema_metadata({"classes": json.dumps(classes)} | (meta or {}))
    pq.write_table(table, path)
    return path


def _refused(tmp_path, cols, match, **kw):
    with pytest.raises(DataError, match=match):
        read_outputs(_parquet(tmp_path / "o.parquet", cols, **kw))


def test_a_good_file_reads_back_with_its_folds(tmp_path):
    cols = _columns()
    cols["label"][0] = None    # group g0 has an unlabelled clip: never a test group
    rec = read_outputs(_parquet(tmp_path / "o.parquet", cols))
    assert rec.classes == tuple(CLASSES) and len(rec) == 60 and rec.labels[0] == -1
    assert rec.streams is None and rec.costs is None and rec.members is None
    folds = rec.folds(5, 1, 0, (0.5, 0.2, 0.1, 0.2))
    tested = [g for f in folds for g in f.test_groups]
    assert sorted(tested) == [f"g{i}" for i in range(1, 6)]    # every labelled group once
    for f in folds:
        assert f.groups["train"] == [] and f.groups["pool"] and f.groups["calib"]
        parts = [set(f.groups[p]) for p in ("pool", "calib", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] | parts[1]) & parts[2]
        o = rec.fold_outputs(f)
        assert "hidden_y_pool" not in o.arrays   # an unlabelled clip: no supervised ablation
        assert o.cost_unit is None and "members_test_p" not in o.arrays


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_json_lines_read_like_parquet(tmp_path, fmt):
    cols = _columns() | {"classes": [CLASSES] * 60, "t": list(range(60))}
    want = read_outputs(_parquet(tmp_path / "o.parquet", {k: v for k, v in cols.items()
                                                          if k != "classes"}))
    rows = [{k: cols[k][i] for k in cols} for i in range(60)]
    path = tmp_path / f"o.{fmt}"
    if fmt == "csv":  # list cells as JSON, quoted by the csv module
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, list(cols))
            w.writeheader()
            w.writerows({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()}
                        for r in rows)
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = read_outputs(path)
    assert got.classes == want.classes and (got.labels == want.labels).all()
    np.testing.assert_allclose(got.edge, want.edge, rtol=1e-12)
    assert got.stream_kind == "group" and (got.streams == got.groups).all()


@pytest.mark.parametrize("change, match", [
    (lambda c: c["edge_proba"].__setitem__(4, [0.5, 0.5]), r"row 4 \(clip 'c4'\): edge_proba "
     r"has 2 values, row 0 has 3"),
    (lambda c: c["cloud_proba"].__setitem__(7, [0.5, 0.2, 0.1]), r"row 7 \(clip 'c7'\): "
     r"cloud_proba sums to 0.8, not 1"),
    (lambda c: c["edge_proba"].__setitem__(9, [float("nan"), 0.5, 0.5]),
     r"row 9 \(clip 'c9'\): edge_proba holds NaN"),
    (lambda c: c["edge_proba"].__setitem__(2, [1.5, -0.5, 0.0]), r"row 2 .* negative"),
    (lambda c: c["label"].__setitem__(3, "zebra"), r"row 3 \(clip 'c3'\): label 'zebra' is not "
     r"one of the classes"),
    (lambda c: c["clip_id"].__setitem__(5, "c1"), r"clip_id 'c1' appears more than once"),
    (lambda c: c.pop("cloud_proba"), r"missing column\(s\) \['cloud_proba'\]"),
    (lambda c: c["group"].__setitem__(6, None), r"row 6 \(clip 'c6'\) has no group"),
])
def test_bad_rows_are_named_by_row_and_column(tmp_path, change, match):
    cols = _columns()
    change(cols)
    _refused(tmp_path, cols, match)


def test_class_lists_that_differ_between_the_models_are_refused(tmp_path):
    meta = {"edge_classes": json.dumps(CLASSES), "cloud_classes": json.dumps(["a", "c", "b"])}
    path = tmp_path / "o.parquet"
    pq.write_table(pa.table(_columns()).replace_schema_metadata(meta), path)
    with pytest.raises(DataError, match=r"edge model's classes \['a', 'b', 'c'\] differ from the "
                       r"cloud model's \['a', 'c', 'b'\] \(the same classes in another order\)"):
        read_outputs(path)
    pq.write_table(pa.table(_columns()), path)
    with pytest.raises(DataError, match="no class list"):
        read_outputs(path)


def test_too_few_groups_and_unlabelled_test_clips_are_refused(tmp_path):
    cols = _columns(n_groups=6)
    for i in range(40):          # only two groups keep a label on every clip
        cols["label"][i] = None
    rec = read_outputs(_parquet(tmp_path / "o.parquet", cols))
    with pytest.raises(DataError, match="2 groups with a label on every clip cannot make 5 "
                       "folds"):
        rec.folds(5, 1, 0, (0.5, 0.2, 0.1, 0.2))
    small = read_outputs(_parquet(tmp_path / "s.parquet", _columns(n_groups=3)))
    with pytest.raises(DataError, match="a fold leaves 1 groups for pool and calib, which "
                       "need 2"):
        small.folds(2, 1, 0, (0.5, 0.2, 0.1, 0.2))
    fixed = _columns(n_groups=3) | {"fold": [0] * 30,
                                    "part": ["pool"] * 10 + ["calib"] * 10 + ["test"] * 10}
    fixed["label"][25] = None
    rec = read_outputs(_parquet(tmp_path / "f.parquet", fixed))
    with pytest.raises(DataError, match=r"row 25 \(clip 'c25'\) is in fold 0's test part but "
                       "has no label"):
        rec.folds(5, 1, 0, (0.5, 0.2, 0.1, 0.2))


def test_members_and_costs_reach_the_fold(tmp_path):
    """Extra edge models make the ABC ensemble (the deployed edge first); costs per clip in ms
    are the compute axis (the ensemble costs k edges where no members_ms is given)."""
    cols = _columns()
    rng = np.random.default_rng(1)
    cols["members_proba"] = [rng.dirichlet(np.ones(3), 2).tolist() for _ in range(60)]
    cols["edge_ms"], cols["cloud_ms"] = [2.0] * 60, [40.0] * 60
    rec = read_outputs(_parquet(tmp_path / "o.parquet", cols))
    assert rec.members.shape == (60, 2, 3)
    assert rec.costs == {"unit": "ms", "edge": 2.0, "cloud": 40.0, "members": 6.0}
    fold = rec.folds(5, 1, 0, (0.5, 0.2, 0.1, 0.2))[0]
    o = rec.fold_outputs(fold)
    m = o.members("test")
    assert m.shape == (3, len(o["y_test"]), 3)
    np.testing.assert_array_equal(m[0], o["edge_test_p"])
    assert o.cost_unit == "ms" and list(o["macs"]) == [2.0, 40.0, 6.0]
    cols["members_proba"][3] = [[0.2, 0.2, 0.2], [0.3, 0.3, 0.4]]
    _refused(tmp_path, cols, r"row 3 \(clip 'c3'\): members_proba sums to 0.6")
    cols.pop("members_proba")
    cols["cloud_ms"][5] = -1.0
    _refused(tmp_path, cols, r"row 5 \(clip 'c5'\): cloud_ms must be a finite number >= 0")


def test_labels_join_a_records_file_by_clip_id(tmp_path):
    """`distill`'s DMD records are an outputs file but for the labels: --labels adds them."""
    from edgeswitch.dmd.records import DMDRecords

    cols = _columns()
    labels = cols.pop("label")
    n = len(labels)
    path = DMDRecords(np.asarray(cols["clip_id"]), np.asarray(cols["group"]),
                      np.asarray(cols["edge_proba"]), np.zeros((n, 4)),
                      np.asarray(cols["cloud_proba"]), tuple(CLASSES), "edge", "vlm", "clips",
                      np.asarray(cols["group"]), np.arange(n, dtype=float)
                      ).to_parquet(tmp_path / "records.parquet")
    csv = tmp_path / "labels.csv"
    csv.write_text("clip_id,label\n" + "\n".join(f"c{i},{y}" for i, y in enumerate(labels)
                                                  if i % 2 == 0) + "\n")
    rec = read_outputs(path, csv)
    assert rec.classes == tuple(CLASSES) and rec.embedding.shape == (n, 4)
    assert rec.stream_kind == "file" and (rec.streams == np.asarray(cols["group"])).all()
    assert (rec.labels[::2] == [CLASSES.index(y) for y in labels[::2]]).all()
    assert (rec.labels[1::2] == -1).all()   # no label given: unlabelled
    csv.write_text("clip_id,label\nnope,a\n")
    with pytest.raises(DataError, match=r"1 clip ids are not in .*\['nope'\]"):
        read_outputs(path, csv)


def _quick(monkeypatch, variants=("dmd-gbt",)):
    """Fewer switcher variants and CV candidates than a full run (the figures asserted here
    are those of the routers kept), one process (the patches hold in this one)."""
    from edgeswitch.benchmark import evaluate as ev
    from edgeswitch.switcher import select

    monkeypatch.setattr(ev, "VARIANTS", {k: ev.VARIANTS[k] for k in variants})
    monkeypatch.setattr(ev, "select_switcher",
                        partial(select.select_switcher, candidates=select.CV_CANDIDATES[:2]))


@pytest.mark.slow
def test_the_round_trip_from_clips_gives_the_same_figures(tmp_path, monkeypatch):
    """`benchmark --write-outputs FILE` on clips, then `benchmark --outputs FILE`: the same
    summary and fold figures, without training; a rerun reads the folds back."""
    from edgeswitch.cli.main import main
    from edgeswitch.models import cache

    _quick(monkeypatch)
    (tmp_path / "quick.toml").write_text("[edge]\nepochs = 10\n[cloud]\nepochs = 10\n"
                                         "[benchmark]\nbootstrap = 200\nprocesses = 1\n")
    common = ["--folds", "2", "--config", str(tmp_path / "quick.toml"), "--quiet",
              "--cache", str(tmp_path / "cache")]
    f = tmp_path / "outputs.parquet"
    assert main(["benchmark", "--dataset", "basicmotions", "--out", str(tmp_path / "clips"),
                 "--write-outputs", str(f), *common]) == 0
    trained = []
    monkeypatch.setattr(cache, "fit_or_load", lambda *a, **k: trained.append(a))
    assert main(["benchmark", "--outputs", str(f), "--out", str(tmp_path / "rec"),
                 *common]) == 0
    assert trained == []
    clips = json.loads((tmp_path / "clips" / "benchmark.json").read_text())
    rec = json.loads((tmp_path / "rec" / "benchmark.json").read_text())
    assert rec["summary"] == clips["summary"]
    assert rec["folds"] == clips["folds"]
    assert rec["n_clips"] == clips["n_clips"] and rec["classes"] == clips["classes"]
    assert (tmp_path / "rec" / "benchmark.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_user_file_with_streams_and_an_unlabelled_group(tmp_path, monkeypatch):
    """A file as a user writes it: streams that hold their activity, one group without labels
    (pool or calib only), no embedding, no ensemble, no costs. Every router runs, the stream
    routers with their shuffled control; the ensemble and supervised routers do not."""
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.config import RunConfig

    _quick(monkeypatch)
    rng = np.random.default_rng(3)
    n_groups, per = 7, 48
    n = n_groups * per
    y = np.repeat(rng.integers(0, 3, n // 8), 8)         # an activity holds for 8 clips

    def noisy(right):
        label = np.where(rng.random(n) < right, y, (y + rng.integers(1, 3, n)) % 3)
        p = rng.dirichlet(np.ones(3), n) * 0.4
        p[np.arange(n), label] += 0.6
        return p.tolist()
    cols = {"clip_id": [f"c{i}" for i in range(n)],
            "group": [f"g{i // per}" for i in range(n)],
            "label": [None if i // per == 0 else CLASSES[c] for i, c in enumerate(y)],
            "edge_proba": noisy(0.7), "cloud_proba": noisy(0.9),
            "stream": [f"g{i // per}" for i in range(n)], "t": [float(i % per) for i in range(n)]}
    rec = read_outputs(_parquet(tmp_path / "user.parquet", cols))
    cfg = RunConfig()
    cfg.benchmark.processes, cfg.benchmark.bootstrap, cfg.benchmark.folds = 1, 200, 3
    bench = run_benchmark(cfg, tmp_path / "out", progress=False, recorded=rec)
    s = bench["summary"]
    assert s["streams"] == "file" and s["default_router"] == "belief"
    assert all("g0" not in f["test_groups"] for f in bench["folds"])
    assert sorted(g for f in bench["folds"] for g in f["test_groups"]) == \
        [f"g{i}" for i in range(1, n_groups)]
    assert {"belief", "dmd", "margin", "oracle"} <= set(s["routers"])
    assert not {"abc", "dmd-abc", "supervised"} & set(s["routers"])
    assert set(s["shuffled_control"]) >= {"belief"} and bench["cost_unit"] is None


@pytest.mark.slow
def test_a_specialist_cloud_is_where_a_learned_switcher_beats_margin(tmp_path, monkeypatch):
    """Theory: a DMD switcher beats margin where the cloud is right on the edge's confident
    blind spot (the posterior shows it, the margin does not), and ties where the two models
    are alike (agreement then depends on the edge's confidence alone)."""
    from edgeswitch.benchmark.report import write_all
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.config import RunConfig

    _quick(monkeypatch)
    cfg = RunConfig()
    cfg.benchmark.processes, cfg.benchmark.bootstrap = 1, 500
    figures = {}
    for kind in ("specialist", "homogeneous"):
        rec = read_outputs(write_pair(tmp_path / f"{kind}.parquet", kind))
        bench = run_benchmark(cfg, tmp_path / kind, progress=False, recorded=rec)
        figures[kind] = versus_margin(bench)["routers"]
    assert bench["cost_unit"] is None   # no costs in the file: no compute axis, no figure
    assert all(f["routers"]["dmd"]["operating_point"]["compute_vs_cloud"] is None
               for f in bench["folds"])
    assert write_all(bench, tmp_path / "report")["png"].stat().st_size > 10_000
    gbt = figures["specialist"]["dmd-gbt"]
    assert gbt["wins_ties_losses"] == [5, 0, 0] and gbt["area_diff"]["ci"][0] > 0.05
    tied = figures["homogeneous"]["dmd"]["area_diff"]
    assert abs(tied["mean"]) < 0.005 and -0.005 < tied["ci"][0] <= tied["ci"][1] < 0.005


@pytest.mark.slow
def test_stream_routers_run_when_the_config_deploys_no_fusion(tmp_path, monkeypatch):
    """With `[fusion] method = "none"` the stream routers answer with the cloud's posterior
    and are scored beside the per-clip routers (the deployed mode was once a fresh object that
    no mode `is`, so they never ran)."""
    from edgeswitch.benchmark.evaluate import evaluate_fold
    from edgeswitch.config import RunConfig

    _quick(monkeypatch, variants=())
    cols = _columns(n_groups=6, per=20) | {"stream": [f"g{i // 20}" for i in range(120)],
                                           "t": [float(i % 20) for i in range(120)]}
    rec = read_outputs(_parquet(tmp_path / "o.parquet", cols))
    cfg = RunConfig()
    cfg.fusion.method = "none"
    fold = rec.folds(3, 1, 0, tuple(cfg.splits))[0]
    res = evaluate_fold(cfg, rec.fold_outputs(fold), fold.seed)
    assert "belief" in res["routers"] and "belief" in res["shuffled"]
    assert res["switchers"]["belief"]["answers"] == "belief"


@pytest.mark.slow
def test_folds_as_tasks_on_processes_write_the_fold_files_of_one_process(tmp_path):
    """With processes, a fold goes out as its tasks (the stream routers, the per-clip routers
    in each answer mode) and is merged back: each fold's result.json is byte for byte the one
    a single process writes (figures, and their order)."""
    from edgeswitch.benchmark.run import run_benchmark
    from edgeswitch.config import RunConfig

    cols = _columns(n_groups=6, per=20) | {"stream": [f"g{i // 20}" for i in range(120)],
                                           "t": [float(i % 20) for i in range(120)]}
    rec = read_outputs(_parquet(tmp_path / "o.parquet", cols))
    for processes in (1, 2):
        cfg = RunConfig()
        cfg.benchmark.processes, cfg.benchmark.bootstrap, cfg.benchmark.folds = processes, 50, 2
        cfg.switcher.epochs = 30   # the MLPs' training is not what is under test
        run_benchmark(cfg, tmp_path / f"p{processes}", progress=False, recorded=rec)
    one = sorted((tmp_path / "p1" / "folds").glob("fold*/result.json"))
    assert len(one) == 2   # 6 tasks on 2 processes
    for path in one:
        other = tmp_path / "p2" / path.relative_to(tmp_path / "p1")
        assert path.read_text() == other.read_text()
        assert json.loads(path.read_text())["result"]["shuffled"]   # stream routers ran


def _worker_threads() -> dict:
    import os

    import torch

    return {"torch": torch.get_num_threads()} | {k: os.environ.get(k) for k in _THREAD_VARS}


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.slow
def test_stage2_workers_start_with_one_thread_per_pool_and_the_parent_is_left_as_it_was(
        monkeypatch):
    """Two workers on two cores, each with a BLAS thread per core, had each worker's small BLAS
    calls wait on cores the other held. Each worker the pool spawns (as work is submitted)
    starts with one thread in torch's pool and an environment that sizes BLAS's and OpenMP's
    pools at one when they load; the parent's environment is restored afterwards."""
    from edgeswitch.benchmark.run import worker_pool

    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with worker_pool(2) as pool:
        seen = [f.result() for f in [pool.submit(_worker_threads) for _ in range(4)]]
    assert seen == [{"torch": 1} | dict.fromkeys(_THREAD_VARS, "1")] * 4
    import os

    assert os.environ["OMP_NUM_THREADS"] == "4" and "OPENBLAS_NUM_THREADS" not in os.environ
