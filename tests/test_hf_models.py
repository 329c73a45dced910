"""hf-vilt and hf-video-llava through transformers, on tiny randomly initialised checkpoints
built here (no download is possible offline). This checks loading, preprocessing and the
way answers become probabilities and embeddings, not what a real checkpoint would say."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers", reason="needs the hf extra")
pytest.importorskip("av", reason="needs the video extra")

from edgeswitch.errors import ModelError  # noqa: E402
from tests.hf_checkpoints import LLAVA_TEST_PROMPT, build_llava, build_vilt, clips  # noqa: E402


@pytest.fixture(scope="module")
def vilt_dir(tmp_path_factory):
    return build_vilt(tmp_path_factory.mktemp("vilt"))


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return build_llava(tmp_path_factory.mktemp("llava"))


def test_vilt_edge_gives_probabilities_and_an_embedding(vilt_dir):
    from edgeswitch.video.hf_models import HFViltEdge

    edge = HFViltEdge(str(vilt_dir))
    out = edge.outputs(clips(3))
    assert out.proba.shape == (3, 2) and np.allclose(out.proba.sum(axis=1), 1)
    assert out.embedding.shape == (3, 32)
    assert len({tuple(r) for r in out.proba.round(6)}) > 1  # different clips, different answers
    with pytest.raises(ModelError, match="local checkpoint"):
        HFViltEdge(str(vilt_dir / "missing"))


def test_video_llava_cloud_scores_the_labels(llava_dir):
    from edgeswitch.video.hf_models import HFVideoLlavaCloud

    prompt = LLAVA_TEST_PROMPT
    cloud = HFVideoLlavaCloud(str(llava_dir), prompt=prompt)
    p = cloud.predict_proba(clips(2))
    assert p.shape == (2, 2) and np.allclose(p.sum(axis=1), 1)
    label = cloud.predict(clips(1))  # indices into classes_, like every model's predict
    assert label.dtype == np.int64 and cloud.classes_[label[0]] in ("adl", "fall")
    with pytest.raises(ModelError, match="distinct known tokens"):
        HFVideoLlavaCloud(str(llava_dir), classes=("zebra", "yak"), prompt=prompt)
