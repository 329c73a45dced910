"""Sources and models for the DMD runner (dmd.runner) over sensor clips.

`MemorySource`: one unit, a batch in memory (a split of a data set). `NpzSource`: a corpus of
`.npz` files cut into shards (dmd.corpus). `LiveModels`: models already built, for a run in
this process. `OnnxModels`: ONNX files (carried as bytes, so a Ray worker needs no copy of
them) and a `CloudSpec`. Videos have theirs in video.dmd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.cloud.client import CloudClient, InProcessCloud
from edgeswitch.cloud.spec import CloudSpec
from edgeswitch.config import DistillConfig, from_values
from edgeswitch.data.clips import ClipBatch
from edgeswitch.data.files import corpus_files, is_video
from edgeswitch.dmd.corpus import Shard, ShardReader, ids_digest, plan_shards
from edgeswitch.dmd.runner import Identity, Plan, UnitClips, UnitUnreadable
from edgeswitch.errors import DataError, EdgeSwitchError, ModelError
from edgeswitch.models.base import check_same_classes, model_identity


class MemorySource:
    """A batch of clips in memory as one unit. Labels are dropped before anything runs: DMD is
    unsupervised, so labelled and unlabelled pools give identical records."""

    ship_clips = True

    def __init__(self, clips: ClipBatch) -> None:
        self.clips = clips.without_labels()

    def plan(self) -> Plan:
        ids = [str(i) for i in self.clips.ids]
        return Plan([Shard(0, self.clips.name or "memory", 0, len(ids), ids_digest(ids))],
                    clips=len(ids))

    def read(self, unit: Shard, classes: tuple[str, ...]) -> UnitClips:
        return UnitClips(self.clips.X, np.asarray(self.clips.ids),
                         np.asarray(self.clips.groups), self.clips.streams, self.clips.t)


@dataclass
class NpzSource:
    """A corpus of `.npz` clip files (files, folders or globs) in shards of `shard_size`."""

    corpus: list[str]
    shard_size: int
    ship_clips = True
    _reader: ShardReader | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        # the schema's range, for callers that skip the config
        from_values(DistillConfig, {"shard_size": self.shard_size}, " of the corpus")

    def plan(self) -> Plan:
        files = corpus_files(self.corpus)
        if is_video(files[0]):
            raise EdgeSwitchError("a corpus of videos needs video models (--edge nfd ...), and "
                                  ".npz clips need ONNX models")
        shards, inputs = plan_shards(files, self.shard_size)
        clips = sum(i["clips"] for i in inputs if i["clips"] is not None)
        return Plan(shards, inputs, {"shard_size": self.shard_size}, clips)

    def read(self, unit: Shard, classes: tuple[str, ...]) -> UnitClips:
        if self._reader is None or self._reader.classes != tuple(classes):
            self._reader = ShardReader(tuple(classes))
        try:
            clips = self._reader(unit)
        except DataError as exc:  # a file that cannot be read, or changed since the plan
            raise UnitUnreadable(str(exc)) from None
        return UnitClips(clips.X, np.asarray(clips.ids).astype(str),
                         np.asarray(clips.groups).astype(str), clips.streams, clips.t)

    def __getstate__(self) -> dict:  # a worker opens its own files
        return self.__dict__ | {"_reader": None}


class LiveModels:
    """Models already built (a run in this process): a cloud model is called in-process."""

    def __init__(self, edge, cloud) -> None:
        self._edge = edge
        self._cloud = cloud if isinstance(cloud, CloudClient) else InProcessCloud(cloud)

    def edge(self):
        return self._edge

    def cloud(self, classes: tuple[str, ...]):
        return self._cloud

    def close(self, cloud) -> None:
        """The caller's client: the caller closes it."""

    def identity(self, edge, cloud) -> Identity:
        check_same_classes(edge, cloud)
        return Identity(tuple(edge.classes_), model_identity(edge),
                        model_identity(getattr(cloud, "model", cloud)))


class OnnxModels:
    """The edge as an ONNX file and the cloud as a CloudSpec; the files travel as bytes."""

    def __init__(self, edge: str | Path, cloud: CloudSpec) -> None:
        self.edge_bytes = _read(edge)
        self.cloud_spec = cloud
        self.cloud_bytes = _read(cloud.model) if cloud.model else None

    def edge(self):
        from edgeswitch.models import OnnxClassifier

        return OnnxClassifier(self.edge_bytes)

    def cloud(self, classes: tuple[str, ...]):
        return self.cloud_spec.build(tuple(classes), self.cloud_bytes)

    def close(self, cloud) -> None:
        if hasattr(cloud, "close"):
            cloud.close()

    def identity(self, edge, cloud) -> Identity:
        if self.cloud_bytes is None:  # a server: its URL and the model it serves
            return Identity(tuple(edge.classes_), model_identity(edge),
                            self.cloud_spec.identity(cloud))
        check_same_classes(edge, cloud)
        return Identity(tuple(edge.classes_), model_identity(edge),
                        model_identity(cloud.model))


def _read(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}") from None
