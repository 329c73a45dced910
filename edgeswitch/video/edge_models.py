"""Edge models for video clips: MoveNet pose, then a temporal model over the pose sequence.

Both take a list of `VideoClip` and return `ModelOutput` (class probabilities and an
embedding), like the sensor edge models, so the switcher, DMD and the runtime work unchanged.

- `NFDFallModel`: the pretrained temporal fall head of neura-fall-detection (4 states:
  normal, descending, fallen, recovering; trained by its author on generated pose sequences),
  its states summed onto our label set.
- `PoseClassifier`: our own small temporal network (the sensor edge CNN) over the same pose
  features; `fit` it on labelled pose sequences (real ones, or SYNTHETIC ones for a smoke run).

Poses are computed once per frame: overlapping clips of a stream share frames, and a cache
keyed by (source, time) spares MoveNet the repeats.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from edgeswitch.config import PoseConfig
from edgeswitch.data.clips import ClipBatch
from edgeswitch.errors import ModelError, NotFittedError
from edgeswitch.models.base import ModelOutput
from edgeswitch.models.onnx_model import make_session
from edgeswitch.video.inputs import check_video_clips
from edgeswitch.video.pose import MoveNet, Person, follow, nfd_bundle, pose_features
from edgeswitch.video.source import VideoClip

VIDEO_CLASSES = ("adl", "fall")
NFD_STATES = ("normal", "descending", "fallen", "recovering")
# "recovering" is getting up after a fall: the person is moving again, so not a fall now
NFD_TO_LABEL = {"normal": "adl", "descending": "fall", "fallen": "fall", "recovering": "adl"}
STEPS = 32  # pose frames per clip: the fall head's sequence length (4 s at 8 fps)


class PoseExtractor:
    """MoveNet over a clip's frames -> the main person's features [STEPS, 60]."""

    def __init__(self, threads: int = 1, cache_frames: int = 256) -> None:
        self.movenet = MoveNet(threads=threads)
        self._cache: OrderedDict[tuple, list[Person]] = OrderedDict()
        self.cache_frames = cache_frames
        self.frames_run = 0  # MoveNet calls (cache misses), for benchmarks

    def people(self, clip: VideoClip) -> list[list[Person]]:
        return [self.frame_people(clip.source, t, frame)
                for t, frame in zip(clip.times, clip.frames, strict=True)]

    def frame_people(self, source: str, t: float, frame: np.ndarray) -> list[Person]:
        """The people in one frame of `source` at time `t`, computed once. A live `watch`
        calls it as each frame arrives, so a clip's poses are ready when it completes."""
        key = (source, round(float(t), 4))
        if key not in self._cache:
            self._cache[key] = self.movenet.people(frame)
            self.frames_run += 1
            if len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
        return self._cache[key]

    def sequence(self, clip: VideoClip) -> np.ndarray:
        chosen = follow(self.people(clip))
        # a frame where nobody is found repeats the nearest earlier (else later) pose, as
        # the fall head saw in training; a clip with nobody at all stays zeros
        seen = [i for i, p in enumerate(chosen) if p is not None]
        if seen:
            chosen = [chosen[max([j for j in seen if j <= i], default=seen[0])]
                      for i in range(len(chosen))]
        feats = np.stack([pose_features(p) for p in chosen])
        # clips with another frame count are resampled to STEPS, nearest in time
        return feats[np.linspace(0, len(feats) - 1, STEPS).round().astype(int)]

    def sequences(self, clips: Sequence[VideoClip], who: str = "MoveNet") -> np.ndarray:
        clips = check_video_clips(clips, who)
        return np.stack([self.sequence(c) for c in clips]).astype(np.float32)


def _summary(seq: np.ndarray) -> np.ndarray:
    """A pose sequence's embedding: each feature's mean and spread over time."""
    return np.concatenate([seq.mean(axis=1), seq.std(axis=1)], axis=1)


class NFDFallModel:
    """Edge: MoveNet + the pretrained NFD temporal fall head, mapped onto `classes_`."""

    def __init__(self, mapping: dict[str, str] | None = None, threads: int = 1,
                 name: str = "movenet-nfd") -> None:
        self.mapping = dict(mapping or NFD_TO_LABEL)
        unknown = set(self.mapping) ^ set(NFD_STATES)
        if unknown:
            raise ModelError(f"the mapping must name exactly the states {NFD_STATES}")
        self.classes_ = tuple(dict.fromkeys(self.mapping.values()))
        self.name = name
        self.pose = PoseExtractor(threads)
        self.onnx_bytes_ = nfd_bundle()["fall_head"]  # its hash names the model in records
        self.session = make_session(self.onnx_bytes_, threads, f"{name} fall head")
        self._to_class = np.zeros((len(NFD_STATES), len(self.classes_)), np.float32)
        for i, state in enumerate(NFD_STATES):
            self._to_class[i, self.classes_.index(self.mapping[state])] = 1

    def states(self, seq: np.ndarray) -> np.ndarray:
        """[n, 4] state probabilities for pose sequences [n, 32, 60]."""
        logits = self.session.run(None, {"pose_history": seq})[0]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def outputs(self, clips: Sequence[VideoClip]) -> ModelOutput:
        seq = self.pose.sequences(clips, self.name)
        states = self.states(seq)
        return ModelOutput(proba=(states @ self._to_class).astype(np.float32),
                           embedding=np.concatenate([_summary(seq), states], axis=1)
                           .astype(np.float32))

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        return self.outputs(clips).proba

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        """int64 indices into `classes_` (names: `np.asarray(classes_)[predict(clips)]`)."""
        return self.outputs(clips).label


_POSE = PoseConfig()  # the schema's [pose] table holds the defaults


class PoseClassifier:
    """Edge: MoveNet + our temporal CNN over the pose sequence, trained with `fit`."""

    def __init__(self, epochs: int = _POSE.epochs, width: int = _POSE.width, seed: int = 0,
                 threads: int = 1,
                 name: str = "movenet-posecnn") -> None:
        self.epochs, self.width, self.seed, self.threads, self.name = (epochs, width, seed,
                                                                       threads, name)
        self._pose: PoseExtractor | None = None

    @property
    def pose(self) -> PoseExtractor:
        if self._pose is None:  # MoveNet loads only when clips (not sequences) arrive
            self._pose = PoseExtractor(self.threads)
        return self._pose

    def fit(self, sequences: ClipBatch, progress: bool = False) -> PoseClassifier:
        """Train on labelled pose-feature sequences [n, 32, 60] (see `synthetic`)."""
        from edgeswitch.models.train import NetClassifier

        if sequences.clip_shape != (STEPS, 60):
            raise ModelError(f"pose sequences must be [n, {STEPS}, 60], got "
                             f"{sequences.X.shape}")
        net = NetClassifier(arch="edge-cnn", arch_params={"width": self.width, "layers": 2},
                            name=self.name, epochs=self.epochs, rotate_deg=0.0, seed=self.seed,
                            threads=self.threads)
        self.model_ = net.fit(sequences, progress=progress).model_
        self.classes_ = self.model_.classes_
        return self

    @classmethod
    def load(cls, path, threads: int = 1) -> PoseClassifier:
        from edgeswitch.models import OnnxClassifier

        model = OnnxClassifier(path, threads=threads)
        if model.clip_shape_ != (STEPS, 60):
            raise ModelError(f"{path}: not a pose-sequence model (clip shape "
                             f"{list(model.clip_shape_)})")
        obj = cls(threads=threads, name=model.name)
        obj.model_, obj.classes_ = model, model.classes_
        return obj

    def save(self, path):
        return self._model().save(path)

    @property
    def onnx_bytes_(self) -> bytes:
        return self._model().onnx_bytes_

    def _model(self):
        if not hasattr(self, "model_"):
            raise NotFittedError(f"{self.name}: call fit() or load() first")
        return self.model_

    def outputs(self, clips: Sequence[VideoClip]) -> ModelOutput:
        return self._model().outputs(self.pose.sequences(clips, self.name))

    def predict_proba(self, clips: Sequence[VideoClip]) -> np.ndarray:
        return self.outputs(clips).proba

    def predict(self, clips: Sequence[VideoClip]) -> np.ndarray:
        """int64 indices into `classes_` (names: `np.asarray(classes_)[predict(clips)]`)."""
        return self.outputs(clips).label
