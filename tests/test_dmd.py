"""DMD generation: labels never matter, records round-trip, mismatched models are refused."""

import numpy as np
import pytest

from edgeswitch.data import ClipBatch
from edgeswitch.dmd import DMDRecords, agreement_by_class, distill
from edgeswitch.errors import DataError, ModelError
from edgeswitch.models.base import ModelOutput


class _LabelTrap(ClipBatch):
    """A labelled batch that fails the test if anything reads `.y` once armed."""

    def __getattribute__(self, name):
        if name == "y" and object.__getattribute__(self, "__dict__").get("armed"):
            raise AssertionError("DMD read the ground-truth labels")
        return object.__getattribute__(self, name)


def test_dmd_never_reads_labels(bm_splits, bm_models):
    edge, cloud = bm_models
    test = bm_splits.test  # labelled clips
    reference = distill(edge, cloud, test.without_labels())

    shuffled = ClipBatch(X=test.X, y=np.random.default_rng(0).permutation(test.y),
                         groups=test.groups, classes=test.classes, ids=test.ids)
    with_wrong_labels = distill(edge, cloud, shuffled)
    for field in ("edge_proba", "edge_embedding", "cloud_proba"):
        np.testing.assert_array_equal(getattr(reference, field),
                                      getattr(with_wrong_labels, field))
    np.testing.assert_array_equal(reference.ids, with_wrong_labels.ids)

    trap = _LabelTrap(X=test.X, y=test.y, groups=test.groups, classes=test.classes,
                      ids=test.ids)
    trap.__dict__["armed"] = True
    with pytest.raises(AssertionError):
        _ = trap.y  # the trap works ...
    trapped = distill(edge, cloud, trap)  # ... and DMD never springs it
    np.testing.assert_array_equal(trapped.cloud_proba, reference.cloud_proba)


def test_records_targets_and_parquet_roundtrip(bm_splits, bm_models, tmp_path):
    edge, cloud = bm_models
    rec = distill(edge, cloud, bm_splits.pool)
    assert len(rec) == len(bm_splits.pool)
    np.testing.assert_array_equal(rec.agree, rec.edge_label == rec.cloud_label)
    np.testing.assert_allclose(rec.alignment,
                               rec.cloud_proba[np.arange(len(rec)), rec.edge_label])
    assert rec.edge_model.startswith("edge@") and rec.cloud_model.startswith("cloud@")
    back = DMDRecords.from_parquet(rec.to_parquet(tmp_path / "dmd.parquet"))
    for field in ("edge_proba", "edge_embedding", "cloud_proba"):
        np.testing.assert_allclose(getattr(back, field), getattr(rec, field), rtol=1e-6)
    np.testing.assert_array_equal(back.ids, rec.ids)
    assert back.classes == rec.classes and back.edge_model == rec.edge_model
    import pyarrow.parquet as pq

    cols = pq.read_table(tmp_path / "dmd.parquet").column_names
    assert {"agree", "alignment", "edge_model", "cloud_model", "clip_id"} <= set(cols)
    by_class = agreement_by_class(rec)
    assert sum(v["n"] for v in by_class.values()) == len(rec)


def test_class_count_mismatch_is_refused(bm_splits, bm_models):
    edge, _ = bm_models

    class ThreeClassCloud:
        classes_ = ("a", "b", "c")
        name = "three"

        def predict_proba(self, X):
            return np.full((len(X), 3), 1 / 3)

    with pytest.raises(ModelError, match="class count mismatch"):
        distill(edge, ThreeClassCloud(), bm_splits.pool)


def test_bad_files_and_targets(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="Parquet"):
        DMDRecords.from_parquet(bad)
    with pytest.raises(DataError, match="not found"):
        DMDRecords.from_parquet(tmp_path / "missing.parquet")
    rec = DMDRecords(ids=np.array(["a"]), groups=np.array(["g"]),
                     edge_proba=np.array([[0.6, 0.4]]), edge_embedding=np.zeros((1, 2)),
                     cloud_proba=np.array([[0.3, 0.7]]), classes=("x", "y"),
                     edge_model="e", cloud_model="c")
    assert rec.target("soft")[0] == pytest.approx(0.3)
    assert rec.target("hard")[0] == 0.0
    with pytest.raises(DataError, match="unknown DMD target"):
        rec.target("medium")
    assert isinstance(rec.edge, ModelOutput)
