"""Edge/cloud models: ONNX export and inference, reproducibility, caching, bad input."""

import numpy as np
import pytest

from edgeswitch.errors import DataError, ModelError, NotFittedError
from edgeswitch.models import OnnxClassifier
from edgeswitch.models.cache import fit_or_load
from edgeswitch.models.onnx_model import make_session
from edgeswitch.models.train import NetClassifier


def _small(name="edge", seed=0):
    return NetClassifier(arch="edge-cnn", arch_params={"width": 8, "layers": 2}, name=name,
                         epochs=3, seed=seed)


def test_models_share_one_interface(bm_models, bm_splits):
    X = bm_splits.test.X
    for model in bm_models:
        out = model.outputs(X)
        assert out.proba.shape == (len(X), 4)
        np.testing.assert_allclose(out.proba.sum(axis=1), 1.0, atol=1e-5)
        assert out.embedding.ndim == 2 and len(out.embedding) == len(X)
        np.testing.assert_array_equal(model.predict(X), out.proba.argmax(axis=1))
        assert model.classes_ == bm_splits.test.classes
        assert model.n_params_ > 0 and model.macs_ > 0
    edge, cloud = bm_models
    assert cloud.n_params_ > 10 * edge.n_params_


def test_the_onnx_file_is_read_without_the_onnx_package_as_onnx_reads_it(bm_models):
    """OnnxClassifier reads metadata and parameter counts with its own protobuf reader (a
    device has onnxruntime, not onnx): the same as onnx's, for every model here."""
    import onnx

    from edgeswitch.models.onnx_model import read_model_proto

    for model in bm_models:
        proto = onnx.load_from_string(model.onnx_bytes_)
        meta, n_params = read_model_proto(model.onnx_bytes_)
        assert meta == {p.key: p.value for p in proto.metadata_props} and "edgeswitch.classes" \
            in meta
        assert n_params == model.n_params_ == sum(
            int(np.prod(t.dims)) for t in proto.graph.initializer
            if t.data_type == onnx.TensorProto.FLOAT)
        assert proto.SerializeToString() == model.onnx_bytes_  # the file is onnx's own bytes
    half = model.onnx_bytes_[:len(model.onnx_bytes_) // 2]  # cut inside the graph
    for bad in (b"", b"\x00garbage", half):
        with pytest.raises(ValueError):
            read_model_proto(bad)


def test_onnx_file_roundtrip_is_self_describing(bm_models, bm_splits, tmp_path):
    edge, _ = bm_models
    path = edge.save(tmp_path / "edge.onnx")
    again = OnnxClassifier(path)
    assert again.classes_ == edge.classes_ and again.clip_shape_ == edge.clip_shape_
    np.testing.assert_allclose(again.predict_proba(bm_splits.test.X),
                               edge.predict_proba(bm_splits.test.X), rtol=1e-6)


def test_training_is_reproducible_from_seed(bm_splits):
    X = bm_splits.test.X
    a = _small(seed=3).fit(bm_splits.train).predict_proba(X)
    b = _small(seed=3).fit(bm_splits.train).predict_proba(X)
    c = _small(seed=4).fit(bm_splits.train).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_cache_skips_training(bm_splits, tmp_path, monkeypatch):
    first, cached = fit_or_load(_small(), bm_splits.train, tmp_path)
    assert not cached and len(list((tmp_path / "models").glob("*.onnx"))) == 1

    def boom(*_a, **_k):
        raise AssertionError("retrained although the model was cached")

    monkeypatch.setattr(NetClassifier, "fit", boom)
    second, cached = fit_or_load(_small(), bm_splits.train, tmp_path)
    assert cached
    np.testing.assert_array_equal(first.onnx_bytes_, second.onnx_bytes_)
    with pytest.raises(AssertionError, match="retrained"):  # other settings -> new model
        fit_or_load(_small(seed=9), bm_splits.train, tmp_path)


def test_two_runs_saving_one_cached_model_at_once_both_succeed(bm_models, tmp_path,
                                                                monkeypatch):
    """Two `demo` runs on one cache may save the same model together: one writes its file
    while the other is between writing and renaming its own. Both succeed, one whole file."""
    import threading
    from pathlib import Path

    from edgeswitch.models import OnnxClassifier

    edge, path = bm_models[0], tmp_path / "models" / "edge.onnx"
    real, a_wrote, b_done, errors = Path.replace, threading.Event(), threading.Event(), []

    def replace(self, target):
        if threading.current_thread().name == "a":  # run a: written, not renamed yet
            a_wrote.set()
            b_done.wait(30)
        return real(self, target)

    def run_a():
        try:
            edge.save(path)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    monkeypatch.setattr(Path, "replace", replace)
    a = threading.Thread(target=run_a, name="a")
    a.start()
    assert a_wrote.wait(30)
    edge.save(path)  # run b, whole, meanwhile
    b_done.set()
    a.join(30)
    assert errors == []
    assert OnnxClassifier(path).onnx_bytes_ == edge.onnx_bytes_
    assert [f.name for f in path.parent.iterdir()] == ["edge.onnx"]  # no temporary left


def test_bad_input_gets_clear_errors(bm_models, bm_splits, tmp_path):
    edge, _ = bm_models
    X = bm_splits.test.X
    with pytest.raises(ModelError, match=r"expects clips \[n, 100, 6\]"):
        edge.predict(X[:, :50])
    with pytest.raises(ModelError, match="expects clips"):
        edge.predict(X[:, :, :3])
    with pytest.raises(DataError, match="3 dims"):
        edge.predict(X[0])
    bad = X.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(DataError, match="NaN.*clip index 2"):
        edge.predict(bad)
    with pytest.raises(DataError, match="dtype"):
        edge.predict(X.astype(str))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="cannot read ONNX model"):
        OnnxClassifier(corrupt)
    with pytest.raises(ModelError, match="not found"):
        OnnxClassifier(tmp_path / "missing.onnx")
    with pytest.raises(NotFittedError):
        _small().predict(X)
    with pytest.raises(DataError, match="needs labels"):
        _small().fit(bm_splits.pool)


def test_one_onnx_session_helper_names_what_it_cannot_load(bm_models):
    """make_session is how OnnxClassifier, the NFD fall head and yolo-fall open their graphs: a
    graph onnxruntime refuses, or a bad thread count, is a ModelError naming the model."""
    edge, _ = bm_models
    session = make_session(edge.onnx_bytes_, threads=2, who="edge")
    assert [o.name for o in session.get_outputs()][:2] == ["proba", "embedding"]
    assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ModelError, match="my-model: onnxruntime cannot load the graph"):
        make_session(b"\x00garbage" * 10, who="my-model")
    with pytest.raises(ModelError, match="my-model: threads must be an int >= 1, got 0"):
        make_session(edge.onnx_bytes_, threads=0, who="my-model")
