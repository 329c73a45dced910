"""Offload curves, areas, offload-to-match and the oracle, on hand-computed cases."""

import numpy as np
import pytest

from edgeswitch.evaluation.curves import (
    accuracy_by_k,
    offload_order,
    router_curve,
    trapezoid_auc,
)
from edgeswitch.evaluation.quality import accuracy, macro_f1
from edgeswitch.switcher.routers import oracle_scores


def test_accuracy_by_k_hand_computed():
    # 4 clips: edge right on 0,1; cloud right on 1,2,3
    edge_ok = np.array([1, 1, 0, 0], bool)
    cloud_ok = np.array([0, 1, 1, 1], bool)
    order = np.array([2, 3, 1, 0])  # offload the edge's mistakes first
    np.testing.assert_allclose(accuracy_by_k(edge_ok, cloud_ok, order),
                               [0.5, 0.75, 1.0, 1.0, 0.75])
    worst = np.array([0, 1, 2, 3])
    np.testing.assert_allclose(accuracy_by_k(edge_ok, cloud_ok, worst),
                               [0.5, 0.25, 0.25, 0.5, 0.75])


def test_trapezoid_auc_hand_computed():
    assert trapezoid_auc([0, 0.5, 1], [0.5, 1.0, 1.0]) == pytest.approx(0.375 + 0.5)
    assert trapezoid_auc([0, 1], [0.2, 0.4]) == pytest.approx(0.3)


def test_router_curve_endpoints_and_match():
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    edge = np.array([0, 1, 2, 1, 2, 0, 0, 1, 2, 0])   # wrong on 3, 4, 5: accuracy 0.7
    cloud = np.array([0, 1, 2, 0, 1, 1, 0, 1, 2, 1])  # wrong on 5, 9: accuracy 0.8
    scores = np.array([9, 9, 9, 1, 2, 3, 9, 9, 9, 9], float)  # doubts exactly 3, 4, 5
    c = router_curve(scores, edge, cloud, y, 3, points=11)
    assert c.offload[0] == 0 and c.offload[-1] == 1 and len(c.offload) == 11
    assert c.accuracy[0] == pytest.approx(0.7)
    assert c.accuracy[-1] == pytest.approx(0.8)
    # offloading 3 and 4 fixes both: 0.9 at 20%; cloud accuracy is first reached at k = 1
    assert c.accuracy[2] == pytest.approx(0.9)
    assert c.offload_to_match_cloud == pytest.approx(0.1)
    assert c.macro_f1[0] == pytest.approx(macro_f1(y, edge, 3))
    assert c.macro_f1[-1] == pytest.approx(macro_f1(y, cloud, 3))
    assert c.auc == pytest.approx(trapezoid_auc(c.offload, c.accuracy))


def test_ties_are_broken_randomly_not_by_position():
    # a router that cannot tell clips apart must not look good because of index order
    n = 1000
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, n)
    edge = np.where(np.arange(n) < n // 2, 1 - y, y)  # all mistakes in the first half
    cloud = y.copy()
    c = router_curve(np.zeros(n), edge, cloud, y, 2, points=3)
    assert c.accuracy[1] == pytest.approx(0.75, abs=0.05)  # not 1.0
    assert len(set(offload_order(np.zeros(5), seed=0))) == 5


def test_oracle_is_the_upper_limit():
    rng = np.random.default_rng(0)
    n, k = 500, 4
    y = rng.integers(0, k, n)
    edge = np.where(rng.random(n) < 0.7, y, rng.integers(0, k, n))
    cloud = np.where(rng.random(n) < 0.85, y, rng.integers(0, k, n))
    oracle = router_curve(oracle_scores(edge, cloud, y), edge, cloud, y, k)
    fixable = np.mean((edge != y) & (cloud == y))
    # the oracle reaches cloud accuracy after offloading exactly the fixable clips
    assert oracle.offload_to_match_cloud <= fixable + 1e-9
    best = accuracy(y, edge) + fixable
    assert oracle.accuracy.max() == pytest.approx(best, abs=1.0 / n)
    for seed in range(5):  # no other ordering beats it anywhere on the curve
        other = router_curve(rng.random(n), edge, cloud, y, k, seed=seed)
        assert np.all(other.accuracy <= oracle.accuracy + 1e-12)


def test_oracle_scores_categories():
    y = np.array([0, 0, 0, 0])
    edge = np.array([1, 0, 0, 1])
    cloud = np.array([0, 1, 0, 1])
    np.testing.assert_array_equal(oracle_scores(edge, cloud, y), [0.0, 1.0, 0.5, 0.5])


def test_macro_f1_hand_computed():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    # class 0: P=1, R=.5 -> 2/3; class 1: P=2/3, R=1 -> 0.8
    assert macro_f1(y, p, 2) == pytest.approx((2 / 3 + 0.8) / 2)
    assert macro_f1(y, y, 3) == pytest.approx(1.0)  # absent class 2 is not averaged in
