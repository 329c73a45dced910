"""MoveNet pose, pose features, the NFD fall head and our pose CNN, on SYNTHETIC poses and a
rendered SYNTHETIC mannequin (the weights are the shipped ones; the data is ours)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av", reason="needs the video extra")
pytest.importorskip("ai_edge_litert", reason="needs the video extra")

from edgeswitch.cli.main import main  # noqa: E402
from edgeswitch.data.clips import ClipBatch  # noqa: E402
from edgeswitch.errors import ModelError  # noqa: E402
from edgeswitch.video.edge_models import (  # noqa: E402
    NFD_STATES,
    STEPS,
    NFDFallModel,
    PoseClassifier,
)
from edgeswitch.video.pose import N_FEATURES, Person, follow, pose_features  # noqa: E402
from edgeswitch.video.source import ClipSpec, iter_clips  # noqa: E402
from edgeswitch.video.synthetic import (  # noqa: E402
    ADL,
    FALLS,
    synthetic_pose_dataset,
    synthetic_pose_sequence,
)
from tests.synthetic_video import render_synthetic_video  # noqa: E402


def person(x: float, score: float = 0.9) -> Person:
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = x, np.linspace(0.2, 0.9, 17), score
    return Person(kp, np.array([x - 0.1, 0.1, x + 0.1, 0.95], np.float32), score)


def test_pose_features_follow_the_fall_heads_contract():
    f = pose_features(person(0.5))
    assert f.shape == (N_FEATURES,) and f.dtype == np.float32
    np.testing.assert_allclose(f[:34:2], 0, atol=1e-6)          # x relative to the box centre
    np.testing.assert_allclose(f[34:51], 0.9)                   # keypoint scores
    np.testing.assert_allclose(f[51:56], [0.5, 0.525, 0.2, 0.85, 0.2 / 0.85], rtol=1e-5)
    assert f[59] == 1.0                                         # every keypoint seen
    assert not pose_features(None).any()


def test_the_main_person_is_followed_through_a_clip():
    a, b = person(0.2, 0.95), person(0.7, 0.5)
    moved = person(0.65, 0.99)
    chosen = follow([[a, b], [], [moved, person(0.25, 0.4)]])
    assert chosen[0] is a and chosen[1] is None and chosen[2].keypoints[0, 0] == 0.25


def test_synthetic_data_is_labelled_and_grouped():
    data = synthetic_pose_dataset(40, seed=0)
    assert data.X.shape == (40, STEPS, N_FEATURES) and data.classes == ("adl", "fall")
    assert set(data.y) == {0, 1} and data.name == "synthetic-poses"
    assert all(i.startswith("synthetic/") for i in data.ids)
    with pytest.raises(ValueError, match="unknown synthetic activity"):
        synthetic_pose_sequence("dance")
    kinds = {i.split("-", 1)[1] for i in data.ids}
    assert kinds == set(ADL) | set(FALLS)


def test_nfd_edge_model_on_a_rendered_mannequin(tmp_path):
    edge = NFDFallModel()
    path = tmp_path / "fall.mp4"
    render_synthetic_video(path, synthetic_pose_sequence("fall_sideways", 48,
                                                         rng=np.random.default_rng(4)))
    clips = list(iter_clips(path, ClipSpec(4, 1, 32, 8)))
    out = edge.outputs(clips)
    assert out.proba.shape == (3, 2) and np.allclose(out.proba.sum(axis=1), 1, atol=1e-5)
    assert out.embedding.shape == (3, 2 * N_FEATURES + len(NFD_STATES))
    assert edge.pose.frames_run == 48  # overlapping clips share their frames' poses
    assert edge.classes_ == ("adl", "fall")
    with pytest.raises(ModelError, match="exactly the states"):
        NFDFallModel(mapping={"normal": "adl"})
    with pytest.raises(ModelError, match="list of VideoClip"):
        edge.outputs(np.zeros((2, 32, 60)))


def test_pose_classifier_trains_saves_and_loads(tmp_path):
    train, test = synthetic_pose_dataset(200, seed=1), synthetic_pose_dataset(60, seed=2)
    model = PoseClassifier(epochs=5, name="movenet-posecnn-synthetic").fit(train)
    acc = (model.model_.predict_proba(test.X).argmax(axis=1) == test.y).mean()
    assert acc > 0.8  # on SYNTHETIC held-out sequences: it learns the generator, nothing more
    path = model.save(tmp_path / "pose.onnx")
    loaded = PoseClassifier.load(path)
    np.testing.assert_allclose(loaded.model_.predict_proba(test.X),
                               model.model_.predict_proba(test.X), atol=1e-6)
    assert loaded.name == "movenet-posecnn-synthetic"
    short = ClipBatch(X=np.zeros((4, 10, 60), np.float32), y=np.array([0, 1, 0, 1]),
                      groups=np.array(list("abcd")), classes=("adl", "fall"),
                      ids=np.array(list("1234")))
    with pytest.raises(ModelError, match=r"pose sequences must be \[n, 32, 60\]"):
        PoseClassifier().fit(short)


def test_train_pose_cli_names_a_synthetic_model_as_such(tmp_path, capsys):
    out = tmp_path / "pose.onnx"
    assert main(["train-pose", "--synthetic", "100", "--epochs", "2", "--out", str(out),
                 "--quiet"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err
    assert PoseClassifier.load(out).name == "movenet-posecnn-synthetic"
