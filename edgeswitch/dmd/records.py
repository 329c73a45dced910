"""DMD records: per clip, what the edge said, what the cloud said, and whether they agree.

This table is the switcher's whole training set. It holds no ground-truth labels by design.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput


@dataclass(frozen=True)
class DMDRecords:
    ids: np.ndarray             # [n] clip ids
    groups: np.ndarray          # [n] subject / recording (for group-wise validation splits)
    edge_proba: np.ndarray      # [n, K]
    edge_embedding: np.ndarray  # [n, E]
    cloud_proba: np.ndarray     # [n, K]
    classes: tuple[str, ...]
    edge_model: str
    cloud_model: str

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def edge(self) -> ModelOutput:
        return ModelOutput(proba=self.edge_proba, embedding=self.edge_embedding)

    @property
    def edge_label(self) -> np.ndarray:
        return self.edge_proba.argmax(axis=1)

    @property
    def cloud_label(self) -> np.ndarray:
        return self.cloud_proba.argmax(axis=1)

    @property
    def agree(self) -> np.ndarray:
        """Hard target: the two models pick the same class."""
        return self.edge_label == self.cloud_label

    @property
    def alignment(self) -> np.ndarray:
        """Soft target: the cloud's probability for the class the edge chose."""
        return self.cloud_proba[np.arange(len(self)), self.edge_label]

    def target(self, kind: str) -> np.ndarray:
        if kind == "hard":
            return self.agree.astype(np.float32)
        if kind == "soft":
            return self.alignment.astype(np.float32)
        raise DataError(f"unknown DMD target '{kind}': use 'hard' or 'soft'")

    def concat(self, other: DMDRecords) -> DMDRecords:
        """These records followed by `other`'s (same models and classes)."""
        if (other.classes, other.edge_model, other.cloud_model) != \
                (self.classes, self.edge_model, self.cloud_model):
            raise DataError("DMD records of different models or classes cannot be joined")
        cat = np.concatenate
        return DMDRecords(cat([self.ids, other.ids]), cat([self.groups, other.groups]),
                          cat([self.edge_proba, other.edge_proba]),
                          cat([self.edge_embedding, other.edge_embedding]),
                          cat([self.cloud_proba, other.cloud_proba]), self.classes,
                          self.edge_model, self.cloud_model)

    def to_parquet(self, path: str | Path) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        if path.is_dir():
            raise DataError(f"{path} is a folder; give a file name for the DMD records")
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({
            "clip_id": self.ids.astype(str),
            "group": self.groups.astype(str),
            "edge_proba": list(self.edge_proba.astype(np.float32)),
            "edge_embedding": list(self.edge_embedding.astype(np.float32)),
            "cloud_proba": list(self.cloud_proba.astype(np.float32)),
            "edge_label": self.edge_label.astype(np.int32),
            "cloud_label": self.cloud_label.astype(np.int32),
            "agree": self.agree,
            "alignment": self.alignment.astype(np.float32),
            "edge_model": [self.edge_model] * len(self),
            "cloud_model": [self.cloud_model] * len(self),
        })
        table = table.replace_schema_metadata(
            {"edgeswitch.classes": json.dumps(list(self.classes))})
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> DMDRecords:
        """One Parquet file, or the folder of a sharded `distill` run (see dmd.shards)."""
        import pyarrow.parquet as pq

        if Path(path).is_dir():
            from edgeswitch.dmd.shards import read_dataset

            return read_dataset(path)
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise DataError(f"DMD file not found: {path}") from None
        except Exception as exc:
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        return cls.from_table(table, str(path))

    @classmethod
    def from_table(cls, table, where: str) -> DMDRecords:
        meta = table.schema.metadata or {}
        need = {"clip_id", "group", "edge_proba", "edge_embedding", "cloud_proba",
                "edge_model", "cloud_model"}
        if b"edgeswitch.classes" not in meta or not need <= set(table.column_names):
            raise DataError(f"{where}: not an edgeswitch DMD file (missing columns or metadata)")
        if len(table) == 0:
            raise DataError(f"{where}: the DMD file holds no records")
        col = table.column
        stack = lambda name: np.stack(col(name).to_numpy(zero_copy_only=False))  # noqa: E731
        return cls(
            ids=np.asarray(col("clip_id").to_pylist(), dtype=str),
            groups=np.asarray(col("group").to_pylist(), dtype=str),
            edge_proba=stack("edge_proba").astype(np.float32),
            edge_embedding=stack("edge_embedding").astype(np.float32),
            cloud_proba=stack("cloud_proba").astype(np.float32),
            classes=tuple(json.loads(meta[b"edgeswitch.classes"])),
            edge_model=col("edge_model")[0].as_py(), cloud_model=col("cloud_model")[0].as_py(),
        )
