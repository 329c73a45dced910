"""On the edge, one bad clip fails alone: `classify` gives it an error record and answers the
rest; a sharded `distill` records it as failed and goes on, as it does for a corrupt file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.deployed import classify_args, jsonl, log_ids, make_bundle, run_cli


@pytest.fixture(scope="module")
def bundle(bm_files, basicmotions, tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle")
    b = make_bundle(d, bm_files, basicmotions, n_clips=40)
    X = b["X"].copy()
    X[7] = 3e38  # finite, so it passes validation; the edge's output turns non-finite
    np.savez(d / "poison.npz", X=X, ids=b["ids"])
    b["poison"] = str(d / "poison.npz")
    return b


@pytest.mark.parametrize("batch", ["1", "40"])
def test_one_poison_clip_gets_its_own_error_record(bundle, tmp_path, batch):
    out, log = tmp_path / "out.jsonl", tmp_path / "log.sqlite"
    r = run_cli(*classify_args(bundle, bundle["poison"]), "--cloud", bundle["cloud"],
                "--batch", batch, "--out", out, "--log", log)
    assert r.returncode == 1, r.stderr  # some clips failed: documented exit code 1
    assert "Traceback" not in r.stderr
    rows = jsonl(out)
    assert [row["clip_id"] for row in rows] == list(bundle["ids"])  # every clip, in order
    bad = [row for row in rows if "error" in row]
    assert len(bad) == 1 and bad[0]["clip_id"] == "c0007"
    assert "non-finite" in bad[0]["error"] and "3e+38" in bad[0]["error"]
    assert bad[0]["model"].startswith("edge@") and bad[0]["model"] in bad[0]["error"]
    good = [row for row in rows if "error" not in row]
    assert len(good) == 39 and all(row["label"] for row in good)
    assert sorted(log_ids(log)) == sorted(row["clip_id"] for row in good)  # no row for c0007
    assert "40 clips: 39 answered" in r.stderr and "1 failed" in r.stderr
    assert "c0007" in r.stderr
    # the 39 answers are the ones a clean file gets from the same model (the adaptive
    # operating point may route a clip otherwise, since it saw one clip fewer)
    clean = run_cli(*classify_args(bundle), "--cloud", bundle["cloud"], "--batch", batch,
                    "--out", tmp_path / "clean.jsonl")
    assert clean.returncode == 0, clean.stderr
    want = {row["clip_id"]: row for row in jsonl(tmp_path / "clean.jsonl")}
    same = [row for row in good if row["answered_by"] == want[row["clip_id"]]["answered_by"]]
    assert len(same) >= 30
    assert all(row["label"] == want[row["clip_id"]]["label"] for row in same)


def test_sharded_distill_records_a_poison_clip_and_a_corrupt_file_and_goes_on(bundle,
                                                                              tmp_path):
    from edgeswitch.dmd import DMDRecords
    from edgeswitch.dmd.parts import clip_failures, failures

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    X, ids = bundle["X"], bundle["ids"]
    for i in range(4):
        part = X[i * 10:(i + 1) * 10].copy()
        if i == 3:
            part[3] = 3e38  # clip c0033
        np.savez(corpus / f"f{i}.npz", X=part, ids=ids[i * 10:(i + 1) * 10])
    broken = corpus / "f1.npz"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated: a corrupt file
    out = tmp_path / "dmd"
    r = run_cli("distill", "--data", corpus, "--edge", bundle["edge"], "--cloud",
                bundle["cloud"], "--out", out, "--shard-size", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "c0033" in r.stderr
    records = DMDRecords.from_parquet(out)
    want = [i for i in ids[:40] if not ("c0010" <= i <= "c0019") and i != "c0033"]
    assert sorted(records.ids.tolist()) == want  # 29 clips: the rest of the corpus
    assert list(failures(out)) == [str(broken.resolve())]
    lost = clip_failures(out)
    assert list(lost) == ["c0033"] and "non-finite" in lost["c0033"]
    assert np.isfinite(records.edge_embedding).all()


def test_nan_in_dmd_records_is_named_as_bad_input_data(bundle, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(bundle["dmd"])
    rows = table.column("edge_proba").to_pylist()
    rows[2][0] = float("nan")
    bad = table.set_column(table.column_names.index("edge_proba"), "edge_proba",
                           pa.array(rows, table.schema.field("edge_proba").type))
    pq.write_table(bad.replace_schema_metadata(table.schema.metadata), tmp_path / "nan.parquet")
    for args in (("train-switcher", "--dmd", tmp_path / "nan.parquet", "--out",
                  tmp_path / "sw.npz"),
                 ("calibrate", "--dmd", tmp_path / "nan.parquet", "--switcher",
                  bundle["switcher"], "--out", tmp_path / "op.json")):
        r = run_cli(*args)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "row 2" in r.stderr and "edge_proba holds NaN" in r.stderr
        assert "bad input data" in r.stderr and "model returned" not in r.stderr


def test_an_error_record_is_json_with_the_video_fields_of_its_clip():
    """The stream's error record keeps an item's extra fields (a video's time range)."""
    from edgeswitch.runtime.stream import StreamItem, clip_error

    class Edge:
        name = "edge-x"

    class Hybrid:
        edge = Edge()

    item = StreamItem(np.full((1, 4, 2), np.nan, np.float32), ["v/0"], ["v"],
                      [{"start_s": 0.0, "end_s": 4.0}])
    row = clip_error(Hybrid(), item, ValueError("bad clip"))
    assert json.loads(json.dumps(row)) == {
        "clip_id": "v/0", "model": "edge-x", "start_s": 0.0, "end_s": 4.0,
        "error": "edge model edge-x: bad clip (the clip holds 8 NaN or inf values)"}


def test_the_runner_unit_functions_isolate_a_clip_on_either_engine(bm_models, basicmotions):
    """edge_step marks the clip the edge cannot digest; unit_records leaves it out both from
    the local engine's reasons and from the NaN marker that survives Ray's transfer; a cloud
    that rejects a clip fails that clip, one that rejects a whole batch stops the run."""
    from edgeswitch.cloud.client import CloudReply, InProcessCloud
    from edgeswitch.dmd.runner import (
        CloudDownError,
        Identity,
        Job,
        UnitClips,
        cloud_step,
        edge_step,
        unit_records,
    )
    from edgeswitch.models.base import ModelOutput

    edge, cloud = bm_models
    X = basicmotions.X[:10].astype(np.float32).copy()
    X[4] = 3e38
    out = edge_step(edge, X, 4)
    assert list(out.failed) == [4] and "non-finite" in out.failed[4]
    assert np.isnan(out.embedding[4]).all() and np.isfinite(np.delete(out.embedding, 4, 0)).all()
    np.testing.assert_allclose(np.delete(out.proba, 4, 0), edge.outputs(np.delete(X, 4, 0)).proba,
                               rtol=1e-5, atol=1e-6)

    class Rejecting:
        """Rejects (422) any batch holding the poison clip, or every batch."""

        def __init__(self, everything=False):
            self.inner, self.everything = InProcessCloud(cloud), everything
            self.name, self.classes_ = "rejecting", tuple(cloud.classes_)

        def request(self, batch, deadline=None):
            if self.everything or (np.abs(batch) > 1e30).any():
                return CloudReply(None, "rejected", 1, 1.0, "HTTP 422 value out of range")
            return CloudReply(self.inner.predict_proba(batch), None, 1, 1.0)

    k = len(cloud.classes_)
    skipped = cloud_step(Rejecting(), X, 4, k, skip=[4])  # local: never asked about clip 4
    assert skipped.failed == {}
    asked = cloud_step(Rejecting(), X, 4, k)  # Ray: asked, rejected alone
    assert list(asked.failed) == [4] and asked.failed[4].startswith("rejected")
    np.testing.assert_array_equal(np.delete(asked.proba, 4, 0), np.delete(skipped.proba, 4, 0))
    with pytest.raises(CloudDownError, match="answered none of 4 clips"):
        cloud_step(Rejecting(everything=True), X, 4, k)

    job = Job(None, None, None, Identity(tuple(edge.classes_), "e", "c"), 4)
    ids = np.array([f"x{i}" for i in range(10)])
    clips = UnitClips(X, ids, np.full(10, "g"))
    for edge_out, answers in ((out, skipped),  # local: the edge's own reason
                              (ModelOutput(out.proba, out.embedding), asked)):  # Ray
        records, failed = unit_records(job, clips, edge_out, answers)
        assert "x4" not in records.ids and len(records) == 9
        assert [f[1] for f in failed] == ["x4"] and failed[0][2].startswith("edge")
