"""Fast unit tests of edgeswitch.data (clips, loaders, UEA readers, group splits) and config."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgeswitch.config import load_config, preset
from edgeswitch.data import SPLITS, ClipBatch, check_clips, load_dataset, split_by_group
from edgeswitch.data.splits import group_counts
from edgeswitch.errors import DataError, EdgeSwitchError

WATCH_TEST = ["subject08", "subject09", "subject10"]


@pytest.fixture(scope="module")
def watch() -> ClipBatch:
    return load_dataset("watch")


@pytest.fixture(scope="module")
def basicmotions() -> ClipBatch:
    return load_dataset("basicmotions")


@pytest.fixture(scope="module")
def watch_raw() -> dict:
    folder = Path(next(iter(importlib.util.find_spec("seglearn").submodule_search_locations)))
    return np.load(folder / "data" / "watch_dataset.npy", allow_pickle=True).item()


def _expected_windows(raw: dict, window: int, stride: int) -> int:
    return sum(max(0, (len(x) - window) // stride + 1) for x in raw["X"])


# --------------------------------------------------------------------------- bundled data


def test_watch_shape_classes_groups(watch, watch_raw):
    assert watch.X.shape[1:] == (100, 6)
    assert watch.X.dtype == np.float32
    assert 4600 < len(watch) < 4750
    assert len(watch) == _expected_windows(watch_raw, 100, 50)
    assert watch.n_classes == 7
    assert watch.classes == tuple(watch_raw["y_labels"])
    assert sorted(set(watch.y.tolist())) == list(range(7))
    assert sorted(set(watch.groups.tolist())) == [f"subject{i:02d}" for i in range(1, 11)]
    assert len(np.unique(watch.ids)) == len(watch)
    assert watch.sample_rate_hz == 50.0
    assert np.isfinite(watch.X).all()


def test_watch_windows_match_the_recordings(watch, watch_raw):
    # id watch/recRRR/SSSSSS: recording RRR, start sample SSSSSS
    for i in (0, 1, 57, len(watch) // 2, len(watch) - 1):
        _, rec, start = watch.ids[i].split("/")
        rec, start = int(rec[3:]), int(start)
        series = watch_raw["X"][rec]
        np.testing.assert_allclose(watch.X[i], series[start : start + 100], rtol=1e-6)
        assert watch.y[i] == int(watch_raw["y"][rec])
        assert watch.groups[i] == f"subject{int(watch_raw['subject'][rec]):02d}"
    # every window of a recording carries the same subject
    recs = np.asarray([i.split("/")[1] for i in watch.ids])
    for rec in np.unique(recs)[::13]:
        assert len(set(watch.groups[recs == rec].tolist())) == 1


@pytest.mark.parametrize("window_s, stride_s", [(2.0, 2.0), (4.0, 1.0), (1.0, 0.5)])
def test_watch_window_and_stride_change_the_count(watch, watch_raw, window_s, stride_s):
    b = load_dataset("watch", window_s=window_s, stride_s=stride_s)
    w, s = int(window_s * 50), int(stride_s * 50)
    assert b.X.shape[1:] == (w, 6)
    assert len(b) == _expected_windows(watch_raw, w, s)
    assert b.meta["window_s"] == window_s and b.meta["stride_s"] == stride_s
    if (window_s, stride_s) == (2.0, 2.0):
        # stride 2 s roughly halves the number of 2 s windows
        assert abs(len(b) / len(watch) - 0.5) < 0.02
    if (window_s, stride_s) == (4.0, 1.0):
        assert len(b) < len(watch)


def test_watch_bad_window_is_rejected():
    with pytest.raises(DataError, match="positive"):
        load_dataset("watch", stride_s=0.0)


def test_basicmotions(basicmotions):
    b = basicmotions
    assert b.X.shape == (80, 100, 6)
    assert b.n_classes == 4
    assert set(b.classes) == {"Standing", "Running", "Walking", "Badminton"}
    assert np.bincount(b.y, minlength=4).tolist() == [20, 20, 20, 20]
    assert len(np.unique(b.groups)) == 80  # every series is its own recording
    assert len(np.unique(b.ids)) == 80
    assert np.isfinite(b.X).all()
    assert b.X.std() > 0


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="unknown"):
        load_dataset("no-such-dataset")


# --------------------------------------------------------------------------- splits


def _check_disjoint_cover(batch: ClipBatch, sp) -> None:
    groups = sp.groups()
    for a in SPLITS:
        assert groups[a], f"split {a} is empty"
        for b in SPLITS:
            if a < b:
                assert not set(groups[a]) & set(groups[b]), (a, b)
    ids = np.concatenate([getattr(sp, s).ids for s in SPLITS])
    assert len(ids) == len(batch)
    assert sorted(ids.tolist()) == sorted(batch.ids.tolist())
    label_of = dict(zip(batch.ids.tolist(), batch.y.tolist(), strict=True))
    for s in ("pool", "calib"):
        part = getattr(sp, s)
        assert part.y is None
        assert not part.labelled
        hidden = sp.hidden_labels[s]
        assert len(hidden) == len(part)
        assert hidden.tolist() == [label_of[i] for i in part.ids.tolist()]
    for s in ("train", "test"):
        part = getattr(sp, s)
        assert part.y is not None
        assert part.y.tolist() == [label_of[i] for i in part.ids.tolist()]
        np.testing.assert_array_equal(
            part.X, batch.X[np.isin(batch.ids, part.ids)])
    assert set(sp.hidden_labels) == {"pool", "calib"}


@pytest.mark.parametrize("seed", [0, 1, 2, 7, 123])
def test_watch_split_by_group_disjoint(watch, seed):
    sp = split_by_group(watch, seed=seed)
    _check_disjoint_cover(watch, sp)
    assert [len(v) for v in sp.groups().values()] == [5, 2, 1, 2]


@pytest.mark.parametrize("seed", [0, 3, 99])
def test_watch_split_with_fixed_test_subjects(watch, seed):
    sp = split_by_group(watch, seed=seed, fixed={"test": WATCH_TEST})
    _check_disjoint_cover(watch, sp)
    groups = sp.groups()
    assert groups["test"] == WATCH_TEST
    # the other 7 subjects are dealt by (0.5, 0.2, 0.1) -> [4, 2, 1]
    assert [len(groups[s]) for s in ("train", "pool", "calib")] == [4, 2, 1]
    rest = sorted(groups["train"] + groups["pool"] + groups["calib"])
    assert rest == [f"subject{i:02d}" for i in range(1, 8)]


def test_split_is_deterministic_in_seed(basicmotions, watch):
    for batch in (basicmotions, watch):
        a = split_by_group(batch, seed=5).groups()
        b = split_by_group(batch, seed=5).groups()
        assert a == b
    c = split_by_group(basicmotions, seed=0).groups()
    d = split_by_group(basicmotions, seed=1).groups()
    assert c != d
    assert c["test"] != d["test"]


def test_basicmotions_split_sizes(basicmotions):
    sp = split_by_group(basicmotions, seed=0)
    _check_disjoint_cover(basicmotions, sp)
    assert [len(getattr(sp, s)) for s in SPLITS] == [40, 16, 8, 16]


def test_split_errors(basicmotions, watch):
    three = basicmotions.subset(np.arange(3))
    with pytest.raises(DataError, match="groups"):
        split_by_group(three)
    with pytest.raises(DataError, match="unknown split"):
        split_by_group(watch, fixed={"validation": ["subject01"]})
    with pytest.raises(DataError, match="subject99"):
        split_by_group(watch, fixed={"test": ["subject99"]})
    with pytest.raises(DataError, match="two splits"):
        split_by_group(watch, fixed={"test": ["subject08"], "calib": ["subject08"]})
    with pytest.raises(DataError, match="two splits"):
        split_by_group(watch, fixed={"test": ["subject08", "subject08"]})
    # fixed leaves too few groups for the open splits
    with pytest.raises(DataError, match="groups"):
        split_by_group(watch, fixed={"test": [f"subject{i:02d}" for i in range(1, 9)]})
    # every split fixed, but some groups in none
    with pytest.raises(DataError, match="no split"):
        split_by_group(watch, fixed={"train": ["subject01"], "pool": ["subject02"],
                                     "calib": ["subject03"], "test": ["subject04"]})
    with pytest.raises(DataError, match="no group"):
        split_by_group(watch, fixed={"calib": []})
    with pytest.raises(DataError, match="labels"):
        split_by_group(watch.without_labels())


@pytest.mark.parametrize("n, fractions, expected", [
    (10, (0.4, 0.2, 0.1, 0.3), [4, 2, 1, 3]),
    (10, (0.5, 0.2, 0.1, 0.2), [5, 2, 1, 2]),
    (7, (0.5, 0.2, 0.1, 0.2), [4, 1, 1, 1]),   # 3.5,1.4,0.7,1.4 -> 3,1,1,1 +1 to the first
    (7, (0.5, 0.2, 0.1), [4, 2, 1]),           # normalised 0.625,0.25,0.125 -> 4.375,1.75,0.875
    (4, (0.5, 0.2, 0.1, 0.2), [1, 1, 1, 1]),
    (4, (0.97, 0.01, 0.01, 0.01), [1, 1, 1, 1]),
    (80, (0.5, 0.2, 0.1, 0.2), [40, 16, 8, 16]),
    (9, (1, 1, 1), [3, 3, 3]),
    (11, (2, 1, 1), [5, 3, 3]),                # 5.5,2.75,2.75 -> 5,2,2 +1,+1 to the 0.75s
])
def test_group_counts_hand_cases(n, fractions, expected):
    assert group_counts(n, fractions) == expected


def test_group_counts_properties():
    rng = np.random.default_rng(0)
    for _ in range(300):
        k = int(rng.integers(1, 6))
        n = int(rng.integers(k, 60))
        f = rng.random(k) + 1e-3
        counts = group_counts(n, tuple(f))
        assert len(counts) == k
        assert sum(counts) == n
        assert min(counts) >= 1
        share = f / f.sum() * n
        if share.min() >= 1:  # largest remainders: within one of the exact share
            assert np.all(np.abs(np.asarray(counts) - share) < 1), (n, f, counts)


def test_group_counts_errors():
    with pytest.raises(DataError, match="cannot fill"):
        group_counts(3, (0.5, 0.2, 0.1, 0.2))
    with pytest.raises(DataError, match="positive"):
        group_counts(10, (0.5, 0.0, 0.3, 0.2))
    with pytest.raises(DataError, match="positive"):
        group_counts(10, (0.5, -0.1, 0.3, 0.2))


# --------------------------------------------------------------------------- .npz


def _clips(n: int, T: int = 8, C: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, T, C)).astype(np.float32)


def test_npz_integer_labels_with_classes(tmp_path):
    X = _clips(5)
    path = tmp_path / "mine.npz"
    np.savez(path, X=X, y=np.array([0, 2, 1, 2, 0]), classes=np.array(["sit", "walk", "run"]))
    b = load_dataset(path)
    assert b.classes == ("sit", "walk", "run")
    assert b.y.tolist() == [0, 2, 1, 2, 0]
    np.testing.assert_array_equal(b.X, X)
    assert b.name == "mine"
    assert len(np.unique(b.ids)) == 5
    assert len(np.unique(b.groups)) == 5  # no groups: each clip its own recording


def test_npz_integer_labels_without_classes(tmp_path):
    path = tmp_path / "ints.npz"
    np.savez(path, X=_clips(4), y=np.array([1, 0, 2, 1]))
    b = load_dataset(str(path))
    assert b.classes == ("0", "1", "2")
    assert b.y.tolist() == [1, 0, 2, 1]


def test_npz_string_labels(tmp_path):
    path = tmp_path / "strings.npz"
    np.savez(path, X=_clips(4), y=np.array(["walk", "sit", "walk", "run"]))
    b = load_dataset(path)
    assert b.classes == ("run", "sit", "walk")
    assert [b.classes[i] for i in b.y] == ["walk", "sit", "walk", "run"]


def test_npz_string_labels_with_declared_classes(tmp_path):
    path = tmp_path / "declared.npz"
    np.savez(path, X=_clips(3), y=np.array(["b", "a", "b"]), classes=np.array(["b", "a"]))
    b = load_dataset(path)
    assert b.classes == ("b", "a")
    assert b.y.tolist() == [0, 1, 0]
    bad = tmp_path / "undeclared.npz"
    np.savez(bad, X=_clips(3), y=np.array(["b", "c", "b"]), classes=np.array(["b", "a"]))
    with pytest.raises(DataError, match="'c'"):
        load_dataset(bad)


def test_npz_with_groups_and_ids(tmp_path):
    path = tmp_path / "grouped.npz"
    groups = np.array(["alice", "alice", "bob", "carol", "bob", "dave", "erin", "erin"])
    np.savez(path, X=_clips(8), y=np.array([0, 1, 0, 1, 1, 0, 0, 1]), groups=groups,
             ids=np.array([f"clip{i}" for i in range(8)]))
    b = load_dataset(path)
    assert b.groups.tolist() == groups.tolist()
    assert b.ids.tolist() == [f"clip{i}" for i in range(8)]
    sp = split_by_group(b, fractions=(0.4, 0.2, 0.2, 0.2), seed=0)
    _check_disjoint_cover(b, sp)


def test_npz_unlabelled(tmp_path):
    path = tmp_path / "prod.npz"
    np.savez(path, X=_clips(3), classes=np.array(["a", "b"]))
    b = load_dataset(path)
    assert b.y is None and b.classes == ("a", "b") and len(b) == 3
    no_classes = tmp_path / "prod2.npz"
    np.savez(no_classes, X=_clips(3))
    with pytest.raises(DataError, match="classes"):
        load_dataset(no_classes)


def test_npz_missing_x(tmp_path):
    path = tmp_path / "nox.npz"
    np.savez(path, clips=_clips(3), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="'X'"):
        load_dataset(path)


def test_npz_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(DataError, match="corrupt.npz"):
        load_dataset(path)
    truncated = tmp_path / "truncated.npz"
    np.savez(truncated, X=_clips(50), y=np.zeros(50, int))
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError):
        load_dataset(truncated)


def test_npz_that_is_really_npy(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as f:
        np.save(f, _clips(3))
    with pytest.raises(DataError):
        load_dataset(path)


def test_npz_empty(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, X=np.zeros((0, 8, 3), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DataError):
        load_dataset(path)


@pytest.mark.parametrize("y", [[0, 1, 3], [0, -1, 1]])
def test_npz_label_index_out_of_range(tmp_path, y):
    path = tmp_path / "range.npz"
    np.savez(path, X=_clips(3), y=np.array(y), classes=np.array(["a", "b", "c"]))
    with pytest.raises(DataError, match="classes"):
        load_dataset(path)


def test_npz_bad_clips_and_lengths(tmp_path):
    X = _clips(3).astype(np.float64)
    X[1, 2, 0] = np.nan
    nan = tmp_path / "nan.npz"
    np.savez(nan, X=X, y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="NaN"):
        load_dataset(nan)
    short = tmp_path / "short.npz"
    np.savez(short, X=_clips(4), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="shape"):
        load_dataset(short)
    flat = tmp_path / "flat.npz"
    np.savez(flat, X=np.zeros((3, 8)), y=np.array([0, 1, 0]))
    with pytest.raises(DataError, match="3 dims"):
        load_dataset(flat)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="unsupported"):
        load_dataset(path)


# --------------------------------------------------------------------------- UEA .ts

TS_HEADER = """# a hand-written file
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 5
@classLabel true a b
@data
"""


def _write_ts(path: Path, rows: list[str], header: str = TS_HEADER) -> Path:
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_ts_layout_and_labels(tmp_path):
    path = _write_ts(tmp_path / "Tiny.ts", [
        "1,2,3,4,5:5,4,3,2,1:a",
        "0.5,0.5,0.5,0.5,0.5:10,20,30,40,50:b",
        "-1,-2,-3,-4,-5:1e-3,2e-3,3e-3,4e-3,5e-3:a",
    ])
    b = load_dataset(path)
    assert b.X.shape == (3, 5, 2)
    np.testing.assert_array_equal(b.X[0, :, 0], [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(b.X[0, :, 1], [5, 4, 3, 2, 1])
    np.testing.assert_allclose(b.X[1, :, 1], [10, 20, 30, 40, 50])
    np.testing.assert_allclose(b.X[2, :, 1], [1e-3, 2e-3, 3e-3, 4e-3, 5e-3])
    assert b.classes == ("a", "b")
    assert b.y.tolist() == [0, 1, 0]
    assert b.name == "Tiny"
    assert len(np.unique(b.groups)) == 3


def test_ts_declared_class_order_is_kept(tmp_path):
    header = TS_HEADER.replace("@classLabel true a b", "@classLabel true z a")
    b = load_dataset(_write_ts(tmp_path / "order.ts", ["1,2,3,4,5:1,2,3,4,5:a",
                                                       "1,2,3,4,5:1,2,3,4,5:z"], header))
    assert b.classes == ("z", "a")
    assert b.y.tolist() == [1, 0]


def test_ts_unequal_lengths(tmp_path):
    path = _write_ts(tmp_path / "ragged.ts", ["1,2,3,4,5:5,4,3,2,1:a", "1,2,3,4:4,3,2,1:b"])
    with pytest.raises(DataError, match="unequal lengths"):
        load_dataset(path)
    within = _write_ts(tmp_path / "ragged2.ts", ["1,2,3,4,5:5,4,3,2:a"])
    with pytest.raises(DataError, match="unequal lengths"):
        load_dataset(within)


def test_ts_different_dimensions(tmp_path):
    path = _write_ts(tmp_path / "dims.ts", ["1,2,3,4,5:5,4,3,2,1:a", "1,2,3,4,5:b"])
    with pytest.raises(DataError, match="dimensions"):
        load_dataset(path)


def test_ts_undeclared_label(tmp_path):
    path = _write_ts(tmp_path / "label.ts", ["1,2,3,4,5:5,4,3,2,1:a", "1,2,3,4,5:5,4,3,2,1:c"])
    with pytest.raises(DataError, match="'c'"):
        load_dataset(path)


def test_ts_non_numeric_value(tmp_path):
    path = _write_ts(tmp_path / "text.ts", ["1,2,3,4,5:5,4,3,2,1:a", "1,2,x,4,5:5,4,3,2,1:b"])
    with pytest.raises(DataError, match="non-numeric") as err:
        load_dataset(path)
    assert "text.ts" in str(err.value)
    assert "text.ts:12" in str(err.value)  # file and line


def test_ts_missing_value_is_reported_as_nan(tmp_path):
    path = _write_ts(tmp_path / "missing.ts", ["1,2,?,4,5:5,4,3,2,1:a", "1,2,3,4,5:1,1,1,1,1:b"])
    with pytest.raises(DataError, match="NaN"):
        load_dataset(path)


def test_ts_unsupported_or_broken_headers(tmp_path):
    stamped = _write_ts(tmp_path / "stamped.ts", ["1,2,3,4,5:5,4,3,2,1:a"],
                        TS_HEADER.replace("@timeStamps false", "@timeStamps true"))
    with pytest.raises(DataError, match="time-stamped"):
        load_dataset(stamped)
    nodata = tmp_path / "nodata.ts"
    nodata.write_text(TS_HEADER.replace("@data\n", ""))
    with pytest.raises(DataError, match="@data"):
        load_dataset(nodata)
    unlabelled = _write_ts(tmp_path / "unlabelled.ts", ["1,2,3,4,5:5,4,3,2,1"],
                           TS_HEADER.replace("@classLabel true a b", "@classLabel false"))
    with pytest.raises(DataError, match="no class labels"):
        load_dataset(unlabelled)
    binary = tmp_path / "binary.ts"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 20)
    with pytest.raises(DataError, match="UTF-8"):
        load_dataset(binary)


def test_ts_folder_train_and_test_merged(tmp_path):
    folder = tmp_path / "Tiny"
    folder.mkdir()
    _write_ts(folder / "Tiny_TRAIN.ts", ["1,2,3,4,5:5,4,3,2,1:a", "2,2,2,2,2:3,3,3,3,3:b"])
    _write_ts(folder / "Tiny_TEST.ts", ["9,8,7,6,5:0,0,0,0,1:b"])
    b = load_dataset(folder)
    assert b.X.shape == (3, 5, 2)
    assert b.y.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(b.X[2, :, 0], [9, 8, 7, 6, 5])  # TRAIN first, then TEST
    assert b.name == "Tiny"
    assert len(np.unique(b.ids)) == 3


def test_ts_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no \\*_TRAIN"):
        load_dataset(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _write_ts(mixed / "M_TRAIN.ts", ["1,2,3,4,5:5,4,3,2,1:a"])
    _write_ts(mixed / "M_TEST.ts", ["1,2,3,4,5:5,4,3,2,1:a"],
              TS_HEADER.replace("@classLabel true a b", "@classLabel true a c"))
    with pytest.raises(DataError, match="differ"):
        load_dataset(mixed)


# --------------------------------------------------------------------------- clip checks


def _batch(X=None, y=(0, 1, 0), groups=("g0", "g1", "g2"), ids=("a", "b", "c"),
           classes=("x", "y")) -> ClipBatch:
    X = _clips(3) if X is None else X
    return ClipBatch(X=X, y=None if y is None else np.asarray(y), groups=np.asarray(groups),
                     classes=classes, ids=np.asarray(ids))


@pytest.mark.parametrize("X, word", [
    (np.zeros((3, 8)), "dims"),
    (np.zeros((3, 8, 2, 1)), "shape"),
    (np.zeros(5), "dims"),
    (np.full((2, 4, 3), "a"), "dtype"),
    (np.zeros((2, 4, 3), dtype=object), "dtype"),
    (np.zeros((2, 4, 3), dtype=complex), "dtype"),
    (np.zeros((2, 4, 3), dtype=bool), "dtype"),
    (np.zeros((0, 4, 3)), "empty"),
    (np.zeros((2, 0, 3)), "empty"),
    (np.zeros((2, 4, 0)), "empty"),
    ([[[1.0, 2.0]], [[1.0]]], "cannot be read"),
])
def test_check_clips_rejects(X, word):
    with pytest.raises(DataError, match=word):
        check_clips(X)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("bad, word", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf"),
                                       (1e300, "inf")])  # 1e300 overflows float32
def test_check_clips_non_finite(bad, word):
    X = np.zeros((4, 5, 2))
    X[2, 3, 1] = bad
    with pytest.raises(DataError, match=word) as err:
        check_clips(X, "mine")
    assert "clip index 2" in str(err.value)
    assert str(err.value).startswith("mine")
    if word == "inf":
        assert "NaN" not in str(err.value)


def test_check_clips_accepts_and_converts():
    X = np.arange(24, dtype=np.int16).reshape(2, 4, 3)
    out = check_clips(X)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, X)
    out = check_clips(np.zeros((3, 4, 2), np.float64)[:, ::2])  # non-contiguous view
    assert out.shape == (3, 2, 2) and out.flags.c_contiguous
    assert check_clips([[[1, 2]], [[3, 4]]]).shape == (2, 1, 2)


@pytest.mark.parametrize("X, word", [
    (np.zeros((3, 8)), "dims"),
    (np.full((3, 4, 2), "a"), "dtype"),
    (np.zeros((3, 4, 2), dtype=complex), "dtype"),
    (np.zeros((0, 4, 2)), "empty"),
    (np.where(np.eye(3, 8)[:, :, None] > 0, np.nan, 0.0), "NaN"),
    (np.where(np.eye(3, 8)[:, :, None] > 0, np.inf, 0.0), "inf"),
])
def test_clip_batch_rejects_bad_x(X, word):
    with pytest.raises(DataError, match=word):
        _batch(X=X)


def test_clip_batch_rejects_bad_labels_groups_ids():
    with pytest.raises(DataError, match="y has shape"):
        _batch(y=(0, 1))
    with pytest.raises(DataError, match="y has shape"):
        _batch(y=(0, 1, 0, 1))
    with pytest.raises(DataError, match="integer"):
        _batch(y=(0.0, 1.0, 0.0))
    with pytest.raises(DataError, match="outside"):
        _batch(y=(0, 2, 0))
    with pytest.raises(DataError, match="outside"):
        _batch(y=(0, -1, 0))
    with pytest.raises(DataError, match="not unique"):
        _batch(ids=("a", "b", "a"))
    with pytest.raises(DataError, match="ids has shape"):
        _batch(ids=("a", "b"))
    with pytest.raises(DataError, match="groups has shape"):
        _batch(groups=("g0", "g1"))
    with pytest.raises(DataError, match="at least 2 classes"):
        _batch(y=(0, 0, 0), classes=("only",))
    with pytest.raises(DataError, match="duplicate class"):
        _batch(classes=("x", "x"))


def test_clip_batch_subset_and_labels():
    b = _batch()
    assert len(b) == 3 and b.clip_shape == (8, 3) and b.labelled
    s = b.subset([2, 0])
    assert s.ids.tolist() == ["c", "a"] and s.y.tolist() == [0, 0]
    np.testing.assert_array_equal(s.X, b.X[[2, 0]])
    m = b.subset(np.array([False, True, True]))
    assert m.ids.tolist() == ["b", "c"]
    u = b.without_labels()
    assert u.y is None and not u.labelled and u.ids.tolist() == b.ids.tolist()
    with pytest.raises(DataError, match="needs labels"):
        u.require_labels("training")
    assert b.require_labels("training").tolist() == [0, 1, 0]


# --------------------------------------------------------------------------- config


def test_config_unknown_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('dataset = "watch"\nlearning_rate = 0.1\n')
    with pytest.raises(EdgeSwitchError, match="learning_rate"):
        load_config(path)
    nested = tmp_path / "nested.toml"
    nested.write_text("[calibration]\nmode = \"offload\"\nepsilom = 0.1\n")
    with pytest.raises(EdgeSwitchError, match="calibration.epsilom"):
        load_config(nested)


def test_config_nested_override(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('seed = 3\n[calibration]\nmode = "offload"\nrate = 0.25\n'
                    "[edge]\nepochs = 2\n[edge.arch_params]\nwidth = 8\n")
    cfg = load_config(path)
    assert cfg.calibration.mode == "offload"
    assert cfg.calibration.rate == 0.25
    assert cfg.calibration.epsilon == 0.05  # untouched keys keep their defaults
    assert cfg.seed == 3
    assert cfg.edge.epochs == 2
    # a table replaces the preset's table wholesale (so a key can also be removed)
    assert cfg.edge.arch_params == {"width": 8}
    path.write_text("[split_groups]\n")
    assert load_config(path).split_groups == {}
    # keyword overrides win over the file; None means "not given"
    cfg = load_config(path, seed=9, dataset=None)
    assert cfg.seed == 9 and cfg.dataset == "watch"


@pytest.mark.parametrize("toml, key", [
    ("splits = [0.5, 0.5]", "splits"), ('splits = "abc"', "splits"),
    ('[edge]\narch = "vit"', "edge.arch"), ("[cloud]\nepochs = 0", "cloud.epochs"),
    ('[switcher]\ntarget = "medium"', "switcher.target"),
    ('[calibration]\nmode = "cheap"', "calibration.mode"),
    ("[calibration]\ngrid = 0", "calibration.grid"),
    ("[calibration]\nrate = 1.5", "calibration.rate"),
])
def test_config_values_are_validated(tmp_path, toml, key):
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    with pytest.raises(EdgeSwitchError, match=key.replace(".", r"\.")):
        load_config(path)


def test_config_table_required_and_bad_files(tmp_path):
    path = tmp_path / "flat.toml"
    path.write_text('calibration = "offload"\n')
    with pytest.raises(EdgeSwitchError, match="table"):
        load_config(path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[calibration\nmode = 1\n")
    with pytest.raises(EdgeSwitchError, match="TOML"):
        load_config(broken)
    with pytest.raises(EdgeSwitchError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_watch_preset_test_subjects(tmp_path):
    cfg = load_config()
    assert cfg.dataset == "watch"
    assert cfg.split_groups == {"test": WATCH_TEST}
    assert cfg.calibration.mode == "offload"
    assert load_config(dataset="basicmotions").split_groups == {}
    path = tmp_path / "bm.toml"
    path.write_text('dataset = "basicmotions"\n')
    cfg = load_config(path)
    assert cfg.dataset == "basicmotions" and cfg.split_groups == {}
    assert cfg.edge == preset("basicmotions").edge != preset("watch").edge
    # presets do not leak into each other
    assert load_config().split_groups == {"test": WATCH_TEST}


def test_watch_preset_split_runs(watch):
    cfg = load_config()
    sp = split_by_group(watch, tuple(cfg.splits), cfg.seed, cfg.split_groups)
    assert sp.groups()["test"] == WATCH_TEST
    _check_disjoint_cover(watch, sp)
