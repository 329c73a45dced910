"""Fusion on offload: the log-linear combination and its label-free fit."""

import numpy as np
import pytest

from edgeswitch.errors import DataError, NotFittedError
from edgeswitch.switcher.fusion import Fusion, log_linear


def _pair(n=2000, k=5, edge_noise=1.0, seed=0):
    """A latent class, a cloud that sees it clearly and an edge that sees it through noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits_c = 2.5 * np.eye(k)[y] + rng.normal(size=(n, k))
    logits_e = 2.5 * np.eye(k)[y] + edge_noise * rng.normal(size=(n, k)) * 2
    sm = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    return sm(logits_e), sm(logits_c), y


def test_log_linear_hand_computed():
    pe, pc = np.array([[0.5, 0.5]]), np.array([[0.8, 0.2]])
    np.testing.assert_allclose(log_linear(pe, pc, 0.0), pc)
    q = log_linear(np.array([[0.2, 0.8]]), pc, 1.0)
    np.testing.assert_allclose(q, [[0.16 / 0.32, 0.16 / 0.32]])


def test_fitted_weight_follows_the_edge_strength():
    """No labels: a weak edge gets a smaller weight than a strong one."""
    strong = Fusion("dmd").fit(*_pair(edge_noise=0.5)[:2])
    weak = Fusion("dmd").fit(*_pair(edge_noise=2.0)[:2])
    assert 0 <= weak.weight < strong.weight
    assert Fusion("none").fit(*_pair()[:2]).weight == 0.0
    assert Fusion("fixed", edge_weight=0.7).fit(*_pair()[:2]).weight == 0.7


def test_fusion_helps_on_a_pair_where_the_edge_adds_information():
    pe, pc, y = _pair(edge_noise=0.6)
    f = Fusion("dmd").fit(pe, pc)
    fused = f.combine(pe, pc).argmax(1)
    assert np.mean(fused == y) > np.mean(pc.argmax(1) == y)


def test_fit_signature_takes_no_labels_and_roundtrips(tmp_path):
    import inspect

    assert list(inspect.signature(Fusion.fit).parameters) == ["self", "edge_proba",
                                                              "cloud_proba"]
    pe, pc, _ = _pair()
    f = Fusion("dmd").fit(pe, pc)
    g = Fusion.load(f.save(tmp_path / "fusion.json"))
    np.testing.assert_allclose(g.combine(pe, pc), f.combine(pe, pc))


def test_fusion_refuses_bad_input(tmp_path):
    with pytest.raises(DataError, match="method"):
        Fusion("vote")
    with pytest.raises(DataError, match="edge_weight"):
        Fusion("fixed", edge_weight=-1)
    with pytest.raises(NotFittedError):
        Fusion().combine(np.ones((1, 2)) / 2, np.ones((1, 2)) / 2)
    with pytest.raises(DataError, match="one shape"):
        Fusion().fit(np.ones((3, 2)) / 2, np.ones((3, 3)) / 3)
    with pytest.raises(DataError, match="NaN"):
        Fusion().fit(np.full((3, 2), np.nan), np.ones((3, 2)) / 2)
    bad = tmp_path / "f.json"
    bad.write_text("{")
    with pytest.raises(DataError, match="not a JSON fusion"):
        Fusion.load(bad)
    bad.write_text('{"method": "dmd"}')
    with pytest.raises(DataError, match="not a fitted fusion"):
        Fusion.load(bad)


def test_the_hybrid_answers_offloaded_clips_with_the_fusion_and_logs_the_cloud(bm_models,
                                                                             bm_splits,
                                                                             tmp_path):
    from edgeswitch.models.base import model_identity
    from edgeswitch.runtime import HybridClassifier
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.switcher import OperatingPoint, make_router

    edge, cloud = bm_models
    X = bm_splits.test.X
    everything = OperatingPoint("offload", float("inf"), 1.0)  # offload every clip
    fusion = Fusion("fixed", edge_weight=1.0).fit(edge.predict_proba(X), cloud.predict_proba(X))
    with DecisionLog(tmp_path / "log.sqlite", edge.classes_, model_identity(edge),
                     model_identity(cloud)) as log:
        res = HybridClassifier(edge, make_router("entropy"), cloud, everything, log=log,
                               fusion=fusion).classify(X)
        logged = log.frame()
    want = fusion.combine(edge.predict_proba(X), cloud.predict_proba(X))
    np.testing.assert_allclose(res.proba, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.cloud_proba, cloud.predict_proba(X), rtol=1e-5, atol=1e-6)
    assert (res.answered_by == "cloud").all()
    # the log's answer is the fused one; its cloud probabilities are the cloud's own
    names = np.asarray(edge.classes_)
    assert logged["label"].tolist() == names[want.argmax(axis=1)].tolist()
    np.testing.assert_allclose(np.array(logged["cloud_proba"].tolist()),
                               cloud.predict_proba(X), rtol=1e-5, atol=1e-6)
