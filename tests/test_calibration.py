"""Tests of edgeswitch.switcher.calibrate: offload / budget thresholds and the disagreement
guarantee (checked by simulation against a closed-form true risk)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.stats import binomtest

from edgeswitch.errors import DataError
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
    clopper_pearson_upper,
    threshold_for_rate,
)

TEN = np.round(np.arange(1, 11) / 10, 10)  # 0.1, 0.2, ..., 1.0


# --------------------------------------------------------------------------- offload


@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.1, 1), (0.3, 3), (0.5, 5), (0.99, 10),
                                            (1.0, 10), (0.25, 3), (0.71, 8)])
def test_threshold_for_rate_offloads_ceil_rate_n(rate, expected):
    scores = np.random.default_rng(0).permutation(TEN)  # order must not matter
    t = threshold_for_rate(scores, rate)
    off = scores < t
    assert off.sum() == expected == math.ceil(rate * len(scores) - 1e-9)
    # the offloaded ones are the lowest scores
    if 0 < expected < len(scores):
        assert scores[off].max() < scores[~off].min()


def test_calibrate_offload_rate_03_on_hand_scores():
    op = calibrate_offload(TEN, 0.3)
    assert op.mode == "offload"
    assert op.calib_offload_rate == pytest.approx(0.3)
    assert op.offload(TEN).tolist() == [True] * 3 + [False] * 7
    assert 0.3 < op.threshold <= 0.4
    assert op.params == {"rate": 0.3}


def test_rate_zero_offloads_none_and_rate_one_offloads_all():
    scores = np.array([-5.0, 0.0, 0.3, 7.0, 1e6])
    none = calibrate_offload(scores, 0.0)
    assert not none.offload(scores).any()
    assert none.calib_offload_rate == 0.0
    everything = calibrate_offload(scores, 1.0)
    assert everything.offload(scores).all()
    assert everything.calib_offload_rate == 1.0
    assert everything.threshold == np.inf
    # also for scores never seen at calibration time
    assert not none.offload(np.array([-1e300, 1e300])).any()
    assert everything.offload(np.array([-1e300, 1e300])).all()


def test_offload_without_ties_is_exact_for_every_k():
    scores = np.random.default_rng(1).random(37)
    for k in range(len(scores) + 1):
        rate = k / len(scores)
        assert (scores < threshold_for_rate(scores, rate)).sum() == k


@pytest.mark.parametrize("scores, rate, expected", [
    ([0.1, 0.2, 0.2, 0.2, 0.5], 0.4, 1),   # ceil(0.4*5)=2 would cut the tie: only 0.1 goes
    ([0.5] * 10, 0.3, 0),                  # constant switcher: the whole tie stays on edge
])
def test_ties_never_offload_more_than_ceil_rate_n(scores, rate, expected):
    s = np.asarray(scores)
    t = threshold_for_rate(s, rate)
    assert (s < t).sum() == expected <= math.ceil(rate * len(s))


def test_budget_is_respected_when_scores_tie():
    scores = np.r_[np.full(50, 0.5), np.linspace(0.6, 1, 50)]  # half tied (saturated)
    op = calibrate_budget(scores, 0.5, edge_cost=0.02, switcher_cost=0.001, cloud_cost=1.0)
    assert op.calib_offload_rate == 0.0  # cutting into the tie would overrun the budget
    op = calibrate_budget(scores, 0.9, edge_cost=0.02, switcher_cost=0.001, cloud_cost=1.0)
    assert op.calib_offload_rate == pytest.approx(0.87)  # past the tie: exactly ceil(0.879 n)
    assert 0.02 + 0.001 + op.calib_offload_rate <= 0.9


def test_ties_below_the_cut_do_not_matter():
    # the tie is strictly inside the offloaded part: exactly ceil(rate*n) is possible
    s = np.array([0.1, 0.1, 0.1, 0.4, 0.5, 0.6])
    assert (s < threshold_for_rate(s, 0.5)).sum() == 3
    assert (s < threshold_for_rate(s, 4 / 6)).sum() == 4


@pytest.mark.parametrize("rate", [-0.01, 1.01, 2.0, float("nan")])
def test_rate_outside_unit_interval_is_rejected(rate):
    with pytest.raises(DataError, match="rate"):
        threshold_for_rate(TEN, rate)
    with pytest.raises(DataError):
        calibrate_offload(TEN, rate)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_rejected(bad):
    scores = TEN.copy()
    scores[4] = bad
    with pytest.raises(DataError, match="NaN or inf"):
        threshold_for_rate(scores, 0.3)
    with pytest.raises(DataError, match="NaN or inf"):
        calibrate_disagreement(scores, np.zeros(10, bool), 0.05, 0.1)


def test_empty_scores_are_rejected():
    with pytest.raises(DataError, match="at least one"):
        calibrate_offload(np.array([]), 0.3)


# --------------------------------------------------------------------------- budget


def test_budget_leaves_offload_share_after_edge_and_switcher():
    scores = np.random.default_rng(2).random(1000)
    op = calibrate_budget(scores, 0.5, edge_cost=0.02, switcher_cost=0.001, cloud_cost=1.0)
    assert op.mode == "budget"
    assert abs(op.calib_offload_rate - 0.479) <= 1 / len(scores)
    assert op.calib_offload_rate == pytest.approx(np.mean(op.offload(scores)))
    assert op.params == {"budget": 0.5, "edge_cost": 0.02, "switcher_cost": 0.001,
                         "cloud_cost": 1.0, "rate": pytest.approx(0.479)}
    # the cost actually spent on calib stays within the budget
    spent = 0.02 + 0.001 + op.calib_offload_rate * 1.0
    assert spent <= 0.5 + 1e-12


def test_budget_is_relative_to_cloud_cost():
    scores = np.random.default_rng(3).random(400)
    # costs in ms: edge 2, switcher 0.1, cloud 100 -> fixed 0.021 x cloud
    op = calibrate_budget(scores, 0.5, 2.0, 0.1, 100.0)
    assert abs(op.calib_offload_rate - 0.479) <= 1 / len(scores)


def test_budget_above_cloud_only_offloads_everything():
    scores = np.random.default_rng(4).random(50)
    op = calibrate_budget(scores, 3.0, 0.02, 0.001, 1.0)
    assert op.calib_offload_rate == 1.0
    assert op.offload(scores).all()


def test_budget_below_edge_cost_is_rejected():
    with pytest.raises(DataError, match="below"):
        calibrate_budget(TEN, 0.01, edge_cost=0.02, switcher_cost=0.001, cloud_cost=1.0)
    with pytest.raises(DataError, match="cloud cost"):
        calibrate_budget(TEN, 0.5, 0.02, 0.001, 0.0)


# --------------------------------------------------------------------------- Clopper-Pearson


@pytest.mark.parametrize("n", [1, 10, 57, 500])
@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.1 / 41])
def test_clopper_pearson_zero_successes(n, alpha):
    ub = clopper_pearson_upper(0, n, alpha)
    assert float(ub) == pytest.approx(1 - alpha ** (1 / n), rel=1e-9)


@pytest.mark.parametrize("k, n", [(1, 10), (3, 20), (7, 50), (25, 500), (49, 50), (0, 30)])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.0025])
def test_clopper_pearson_matches_scipy_exact(k, n, alpha):
    expected = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha,
                                             method="exact").high
    assert float(clopper_pearson_upper(k, n, alpha)) == pytest.approx(expected, rel=1e-7)


def test_clopper_pearson_edges_and_vectorised():
    ub = clopper_pearson_upper(np.array([0, 5, 5, 0]), np.array([10, 5, 10, 0]), 0.1)
    assert ub.shape == (4,)
    assert ub[1] == 1.0  # all successes
    assert ub[3] == 1.0  # no trials: nothing is known
    assert 0.5 < ub[2] < 1.0
    assert ub[0] < ub[2]
    # smaller alpha -> wider bound
    assert clopper_pearson_upper(3, 40, 0.01) > clopper_pearson_upper(3, 40, 0.1) > 3 / 40


# --------------------------------------------------------------------------- disagreement

GRID = np.linspace(0, 1, 41)
EPS, DELTA = 0.05, 0.1


def _risk_quadratic(t: float) -> float:
    """p(s) = 0.5 (1-s)^2 on s ~ U(0,1): P(disagree | s >= t) = (1-t)^2 / 6."""
    return (1 - t) ** 2 / 6


def _p_quadratic(s):
    return 0.5 * (1 - s) ** 2


STEP_AT, STEP_HI, STEP_LO = 0.3, 0.4, 0.01


def _p_step(s):
    return np.where(s < STEP_AT, STEP_HI, STEP_LO)


def _risk_step(t: float) -> float:
    """P(disagree | s >= t) for the step p: integral_t^1 p / (1 - t)."""
    if t >= STEP_AT:
        return STEP_LO
    return (STEP_HI * (STEP_AT - t) + STEP_LO * (1 - STEP_AT)) / (1 - t)


def _simulate(p, risk, trials: int, n: int, seed: int, calibrate=None):
    rng = np.random.default_rng(seed)
    calibrate = calibrate or (lambda s, d: calibrate_disagreement(s, d, EPS, DELTA, GRID))
    violations, offload, certified = 0, [], 0
    for _ in range(trials):
        s = rng.random(n)
        d = rng.random(n) < p(s)
        op = calibrate(s, d)
        if op.certified:
            certified += 1
            violations += risk(op.threshold) > EPS
            assert op.calib_offload_rate == pytest.approx(np.mean(s < op.threshold))
            assert op.params["ucb"] <= EPS
        offload.append(op.calib_offload_rate)
    return violations / trials, float(np.mean(offload)), certified / trials


def _bound(trials: int) -> float:
    return DELTA + 3 * math.sqrt(DELTA * (1 - DELTA) / trials)


def test_closed_form_risks():
    # check the closed forms against numerical integration
    u = np.linspace(0, 1, 200_001)
    for p, risk in ((_p_quadratic, _risk_quadratic), (_p_step, _risk_step)):
        for t in (0.0, 0.2, 0.29, 0.45, 0.7):
            m = u >= t
            assert risk(t) == pytest.approx(p(u[m]).mean(), rel=1e-3)
    # the oracle thresholds: (1-t)^2/6 = 0.05 -> t = 1 - sqrt(0.3)
    assert _risk_quadratic(1 - math.sqrt(0.3)) == pytest.approx(EPS)
    assert _risk_step(0.22) == pytest.approx(EPS)


@pytest.mark.parametrize("n, max_offload, min_certified", [
    (500, 0.95, 0.25),   # 500 clips: only a minority of runs can certify anything below 1
    (2000, 0.8, 0.95),   # more calibration clips: certified nearly always, offload well < 1
])
def test_disagreement_guarantee_quadratic(n, max_offload, min_certified):
    trials = 1200
    viol, mean_off, cert = _simulate(_p_quadratic, _risk_quadratic, trials, n, seed=11)
    assert viol <= _bound(trials), viol
    # not vacuous; the oracle threshold offloads 1 - sqrt(0.3) = 0.45, which no valid
    # procedure can beat on average
    assert mean_off < max_offload, mean_off
    assert mean_off > 1 - math.sqrt(0.3)
    assert cert > min_certified, cert


def test_disagreement_guarantee_step():
    trials = 1200
    viol, mean_off, cert = _simulate(_p_step, _risk_step, trials, 500, seed=12)
    assert viol <= _bound(trials), viol
    # the oracle offloads 0.22; thresholds >= 0.3 have true risk 0.01
    assert mean_off < 0.5, mean_off
    assert cert > 0.9


def test_simulation_detects_a_procedure_without_the_guarantee():
    """The harness has power: picking the lowest threshold whose *empirical* kept-clip
    disagreement is <= epsilon (no confidence bound) violates far more often than delta."""

    def plug_in(s, d):
        kept = s[None, :] >= GRID[:, None]
        n_kept = kept.sum(axis=1)
        rate = (kept & d[None, :]).sum(axis=1) / np.maximum(n_kept, 1)
        ok = (rate <= EPS) & (n_kept > 0)
        t = float(GRID[np.argmax(ok)])
        return OperatingPoint("disagreement", t, float(np.mean(s < t)), {"ucb": 0.0},
                              bool(ok.any()))

    trials = 300
    viol, _, _ = _simulate(_p_quadratic, _risk_quadratic, trials, 500, seed=13,
                           calibrate=plug_in)
    assert viol > _bound(trials)


def _constant(p):
    return lambda s: np.full(len(s), p)


def test_single_threshold_clopper_pearson_is_nearly_exact():
    """One candidate (no multiplicity): a kept-clip rate just above epsilon is certified with
    probability at most delta, and not much less (the bound is exact, not a loose one)."""
    p = EPS + 0.0005
    trials = 1000
    viol, _, cert = _simulate(
        _constant(p), lambda t: p, trials, 2000, seed=14,
        calibrate=lambda s, d: calibrate_disagreement(s, d, EPS, DELTA, grid=np.array([0.0])))
    assert viol == cert  # every certification is a violation here
    assert viol <= _bound(trials), viol
    assert viol > 0.03, viol


def test_bonferroni_protects_against_selecting_among_thresholds():
    """Every threshold has true risk just above epsilon. Testing each candidate at level delta
    and taking any that passes (no Bonferroni) violates far more often than delta; the package
    (delta / m per candidate) stays within delta."""
    p = EPS + 0.0005
    trials = 1000

    def naive(s, d):
        kept = s[None, :] >= GRID[:, None]
        n_kept = kept.sum(axis=1)
        ucb = clopper_pearson_upper((kept & d[None, :]).sum(axis=1), n_kept, DELTA)
        ok = (ucb <= EPS) & (n_kept > 0)
        t = float(GRID[np.argmax(n_kept * ok)]) if ok.any() else np.inf
        return OperatingPoint("disagreement", t, float(np.mean(s < t)),
                              {"ucb": float(ucb[np.argmax(n_kept * ok)])}, bool(ok.any()))

    viol, _, _ = _simulate(_constant(p), lambda t: p, trials, 2000, seed=15)
    assert viol <= _bound(trials), viol
    naive_viol, _, _ = _simulate(_constant(p), lambda t: p, trials, 2000, seed=15,
                                 calibrate=naive)
    assert naive_viol > _bound(trials), naive_viol


def test_disagreement_picks_least_offload_among_certified():
    rng = np.random.default_rng(5)
    s = rng.random(2000)
    d = rng.random(2000) < _p_quadratic(s)
    op = calibrate_disagreement(s, d, EPS, DELTA, GRID)
    assert op.certified is True
    assert op.mode == "disagreement"
    assert op.params["grid_size"] == 41
    assert op.threshold in GRID
    kept = s >= op.threshold
    assert op.params["calib_disagreement"] == pytest.approx(d[kept].mean())
    # the next lower grid point is not certified at level delta / m
    lower = GRID[GRID < op.threshold].max()
    k, n = int((d & (s >= lower)).sum()), int((s >= lower).sum())
    assert clopper_pearson_upper(k, n, DELTA / len(GRID)) > EPS
    # and the chosen one is, at level delta / m (Bonferroni over the grid)
    assert clopper_pearson_upper(int(d[kept].sum()), int(kept.sum()),
                                 DELTA / len(GRID)) <= EPS
    assert op.params["ucb"] == pytest.approx(
        float(clopper_pearson_upper(int(d[kept].sum()), int(kept.sum()), DELTA / len(GRID))))


def test_disagreement_uses_bonferroni_over_grid():
    # one clean set of 60 kept clips with no disagreement: UCB = 1 - a^(1/60)
    s = np.full(60, 0.9)
    d = np.zeros(60, bool)
    # single candidate: alpha = 0.1 -> UCB 0.0376 <= 0.05: certified
    assert calibrate_disagreement(s, d, 0.05, 0.1, grid=np.array([0.5])).certified
    # 41 candidates: alpha = 0.1/41 -> UCB 0.0954 > 0.05: nothing certified
    op = calibrate_disagreement(s, d, 0.05, 0.1, grid=GRID)
    assert op.certified is False


def test_nothing_certifiable_offloads_everything():
    rng = np.random.default_rng(6)
    s = rng.random(300)
    op = calibrate_disagreement(s, np.ones(300, bool), EPS, DELTA, GRID)
    assert op.threshold == np.inf
    assert op.certified is False
    assert op.calib_offload_rate == 1.0
    assert op.offload(s).all()
    assert op.params["ucb"] is None


def test_disagreement_default_grid_and_bad_arguments():
    rng = np.random.default_rng(7)
    s = rng.random(1000)
    d = rng.random(1000) < 0.01
    op = calibrate_disagreement(s, d, EPS, DELTA)
    assert op.params["grid_size"] == 50
    assert op.certified and op.threshold == 0.0 and op.calib_offload_rate == 0.0
    with pytest.raises(DataError, match="entries"):
        calibrate_disagreement(s, d[:-1], EPS, DELTA)
    for eps, delta in ((0.0, 0.1), (1.0, 0.1), (0.05, 0.0), (0.05, 1.0), (-1, 0.1)):
        with pytest.raises(DataError, match="epsilon and delta"):
            calibrate_disagreement(s, d, eps, delta)


# --------------------------------------------------------------------------- OperatingPoint


def test_operating_point_round_trip_finite():
    op = calibrate_disagreement(np.linspace(0, 1, 500), np.zeros(500, bool), EPS, DELTA, GRID)
    d = op.to_dict()
    back = OperatingPoint.from_dict(json.loads(json.dumps(d)))
    assert back == op
    assert back.threshold == op.threshold


def test_operating_point_round_trip_infinite_threshold():
    op = calibrate_disagreement(np.linspace(0, 1, 50), np.ones(50, bool), EPS, DELTA, GRID)
    assert op.threshold == np.inf
    d = op.to_dict()
    assert d["threshold"] == "inf"
    assert d["certified"] is False
    text = json.dumps(d, allow_nan=False)  # valid JSON, no Infinity literal
    back = OperatingPoint.from_dict(json.loads(text))
    assert back == op
    assert back.threshold == np.inf
    assert back.offload(np.array([0.0, 1.0, 1e9])).all()


def test_operating_point_round_trip_minus_infinity():
    scores = np.linspace(0, 1, 20)
    op = calibrate_offload(scores, 0.0)
    assert op.threshold == -np.inf
    back = OperatingPoint.from_dict(json.loads(json.dumps(op.to_dict(), allow_nan=False)))
    assert back.offload(scores).sum() == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "plug-in"}, r"'mode' must be one of \['offload', 'budget', 'disagreement'\]"),
    ({"threshold": float("nan")}, r"'threshold' must be a number or \+-inf, got NaN"),
    ({"threshold": "0.3"}, r"'threshold' must be a number, got '0.3'"),
    ({"threshold": True}, r"'threshold' must be a number"),
    ({"calib_offload_rate": 1.5}, r"'calib_offload_rate' must be within \[0, 1\]"),
    ({"calib_offload_rate": float("nan")}, r"'calib_offload_rate' must be within"),
    ({"params": [0.3]}, r"'params' must be an object"),
    ({"params": {"rate": -0.1}}, r"'params.rate' must be within \[0, 1\]"),
    ({"params": {"rate": 0.3, "step": 0}}, r"'params.step' must be positive"),
    ({"certified": "yes"}, r"'certified' must be true, false or null"),
    ({"adaptive": "no"}, r"'adaptive' must be true or false, got 'no'"),
    ({"adaptive": True, "params": {"rate": 0.3}}, r"lacks 'params.calib_quantiles'"),
    ({"adaptive": True, "params": {"rate": 0.3, "calib_quantiles": [0.5, 0.1]}},
     r"'params.calib_quantiles' must be at least two finite, non-decreasing"),
    ({"mode": "disagreement", "adaptive": True,
      "params": {"rate": 0.3, "calib_quantiles": [0.1, 0.5]}}, r"cannot be adaptive"),
])
def test_operating_point_constructor_refuses_what_the_hybrid_cannot_use(kwargs, match):
    """Regression: OperatingPoint validated nothing in its constructor (a NaN threshold offloaded
    nothing, "adaptive": "no" switched adaptive ON)."""
    fields = {"mode": "offload", "threshold": 0.5, "calib_offload_rate": 0.3} | kwargs
    with pytest.raises(DataError, match=match):
        OperatingPoint(**fields)
    with pytest.raises(DataError, match=match):  # the same check when read from JSON
        OperatingPoint.from_dict(fields)


def test_operating_point_constructor_accepts_every_calibrated_point():
    s = np.linspace(0, 1, 200)
    assert OperatingPoint("offload", np.float64(0.4), np.float32(0.25)).threshold == 0.4
    for op in (calibrate_offload(s, 0.3, adaptive=True), calibrate_offload(s, 0.0),
               calibrate_offload(s, 1.0),
               calibrate_disagreement(s, np.zeros(200, bool), EPS, DELTA, GRID),
               calibrate_disagreement(s, np.ones(200, bool), EPS, DELTA, GRID)):
        assert OperatingPoint.from_dict(json.loads(json.dumps(op.to_dict()))) == op


def test_operating_point_file_errors_name_the_file_and_the_key(tmp_path):
    good = calibrate_offload(np.linspace(0, 1, 100), 0.3, adaptive=True).to_dict()
    path = tmp_path / "op.json"
    for change, key in (({"threshold": "fast"}, "'threshold'"), ({"adaptive": "no"},
                        "'adaptive'"), ({"mode": "offlaod"}, "'mode'")):
        path.write_text(json.dumps(good | change))
        with pytest.raises(DataError, match=f"{re.escape(str(path))}: .*{key}"):
            OperatingPoint.load(path)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "calib_offload_rate"}))
    with pytest.raises(DataError, match=f"{re.escape(str(path))}: .*lacks 'calib_offload_rate'"):
        OperatingPoint.load(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a JSON operating point"):
        OperatingPoint.load(path)


def test_rate_controller_holds_the_share_under_drift():
    """Calibrated on one score distribution, deployed on a shifted one: the fixed threshold
    misses the target share, the controller holds it and never exceeds it."""
    rng = np.random.default_rng(0)
    calib = rng.beta(5, 2, 2000)
    op = calibrate_offload(calib, 0.4, adaptive=True)
    stream = rng.beta(9, 2, 3000)  # a population whose scores sit higher
    fixed = op.offload(stream).mean()
    ctrl = op.controller(step=0.01)
    off = np.concatenate([ctrl.decide(stream[i : i + 7]) for i in range(0, len(stream), 7)])
    assert fixed < 0.2  # the drift is real
    assert 0.37 <= off.mean() <= 0.4
    running = np.cumsum(off) / np.arange(1, len(off) + 1)
    assert np.all(running <= 0.4 + 1e-9)  # the cap holds at every point of the stream
    # the offloaded clips are still the low-scoring ones
    assert stream[off].mean() < stream[~off].mean()
    with pytest.raises(DataError, match="not adaptive"):
        calibrate_offload(calib, 0.4).controller()


def test_rate_controller_with_a_saturated_switcher():
    """Most scores tied at the top (a saturated sigmoid): mid-rank keeps the controller able to
    reach its target instead of ranking every tied clip at the top of the tie."""
    rng = np.random.default_rng(3)
    calib = np.where(rng.random(1000) < 0.7, 1.0, rng.random(1000))
    op = calibrate_offload(calib, 0.3, adaptive=True)
    stream = np.where(rng.random(600) < 0.7, 1.0, rng.random(600))
    ctrl = op.controller()
    off = ctrl.decide(stream)
    assert 0.25 <= off.mean() <= 0.3
    assert ctrl.rank(np.array([1.0]))[0] == pytest.approx(0.65, abs=0.01)  # middle of the tie
    # the offloaded clips are the low-scoring ones
    assert np.median(stream[off]) < np.median(stream[~off])


def test_uncertifiable_epsilon_is_reported_with_the_smallest_certifiable_one():
    from edgeswitch.switcher.calibrate import certification_warning

    rng = np.random.default_rng(0)
    scores = rng.random(400)
    disagree = rng.random(400) < 0.3          # 30% disagreement whatever the score
    op = calibrate_disagreement(scores, disagree, epsilon=0.05, delta=0.1)
    assert op.certified is False and op.threshold == np.inf
    smallest = op.params["smallest_certifiable_epsilon"]
    assert 0.3 < smallest < 0.5
    msg = certification_warning(op)
    assert "offloaded" in msg and f"{smallest:.3f}" in msg
    # asking for that epsilon certifies a threshold
    ok = calibrate_disagreement(scores, disagree, epsilon=smallest + 1e-9, delta=0.1)
    assert ok.certified is True and certification_warning(ok) is None
