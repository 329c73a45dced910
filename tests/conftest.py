"""Shared fixtures: small real models trained once per session on BasicMotions."""

from __future__ import annotations

import pytest

from edgeswitch.config import preset
from edgeswitch.data import load_dataset, split_by_group


@pytest.fixture(scope="session")
def basicmotions():
    return load_dataset("basicmotions")


@pytest.fixture(scope="session")
def bm_splits(basicmotions):
    return split_by_group(basicmotions, (0.5, 0.2, 0.1, 0.2), seed=0)


@pytest.fixture(scope="session")
def bm_models(bm_splits):
    """A tiny edge and cloud trained for real on BasicMotions' train split (a few seconds)."""
    from edgeswitch.pipeline import train_models

    cfg = preset("basicmotions")
    cfg.edge.epochs, cfg.cloud.epochs = 10, 10
    return train_models(cfg, bm_splits.train, None, progress=False)


@pytest.fixture(scope="session")
def bm_files(bm_models, tmp_path_factory):
    """The BasicMotions models as ONNX files, as a deployment ships them."""
    edge, cloud = bm_models
    d = tmp_path_factory.mktemp("bm_models")
    return {"edge": edge.save(d / "edge.onnx"), "cloud": cloud.save(d / "cloud.onnx")}
