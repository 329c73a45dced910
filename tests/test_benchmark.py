"""The cross-validated benchmark: folds, no test group in training, no label in any choice."""

import json

import numpy as np
import pytest

from edgeswitch.benchmark.folds import check_fold_classes, make_folds
from edgeswitch.data import ClipBatch, load_dataset
from edgeswitch.errors import DataError


def _batch(n_groups=10, per=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    n = n_groups * per
    return ClipBatch(X=rng.normal(size=(n, 20, 3)).astype(np.float32),
                     y=np.tile(np.arange(k), n // k + 1)[:n],
                     groups=np.repeat([f"s{i:02d}" for i in range(n_groups)], per),
                     classes=tuple("abc"[:k]), ids=np.arange(n).astype(str))


def _two_cv_candidates(monkeypatch):
    """The switcher selection over two linear candidates, not all eight (MLPs and trees): the
    bulk of a fold's time, and not what these tests check."""
    from functools import partial

    from edgeswitch.benchmark import evaluate as ev
    from edgeswitch.switcher import select

    # select_switcher's default argument holds the tuple itself: replace the function
    monkeypatch.setattr(ev, "select_switcher",
                        partial(select.select_switcher, candidates=select.CV_CANDIDATES[:2]))


def test_every_group_is_tested_once_per_repeat_and_splits_are_disjoint():
    data = _batch(n_groups=10)
    folds = make_folds(data, 5, repeats=2, seed=3)
    assert len(folds) == 10
    for r in (0, 1):
        tested = [g for f in folds if f.repeat == r for g in f.test_groups]
        assert sorted(tested) == sorted(set(data.groups.tolist()))
    for f in folds:
        parts = [set(f.groups[s]) for s in ("train", "pool", "calib", "test")]
        assert all(parts), "every split gets a group"
        assert sum(len(p) for p in parts) == 10 and len(set().union(*parts)) == 10
        splits = f.split(data)
        assert not set(splits.train.groups) & set(splits.test.groups)
        assert splits.pool.y is None and splits.calib.y is None
    # the two repeats deal differently
    assert [f.test_groups for f in folds[:5]] != [f.test_groups for f in folds[5:]]


def test_fold_errors_name_the_problem():
    with pytest.raises(DataError, match="cannot make 11 folds"):
        make_folds(_batch(n_groups=10), 11)
    with pytest.raises(DataError, match="need 3"):
        make_folds(_batch(n_groups=4), 2)
    with pytest.raises(DataError, match=">= 2"):
        make_folds(_batch(), 1)
    # a training split without some class: the model could never learn it
    data = _batch(n_groups=10)
    y = data.y.copy()
    fold = make_folds(data, 5)[0]
    y[np.isin(data.groups, fold.groups["train"])] = 0
    one_class = ClipBatch(X=data.X, y=y, groups=data.groups, classes=data.classes, ids=data.ids)
    with pytest.raises(DataError, match="hold no clip of class"):
        check_fold_classes(fold, fold.split(one_class))


def test_fold_evaluation_reads_no_label_before_evaluating(tmp_path, monkeypatch):
    """Shuffling the test and pool labels changes the scores, never a choice: fusion weight,
    selected switcher, the stream router's fitted settings, thresholds and DMD switcher scores
    stay identical."""
    from edgeswitch.benchmark import evaluate as ev
    from edgeswitch.benchmark.outputs import FoldOutputs
    from edgeswitch.config import load_config

    rng = np.random.default_rng(0)
    n, k, e = 120, 3, 4
    arrays = {}
    for part in ("pool", "calib", "test"):
        pe = rng.dirichlet(np.ones(k), n)
        arrays[f"edge_{part}_p"] = pe
        arrays[f"edge_{part}_e"] = rng.normal(size=(n, e))
        arrays[f"cloud_{part}_p"] = rng.dirichlet(np.ones(k), n)
        arrays[f"members_{part}_p"] = np.stack([pe, rng.dirichlet(np.ones(k), n)])
        arrays[f"groups_{part}"] = np.repeat([f"{part}{i}" for i in range(4)], n // 4)
        arrays[f"ids_{part}"] = np.arange(n).astype(str)
        # four streams of 30 clips whose edge and cloud hold one answer for a while
        arrays[f"streams_{part}"] = np.repeat([f"{part}{i}" for i in range(4)], n // 4)
        arrays[f"t_{part}"] = np.tile(np.arange(n // 4, dtype=float), 4)
        held = np.repeat(rng.integers(0, k, n // 10), 10)
        arrays[f"cloud_{part}_p"][np.arange(n), held] += 2.0
        arrays[f"cloud_{part}_p"] /= arrays[f"cloud_{part}_p"].sum(axis=1, keepdims=True)
    arrays["macs"] = np.array([100, 10_000, 200])
    cfg = load_config(dataset="basicmotions")
    cfg.fusion.method = "dmd"
    monkeypatch.setattr(ev, "VARIANTS", {"dmd-linear": ev.VARIANTS["dmd-linear"]})
    _two_cv_candidates(monkeypatch)
    runs = []
    for seed in (1, 2):
        y = np.random.default_rng(seed)
        labelled = arrays | {"y_test": y.integers(0, k, n), "hidden_y_pool": y.integers(0, k, n)}
        runs.append(ev.evaluate_fold(cfg, FoldOutputs(labelled, ("a", "b", "c")), seed=0))
    a, b = runs
    assert a["fusion"] == b["fusion"]
    assert a["switchers"]["dmd-cv+fusion"]["chosen"] == b["switchers"]["dmd-cv+fusion"]["chosen"]
    assert a["switchers"]["dmd-cv+fusion"]["cv"] == b["switchers"]["dmd-cv+fusion"]["cv"]
    assert a["switchers"]["belief"] == b["switchers"]["belief"]
    for name in ("dmd", "dmd+fusion", "entropy", "abc", "belief", "belief-fusion-answers"):
        assert a["routers"][name]["operating_point"]["offload_rate"] == \
            b["routers"][name]["operating_point"]["offload_rate"]
    assert a["routers"]["belief"]["auc"] != b["routers"]["belief"]["auc"]  # labels do count


@pytest.mark.slow
def test_benchmark_smoke_on_basicmotions_resumes_and_never_trains_on_test(tmp_path,
                                                                          monkeypatch):
    """`edgeswitch benchmark --dataset basicmotions --folds 2`, then the same again (cached)."""
    from edgeswitch.cli.main import main
    from edgeswitch.models import cache

    seen = []
    real = cache.fit_or_load

    def spy(estimator, train, *a, **kw):
        seen.append(set(train.groups.tolist()))
        return real(estimator, train, *a, **kw)

    monkeypatch.setattr(cache, "fit_or_load", spy)
    _two_cv_candidates(monkeypatch)
    from edgeswitch.benchmark import evaluate as ev

    # the linear and tree variants; the MLP ones (tests/test_switcher*.py) cost most of a fold
    monkeypatch.setattr(ev, "VARIANTS", {k: v for k, v in ev.VARIANTS.items()
                                         if v.family != "mlp"})
    out = tmp_path / "bench"
    # fewer epochs and resamples than the preset: the figures are not what is checked here
    (tmp_path / "quick.toml").write_text("[edge]\nepochs = 10\n[cloud]\nepochs = 10\n"
                                         "[switcher]\nepochs = 30\n"
                                         "[benchmark]\nbootstrap = 200\nprocesses = 1\n")
    args = ["benchmark", "--dataset", "basicmotions", "--folds", "2", "--out", str(out),
            "--config", str(tmp_path / "quick.toml"), "--cache", str(tmp_path / "cache"),
            "--quiet"]
    assert main(args) == 0
    bench = json.loads((out / "benchmark.json").read_text())
    assert (out / "benchmark.png").stat().st_size > 10_000
    assert "area" in (out / "benchmark.html").read_text()
    assert len(bench["folds"]) == 2 and bench["dataset"] == "basicmotions"
    tested = [g for f in bench["folds"] for g in f["test_groups"]]
    assert sorted(tested) == sorted(set(load_dataset("basicmotions").groups.tolist()))
    # every model trained (edge, cloud, ABC members) saw exactly one fold's training groups,
    # none of that fold's test groups
    assert len(seen) == 2 * (2 + 2)
    for s in seen:
        owner = [f for f in bench["folds"] if s == set(f["groups"]["train"])]
        assert len(owner) == 1 and not s & set(owner[0]["test_groups"])
    fold = bench["folds"][0]
    for key in ("test_groups", "seed", "edge_accuracy", "cloud_accuracy", "routers"):
        assert key in fold
    for name in ("dmd", "entropy", "abc", "oracle", "dmd+fusion", "entropy+fusion"):
        r = fold["routers"][name]
        assert set(r["accuracy_at"]) == {"0.1", "0.2", "0.35", "0.5"}
        assert "auc" in r and "offload_to_match_cloud" in r and "oracle_gain_share" in r
    s = bench["summary"]
    for name in ("dmd", "dmd+fusion"):
        for key in ("auc", "offload_to_match_cloud", "oracle_gain_share",
                    "gain_over_cloud_at_0.5"):
            assert set(s["routers"][name][key]) == {"mean", "ci"}
        v = s["vs_best_confidence"][name]
        assert v["wins"] + v["ties"] + v["losses"] == 2 and "ci" in v["auc_diff"]
    assert s["vs_best_confidence"]["dmd+fusion"]["reference"].endswith("+fusion")
    assert s["default_router"] in s["routers"]
    # a rerun reads every fold back: no training, the same figures
    seen.clear()
    assert main(args) == 0
    assert seen == []
    again = json.loads((out / "benchmark.json").read_text())
    assert again["summary"] == bench["summary"]


@pytest.mark.slow
def test_benchmark_on_npz_with_and_without_groups(tmp_path, monkeypatch):
    from edgeswitch.benchmark import evaluate as ev
    from edgeswitch.cli.main import main

    _two_cv_candidates(monkeypatch)
    monkeypatch.setattr(ev, "VARIANTS", {"dmd-linear": ev.VARIANTS["dmd-linear"]})

    bm = load_dataset("basicmotions")
    labels = np.asarray(bm.classes)[bm.y]
    np.savez(tmp_path / "grouped.npz", X=bm.X, y=labels, groups=np.arange(len(bm)) % 8)
    np.savez(tmp_path / "plain.npz", X=bm.X, y=labels)
    # small models and few resamples: what is checked is how the folds are dealt (an .npz
    # takes the default, smartwatch-sized models otherwise: minutes of training per fold)
    (tmp_path / "small.toml").write_text(
        "[edge]\nepochs = 5\n[edge.arch_params]\nwidth = 8\nlayers = 2\n"
        "[cloud]\nepochs = 5\n[cloud.arch_params]\nwidth = 16\n"
        "[benchmark]\nabc_members = 2\nbootstrap = 200\nprocesses = 1\n")
    for name, n_groups in (("grouped", 8), ("plain", len(bm))):
        out = tmp_path / name
        assert main(["benchmark", "--dataset", str(tmp_path / f"{name}.npz"), "--folds", "2",
                     "--config", str(tmp_path / "small.toml"), "--out", str(out),
                     "--cache", str(tmp_path / "cache"), "--quiet"]) == 0
        bench = json.loads((out / "benchmark.json").read_text())
        assert bench["n_groups"] == n_groups and len(bench["folds"]) == 2
    # too few groups for the folds asked: a clear error, exit 2
    np.savez(tmp_path / "few.npz", X=bm.X, y=labels, groups=np.arange(len(bm)) % 3)
    assert main(["benchmark", "--dataset", str(tmp_path / "few.npz"), "--folds", "3",
                 "--out", str(tmp_path / "few"), "--quiet"]) == 2


def test_a_fold_whose_two_models_disagree_on_classes_is_refused(monkeypatch):
    """A narrow unit test: models with other label sets stop the fold with a clear error."""
    from edgeswitch import pipeline
    from edgeswitch.benchmark.outputs import fold_outputs
    from edgeswitch.config import load_config
    from edgeswitch.errors import ModelError

    class Stub:
        def __init__(self, name, classes):
            self.name, self.classes_ = name, classes

    monkeypatch.setattr(pipeline, "train_models",
                        lambda *a, **k: (Stub("edge", ("a", "b", "c")), Stub("cloud", ("a", "b"))))
    data = _batch()
    fold = make_folds(data, 5)[0]
    with pytest.raises(ModelError, match="class count mismatch"):
        fold_outputs(load_config(dataset="basicmotions"), fold, data, None)
