"""The one DMD runner and its one failure policy, the same for every source and sink: an
unreadable unit is recorded and skipped, a clip the cloud answers unusably fails alone, a cloud
that does not answer stops the run (finished units stay, the same call resumes). One batch-size
default. DMDRecords refuses parts that do not fit together."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from edgeswitch.cloud.client import CloudReply, InProcessCloud
from edgeswitch.config import DistillConfig
from edgeswitch.dmd import DMDRecords, distill
from edgeswitch.dmd.parts import clip_failures, failures
from edgeswitch.dmd.runner import CloudDownError, run
from edgeswitch.dmd.sinks import FolderSink, MemorySink
from edgeswitch.dmd.sources import LiveModels, MemorySource, NpzSource
from edgeswitch.errors import DataError, EdgeSwitchError
from tests.corpus import records_equal, write_corpus


class _Cloud:
    """A narrow unit double around the real cloud model: it answers like it, except that it
    can go down after `answers` calls (reason `down`) or answer the clips of `poison`
    unusably (reason malformed). Same identity as the model, so runs resume across it."""

    def __init__(self, model, answers: int | None = None, down: str = "http_503",
                 poison: np.ndarray | None = None) -> None:
        self.model = model
        self.inner = InProcessCloud(model)
        self.classes_, self.name = tuple(model.classes_), "flaky-cloud"
        self.answers, self.down, self.poison, self.calls = answers, down, poison, []

    def request(self, X, deadline=None) -> CloudReply:
        self.calls.append(len(X))
        if self.answers is not None and len(self.calls) > self.answers:
            return CloudReply(None, self.down, 3, 1.0, "server error after 3 attempts")
        if self.poison is not None and any((x == p).all() for x in X for p in self.poison):
            return CloudReply(None, "malformed", 1, 1.0, "the reply names no class")
        return CloudReply(self.inner.predict_proba(X), None, 1, 1.0)

    def predict_proba(self, X):
        reply = self.request(X)
        if not reply.ok:
            raise RuntimeError(reply.reason)
        return reply.proba


@pytest.fixture
def corpus(basicmotions, tmp_path):
    write_corpus(basicmotions, tmp_path / "corpus", files=3)  # 27 + 27 + 26 clips
    return tmp_path / "corpus"


def _both(source_of, edge, cloud_of, out):
    """The same run into memory and into a folder: (memory sink, folder records)."""
    memory = MemorySink()
    run(source_of(), LiveModels(edge, cloud_of()), memory, batch_size=8)
    run(source_of(), LiveModels(edge, cloud_of()), FolderSink(out), batch_size=8)
    return memory, DMDRecords.from_parquet(out)


def test_a_cloud_that_does_not_answer_stops_every_run_alike(corpus, bm_models, bm_splits,
                                                            tmp_path):
    edge, cloud = bm_models
    message = r"the cloud flaky-cloud did not answer \(http_503: server error after 3 attempts\)"
    with pytest.raises(CloudDownError, match=message + r"; DMD stopped after 0 of 1 units, "
                       "nothing was written"):
        distill(edge, _Cloud(cloud, answers=0), bm_splits.pool)
    with pytest.raises(CloudDownError, match=message):
        run(NpzSource([str(corpus)], 7), LiveModels(edge, _Cloud(cloud, answers=0)),
            MemorySink(), batch_size=8)
    out = tmp_path / "dmd"
    with pytest.raises(CloudDownError, match=message + r"; DMD stopped after 5 of 12 units, "
                       f"the finished units are kept in {out}: run the same command again"):
        run(NpzSource([str(corpus)], 7), LiveModels(edge, _Cloud(cloud, answers=5)),
            FolderSink(out), batch_size=8)  # 7 clips a shard, one call each
    assert len(list(out.glob("part-*.parquet"))) == 5
    with pytest.raises(DataError, match="unfinished run, 7 of 12"):
        DMDRecords.from_parquet(out)
    again = run(NpzSource([str(corpus)], 7), LiveModels(edge, _Cloud(cloud)), FolderSink(out),
                batch_size=8)  # the same call, the cloud back: it resumes
    assert (again.skipped, again.written) == (5, 7)
    whole, _ = _both(lambda: NpzSource([str(corpus)], 7), edge, lambda: _Cloud(cloud),
                     tmp_path / "whole")
    assert records_equal(DMDRecords.from_parquet(out), whole.records)


def test_a_corrupt_unit_is_reported_and_skipped_in_memory_and_in_a_folder(corpus, bm_models,
                                                                          tmp_path):
    edge, cloud = bm_models
    bad = corpus / "clips-0001.npz"
    bad.write_bytes(b"this is not a zip file")  # the middle file of three
    memory, folder = _both(lambda: NpzSource([str(corpus)], 7), edge, lambda: _Cloud(cloud),
                           tmp_path / "dmd")
    reason = f"{bad}: not a readable .npz file"
    assert list(memory.failed_units) == [str(bad.resolve())]
    assert next(iter(memory.failed_units.values())).startswith(reason)
    assert list(failures(tmp_path / "dmd")) == [str(bad.resolve())]
    assert next(iter(failures(tmp_path / "dmd").values())).startswith(reason)
    assert len(folder) == 27 + 26 and records_equal(folder, memory.records)
    assert not any(i.startswith("clips-0001") for i in folder.ids)
    again = run(NpzSource([str(corpus)], 7), LiveModels(edge, _Cloud(cloud)),
                FolderSink(tmp_path / "dmd"), batch_size=8)
    assert (again.skipped, again.written) == (9, 0)  # 4 + 1 + 4 units, all done


def test_an_unusable_answer_fails_its_clip_not_its_batch(corpus, bm_models, basicmotions,
                                                         tmp_path):
    edge, cloud = bm_models
    poison = basicmotions.X[[3, 40]]  # one clip of the first file, one of the second
    memory, folder = _both(lambda: NpzSource([str(corpus)], 7), edge,
                           lambda: _Cloud(cloud, poison=poison), tmp_path / "dmd")
    lost = {str(basicmotions.ids[3]), str(basicmotions.ids[40])}
    assert set(memory.failed_clips) == lost and \
        all(why.startswith("malformed: the reply names no class")
            for why in memory.failed_clips.values())
    assert clip_failures(tmp_path / "dmd") == memory.failed_clips  # kept in the parts
    assert len(folder) == len(basicmotions) - 2 and not lost & set(folder.ids)
    assert records_equal(folder, memory.records)
    want = distill(edge, cloud, basicmotions, batch_size=8)  # the other clips: unchanged
    keep = ~np.isin(want.ids.astype(str), list(lost))
    np.testing.assert_array_equal(folder.cloud_proba, want.cloud_proba[keep])
    again = run(NpzSource([str(corpus)], 7), LiveModels(edge, _Cloud(cloud, poison=poison)),
                FolderSink(tmp_path / "dmd"), batch_size=8)
    assert (again.skipped, again.written) == (12, 0)  # a part with failed clips is whole


def test_one_batch_size_default(bm_models, basicmotions):
    """`DistillConfig.batch_size` is the only default: every entry point defers to it."""
    from edgeswitch.dmd import generate, runner, sinks, sources
    from edgeswitch.scale import ray_distill
    from edgeswitch.video import dmd as video_dmd

    default = DistillConfig().batch_size
    assert runner.resolve_batch_size(None) == default
    for module in (generate, runner, sinks, sources, video_dmd, ray_distill):
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            fns = [v for v in vars(obj).values() if inspect.isfunction(v)] \
                if inspect.isclass(obj) else [obj] if inspect.isfunction(obj) else []
            for fn in fns:
                param = inspect.signature(fn).parameters.get("batch_size")
                assert param is None or param.default in (None, inspect.Parameter.empty), \
                    f"{module.__name__}.{name} has its own batch-size default"
            if dataclasses.is_dataclass(obj):
                assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(obj)
                           if f.name == "batch_size"), f"{name} has a batch-size default"
    edge, cloud = bm_models
    counted = _Cloud(cloud)
    distill(edge, counted, basicmotions)  # 80 clips
    assert counted.calls == [min(default, len(basicmotions))]
    big = MemorySource(basicmotions.subset(np.arange(len(basicmotions))))
    counted = _Cloud(cloud)
    run(big, LiveModels(edge, counted), MemorySink(), batch_size=30)
    assert counted.calls == [30, 30, 20]


def _records(**change) -> DMDRecords:
    fields = dict(ids=np.array(["a", "b"]), groups=np.array(["g", "h"]),
                  edge_proba=np.array([[0.6, 0.4], [0.1, 0.9]]), edge_embedding=np.zeros((2, 3)),
                  cloud_proba=np.array([[0.3, 0.7], [0.2, 0.8]]), classes=("x", "y"),
                  edge_model="e", cloud_model="c")
    return DMDRecords(**fields | change)


@pytest.mark.parametrize("change,message", [
    ({"groups": np.array(["g"])}, "1 groups for 2 clip ids"),
    ({"ids": np.array([["a", "b"]])}, "ids must be 1-D"),
    ({"edge_proba": np.array([0.6, 0.4])}, r"edge_proba must be \[2, ...\]"),
    ({"edge_embedding": np.zeros((3, 3))}, r"edge_embedding must be \[2, ...\]"),
    ({"cloud_proba": np.array([[0.3, np.nan], [0.2, 0.8]])}, "cloud_proba holds NaN"),
    ({"cloud_proba": np.ones((2, 3)) / 3}, "edge_proba has 2 classes, cloud_proba 3"),
    ({"edge_proba": np.array([[1.5, -0.5], [0.1, 0.9]])}, "probabilities must be >= 0"),
    ({"classes": ("x", "y", "z")}, "classes must be a tuple of 2 names"),
    ({"classes": ["x", "y"]}, "classes must be a tuple"),
    ({"cloud_model": None}, r"cloud_model must be a name \(str\), got None"),
])
def test_records_refuse_parts_that_do_not_fit(change, message):
    assert len(_records()) == 2
    with pytest.raises(DataError, match="DMD records: " + message):
        _records(**change)


@pytest.mark.slow
def test_a_server_cloud_is_identified_through_the_one_client(bm_files):
    """A DMD run over a server records `remote:URL#MODEL`, asked at /v1/models with the run's
    own client (token, TLS); a wrong model, a wrong token or no server is a clear error."""
    from edgeswitch.cloud.spec import CloudSpec
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.serving.server import ServerProcess

    name = OnnxClassifier(bm_files["cloud"]).name

    def identity(spec: CloudSpec) -> str:
        with spec.build(("a", "b")) as cloud:
            return spec.identity(cloud)

    with ServerProcess(bm_files["cloud"], token="s3cret") as server:
        assert identity(CloudSpec(url=server.url, token="s3cret")) == \
            f"remote:{server.url}#{name}"
        with pytest.raises(EdgeSwitchError, match=r"serves \[.*\], not 'other'"):
            identity(CloudSpec(url=server.url, token="s3cret", served_model="other"))
        with pytest.raises(EdgeSwitchError, match="which model it serves: unauthorized"):
            identity(CloudSpec(url=server.url, token="wrong"))
        url = server.url
    with pytest.raises(EdgeSwitchError, match="which model it serves: connection"):
        identity(CloudSpec(url=url))
