"""DMD records: per clip, what the edge said, what the cloud said, and whether they agree.

This table is the switcher's whole training set. It holds no ground-truth labels by design.
A file holds one records set; a folder is a sharded run (its format: dmd.parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.data.clips import stream_lists
from edgeswitch.data.columns import list_matrix, no_nulls, row_name
from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput

DATASET = b"edgeswitch.dataset"  # table metadata: the data set the clips came from


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
    dataset: str = ""           # the data set the clips came from (what `--data` named): its
                                # preset is the steps' defaults; "" where unknown (a log)
    streams: np.ndarray | None = None   # [n] which stream each clip is in (None: not recorded)
    t: np.ndarray | None = None         # [n] clip start within its stream, seconds

    def __post_init__(self) -> None:
        """Refuse records whose parts do not fit together, naming the field (a bad file or a
        bug upstream would otherwise surface later as an index error in training)."""
        for name in ("ids", "groups", "edge_proba", "edge_embedding", "cloud_proba"):
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        n = len(self.ids)
        for name in ("ids", "groups"):
            if getattr(self, name).ndim != 1:
                raise DataError(f"DMD records: {name} must be 1-D, got shape "
                                f"{list(getattr(self, name).shape)}")
        if len(self.groups) != n:
            raise DataError(f"DMD records: {len(self.groups)} groups for {n} clip ids")
        for name in ("edge_proba", "edge_embedding", "cloud_proba"):
            a = getattr(self, name)
            if a.ndim != 2 or len(a) != n:
                raise DataError(f"DMD records: {name} must be [{n}, ...] (one row per clip id), "
                                f"got shape {list(a.shape)}")
            if not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
                raise DataError(f"DMD records: {name} holds NaN, inf or non-numbers")
        k = self.edge_proba.shape[1]
        if self.cloud_proba.shape[1] != k:
            raise DataError(f"DMD records: edge_proba has {k} classes, cloud_proba "
                            f"{self.cloud_proba.shape[1]}")
        if (self.edge_proba < 0).any() or (self.cloud_proba < 0).any():
            raise DataError("DMD records: probabilities must be >= 0")
        if not isinstance(self.classes, tuple) or len(self.classes) != k or \
                not all(isinstance(c, str) for c in self.classes):
            raise DataError(f"DMD records: classes must be a tuple of {k} names (the "
                            f"probability columns), got {self.classes!r}")
        for name in ("streams", "t"):
            a = getattr(self, name)
            if a is not None:
                a = np.asarray(a, dtype=str if name == "streams" else np.float64)
                if a.shape != (n,):
                    raise DataError(f"DMD records: {name} must be [{n}] (one per clip id), got "
                                    f"shape {list(a.shape)}")
                object.__setattr__(self, name, a)
        if (self.streams is None) != (self.t is None):
            raise DataError("DMD records: streams and t go together")
        if self.t is not None and not np.isfinite(self.t).all():
            raise DataError("DMD records: t holds NaN or inf")
        for name in ("edge_model", "cloud_model", "dataset"):  # "" where a log did not record it
            if not isinstance(getattr(self, name), str):
                raise DataError(f"DMD records: {name} must be a name (str), got "
                                f"{getattr(self, name)!r}")

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

    def stream_order(self) -> np.ndarray:
        """Record indices stream by stream, each in time order (records without streams: each
        record its own stream, in record order)."""
        if self.streams is None:
            return np.arange(len(self))
        return np.concatenate(stream_lists(self.streams, self.t))

    def stream_lists(self) -> list[np.ndarray]:
        """Each stream's record indices in time order (records without streams: each record
        alone)."""
        if self.streams is None:
            return [np.asarray([i]) for i in range(len(self))]
        return stream_lists(self.streams, self.t)

    def target(self, kind: str) -> np.ndarray:
        if kind == "hard":
            return self.agree.astype(np.float32)
        if kind == "soft":
            return self.alignment.astype(np.float32)
        raise DataError(f"unknown DMD target '{kind}': use 'hard' or 'soft'")

    def concat(self, other: DMDRecords) -> DMDRecords:
        """These records followed by `other`'s (same models and classes)."""
        return join([self, other])

    def to_table(self):
        """The records as an Arrow table: one row per clip, the classes in its metadata."""
        import pyarrow as pa

        vectors = pa.list_(pa.float32())  # typed, so that an empty part joins the others
        table = pa.table({
            "clip_id": pa.array(self.ids.astype(str).tolist(), pa.string()),
            "group": pa.array(self.groups.astype(str).tolist(), pa.string()),
            "edge_proba": pa.array(list(self.edge_proba.astype(np.float32)), vectors),
            "edge_embedding": pa.array(list(self.edge_embedding.astype(np.float32)), vectors),
            "cloud_proba": pa.array(list(self.cloud_proba.astype(np.float32)), vectors),
            "edge_label": self.edge_label.astype(np.int32),
            "cloud_label": self.cloud_label.astype(np.int32),
            "agree": pa.array(self.agree, pa.bool_()),
            "alignment": self.alignment.astype(np.float32),
            "edge_model": pa.array([self.edge_model] * len(self), pa.string()),
            "cloud_model": pa.array([self.cloud_model] * len(self), pa.string()),
        })
        if self.streams is not None:
            table = table.append_column("stream", pa.array(self.streams.tolist(), pa.string()))
            table = table.append_column("t", pa.array(self.t, pa.float64()))
        return table.replace_schema_metadata(
            {"edgeswitch.classes": json.dumps(list(self.classes)), DATASET: self.dataset})

    def to_parquet(self, path: str | Path) -> Path:
        """One file, written atomically (a temp file, then rename)."""
        import pyarrow.parquet as pq

        path = Path(path)
        if path.is_dir():
            raise DataError(f"{path} is a folder; give a file name for the DMD records")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(self.to_table(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def from_parquet(cls, path: str | Path) -> DMDRecords:
        """One Parquet file, or the folder of a sharded `distill` run (see dmd.parts)."""
        import pyarrow.parquet as pq

        if Path(path).is_dir():
            from edgeswitch.dmd.parts import read_table

            return cls.from_table(read_table(path), str(path))
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
        ids = col("clip_id").to_pylist()
        for name in ("clip_id", "group"):
            no_nulls(col(name).to_pylist(), name, ids, where)
        try:
            classes = tuple(json.loads(meta[b"edgeswitch.classes"]))
        except ValueError:
            raise DataError(f"{where}: the classes in its metadata are not JSON") from None
        return cls(
            ids=np.asarray(ids, dtype=str),
            groups=np.asarray(col("group").to_pylist(), dtype=str),
            edge_proba=list_matrix(col("edge_proba"), "edge_proba", ids, where),
            edge_embedding=list_matrix(col("edge_embedding"), "edge_embedding", ids, where),
            cloud_proba=list_matrix(col("cloud_proba"), "cloud_proba", ids, where),
            classes=classes,
            edge_model=col("edge_model")[0].as_py(), cloud_model=col("cloud_model")[0].as_py(),
            dataset=meta.get(DATASET, b"").decode(),  # files from before records named it: ""
            **_stream_columns(table, ids, where),
        )


def _stream_columns(table, ids: list, where: str) -> dict:
    """The optional `stream` and `t` columns (both or neither), checked."""
    names = set(table.column_names)
    if not ({"stream", "t"} & names):
        return {}
    if not {"stream", "t"} <= names:
        raise DataError(f"{where}: has {'stream' if 'stream' in names else 't'} without "
                        f"{'t' if 'stream' in names else 'stream'} (they go together)")
    streams = table.column("stream").to_pylist()
    no_nulls(streams, "stream", ids, where)
    t = table.column("t").to_pylist()
    no_nulls(t, "t", ids, where)
    t = np.asarray(t, dtype=np.float64)
    if not np.isfinite(t).all():
        i = int(np.argmax(~np.isfinite(t)))
        raise DataError(f"{where}: {row_name(i, ids)}: t is NaN or inf")
    return {"streams": np.asarray(streams, dtype=str), "t": t}


def join(parts: list[DMDRecords]) -> DMDRecords:
    """Records sets one after the other (same models and classes), in one copy. Their data
    set is the parts' own if they share one, else unknown ("")."""
    first = parts[0]
    for other in parts[1:]:
        if (other.classes, other.edge_model, other.cloud_model) != \
                (first.classes, first.edge_model, first.cloud_model):
            raise DataError("DMD records of different models or classes cannot be joined")
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    timed = all(p.streams is not None for p in parts)
    datasets = {p.dataset for p in parts}
    return DMDRecords(cat("ids"), cat("groups"), cat("edge_proba"), cat("edge_embedding"),
                      cat("cloud_proba"), first.classes, first.edge_model, first.cloud_model,
                      datasets.pop() if len(datasets) == 1 else "",
                      cat("streams") if timed else None, cat("t") if timed else None)
