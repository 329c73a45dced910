"""The switcher MLP, the router registry and the hybrid classifier."""

import numpy as np
import pytest

from edgeswitch.cloud.client import InProcessCloud
from edgeswitch.errors import DataError, ModelError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.runtime import HybridClassifier
from edgeswitch.switcher import MLPSwitcher, OperatingPoint, load_switcher, make_router
from edgeswitch.switcher.features import confidence, switcher_features
from tests.synthetic import edge_outputs

_synthetic = edge_outputs


def test_confidence_features_hand_computed():
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    c = confidence(p)
    np.testing.assert_allclose(c[:, 0], [0.7, 1 / 3])
    np.testing.assert_allclose(c[:, 1], [0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(c[1, 2], 1.0)  # uniform: normalised entropy 1
    out = ModelOutput(proba=p, embedding=np.zeros((2, 5)))
    assert switcher_features(out).shape == (2, 3 + 3 + 5)
    assert switcher_features(out, ("confidence",)).shape == (2, 3)
    with pytest.raises(DataError, match="unknown switcher feature"):
        switcher_features(out, ("logits",))


def test_switcher_learns_agreement_and_roundtrips(tmp_path):
    edge, agree, groups = _synthetic()
    sw = MLPSwitcher(target="hard", epochs=150, seed=0).fit(edge, agree, groups)
    test, t_agree, _ = _synthetic(seed=1)
    s = sw.trust(test)
    assert s.shape == (len(t_agree),) and np.all((s >= 0) & (s <= 1))
    assert np.mean((s > 0.5) == (t_agree > 0.5)) > 0.9
    assert sw.predict_proba(test).shape == (len(s), 2)
    loaded = load_switcher(sw.save(tmp_path / "sw.npz"))
    np.testing.assert_allclose(loaded.trust(test), s, rtol=1e-6)
    assert loaded.target == "hard" and loaded.n_params == sw.n_params
    assert sw.macs < 5000  # two small matrices, whatever the data


def _reference_train(sw: MLPSwitcher, Z, t, epochs, Zv, tv):
    """The MLP's training as it was written first: nn.Sequential, autograd, torch's AdamW."""
    import torch

    bce = torch.nn.functional.binary_cross_entropy_with_logits
    torch.manual_seed(sw.seed)
    net = torch.nn.Sequential(torch.nn.Linear(Z.shape[1], sw.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(sw.hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=sw.lr, weight_decay=sw.weight_decay)
    X, T = torch.from_numpy(Z), torch.from_numpy(t)
    val = []
    for _ in range(epochs):
        opt.zero_grad()
        bce(net(X).squeeze(1), T).backward()
        opt.step()
        if Zv is not None:
            with torch.no_grad():
                val.append(bce(net(torch.from_numpy(Zv)).squeeze(1), torch.from_numpy(tv)).item())
    return [p.detach().numpy() for p in net.parameters()], np.asarray(val)


@pytest.mark.parametrize("n, soft, seed", [(40, False, 0), (700, True, 3), (3000, False, 7)])
def test_mlp_training_is_bit_identical_to_autograd_and_adamw(n, soft, seed):
    """The written-out training loop (mlp._grads, mlp._AdamW) gives the reference loop's
    weights and validation losses bit for bit: benchmark figures depend on it (a torch upgrade
    that changes an op's order shows here first)."""
    import torch

    rng = np.random.default_rng(seed)
    Z = (rng.standard_normal((n, 13)) * rng.uniform(0.1, 3, 13)).astype(np.float32)
    t = (rng.random(n) if soft else rng.random(n) < 0.8).astype(np.float32)
    sw = MLPSwitcher(hidden=8, seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for Zv, tv in ((Z[: n // 4], t[: n // 4]), (None, None)):
            got_w, got_v = sw._train_torch(torch, Z, t, 60, Zv, tv)
            ref_w, ref_v = _reference_train(sw, Z, t, 60, Zv, tv)
            assert all(np.array_equal(a, b) for a, b in zip(got_w, ref_w, strict=True))
            assert np.array_equal(got_v, ref_v)
    finally:
        torch.set_num_threads(threads)


def test_switcher_refuses_bad_input(tmp_path):
    edge, agree, _ = _synthetic()
    with pytest.raises(NotFittedError):
        MLPSwitcher().trust(edge)
    with pytest.raises(DataError, match="within"):
        MLPSwitcher().fit(edge, agree * 2)
    with pytest.raises(DataError, match="shape"):
        MLPSwitcher().fit(edge, agree[:-1])
    sw = MLPSwitcher(epochs=5).fit(edge, agree)
    other = ModelOutput(proba=edge.proba, embedding=np.zeros((len(edge), 9)))
    with pytest.raises(ModelError, match="fitted on"):
        sw.trust(other)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(ModelError, match="not an edgeswitch switcher"):
        load_switcher(bad)


def test_router_registry():
    p = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1]])
    out = ModelOutput(proba=p, embedding=np.zeros((2, 1)))
    for name in ("max_prob", "margin", "entropy"):
        s = make_router(name).trust(out)
        assert s[0] > s[1], name  # the confident clip is kept first
    r = make_router("random", seed=1).trust(out)
    np.testing.assert_array_equal(r, make_router("random", seed=1).trust(out))
    with pytest.raises(DataError, match="unknown router"):
        make_router("gpt")


def test_hybrid_offloads_exactly_below_threshold(bm_models, bm_splits):
    edge, cloud_model = bm_models
    X = bm_splits.test.X
    router = make_router("max_prob")
    scores = router.trust(edge.outputs(X))
    t = float(np.median(scores))
    cloud = InProcessCloud(cloud_model)
    res = HybridClassifier(edge, router, cloud, OperatingPoint("offload", t, 0.5)).classify(X)
    expect_off = scores < t
    np.testing.assert_array_equal(res.offloaded, expect_off)
    assert cloud.clips_sent == expect_off.sum()  # only offloaded clips leave the device
    np.testing.assert_array_equal(res.label[expect_off], cloud_model.predict(X[expect_off]))
    np.testing.assert_array_equal(res.label[~expect_off], edge.predict(X[~expect_off]))
    recs = res.records(bm_splits.test.classes, bm_splits.test.ids)
    assert recs[0]["answered_by"] in ("edge", "cloud") and len(recs) == len(X)
    all_cloud = HybridClassifier(edge, router, cloud_model, OperatingPoint("offload", np.inf, 1.0))
    assert all_cloud.classify(X).offloaded.all()


def test_hybrid_with_adaptive_operating_point_holds_the_rate(bm_models, bm_splits, basicmotions):
    from edgeswitch.switcher import calibrate_offload

    edge, cloud_model = bm_models
    router = make_router("max_prob")
    calib_scores = router.trust(edge.outputs(bm_splits.calib.X))
    op = calibrate_offload(calib_scores, 0.25, adaptive=True, step=0.02)
    cloud = InProcessCloud(cloud_model)
    hybrid = HybridClassifier(edge, router, cloud, op)
    X = basicmotions.X  # a stream the threshold was not calibrated on
    offloaded = np.concatenate([hybrid.classify(X[i : i + 5]).offloaded
                                for i in range(0, len(X), 5)])
    assert offloaded.mean() <= 0.25 + 1e-9  # the cap
    c = hybrid.controller
    assert c.step == 0.02  # the step stored in the operating point, not a default
    assert c.seen == len(X) and c.offloaded == offloaded.sum()
    # the telescoping identity of the docstring, exactly
    expected = 0.25 * (1 - c.capped / c.seen) - (c.level - 0.25) / (c.seen * c.step)
    assert offloaded.mean() == pytest.approx(expected, abs=1e-9)
    assert offloaded.any()
    assert cloud.clips_sent == offloaded.sum()


class _FailingCloud:
    """A cloud client that never answers (narrow unit double; the real failures are exercised
    against the real server in test_faults.py)."""

    def __init__(self, classes):
        self.classes_, self.name, self.deadline_s = classes, "down", 0.1

    def predict_proba(self, X):
        raise AssertionError("the hybrid must use request()")

    def request(self, X, deadline=None):
        from edgeswitch.cloud.client import CloudReply

        return CloudReply(None, "connection", 3, 1.0, "refused")


def test_hybrid_falls_back_to_the_edge_flagged_and_logs_it(bm_models, bm_splits, tmp_path):
    from edgeswitch.runtime import HybridClassifier
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.switcher.routers import make_router

    edge, _ = bm_models
    X, ids = bm_splits.test.X, bm_splits.test.ids
    router = make_router("max_prob")
    t = float(np.median(router.trust(edge.outputs(X))))
    with DecisionLog(tmp_path / "d.sqlite", edge.classes_) as log:
        res = HybridClassifier(edge, router, _FailingCloud(edge.classes_),
                               OperatingPoint("offload", t, 0.5), log=log).classify(X, ids)
        assert len(log) == len(X)
        df = log.frame()
    off = res.offloaded
    assert off.any() and (~off).any()
    np.testing.assert_array_equal(res.label, edge.predict(X))  # every answer is the edge's
    assert (res.answered_by == "edge").all()
    assert not res.verified[off].any() and res.verified[~off].all()
    assert set(res.reason[off]) == {"connection"}
    assert list(df["fallback_reason"].fillna("")) == list(res.reason)
    assert list(df["clip_id"]) == list(ids)


def test_shadow_rate_sends_kept_clips_for_the_log_only(bm_models, bm_splits, tmp_path):
    from edgeswitch.cloud.client import InProcessCloud
    from edgeswitch.runtime import HybridClassifier
    from edgeswitch.runtime.decision_log import DecisionLog
    from edgeswitch.switcher import OperatingPoint
    from edgeswitch.switcher.routers import make_router

    edge, cloud_model = bm_models
    X = bm_splits.test.X
    cloud = InProcessCloud(cloud_model)
    with DecisionLog(tmp_path / "d.sqlite", edge.classes_) as log:
        res = HybridClassifier(edge, make_router("max_prob"), cloud,
                               OperatingPoint("offload", -np.inf, 0.0), log=log,
                               shadow_rate=1.0).classify(X)
        assert not res.offloaded.any() and cloud.clips_sent == len(X)
        np.testing.assert_array_equal(res.label, edge.predict(X))  # answers stay the edge's
        assert len(log.dmd_records()) == len(X)
