"""`edgeswitch refresh`: the sampling-bias weights, the label-free comparison, and the bundle
written only when the new switcher is better (real BasicMotions models, a log `classify`
writes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgeswitch.cli.main import main as cli
from edgeswitch.errors import DataError
from edgeswitch.pipeline.logged import (
    read_log,
    replicate,
    stratum_weights,
    weighted_agreement_at,
    weighted_auroc,
)

# --- the weights ------------------------------------------------------------------------


def test_stratum_weights_are_logged_over_answered_per_stratum():
    offloaded = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    answered = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], bool)  # one offload fell back
    w = stratum_weights(offloaded, answered)
    np.testing.assert_allclose(w[:3], 4 / 3)           # 4 offloaded, 3 answered
    assert w[3] == 0                                   # no answer, no weight
    np.testing.assert_allclose(w[4:6], 10 / 2)         # 10 kept, 2 shadow answers
    assert w[6:].sum() == 0
    assert w.sum() == pytest.approx(len(w))            # the answered stand for every clip


def test_a_log_without_shadow_answers_is_refused_naming_the_fix():
    with pytest.raises(DataError, match="--shadow-rate"):
        stratum_weights(np.array([1, 0, 0], bool), np.array([1, 0, 0], bool))


def test_weights_undo_the_offload_bias():
    """A stream where the edge is wrong mostly at low scores: the answered clips (all low-score
    offloads + a 10% shadow sample of the rest) overstate disagreement; the weights recover
    the stream's agreement."""
    rng = np.random.default_rng(3)
    n = 20000
    score = rng.random(n)
    agree = rng.random(n) < 0.5 + 0.5 * score          # P(agree | s) = (1 + s) / 2: mean 0.75
    offloaded = score < 0.4
    shadow = ~offloaded & (rng.random(n) < 0.1)
    answered = offloaded | shadow
    w = stratum_weights(offloaded, answered)
    truth = agree.mean()
    naive = agree[answered].mean()
    weighted = np.sum(w * agree) / w.sum()
    assert abs(naive - truth) > 0.08                   # the bias is real ...
    assert abs(weighted - truth) < 0.01                # ... and corrected


def test_replicate_follows_the_weights():
    w = np.array([1.0, 0.0, 5.0, 2.5])
    rows = replicate(w, per_min=4)
    counts = np.bincount(rows, minlength=4)
    np.testing.assert_array_equal(counts, [4, 0, 20, 10])


def test_weighted_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = np.round(rng.random(300), 2)                   # ties included
    y = rng.random(300) < s
    w = rng.choice([1.0, 4.0], 300)
    assert weighted_auroc(s, y, w) == pytest.approx(roc_auc_score(y, s, sample_weight=w))
    with pytest.raises(DataError, match="only agreements"):
        weighted_auroc(s, np.ones(300, bool), w)


def test_weighted_agreement_at_rate():
    s = np.array([0.1, 0.2, 0.3, 0.4])
    agree = np.array([False, False, True, False])
    # offload half the weight (the two lowest): only clip 3 is a kept disagreement
    assert weighted_agreement_at(s, agree, np.ones(4), 0.5) == pytest.approx(0.75)
    # clip 0 weighs 2 of 5: offloading 40% of the weight offloads it alone
    assert weighted_agreement_at(s, agree, np.array([2, 1, 1, 1.0]), 0.4) == \
        pytest.approx(1 - 2 / 5)


# --- not better: nothing written (fast: a log written row by row) -------------------------


def _synthetic_log(path, classes, emb_dim, edge_model, n=200, seed=0):
    """A log of `n` clips: edge outputs at random, the cloud agreeing more where the edge is
    confident; the lowest-confidence 40% offloaded, half the rest shadowed."""
    from edgeswitch.runtime.decision_log import Decision, DecisionLog

    rng = np.random.default_rng(seed)
    k = len(classes)
    proba = rng.dirichlet(np.full(k, 0.5), n).astype(np.float32)
    emb = rng.normal(size=(n, emb_dim)).astype(np.float32)
    conf = proba.max(axis=1)
    agree = rng.random(n) < conf
    cloud_label = np.where(agree, proba.argmax(axis=1), (proba.argmax(axis=1) + 1) % k)
    cloud = np.eye(k)[cloud_label] * 0.9 + 0.1 / k
    off = conf < np.quantile(conf, 0.4)
    shadow = ~off & (rng.random(n) < 0.5)
    with DecisionLog(path, classes, edge_model, "cloud@synthetic") as log:
        log.append([Decision(
            clip_id=f"c{i}", group="s1", label=classes[int(cloud_label[i] if off[i] else
                                                            proba[i].argmax())],
            answered_by="cloud" if off[i] else "edge", verified=True, fallback_reason=None,
            offloaded=bool(off[i]), shadow=bool(shadow[i]), score=float(conf[i]),
            edge_proba=proba[i], edge_embedding=emb[i],
            cloud_proba=cloud[i] if off[i] or shadow[i] else None, edge_ms=1.0,
            cloud_ms=None, total_ms=1.0, attempts=0, time=1000.0 + i) for i in range(n)])
    from edgeswitch.models.base import ModelOutput

    return ModelOutput(proba, emb), agree


@pytest.fixture()
def synthetic(bm_files, tmp_path):
    """A bundle (the fixtures' edge) whose switcher is fitted on the log's own agreement, so
    a refresh from the log can hardly beat it; and the log."""
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.switcher import LinearSwitcher, calibrate_offload

    edge = OnnxClassifier(bm_files["edge"])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    shutil.copy(bm_files["edge"], bundle / "edge.onnx")
    emb_dim = edge.outputs(np.zeros((1, 100, 6), np.float32)).embedding.shape[1]
    log = tmp_path / "log.sqlite"
    from edgeswitch.models.base import model_identity

    out, agree = _synthetic_log(log, tuple(edge.classes_), emb_dim, model_identity(edge))
    sw = LinearSwitcher().fit(out, agree.astype(np.float32))
    sw.save(bundle / "switcher.npz")
    calibrate_offload(sw.trust(out), 0.4).save(bundle / "operating_point.json")
    return bundle, log


def test_not_better_writes_nothing_and_says_so(synthetic, tmp_path, capsys):
    from edgeswitch.config import RefreshConfig
    from edgeswitch.pipeline.refresh import Bundle, refresh

    bundle, log = synthetic
    result = refresh(log, Bundle.load(bundle), RefreshConfig(margin=0.0, min_shadow=5))
    assert result.report["train"]["weights"]["kept"] == pytest.approx(2.0, rel=0.3)
    assert result.report["train"]["weights"]["offloaded"] == pytest.approx(1.0)
    assert result.better == (result.report["difference"] > 0)   # the verdict is the rule
    out = tmp_path / "never"
    code = cli(["refresh", "--log", str(log), "--bundle", str(bundle), "--out", str(out),
                "--margin", "1", "--min-shadow", "5"])  # no AUROC beats another by more than 1
    captured = capsys.readouterr()
    assert code == 1
    assert not out.exists()
    assert not list(tmp_path.glob(".never-*"))        # no temporary folder left behind
    report = json.loads(captured.out)
    assert report["better"] is False and report["difference"] <= 1
    assert "not better: nothing written" in captured.err
    # the other criterion, the same rule
    code = cli(["refresh", "--log", str(log), "--bundle", str(bundle), "--out", str(out),
                "--criterion", "agreement", "--margin", "1", "--min-shadow", "5"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and not out.exists()
    assert report["criterion"] == "agreement"
    assert report["difference"] == pytest.approx(report["agreement"]["new"]
                                                 - report["agreement"]["old"])


def test_refresh_refuses_what_it_cannot_use(synthetic, tmp_path, capsys):
    bundle, log = synthetic
    base = ["refresh", "--log", str(log), "--out", str(tmp_path / "n")]
    # too few shadow answers for the threshold asked
    assert cli([*base, "--bundle", str(bundle), "--min-shadow", "1000"]) == 2
    assert "shadow clips with a cloud answer" in capsys.readouterr().err
    # a disagreement operating point: its guarantee needs a new calibration set
    b2 = tmp_path / "b2"
    shutil.copytree(bundle, b2)
    from edgeswitch.switcher import OperatingPoint

    OperatingPoint("disagreement", 0.5, 0.3, {"epsilon": 0.1, "delta": 0.1}, True) \
        .save(b2 / "operating_point.json")
    assert cli([*base, "--bundle", str(b2), "--min-shadow", "5"]) == 2
    assert "disagreement" in capsys.readouterr().err
    # the log of another edge model
    other = tmp_path / "other.sqlite"
    _synthetic_log(other, ("a", "b", "c", "d"), 4, "edge@another")
    assert cli(["refresh", "--log", str(other), "--bundle", str(bundle), "--out",
                str(tmp_path / "n")]) == 2
    assert "logs edge model edge@another" in capsys.readouterr().err
    # not a bundle; not a log
    assert cli([*base, "--bundle", str(tmp_path / "missing")]) == 2
    assert "bundle folder not found" in capsys.readouterr().err
    assert cli([*base, "--bundle", str(tmp_path)]) == 2
    assert "not a bundle: no edge.onnx" in capsys.readouterr().err
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"no database" * 50)
    assert cli(["refresh", "--log", str(junk), "--bundle", str(bundle),
                "--out", str(tmp_path / "n")]) == 2
    assert "decision log" in capsys.readouterr().err
    assert not (tmp_path / "n").exists()


# --- end to end: real models, a log classify writes, refresh, the new bundle deployed ------


@pytest.fixture(scope="module")
def deployment(basicmotions, tmp_path_factory):
    """Real small models (trained here: the session fixtures' 10-epoch edge answers one class
    only, nothing to rank), a bundle whose switcher ranks backwards (inverted DMD targets, so
    a refresh can beat it), and a decision log of noisy clips from `classify --shadow-rate`."""
    from edgeswitch.config import preset
    from edgeswitch.data import ClipBatch, split_by_group
    from edgeswitch.dmd import distill
    from edgeswitch.models import OnnxClassifier
    from edgeswitch.pipeline import train_models
    from edgeswitch.switcher import LinearSwitcher, calibrate_offload

    d = tmp_path_factory.mktemp("refresh")
    bundle = d / "bundle"
    cfg = preset("basicmotions")
    cfg.edge.epochs, cfg.cloud.epochs = 25, 15
    train = split_by_group(basicmotions, (0.5, 0.2, 0.1, 0.2), seed=0).train
    for m in train_models(cfg, train, None, progress=False):
        m.save(bundle / f"{m.name}.onnx")
    edge, cloud = OnnxClassifier(bundle / "edge.onnx"), OnnxClassifier(bundle / "cloud.onnx")
    rng = np.random.default_rng(0)
    X = np.resize(basicmotions.X, (240, *basicmotions.X.shape[1:])).astype(np.float32)
    X = X + rng.normal(0, 0.3 * X.std(), X.shape).astype(np.float32)  # so they disagree
    clips = ClipBatch(X, None, np.full(len(X), "s1"), basicmotions.classes,
                      np.array([f"c{i:04d}" for i in range(len(X))]))
    rec = distill(edge, cloud, clips)
    bad = LinearSwitcher().fit(rec.edge, 1 - rec.target("hard"), rec.groups)
    bad.save(bundle / "switcher.npz")
    calibrate_offload(bad.trust(rec.edge), 0.4).save(bundle / "operating_point.json")
    np.savez(d / "clips.npz", X=X, ids=clips.ids, classes=np.array(basicmotions.classes))
    log = d / "decisions.sqlite"
    code = cli(["classify", "--data", str(d / "clips.npz"), "--split", "all", "--edge",
                str(bundle / "edge.onnx"), "--switcher", str(bundle / "switcher.npz"), "--op",
                str(bundle / "operating_point.json"), "--cloud", str(bundle / "cloud.onnx"),
                "--log", str(log), "--shadow-rate", "0.5", "--batch", "8",
                "--out", str(d / "pred.jsonl"), "--quiet"])
    assert code == 0
    return {"dir": d, "bundle": bundle, "log": log, "disagree": float(1 - rec.agree.mean())}


@pytest.mark.slow
def test_the_log_is_a_biased_sample_with_both_kinds(deployment):
    clips = read_log(deployment["log"])
    assert len(clips) == 240 and clips.skipped == 0
    assert (clips.answered & clips.shadow).sum() >= 30
    assert 0.1 < deployment["disagree"] < 0.9         # something to rank


@pytest.mark.slow
def test_refresh_writes_a_better_bundle_that_classify_runs(deployment, capsys):
    d, out = deployment["dir"], deployment["dir"] / "new"
    code = cli(["refresh", "--log", str(deployment["log"]), "--bundle",
                str(deployment["bundle"]), "--out", str(out), "--margin", "0.05",
                "--min-shadow", "5", "--report", str(d / "report.json")])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0, captured.err
    assert report["better"] and report["auroc"]["new"] > report["auroc"]["old"] + 0.05
    assert report["auroc"]["old"] < 0.5               # the backwards switcher, measured so
    assert json.loads((d / "report.json").read_text()) == report
    assert sorted(p.name for p in out.iterdir()) == ["cloud.onnx", "edge.onnx",
                                                     "operating_point.json", "refresh.json",
                                                     "switcher.npz"]
    from edgeswitch.switcher import OperatingPoint

    op = OperatingPoint.load(out / "operating_point.json")
    assert op.mode == "offload" and op.params["rate"] == 0.4
    assert op.calib_offload_rate == pytest.approx(0.4, abs=0.01)  # on the logged clips
    assert "wrote the refreshed bundle" in captured.err
    # the refreshed bundle is deployable as it is, and offloads about its rate
    code = cli(["classify", "--data", str(d / "clips.npz"), "--split", "all", "--edge",
                str(out / "edge.onnx"), "--switcher", str(out / "switcher.npz"), "--op",
                str(out / "operating_point.json"), "--cloud", str(out / "cloud.onnx"),
                "--out", str(d / "pred2.jsonl"), "--quiet"])
    assert code == 0
    lines = [json.loads(x) for x in (d / "pred2.jsonl").read_text().splitlines()]
    assert np.mean([x["answered_by"] == "cloud" for x in lines]) == pytest.approx(0.4, abs=0.02)
    # a second refresh into the same folder is refused, the bundle left as it is
    before = (out / "switcher.npz").read_bytes()
    assert cli(["refresh", "--log", str(deployment["log"]), "--bundle",
                str(deployment["bundle"]), "--out", str(out), "--margin", "0",
                "--min-shadow", "5"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (out / "switcher.npz").read_bytes() == before
