"""Content-addressed cache of trained models: same data, same settings, same seed -> same file.

A second `edgeswitch demo` finds its models here and skips training.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from edgeswitch import __version__
from edgeswitch.data.clips import ClipBatch
from edgeswitch.models.onnx_model import OnnxClassifier
from edgeswitch.models.train import NetClassifier


def default_cache_dir() -> Path:
    env = os.environ.get("EDGESWITCH_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeswitch"


def fingerprint(clips: ClipBatch) -> str:
    h = hashlib.sha256()
    h.update(f"{clips.X.shape}{clips.X.dtype}".encode())
    h.update(clips.X.tobytes())
    if clips.y is not None:
        h.update(clips.y.tobytes())
    h.update(json.dumps(list(clips.classes)).encode())
    return h.hexdigest()


def fit_or_load(estimator: NetClassifier, train: ClipBatch, cache_dir: Path | None,
                progress: bool = False) -> tuple[OnnxClassifier, bool]:
    """Return the trained model for (estimator settings, training data), training if needed.

    The second value says whether the model came from the cache.
    """
    if cache_dir is None:
        return estimator.fit(train, progress=progress).model_, False
    # a setting at its neutral value is left out of the key, so models cached before the
    # setting existed stay valid
    settings = {k: v for k, v in estimator.__dict__.items()
                if k != "threads" and not (k == "ensemble" and v == 1)}
    key_src = json.dumps({"estimator": settings | {"threads": None},
                          "data": fingerprint(train), "version": __version__},
                         sort_keys=True, default=str)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    path = Path(cache_dir) / "models" / f"{estimator.name}-{key}.onnx"
    if path.exists():
        return OnnxClassifier(path, threads=estimator.threads), True
    model = estimator.fit(train, progress=progress).model_
    model.save(path)
    return model, False
