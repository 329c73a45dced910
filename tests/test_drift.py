"""Drift alarm: the reference written by `calibrate`, the windowed test, the decision log's
`drift` table, `classify` and `edgeswitch log --drift`; and on watch (slow) the alarm on a
turned sensor frame and the false alarms without it, at the figures of docs/results.md."""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import replace

import numpy as np
import pytest

from edgeswitch.config import DriftConfig, load_config
from edgeswitch.errors import DataError
from edgeswitch.runtime.decision_log import DecisionLog
from edgeswitch.runtime.drift import (
    DriftDetector,
    DriftMonitor,
    check_reference,
    drift_state,
    drift_text,
    open_drift,
    reference,
)
from edgeswitch.switcher.calibrate import OperatingPoint, calibrate_offload
from tests.deployed import make_bundle, run_cli

try:  # the video pipeline's fixture (DMD on synthetic videos, switcher, op), reused
    from tests.test_video_pipeline import trained
except pytest.skip.Exception:  # no video extra: the watch test is skipped, the others run
    trained = None

K = 4


def _calib(rng, n=2000):
    scores = rng.beta(5, 2, n)
    labels = rng.integers(0, K, n)
    return scores, labels


def test_reference_holds_quantiles_mix_and_agreement():
    rng = np.random.default_rng(0)
    s, lab = _calib(rng)
    ref = reference(s, lab, K, disagree=rng.random(len(s)) < 0.25)
    assert len(ref["score_quantiles"]) == 201 and ref["n"] == len(s)
    assert ref["score_quantiles"][0] == pytest.approx(s.min())
    assert sum(ref["class_mix"]) == pytest.approx(1.0)
    assert 0.7 < ref["agreement"] < 0.8
    assert json.loads(json.dumps(ref)) == ref          # JSON-safe: stored in the op file
    with pytest.raises(DataError, match="one edge label per score"):
        reference(s, lab[:-1], K)
    with pytest.raises(DataError, match="class_mix"):
        check_reference(ref | {"class_mix": [0.5, 0.6]})
    with pytest.raises(DataError, match="edge model has 7"):
        check_reference(ref, 7)


@pytest.mark.parametrize("test", ["ks", "psi"])
def test_quiet_on_the_reference_distribution_and_fires_on_a_shift(test):
    """Seeded: 20,000 clips drawn from the calibration distribution raise nothing; a stream
    whose scores and class mix move raises within 100 clips of the change, and the alarm
    clears `clear_after` checks after the stream is back."""
    rng = np.random.default_rng(1)
    s, lab = _calib(rng)
    cfg = DriftConfig(test=test, window=100, every=10, clear_after=3, ks_threshold=0.5,
                      psi_threshold=1.0)
    det = DriftDetector(reference(s, lab, K), cfg)
    same_s, same_l = _calib(rng, 20_000)
    checks = [c for c in map(det.add, same_s, same_l) if c is not None]
    assert len(checks) == (20_000 - 100) // 10 + 1
    assert not any(c.alarm for c in checks)
    shifted_s = rng.beta(2, 5, 300)                      # the edge is far less sure
    shifted_l = rng.choice(K, 300, p=[0.7, 0.1, 0.1, 0.1])
    raised = [i for i, (a, b) in enumerate(zip(shifted_s, shifted_l, strict=True))
              if (c := det.add(a, b)) is not None and c.changed]
    assert raised and raised[0] < 100 and det.alarm
    back_s, back_l = _calib(rng, 300)
    cleared = [c for c in map(det.add, back_s, back_l) if c is not None and c.changed]
    assert len(cleared) == 1 and not cleared[0].alarm and not det.alarm


def test_monitor_logs_raise_and_clear_and_log_reads_them(tmp_path):
    rng = np.random.default_rng(2)
    s, lab = _calib(rng)
    cfg = DriftConfig(window=50, every=10, clear_after=2)
    db = tmp_path / "log.sqlite"
    err = io.StringIO()
    with DecisionLog(db, tuple("abcd"), "edge", "cloud") as log:
        mon = DriftMonitor(DriftDetector(reference(s, lab, K), cfg), log, err)
        mon.observe(*_calib(rng, 200))
        assert log.drift_history() == []
        mon.observe(rng.beta(1, 8, 100), np.zeros(100, int))
        assert mon.alarm
        mon.observe(*_calib(rng, 200))
        assert not mon.alarm
    with DecisionLog(db) as ro:
        hist = ro.drift_history()
    assert [h["state"] for h in hist] == ["alarm", "clear"]
    assert hist[0]["statistic"] == "ks+tv" and hist[0]["window"] == 50
    assert hist[0]["value"] > hist[0]["threshold"] == cfg.ks_threshold
    assert "drift alarm raised at clip" in err.getvalue()
    assert "cleared after 2 passing checks" in err.getvalue()
    state = drift_state(hist)
    assert state["state"] == "clear" and state["alarms"] == 1
    assert "alarm" in drift_text(state) and "ks+tv" in drift_text(state)


def test_a_log_from_before_the_drift_table_reads_as_no_history(tmp_path):
    db = tmp_path / "old.sqlite"
    DecisionLog(db, ("a", "b"), "e", "c").close()
    con = sqlite3.connect(db)
    assert "drift" not in {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    with DecisionLog(db) as ro:
        assert ro.drift_history() == []
    with pytest.raises(Exception, match="opened to read"):
        DecisionLog(db).append_drift(0.0, "alarm", "ks", 1.0, 0.5, 10)


def test_operating_point_keeps_its_reference_and_old_ones_load(tmp_path):
    rng = np.random.default_rng(3)
    s, lab = _calib(rng, 500)
    op = replace(calibrate_offload(s, 0.3), reference=reference(s, lab, K))
    back = OperatingPoint.load(op.save(tmp_path / "op.json"))
    assert back.reference == op.reference
    old = calibrate_offload(s, 0.3).to_dict()
    old.pop("reference")
    (tmp_path / "old.json").write_text(json.dumps(old))
    old_op = OperatingPoint.load(tmp_path / "old.json")
    assert old_op.reference is None
    err = io.StringIO()
    assert open_drift(old_op, DriftConfig(), K, err=err) is None
    assert "drift detection off" in err.getvalue()
    assert open_drift(back, DriftConfig(enabled=False), K) is None
    assert open_drift(back, DriftConfig(), K) is not None
    with pytest.raises(DataError, match="'reference' must be an object"):
        OperatingPoint.from_dict(op.to_dict() | {"reference": [1, 2]})


def _imu(rng, n_rec=12, per_rec=30, R=None):
    """Clips of a wrist IMU [n, 100, 6]: each recording holds the watch in one pose (gravity
    in one direction of the frame's upper half, plus motion); `R` turns the sensor frame."""
    X, ids = [], []
    for r in range(n_rec):
        g = rng.normal(size=3) * [1, 1, 0.3] + [0, 0, 1.5]
        g = 9.8 * g / np.linalg.norm(g)
        for i in range(per_rec):
            acc = g + rng.normal(0, 0.6, (100, 3))
            gyr = rng.normal(0, 0.3, (100, 3)) * [1.0, 0.5, 0.2]
            X.append(np.concatenate([acc, gyr], axis=1))
            ids.append(f"s/rec{r:02d}/{i:03d}")
    X = np.asarray(X, np.float32)
    if R is not None:
        X = np.concatenate([X[:, :, :3] @ R.T, X[:, :, 3:] @ R.T], axis=2).astype(np.float32)
    return X, np.array(ids)


def test_input_part_fires_on_a_turned_sensor_and_stays_off_without_it():
    """The input statistics: a stream from the calibration poses stays under the threshold, the
    same watch upside down (x turned 180 degrees) raises the alarm from the input part alone
    (the scores and class mix do not move); a reference without the part (old, or from DMD
    records) and video clips leave it off; a broken part is refused."""
    from edgeswitch.runtime.drift import clip_summary, recordings_of

    rng = np.random.default_rng(4)
    Xc, ids = _imu(rng)
    s, lab = _calib(rng, len(Xc))
    ref = reference(s, lab, K, inputs=Xc, recordings=recordings_of(ids))
    assert json.loads(json.dumps(ref)) == ref and len(ref["inputs"]["mean"]) == 12
    cfg = DriftConfig(window=100, every=10, ks_threshold=1.0, input_threshold=0.5)
    flip = np.diag([1.0, -1.0, -1.0])
    for R, fires in ((None, False), (flip, True)):
        X, _ = _imu(np.random.default_rng(5), n_rec=12, per_rec=30, R=R)
        X = X[np.random.default_rng(6).permutation(len(X))]
        err = io.StringIO()
        mon = DriftMonitor(DriftDetector(ref, cfg), None, err)
        mon.observe(*_calib(rng, len(X)), X)
        assert mon.alarm is fires, mon.detector.last
        assert mon.detector.last.values["ks+tv"] < 1.0
        if fires:
            assert "drift alarm raised at clip 100: input-ks" in err.getvalue()
            assert mon.detector.last.part == "input-ks"
        else:
            assert mon.detector.last.values["input-ks"] < 0.5
    X, _ = _imu(np.random.default_rng(5), R=flip)
    old = {k: v for k, v in ref.items() if k != "inputs"}
    for r, inputs in ((old, X), (ref, [object()] * len(X))):  # no part; video clips
        det = DriftDetector(r, cfg)
        mon = DriftMonitor(det, None, io.StringIO())
        mon.observe(*_calib(rng, len(X)), inputs)
        assert not mon.alarm and "input-ks" not in det.last.values
    assert clip_summary([object()]) is None
    err = io.StringIO()
    assert open_drift(replace(calibrate_offload(s, 0.3), reference=old), DriftConfig(), K,
                      err=err) is not None
    assert "no input statistics" in err.getvalue()
    with pytest.raises(DataError, match="'inputs'"):
        check_reference(ref | {"inputs": {"mean": [0.0]}})
    with pytest.raises(DataError, match="'inputs'"):
        check_reference(ref | {"inputs": ref["inputs"] | {"std": [-1.0] * 12}})
    mon = DriftMonitor(DriftDetector(ref, cfg), None, err := io.StringIO())
    mon.observe(*_calib(rng, 5), np.zeros((5, 100, 3), np.float32))   # other channels
    assert "input part off" in err.getvalue() and mon.detector.input_ks is None
    det = DriftDetector(ref, cfg)   # wild clips: far from everything, never NaN
    wild = np.stack([np.full((100, 6), 3e38), np.full((100, 6), np.nan)]).astype(np.float32)
    DriftMonitor(det, None, io.StringIO()).observe([0.5, 0.5], [0, 0], wild)
    assert det.novelty[-2] > 1e30 and det.novelty[-1] == np.inf


def test_config_has_the_drift_table():
    cfg = load_config("configs/watch.toml")
    assert cfg.drift == DriftConfig()


def test_calibrate_writes_the_reference_and_classify_raises_the_alarm(tmp_path, bm_files,
                                                                        basicmotions):
    """Real CLI: `calibrate --dmd` stores the reference; `classify` with the old op says
    drift is off; on clips of a stuck sensor (a flat signal, a little noise) the alarm is
    raised at the first check, logged and shown by `log --drift` (text and JSON)."""
    b = make_bundle(tmp_path, bm_files, basicmotions, n_clips=80)
    r = run_cli("calibrate", "--dmd", b["dmd"], "--switcher", b["switcher"], "--mode",
                "offload", "--rate", "0.5", "--out", tmp_path / "op_ref.json", "--quiet")
    assert r.returncode == 0, r.stderr
    ref = json.loads((tmp_path / "op_ref.json").read_text())["reference"]
    assert len(ref["class_mix"]) == len(basicmotions.classes) and ref["n"] > 0
    r = run_cli("classify", "--data", b["clips"], "--edge", b["edge"], "--cloud", b["cloud"],
                "--switcher", b["switcher"], "--op", b["op"], "--out", tmp_path / "a.jsonl",
                "--quiet")
    assert r.returncode == 0, r.stderr
    assert "drift detection off" in r.stderr
    X = np.random.default_rng(0).normal(0, 0.01, b["X"].shape).astype(np.float32)
    np.savez(tmp_path / "shifted.npz", X=X, ids=b["ids"])
    db = tmp_path / "log.sqlite"
    r = run_cli("classify", "--data", tmp_path / "shifted.npz", "--edge", b["edge"],
                "--cloud", b["cloud"], "--switcher", b["switcher"], "--op",
                tmp_path / "op_ref.json", "--log", db, "--out", tmp_path / "b.jsonl",
                "--drift-window", "20", "--drift-every", "5", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "drift alarm raised at clip 20" in r.stderr
    r = run_cli("log", db, "--drift", "--json")
    assert r.returncode == 0, r.stderr
    state = json.loads(r.stdout)
    assert state["state"] == "alarm" and state["alarms"] == 1
    assert state["history"][0]["window"] == 20
    r = run_cli("log", db, "--drift")
    assert r.returncode == 0 and r.stdout.startswith("drift: alarm since")
    # the same alarm on the edge's /metrics, scraped from the running process
    pytest.importorskip("prometheus_client", reason="needs the serve extra")
    from tests.edge_run import edge_process, families, value, wait_for

    args = ["classify", "--data", tmp_path / "shifted.npz", "--edge", b["edge"], "--cloud",
            b["cloud"], "--switcher", b["switcher"], "--op", tmp_path / "op_ref.json", "--out",
            tmp_path / "c.jsonl", "--drift-window", "20", "--drift-every", "5", "--quiet",
            "--metrics-linger-s", "60"]
    with edge_process(args, tmp_path) as (proc, url, err):
        wait_for("metrics stay on", err, proc)
        fams = families(url)
    assert value(fams, "edgeswitch_edge_drift_alarm") == 1.0
    assert value(fams, "edgeswitch_edge_drift_statistic") > 0.73  # the default ks threshold


def test_calibrate_on_clips_stores_input_statistics_and_classify_uses_them(tmp_path, bm_files,
                                                                           basicmotions):
    """Real CLI: `calibrate --data` (raw clips at hand) stores the input part, `--dmd` says it
    cannot; `classify` on the same clips with the watch upside down raises the alarm from the
    input part (the score threshold set out of reach), and the log names the part."""
    b = make_bundle(tmp_path, bm_files, basicmotions, n_clips=80)
    np.savez(tmp_path / "calib.npz", X=b["X"], ids=b["ids"],
             classes=np.array(basicmotions.classes))   # unlabelled clips name the label set
    r = run_cli("calibrate", "--data", tmp_path / "calib.npz", "--edge", b["edge"], "--switcher",
                b["switcher"], "--split", "all", "--mode", "offload", "--rate", "0.5", "--out",
                tmp_path / "op_in.json", "--quiet")
    assert r.returncode == 0, r.stderr
    ref = json.loads((tmp_path / "op_in.json").read_text())["reference"]
    assert len(ref["inputs"]["clips"]) == 80 and len(ref["inputs"]["mean"]) == 12
    r = run_cli("calibrate", "--dmd", b["dmd"], "--switcher", b["switcher"], "--mode",
                "offload", "--rate", "0.5", "--out", tmp_path / "op_dmd.json", "--quiet")
    assert r.returncode == 0 and "no input statistics" in r.stderr
    assert "inputs" not in json.loads((tmp_path / "op_dmd.json").read_text())["reference"]
    flip = np.diag([1.0, -1.0, -1.0])
    X = b["X"]
    X = np.concatenate([X[:, :, :3] @ flip, X[:, :, 3:] @ flip], axis=2).astype(np.float32)
    np.savez(tmp_path / "flipped.npz", X=X, ids=b["ids"])
    common = ["--edge", b["edge"], "--cloud", b["cloud"], "--switcher", b["switcher"], "--op",
              tmp_path / "op_in.json", "--drift-window", "20", "--drift-every", "5",
              "--drift-ks-threshold", "1", "--quiet"]
    r = run_cli("classify", "--data", b["clips"], "--out", tmp_path / "a.jsonl", *common)
    assert r.returncode == 0, r.stderr
    assert "drift alarm" not in r.stderr
    db = tmp_path / "log.sqlite"
    r = run_cli("classify", "--data", tmp_path / "flipped.npz", "--out", tmp_path / "b.jsonl",
                "--log", db, *common)
    assert r.returncode == 0, r.stderr
    assert "drift alarm raised at clip 20: input-ks" in r.stderr
    state = json.loads(run_cli("log", db, "--drift", "--json").stdout)
    assert state["state"] == "alarm" and state["history"][0]["statistic"] == "input-ks"
    assert state["history"][0]["threshold"] == DriftConfig().input_threshold


# The drift test's pipeline: the default edge and switcher, a smaller cloud. The cloud only
# teaches the switcher here, and the default one (40 epochs, width 64) is most of a cold
# build's CPU (minutes of a busy CI machine); the edge's scores are what the detector reads,
# and a 10-epoch edge raised false alarms, so the edge stays as deployed.
SMALL_CLOUD = {"cloud.epochs": 10, "cloud.arch_params": {"width": 32}, "latency_calls": 20}


@pytest.mark.slow
@pytest.mark.timeout(1800)  # on a cold cache it trains the watch models, on a busy machine too
def test_watch_alarm_fires_on_a_turned_watch_and_another_device_and_is_rare_without():
    """The measurement of docs/results.md "Drift" at a smaller size (seeded, bounded): the
    pipeline's switcher (the default edge, a smaller cloud: SMALL_CLOUD), the reference of its
    calibration subject (with its input statistics) and the default [drift] settings; streams
    of the held-out test subjects.
    Without a shift alarms stay rare; when the watch is turned 60 or 90 degrees, its x/y axes
    swapped, or the clips come from another device (BasicMotions) from clip 400 on, the alarm
    fires, within the documented delay. A 30-degree turn is caught in about half the streams
    only (documented; held to a lower bound)."""
    from benchmarks.drift import SHIFTS, evaluate, load, turn
    from edgeswitch.data import load_dataset
    from edgeswitch.runtime.drift import clip_summary

    a = load(overrides=SMALL_CLOUD)
    edge, sw = a.edge, a.switcher

    def score(X):
        out = edge.outputs(X)
        return sw.trust(out).astype(float), out.label.astype(int), clip_summary(X)

    cs, cl, _ = score(a.splits.calib.X)
    ref = a.operating_point.reference
    assert ref["class_mix"] == pytest.approx(reference(cs, cl, len(edge.classes_))["class_mix"])
    assert len(ref["inputs"]["clips"]) == len(cs)      # build's calibrate had the clips
    bs, bl, bsm = score(load_dataset("basicmotions").X.astype(np.float32))
    rng = np.random.default_rng(3)
    t = a.splits.test
    test_sets, shifted = {}, {"basicmotions": {}, **{k: {} for k in SHIFTS}}
    for subj in dict.fromkeys(t.groups):
        m = t.groups == subj
        s, lab, sm = score(t.X[m])
        test_sets[subj] = (s, lab, t.ids[m], sm)
        pick = rng.integers(len(bs), size=int(m.sum()))
        shifted["basicmotions"][subj] = (bs[pick], bl[pick], bsm[pick])
        for k, R in SHIFTS.items():
            shifted[k][subj] = score(turn(t.X[m], R))
    res = evaluate(ref, DriftConfig(), test_sets, shifted, 8, 1000, 400, seed=2)
    assert res["no_shift"]["clips"] > 20_000
    assert res["no_shift"]["alarms_per_1000"] <= DOCUMENTED["no_shift_alarms_per_1000"]
    for k in ("basicmotions", "rot60", "rot90", "swap_xy"):
        assert res[k]["detected"] >= DOCUMENTED["detected"], (k, res[k])
        assert res[k]["delay_clips_median"] <= DOCUMENTED["delay_median"], (k, res[k])
    assert res["rot60"]["fired_by"].get("inputs", 0) >= 0.9 * res["rot60"]["streams"]
    assert res["rot30"]["detected"] >= DOCUMENTED["detected_rot30"], res["rot30"]


# the bounds the slow test holds the measurement to (docs/results.md "Drift": 0.074 alarms
# per 1,000 clips; 100% detected at a median delay of 120-180 clips for 60 and 90 degrees,
# swapped axes and another device; 46% for 30 degrees; bounds rounded out for 27 streams)
DOCUMENTED = {"no_shift_alarms_per_1000": 0.5, "detected": 0.9, "delay_median": 250,
              "detected_rot30": 0.2}


@pytest.mark.slow
@pytest.mark.skipif(trained is None, reason="needs the video extra")
def test_watch_feeds_the_detector_and_logs_the_alarm(tmp_path, trained):  # noqa: F811
    """`watch` with an operating point that has a reference: every clip reaches the detector
    (a threshold no window can pass raises the alarm at the first check, clip 20) and the
    alarm lands in the log `watch` writes."""
    from edgeswitch.video.synthetic import synthetic_pose_sequence
    from tests.synthetic_video import render_synthetic_video

    d = trained["dir"]
    assert json.loads((d / "op.json").read_text())["reference"] is not None
    video = tmp_path / "walk.mp4"
    render_synthetic_video(video, np.concatenate(
        [synthetic_pose_sequence("walk", 48, rng=np.random.default_rng(i)) for i in range(5)]))
    db = tmp_path / "log.sqlite"
    r = run_cli("watch", video, "--switcher", d / "sw.npz", "--op", d / "op.json",
                "--log", db, "--out", tmp_path / "out.jsonl", "--drift-window", "20",
                "--drift-every", "5", "--drift-ks-threshold", "1e-9", *VIDEO_CLIP)
    assert r.returncode == 0, r.stderr
    assert "drift alarm raised at clip 20" in r.stderr
    r = run_cli("log", db, "--drift", "--json")
    assert json.loads(r.stdout)["state"] == "alarm"


VIDEO_CLIP = ["--clip-s", "4", "--stride-s", "1", "--frames", "32", "--fps-cap", "8"]
