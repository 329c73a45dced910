"""The stream router: its state, its fit without labels, and one evaluation path with the
runtime (the benchmark's replay and the hybrid give the same decisions)."""

from dataclasses import replace

import numpy as np
import pytest

from edgeswitch.cloud.client import NoCloud
from edgeswitch.data.clips import stream_lists
from edgeswitch.evaluation.curves import RankedPath, accuracy_by_k, offload_order
from edgeswitch.models.base import ModelOutput
from edgeswitch.runtime.hybrid import HybridClassifier
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
    calibrate_stream,
    stream_thresholds,
    threshold_search,
)
from edgeswitch.switcher.routers import MarginRouter, Router
from edgeswitch.switcher.select import SwitcherSpec
from edgeswitch.switcher.stream import BeliefRouter
from edgeswitch.switcher.stream_fit import (
    fit_belief,
    fit_belief_switcher,
    replay_agreement,
    smoothed_teacher,
    switcher_records,
)
from edgeswitch.switcher.sweep import (
    padded,
    run_rows,
    run_searches,
    run_streams,
    run_streams_twins,
    sweep,
    sweep_search,
    sweeps,
)

K = 3


def _streams(n_streams=3, segments=4, seg_len=20, edge_noise=0.45, seed=0):
    """Streams of activity segments; an edge that is often wrong, a cloud that is right."""
    rng = np.random.default_rng(seed)
    y, sid, t = [], [], []
    for s in range(n_streams):
        for _ in range(segments):
            y += [int(rng.integers(K))] * seg_len
        sid += [f"s{s}"] * segments * seg_len
        t += list(range(segments * seg_len))
    y = np.asarray(y)
    n = len(y)
    noisy = rng.random(n) < edge_noise
    edge_label = np.where(noisy, rng.integers(K, size=n), y)
    pe = np.full((n, K), 0.1)
    pe[np.arange(n), edge_label] = rng.uniform(0.35, 0.8, n)
    pe /= pe.sum(axis=1, keepdims=True)
    pc = np.full((n, K), 0.02)
    pc[np.arange(n), y] = 0.96
    emb = rng.normal(size=(n, 2)).astype(np.float32)
    return ModelOutput(pe, emb), pc, y, np.asarray(sid), np.asarray(t, float)


class _Cloud:
    """The recorded cloud answers, looked up by the clip's first value (its index)."""

    name = "recorded"

    def __init__(self, proba):
        self.proba, self.classes_ = proba, ("a", "b", "c")

    def predict_proba(self, X):
        return self.proba[X[:, 0, 0].astype(int)]


class _Edge:
    name = "recorded-edge"
    classes_ = ("a", "b", "c")

    def __init__(self, out):
        self.out = out

    def outputs(self, X):
        i = X[:, 0, 0].astype(int)
        return ModelOutput(self.out.proba[i], self.out.embedding[i])


def _clips(n):
    X = np.zeros((n, 2, 1), np.float32)
    X[:, 0, 0] = np.arange(n)
    return X


def test_a_per_clip_router_s_path_is_the_ranking_it_always_was():
    edge, pc, y, sid, t = _streams()
    path = sweep(MarginRouter(), edge, pc, pc, stream_lists(sid, t), seed=3)
    assert isinstance(path, RankedPath)
    order = offload_order(MarginRouter().trust(edge), 3)
    np.testing.assert_allclose(path.accuracy(y),
                               accuracy_by_k(edge.label == y, pc.argmax(1) == y, order))


def test_the_sweep_and_a_deployed_run_give_the_same_decisions_at_every_threshold():
    edge, pc, y, sid, t = _streams()
    streams = stream_lists(sid, t)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.4, cloud_weight=2.0)
    path = sweep(router, edge, pc, pc, streams, points=12, refine=1)
    for th, off, lab in zip(path.threshold, path.offloaded, path.label, strict=True):
        o, l2, _ = run_streams(router, edge, pc, pc, streams,
                            lambda s, th=th: np.asarray(s) < th)
        assert np.array_equal(o, off) and np.array_equal(l2, lab)


def test_twins_replayed_once_give_what_each_gives_alone():
    """The belief answering offloaded clips by fusion decides as the belief does: one sweep
    and one deployed run give each router's own paths and answers."""
    edge, pc, y, sid, t = _streams()
    streams = stream_lists(sid, t)
    fused = edge.proba ** 2 * pc ** 0.1   # a fusion that trusts the edge: other answers
    fused /= fused.sum(axis=1, keepdims=True)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.4, cloud_weight=2.0, alarm=(2,))
    twin = replace(router, answers="fusion")
    shuffled = [np.random.default_rng(i).permutation(s) for i, s in enumerate(streams)]
    # two sets of streams side by side (a rowwise router), each router's paths in each
    both = sweeps(router, [twin], edge, pc, fused, [streams, shuffled], points=12, refine=2)
    for paths, s in zip(both, (streams, shuffled), strict=True):
        for r, path in zip((router, twin), paths, strict=True):
            alone = sweep(r, edge, pc, fused, s, points=12, refine=2)
            for key in ("offloaded", "label", "threshold"):
                np.testing.assert_array_equal(getattr(path, key), getattr(alone, key))
    assert not np.array_equal(both[0][0].label, both[0][1].label)
    decide = lambda s: np.asarray(s) < 0.6  # noqa: E731
    off, labels, kept = run_streams_twins(router, [twin], edge, pc, fused, streams, decide)
    for r, label in zip((router, twin), labels, strict=True):
        o, lab, k = run_streams(r, edge, pc, fused, streams, decide)
        for a, b in ((off, o), (label, lab), (kept, k)):
            np.testing.assert_array_equal(a, b)
    # a per-clip router's twins answer as it does
    (clip,) = sweeps(MarginRouter(), [MarginRouter()], edge, pc, fused, [streams])
    assert clip[0] is clip[1] and isinstance(clip[0], RankedPath)


@pytest.mark.parametrize("family,generic", [(None, False), ("gbt", False), ("linear", False),
                                            ("mlp", False), ("linear", True)])
def test_searches_on_two_clip_sets_side_by_side_give_what_each_gives_alone(family, generic,
                                                                           monkeypatch):
    """The benchmark runs a stream router's sweep of the test streams, its shuffled control and
    its calibration on other clips round by round side by side, as rows of one run: each gives
    what it gives alone, also for a stream switcher scored through a BLAS product (linear,
    MLP), whose rows of each search are scored apart. `generic`: through the base Replay
    (a router without a replay of its own steps each search's rows apart)."""
    if generic:
        monkeypatch.setattr(BeliefRouter, "replay", Router.replay)
    edge, pc, _, sid, t = _streams()
    streams = stream_lists(sid, t)
    shuffled = [np.random.default_rng(i).permutation(s) for i, s in enumerate(streams)]
    c_edge, c_pc, _, c_sid, c_t = _streams(n_streams=2, segments=5, seed=1)
    calib = stream_lists(c_sid, c_t)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.4, cloud_weight=2.0)
    if family is not None:
        records = switcher_records(router, c_edge, c_pc, c_pc, calib)
        router = fit_belief_switcher(router, SwitcherSpec(family, "hard", epochs=20), records)
        assert router.rowwise == (family == "gbt")
    paths, control, (found,) = run_searches(
        router, (), [(edge, pc, pc), (c_edge, c_pc, c_pc)],
        [(0, streams, sweep_search(streams, 12, 2)), (0, shuffled, sweep_search(shuffled, 12, 2)),
         (1, calib, threshold_search([0.15]))])
    for got, s in ((paths[0], streams), (control[0], shuffled)):
        alone = sweep(router, edge, pc, pc, s, points=12, refine=2)
        for key in ("offloaded", "label", "threshold"):
            np.testing.assert_array_equal(getattr(got, key), getattr(alone, key))
    (alone,) = stream_thresholds(router, c_edge, c_pc, c_pc, calib, [0.15])
    assert found[:2] == alone[:2]
    np.testing.assert_array_equal(found[2], alone[2])


def test_the_state_carries_the_cloud_and_beats_per_clip_routing_where_the_activity_holds():
    edge, pc, y, sid, t = _streams()
    streams = stream_lists(sid, t)
    belief = sweep(BeliefRouter((0.02, 1.0), edge_weight=0.3, cloud_weight=2.0), edge, pc, pc,
                   streams)
    per_clip = sweep(MarginRouter(), edge, pc, pc, streams)
    from edgeswitch.evaluation.curves import accuracy_at

    b, m = accuracy_at(belief, y, [0.1, 0.2]), accuracy_at(per_clip, y, [0.1, 0.2])
    assert (b > m + 0.1).all(), (b, m)
    assert float(np.mean(edge.label == y)) < 0.8 < b[1]


def test_where_time_carries_nothing_the_belief_falls_back_to_the_edge():
    """Clips in random order: the memoryless regime takes over and a kept clip gets the
    edge's own answer (after the first few clips of the stream)."""
    edge, pc, y, sid, t = _streams(n_streams=1, segments=12)
    rng = np.random.default_rng(1)
    order = rng.permutation(len(y))
    router = BeliefRouter((0.02, 1.0), edge_weight=0.3, cloud_weight=2.0)
    _, label, _ = run_streams(router, edge, pc, pc, [order], lambda s: np.zeros(len(s), bool))
    assert np.mean(label[order[10:]] == edge.label[order[10:]]) > 0.9
    # ... where a stream that holds its activity is smoothed away from the edge's mistakes
    _, held, _ = run_streams(router, edge, pc, pc, [np.arange(len(y))],
                          lambda s: np.zeros(len(s), bool))
    assert np.mean(held == edge.label) < 0.8 and np.mean(held == y) > np.mean(edge.label == y)


def test_an_alarm_class_the_edge_claims_is_always_offloaded_and_never_held_back():
    edge, pc, y, sid, t = _streams(n_streams=1)
    router = BeliefRouter((0.01, 1.0), edge_weight=0.3, cloud_weight=4.0, alarm=(2,))
    claims = edge.label == 2
    off, label, _ = run_streams(router, edge, pc, pc, [np.arange(len(y))],
                             lambda s: np.asarray(s) < 0.0)  # nothing else offloaded
    assert off[claims].all() and not off[~claims].any()
    # the cloud cannot answer: each claim stands
    hybrid = HybridClassifier(_Edge(edge), router, NoCloud(("a", "b", "c")),
                              OperatingPoint("offload", 0.0, 0.0, {"router": "belief"}))
    res = hybrid.classify(_clips(len(y)), streams=np.full(len(y), "s"))
    assert (res.label[claims] == 2).all() and (res.reason[claims] == "no_cloud").all()


def test_a_late_answer_of_age_zero_is_an_answer_now():
    edge, pc, *_ = _streams(n_streams=1)
    r = BeliefRouter((0.05, 1.0), edge_weight=0.5, cloud_weight=1.5)
    st = r.start(1, K)
    step = r.step(st, ModelOutput(edge.proba[:1], edge.embedding[:1]))
    now = r.observe(st, step, pc[:1], np.ones(1, bool))
    moved = r.observe(st, step, None, np.zeros(1, bool))
    late = r.late(moved, pc[:1], 0)
    np.testing.assert_allclose(np.exp(late.belief), np.exp(now.belief), atol=1e-9)
    # an old answer says less about now than a fresh one
    older = r.late(moved, pc[:1], 30)
    assert np.exp(older.belief).sum(1).max() < np.exp(late.belief).sum(1).max()


def test_the_fit_replays_exactly_what_the_router_does():
    """The vectorised replay of the fit and the router's own steps agree, clip for clip."""
    edge, pc, y, sid, t = _streams(n_streams=2)
    streams = stream_lists(sid, t)
    base = BeliefRouter((0.05, 1.0), edge_weight=0.3, cloud_weight=1.0)
    setting = {"switch": 0.02, "edge_weight": 0.5, "cloud_weight": 2.0}
    th = np.asarray([0.3, 0.8, 0.99])
    teacher = pc.argmax(1)
    rate, agree = replay_agreement(base, [setting], edge.proba, pc, pc, teacher, streams, th)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.5, cloud_weight=2.0)
    for j, threshold in enumerate(th):
        off, label, _ = run_streams(router, edge, pc, pc, streams,
                                 lambda s, th=threshold: np.asarray(s) < th)
        assert rate[0, j] == pytest.approx(off.mean())
        assert agree[0, j] == pytest.approx(np.mean(label == teacher))


def test_the_fit_reads_no_label_and_prefers_the_settings_that_agree_with_the_cloud():
    edge, pc, y, sid, t = _streams(n_streams=3, seed=4)
    streams = stream_lists(sid, t)
    base = BeliefRouter((0.05, 1.0))
    a = fit_belief(base, edge.proba, pc, pc, streams)
    b = fit_belief(base, edge.proba, pc, pc, streams)
    assert a == b and a.meta["agreement"] == max(g["agreement"] for g in a.meta["grid"])
    # the teacher smooths the cloud over the stream: an isolated slip is outvoted
    slipped = pc.copy()
    slipped[5] = np.roll(slipped[5], 1)
    assert smoothed_teacher(slipped, streams).argmax(1)[5] == pc[5].argmax()
    with pytest.raises(Exception, match="no stream of two clips"):
        fit_belief(base, edge.proba, pc, pc, [np.asarray([i]) for i in range(len(y))])


def test_calibration_runs_the_router_over_the_streams():
    edge, pc, y, sid, t = _streams()
    streams = stream_lists(sid, t)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.3, cloud_weight=2.0)
    op, scores = calibrate_stream(router, edge, pc, pc, streams, 0.15)
    off, _, _ = run_streams(router, edge, pc, pc, streams, op.offload)
    assert off.mean() == pytest.approx(op.calib_offload_rate)
    assert 0.15 <= op.calib_offload_rate < 0.2 and op.params["router"] == "belief"
    adaptive, _ = calibrate_stream(router, edge, pc, pc, streams, 0.15, adaptive=True)
    off, _, _ = run_streams(router, edge, pc, pc, streams, adaptive.controller().decide)
    assert abs(off.mean() - 0.15) < 0.03
    # many target rates at once (the stream switchers' records) pick what each alone picks
    together = stream_thresholds(router, edge, pc, pc, streams, [0.05, 0.15, 0.5])
    for rate, (th, reached, trust) in zip([0.05, 0.15, 0.5], together, strict=True):
        alone, alone_trust = calibrate_stream(router, edge, pc, pc, streams, rate)
        assert (th, reached) == (alone.threshold, alone.calib_offload_rate)
        np.testing.assert_array_equal(trust, alone_trust)


def test_the_hybrid_routes_each_stream_in_its_own_state_as_the_replay_does():
    """One clip per call, two streams interleaved: the decisions are those of the benchmark's
    replay of each stream alone; a forgotten stream starts fresh."""
    edge, pc, y, sid, t = _streams(n_streams=2)
    streams = stream_lists(sid, t)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.3, cloud_weight=2.0)
    op = OperatingPoint("offload", 0.9, 0.0, {"router": "belief"})
    off, label, _ = run_streams(router, edge, pc, pc, streams, op.offload)
    hybrid = HybridClassifier(_Edge(edge), router, _Cloud(pc), op)
    X = _clips(len(y))
    got_off, got_label = np.zeros(len(y), bool), np.zeros(len(y), int)
    for a, b in zip(*streams, strict=True):  # s0 and s1 alternate
        for i in (a, b):
            res = hybrid.classify(X[i:i + 1], streams=[sid[i]])
            got_off[i], got_label[i] = res.offloaded[0], res.label[0]
    assert np.array_equal(got_off, off) and np.array_equal(got_label, label)
    assert len(hybrid.states) == 2
    # a process that keeps one stream forgets the other between its clips
    small = HybridClassifier(_Edge(edge), router, _Cloud(pc), op, max_streams=1)
    fresh = [small.classify(X[i:i + 1], streams=[sid[i]]).score[0]
             for pair in zip(*streams, strict=True) for i in pair]
    start = router.step(router.start(1, K), ModelOutput(edge.proba[streams[1][5:6]],
                                                        edge.embedding[:1])).trust[0]
    assert fresh[11] == pytest.approx(start) and small.states.forgotten > 0


def test_deferred_answers_settled_in_time_are_the_synchronous_ones():
    edge, pc, y, sid, t = _streams(n_streams=1)
    router = BeliefRouter((0.02, 1.0), edge_weight=0.3, cloud_weight=2.0)
    op = OperatingPoint("offload", 0.9, 0.0, {"router": "belief"})
    X = _clips(len(y))
    sync = HybridClassifier(_Edge(edge), router, _Cloud(pc), op)
    deferred = HybridClassifier(_Edge(edge), router, NoCloud(("a", "b", "c")), op)
    from edgeswitch.cloud.client import CloudReply

    for i in range(len(y)):
        a = sync.classify(X[i:i + 1])
        b = deferred.classify(X[i:i + 1], defer=True)
        label = b.label[0]
        for p in b.pending:
            label = int(np.argmax(deferred.settle(b, p, CloudReply(pc[i:i + 1], None, 1, 1.0))))
        assert a.label[0] == label and a.offloaded[0] == b.offloaded[0]


def test_run_rows_handles_streams_of_unequal_length():
    edge, pc, y, sid, t = _streams(n_streams=2)
    streams = [stream_lists(sid, t)[0][:7], stream_lists(sid, t)[1]]
    idx, valid = padded(streams)
    off, lab, trust = run_rows(BeliefRouter(), edge, pc, pc, idx, valid,
                               lambda s, rows: np.zeros(len(rows), bool))
    assert valid.sum() == 7 + len(streams[1]) and not off[valid].any()
