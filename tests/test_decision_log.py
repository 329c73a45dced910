"""The decision log: every decision kept, summarised, and reusable as DMD data."""

import sqlite3

import numpy as np
import pytest

from edgeswitch.errors import DataError
from edgeswitch.runtime.decision_log import Decision, DecisionLog, summary_text

CLASSES = ("a", "b")


def _decision(i, offloaded, cloud=None, reason=None, t=1000.0):
    return Decision(clip_id=f"c{i}", group="g0" if i % 2 else "g1", label="a",
                    answered_by="cloud" if cloud is not None else "edge",
                    verified=reason is None, fallback_reason=reason, offloaded=offloaded,
                    shadow=False, score=0.5, edge_proba=np.array([0.7, 0.3]),
                    edge_embedding=np.arange(4, dtype=np.float32) + i,
                    cloud_proba=None if cloud is None else np.array(cloud),
                    edge_ms=0.1, cloud_ms=2.0 if offloaded else None, total_ms=2.5,
                    attempts=1 if offloaded else 0, time=t + i)


def test_append_read_summary_and_dmd_records(tmp_path):
    path = tmp_path / "log.sqlite"
    with DecisionLog(path, CLASSES, "edge@1", "cloud@2") as log:
        log.append([_decision(0, False), _decision(1, True, [0.9, 0.1]),
                    _decision(2, True, [0.2, 0.8]), _decision(3, True, reason="timeout")])
        log.append([_decision(4, True, reason="circuit_open")])
        assert len(log) == 5
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with DecisionLog(path) as log:  # reopened without classes: read from the file
        s = log.summary(buckets=2)
        assert s["decisions"] == 5 and s["offload_rate"] == pytest.approx(0.8)
        assert s["fallbacks"] == 2
        assert s["fallback_reasons"] == {"timeout": 1, "circuit_open": 1}
        assert s["agreement"] == pytest.approx(0.5)  # edge said a; cloud a once, b once
        assert sum(b["decisions"] for b in s["over_time"]) == 5
        assert "fallbacks 2" in summary_text(s)
        rec = log.dmd_records()
    assert list(rec.ids) == ["c1", "c2"] and rec.edge_model == "edge@1"
    np.testing.assert_array_equal(rec.agree, [True, False])
    np.testing.assert_array_equal(rec.edge_embedding[1], np.arange(4) + 2)


def test_refuses_another_label_set_and_garbage_files(tmp_path):
    path = tmp_path / "log.sqlite"
    DecisionLog(path, CLASSES).close()
    with pytest.raises(DataError, match="logs classes"):
        DecisionLog(path, ("x", "y"))
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="not a usable decision log"):
        DecisionLog(bad, CLASSES)
    with pytest.raises(DataError, match="no decision with a cloud answer"):
        DecisionLog(path).dmd_records()


def test_one_log_holds_one_edge_model(tmp_path):
    path = tmp_path / "log.sqlite"
    DecisionLog(path, CLASSES, "edge@aaa").close()
    DecisionLog(path, CLASSES, "edge@aaa").close()  # the same model may reopen it
    with pytest.raises(DataError, match="new edge model"):
        DecisionLog(path, CLASSES, "edge@bbb")


def test_a_failed_write_is_a_clear_error(tmp_path):
    log = DecisionLog(tmp_path / "log.sqlite", CLASSES)
    log.db.execute("DROP TABLE decisions")
    with pytest.raises(DataError, match="cannot log 1 decisions"):
        log.append([_decision(0, False)])
