"""Recorded model outputs: the benchmark on any model pair's outputs, with no training.

An outputs file (Parquet; CSV with lists as JSON; JSON lines) has one row per clip, schema in
docs/formats.md: `clip_id`, `group`, `label` (null: unlabelled, so only pool or calib),
`edge_proba` and `cloud_proba` (in the order of the classes: a `classes` metadata entry or
column, or `edge_classes` and `cloud_classes`), and optionally `stream` and `t`,
`edge_embedding`, `members_proba` (extra edge models, for Agreement-Based Cascading), per-clip
costs (`edge_macs` and `cloud_macs`, or `edge_ms` and `cloud_ms`; `members_...` for the
ensemble), and `fold` with `part` (a fixed assignment, as `benchmark --write-outputs` writes:
one row per clip per fold, since each fold's models are its own).

Without `fold`, folds deal the groups as on clips: the groups whose clips all carry a label
are the test candidates (every one tested once per repeat), the others are dealt to pool and
calib with them by the split shares. Nothing is trained: a fold is its `FoldOutputs`, and the
evaluation is the one every benchmark runs (benchmark.evaluate).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.benchmark.folds import Fold, deal_folds
from edgeswitch.benchmark.outputs import PARTS, FoldOutputs
from edgeswitch.data.columns import list_matrix, no_nulls, row_name
from edgeswitch.data.splits import SPLITS
from edgeswitch.errors import DataError

PROBA_TOL = 1e-3     # a probability row must sum to 1 within this
FILE_PARTS = (*PARTS, "aug")  # "aug": rotated views of pool clips (DMD records, no label)
COSTS = {"macs": ("edge_macs", "cloud_macs", "members_macs"),
         "ms": ("edge_ms", "cloud_ms", "members_ms")}
CLASSES_KEY = b"edgeswitch.classes"
META_KEY = b"edgeswitch.outputs"   # JSON: streams, folds, the run's data set (written files)


@dataclass
class RecordedOutputs:
    """Every row of an outputs file, checked. `labels` is -1 where a clip has none."""

    name: str
    classes: tuple[str, ...]
    ids: np.ndarray
    groups: np.ndarray
    labels: np.ndarray
    edge: np.ndarray                 # [n, K]
    cloud: np.ndarray                # [n, K]
    embedding: np.ndarray            # [n, E] (E = 0 without the column)
    members: np.ndarray | None       # [n, k, K] extra edge models
    streams: np.ndarray | None       # [n] stream names
    t: np.ndarray | None             # [n]
    costs: dict | None               # {"unit", "edge", "cloud", "members"}: means per clip
    fold: np.ndarray | None          # [n] fixed assignment ...
    part: np.ndarray | None          # [n] ... pool / calib / test / aug
    meta: dict                       # META_KEY's contents ({} for a user's file)
    digest: str                      # of the file's bytes: the key of cached fold figures
    stream_kind: str                 # the writer's `streams` setting, "file" (a `stream`
                                     # column), "group" (a group's clips in `t` order), "none"

    def __len__(self) -> int:
        return len(self.ids)

    # -- folds ------------------------------------------------------------------------------
    def folds(self, n_folds: int, repeats: int, seed: int, shares: tuple[float, ...]
              ) -> list[Fold]:
        """The file's own folds (`fold` and `part`), else folds dealt by group: every group
        with a label on each clip tested once per repeat, the rest pool or calib."""
        if self.fold is not None:
            return self._fixed_folds(seed)
        unlabelled = set(self.groups[self.labels < 0].tolist())
        testable = np.asarray(sorted(set(self.groups.tolist()) - unlabelled))
        return deal_folds(np.unique(self.groups), testable, n_folds, repeats, seed,
                          (0.0, *shares[1:3]), self.name, train=False)

    def _fixed_folds(self, seed: int) -> list[Fold]:
        stored = {int(f["index"]): f for f in self.meta.get("folds", [])}
        out = []
        for index in np.unique(self.fold).tolist():
            rows = self.fold == index
            groups = {s: sorted(set(self.groups[rows & (self.part == s)].tolist()))
                      for s in SPLITS}
            info = stored.get(index, {})
            groups["train"] = list(info.get("groups", {}).get("train", []))
            for part in PARTS:
                if not groups[part]:
                    raise DataError(f"{self.name}: fold {index} has no {part} row")
            unlabelled = np.nonzero(rows & (self.part == "test") & (self.labels < 0))[0]
            if len(unlabelled):
                raise DataError(f"{self.name}: {row_name(int(unlabelled[0]), self.ids)} is in "
                                f"fold {index}'s test part but has no label (a test clip "
                                "needs one)")
            out.append(Fold(index=len(out), repeat=int(info.get("repeat", 0)),
                            seed=int(info.get("seed", seed + index)), groups=groups))
        return out

    def fold_outputs(self, fold: Fold, with_streams: bool = True) -> FoldOutputs:
        """The arrays one fold's evaluation reads, cut from the rows."""
        a: dict[str, np.ndarray] = {}
        for part in (*PARTS, "aug"):
            if self.fold is not None:
                rows = np.nonzero((self.fold == self._fold_value(fold)) & (self.part == part))[0]
            elif part == "aug":
                rows = np.zeros(0, np.int64)
            else:
                rows = np.nonzero(np.isin(self.groups, fold.groups[part]))[0]
            if part == "aug":
                if len(rows):
                    a["edge_aug_p"], a["edge_aug_e"] = self.edge[rows], self.embedding[rows]
                    a["cloud_aug_p"], a["groups_aug"] = self.cloud[rows], self.groups[rows]
                continue
            a[f"edge_{part}_p"], a[f"edge_{part}_e"] = self.edge[rows], self.embedding[rows]
            a[f"cloud_{part}_p"] = self.cloud[rows]
            a[f"groups_{part}"], a[f"ids_{part}"] = self.groups[rows], self.ids[rows]
            if self.members is not None:   # the deployed edge is member 0, as on clips
                a[f"members_{part}_p"] = np.concatenate(
                    [self.edge[rows][None], self.members[rows].transpose(1, 0, 2)])
            if with_streams and self.streams is not None:
                a[f"streams_{part}"], a[f"t_{part}"] = self.streams[rows], self.t[rows]
            if part == "test":
                a["y_test"] = self.labels[rows]
            if part == "pool" and self.pool_labelled:  # for the supervised ablation only
                a["hidden_y_pool"] = self.labels[rows]
        c = self.costs or {"edge": 0.0, "cloud": 0.0, "members": 0.0}
        a["macs"] = np.asarray([c["edge"], c["cloud"], c["members"]], np.float64)
        return FoldOutputs(a, self.classes, None if self.costs is None else self.costs["unit"])

    @property
    def pool_labelled(self) -> bool:
        """Whether every clip that can be a pool clip has a label: then, and in every fold
        alike, the supervised ablation runs (no DMD router reads a pool label)."""
        rows = self.part == "pool" if self.part is not None else slice(None)
        return bool((self.labels[rows] >= 0).all())

    def _fold_value(self, fold: Fold) -> int:
        return int(np.unique(self.fold)[fold.index])


# -- reading ---------------------------------------------------------------------------------
def read_outputs(path: str | Path, labels: str | Path | None = None) -> RecordedOutputs:
    """An outputs file (.parquet, .csv, .jsonl / .json), checked row by row; `labels` (a CSV
    of clip_id,label) adds the labels to a file without them, such as `distill`'s records."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"outputs file not found: {path}")
    table = _read_table(path)
    if labels is not None:
        table = _join_labels(table, Path(labels), str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if labels is not None:
        digest = hashlib.sha256((digest + Path(labels).read_text()).encode()).hexdigest()[:16]
    return from_table(table, path.stem, str(path), digest)


def _read_table(path: Path):
    import pyarrow as pa

    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            return _lists_from_json(pcsv.read_csv(path), str(path))
        if suffix in (".jsonl", ".json", ".ndjson"):
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable {suffix[1:]} outputs file ({exc})") from None
    raise DataError(f"{path}: unknown outputs format {suffix!r}; use .parquet, .csv or .jsonl")


LIST_COLUMNS = ("edge_proba", "cloud_proba", "edge_embedding", "members_proba", "classes",
                "edge_classes", "cloud_classes")


def _lists_from_json(table, where: str):
    """CSV cells of the list columns hold JSON lists: parse them into Arrow lists."""
    import pyarrow as pa

    for name in LIST_COLUMNS:
        if name not in table.column_names or not pa.types.is_string(table.column(name).type):
            continue
        cells = table.column(name).to_pylist()
        values = []
        for i, cell in enumerate(cells):
            try:
                values.append(None if cell in (None, "") else json.loads(cell))
            except ValueError:
                raise DataError(f"{where}: row {i}: {name} is not a JSON list "
                                f"({cell[:40]!r})") from None
        try:
            column = pa.array(values)
        except (pa.ArrowException, TypeError) as exc:
            raise DataError(f"{where}: {name} is not a column of lists of numbers "
                            f"({exc})") from None
        table = table.set_column(table.column_names.index(name), name, column)
    return table


def _join_labels(table, labels: Path, where: str):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    if "label" in table.column_names:
        raise DataError(f"{where} already has a label column; drop --labels or the column")
    try:
        lab = pcsv.read_csv(labels, convert_options=pcsv.ConvertOptions(
            column_types={"clip_id": pa.string(), "label": pa.string()}))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{labels}: not a readable CSV of clip_id,label ({exc})") from None
    if not {"clip_id", "label"} <= set(lab.column_names):
        raise DataError(f"{labels}: needs the columns clip_id and label, has "
                        f"{lab.column_names}")
    given = dict(zip(lab.column("clip_id").to_pylist(), lab.column("label").to_pylist(),
                     strict=True))
    ids = [str(c) for c in table.column("clip_id").to_pylist()] \
        if "clip_id" in table.column_names else []
    unknown = sorted(set(given) - set(ids))
    if unknown:
        raise DataError(f"{labels}: {len(unknown)} clip ids are not in {where}, e.g. "
                        f"{unknown[:3]}")
    return table.append_column("label", pa.array([given.get(c) for c in ids], pa.string()))


def from_table(table, name: str, where: str, digest: str = "") -> RecordedOutputs:
    """Check every column of an outputs table (see the module's docstring)."""
    cols = set(table.column_names)
    missing = [c for c in ("clip_id", "group", "label", "edge_proba", "cloud_proba")
               if c not in cols]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; an outputs file needs clip_id, "
                        "group, label, edge_proba and cloud_proba (docs/formats.md)")
    if len(table) == 0:
        raise DataError(f"{where}: holds no rows")
    meta_raw = table.schema.metadata or {}
    meta = _json_meta(meta_raw, META_KEY, where) or {}
    ids = [None if c is None else str(c) for c in table.column("clip_id").to_pylist()]
    no_nulls(ids, "clip_id", ids, where)
    groups = [None if g is None else str(g) for g in table.column("group").to_pylist()]
    no_nulls(groups, "group", ids, where)
    classes = _classes(table, meta_raw, ids, where)
    k = len(classes)
    edge = _proba(table.column("edge_proba"), "edge_proba", k, ids, where)
    cloud = _proba(table.column("cloud_proba"), "cloud_proba", k, ids, where)
    n = len(ids)
    embedding = (list_matrix(table.column("edge_embedding"), "edge_embedding", ids, where,
                             dtype=None) if "edge_embedding" in cols
                 else np.zeros((n, 0), edge.dtype))
    labels = _labels(table.column("label"), classes, ids, where)
    fold, part = _assignment(table, ids, where)
    members = (_members(table, k, ids, where, None if part is None else part == "aug")
               if "members_proba" in cols else None)
    streams, t = _streams(table, np.asarray(groups), ids, where)
    ids_a = np.asarray(ids, dtype=str)
    key = ids_a if fold is None else np.char.add(np.char.add(fold.astype(str), "/"), ids_a)
    _, first, counts = np.unique(key, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = int(np.sort(first[counts > 1])[0])
        raise DataError(f"{where}: clip_id {ids[dup]!r} appears more than once"
                        + ("" if fold is None else " in one fold"))
    return RecordedOutputs(
        name=name, classes=classes, ids=ids_a, groups=np.asarray(groups, dtype=str),
        labels=labels, edge=edge, cloud=cloud, embedding=embedding, members=members,
        streams=streams, t=t, costs=_costs(table, 0 if members is None else members.shape[1],
                                           ids, where),
        fold=fold, part=part, meta=meta, digest=digest,
        stream_kind="none" if streams is None else
        meta.get("streams", "file" if "stream" in cols else "group"))


def _json_meta(meta: dict, key: bytes, where: str):
    if key not in meta:
        return None
    try:
        return json.loads(meta[key])
    except ValueError:
        raise DataError(f"{where}: its {key.decode()!r} metadata is not JSON") from None


def _class_list(table, meta: dict, name: str, ids: list, where: str) -> list[str] | None:
    """A class list from the metadata (`edgeswitch.classes` or `name`) or a column."""
    keys = (CLASSES_KEY, b"classes") if name == "classes" else (name.encode(),)
    for key in keys:
        value = _json_meta(meta, key, where)
        if value is not None:
            return _names(value, f"the {key.decode()!r} metadata", where)
    if name not in table.column_names:
        return None
    rows = table.column(name).to_pylist()
    first = rows[0]
    for i, r in enumerate(rows):
        if r != first:
            raise DataError(f"{where}: {row_name(i, ids)}: column {name} is {r}, row 0 has "
                            f"{first} (one class list for the whole file)")
    return _names(first, f"column {name}", where)


def _names(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise DataError(f"{where}: {what} must be a list of class names, got {value!r}")
    if len(set(value)) != len(value):
        raise DataError(f"{where}: {what} names a class twice: {value}")
    return value


def _classes(table, meta: dict, ids: list, where: str) -> tuple[str, ...]:
    both = _class_list(table, meta, "classes", ids, where)
    edge = _class_list(table, meta, "edge_classes", ids, where) or both
    cloud = _class_list(table, meta, "cloud_classes", ids, where) or both
    if edge is None or cloud is None:
        raise DataError(f"{where}: no class list; give a 'classes' metadata entry (JSON list) "
                        "or column, in the order of the probability columns")
    if edge != cloud:
        how = " (the same classes in another order)" if set(edge) == set(cloud) else ""
        raise DataError(f"{where}: the edge model's classes {edge} differ from the cloud "
                        f"model's {cloud}{how}; both probability columns need one class list")
    return tuple(edge)


def _proba(column, name: str, k: int, ids: list, where: str) -> np.ndarray:
    p = list_matrix(column, name, ids, where, dtype=None)
    if p.shape[1] != k:
        raise DataError(f"{where}: {name} has {p.shape[1]} values per row, the class list "
                        f"{k}")
    _check_rows_sum(p, name, ids, where)
    return p


def _check_rows_sum(p: np.ndarray, name: str, ids: list, where: str, per_row: int = 1) -> None:
    neg = (p < -PROBA_TOL).any(axis=1)
    if neg.any():
        i = int(np.argmax(neg))
        raise DataError(f"{where}: {row_name(i // per_row, ids)}: {name} has a negative "
                        f"probability ({p[i].min():.4g})")
    s = p.sum(axis=1)
    bad = np.abs(s - 1) > PROBA_TOL
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: {row_name(i // per_row, ids)}: {name} sums to {s[i]:.6g}, "
                        f"not 1 (tolerance {PROBA_TOL}; {int(bad.sum())} rows so); give "
                        "probabilities, not scores or logits")


def _members(table, k: int, ids: list, where: str, aug: np.ndarray | None) -> np.ndarray:
    """`[n, m, K]`; rotated views (`aug` rows) may have none (null): no ensemble reads them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column("members_proba")
    if not pa.types.is_list(col.type) or not pa.types.is_list(col.type.value_type):
        raise DataError(f"{where}: members_proba must be a list of probability lists (one per "
                        f"extra edge model), got {col.type}")
    null = pc.is_null(col).to_numpy(zero_copy_only=False)
    if (null & (True if aug is None else ~aug)).any():
        i = int(np.argmax(null & (True if aug is None else ~aug)))
        raise DataError(f"{where}: {row_name(i, ids)} has no members_proba (null)")
    if null.any():  # check the rows that have them, and leave zeros where none are read
        have = np.nonzero(~null)[0]
        inner = _members(table.take(have), k, [ids[i] for i in have], where, None)
        out = np.zeros((len(ids), *inner.shape[1:]), inner.dtype)
        out[have] = inner
        return out
    counts = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    m = int(counts[0])
    if m < 1 or (counts != m).any():
        i = int(np.argmax(counts != m)) if m >= 1 else 0
        raise DataError(f"{where}: {row_name(i, ids)}: members_proba holds {counts[i]} models, "
                        f"row 0 {m} (every row the same number, at least 1)")
    inner = list_matrix(pc.list_flatten(col), "members_proba", ids, where, dtype=None,
                        per_row=m)
    if inner.shape[1] != k:
        raise DataError(f"{where}: members_proba has {inner.shape[1]} values per model, the "
                        f"class list {k}")
    _check_rows_sum(inner, "members_proba", ids, where, per_row=m)
    return inner.reshape(len(ids), m, k)


def _labels(column, classes: tuple[str, ...], ids: list, where: str) -> np.ndarray:
    import pyarrow as pa

    values = column.to_pylist()
    out = np.full(len(values), -1, np.int64)
    index = {c: i for i, c in enumerate(classes)}
    integer = pa.types.is_integer(column.type)
    if not (integer or pa.types.is_string(column.type) or pa.types.is_null(column.type)
            or pa.types.is_large_string(column.type)):
        raise DataError(f"{where}: label must hold class names (or class indices), got "
                        f"{column.type}")
    for i, v in enumerate(values):
        if v is None:
            continue
        if integer:
            if not 0 <= v < len(classes):
                raise DataError(f"{where}: {row_name(i, ids)}: label {v} is not a class index "
                                f"(0..{len(classes) - 1})")
            out[i] = v
        elif v in index:
            out[i] = index[v]
        else:
            raise DataError(f"{where}: {row_name(i, ids)}: label {v!r} is not one of the "
                            f"classes {list(classes)}")
    return out


def _assignment(table, ids: list, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    cols = set(table.column_names)
    if not {"fold", "part"} & cols:
        return None, None
    if not {"fold", "part"} <= cols:
        raise DataError(f"{where}: has {'fold' if 'fold' in cols else 'part'} without "
                        f"{'part' if 'fold' in cols else 'fold'} (they go together)")
    fold, part = table.column("fold").to_pylist(), table.column("part").to_pylist()
    no_nulls(fold, "fold", ids, where)
    no_nulls(part, "part", ids, where)
    for i, (f, p) in enumerate(zip(fold, part, strict=True)):
        if not isinstance(f, int) or f < 0:
            raise DataError(f"{where}: {row_name(i, ids)}: fold must be an integer >= 0, "
                            f"got {f!r}")
        if p not in FILE_PARTS:
            raise DataError(f"{where}: {row_name(i, ids)}: part must be one of "
                            f"{list(FILE_PARTS)}, got {p!r}")
    return np.asarray(fold, np.int64), np.asarray(part, dtype=str)


def _streams(table, groups: np.ndarray, ids: list, where: str
             ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """`stream` (else, with `t`, each group is a stream) and `t` (else the row order)."""
    cols = set(table.column_names)
    t = None
    if "t" in cols:
        values = table.column("t").to_pylist()
        no_nulls(values, "t", ids, where)
        try:
            t = np.asarray(values, np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: t must hold numbers (seconds)") from None
        if not np.isfinite(t).all():
            i = int(np.argmax(~np.isfinite(t)))
            raise DataError(f"{where}: {row_name(i, ids)}: t is NaN or inf")
    if "stream" not in cols:
        return (None, None) if t is None else (groups, t)
    streams = [None if s is None else str(s) for s in table.column("stream").to_pylist()]
    no_nulls(streams, "stream", ids, where)
    return np.asarray(streams, dtype=str), (np.arange(len(ids), dtype=np.float64)
                                            if t is None else t)


def _costs(table, n_members: int, ids: list, where: str) -> dict | None:
    cols = set(table.column_names)
    units = [u for u, names in COSTS.items() if set(names[:2]) & cols]
    if not units:
        return None
    if len(units) > 1:
        raise DataError(f"{where}: costs in MACs and in ms; give one unit")
    unit = units[0]
    edge_c, cloud_c, members_c = COSTS[unit]
    if not {edge_c, cloud_c} <= cols:
        raise DataError(f"{where}: {edge_c} and {cloud_c} go together")
    out = {"unit": unit}
    for key, name in (("edge", edge_c), ("cloud", cloud_c), ("members", members_c)):
        if name not in cols:
            continue
        values = table.column(name).to_pylist()
        no_nulls(values, name, ids, where)
        v = np.asarray(values, np.float64)
        if not np.isfinite(v).all() or (v < 0).any():
            i = int(np.argmax(~np.isfinite(v) | (v < 0)))
            raise DataError(f"{where}: {row_name(i, ids)}: {name} must be a finite number "
                            f">= 0, got {values[i]!r}")
        out[key] = float(v.mean())
    if out["cloud"] <= 0:
        raise DataError(f"{where}: {cloud_c} is 0 on every row; the compute axis needs the "
                        "cloud's cost")
    # the ensemble (the deployed edge and the extra members) costs k edge models without one
    out.setdefault("members", out["edge"] * (1 + n_members))
    return out


# -- writing ---------------------------------------------------------------------------------
def write_outputs_file(path: str | Path, folds: list[tuple[Fold, FoldOutputs]], cfg) -> Path:
    """Every fold's model outputs of a run on clips as one outputs file (`fold` and `part`
    fixed): `benchmark --outputs` on it scores exactly what the run on clips scored."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if path.suffix.lower() not in (".parquet", ".pq"):
        raise DataError(f"--write-outputs writes Parquet: give a .parquet file, not {path}")
    classes = folds[0][1].classes
    tables = []
    for fold, o in folds:
        for part in FILE_PARTS:
            if part == "aug" and "edge_aug_p" not in o.arrays:
                continue
            tables.append(_part_table(fold, o, part, classes))
    table = pa.concat_tables(tables)
    meta = {"streams": cfg.streams, "dataset": cfg.dataset,
            "folds": [f.to_dict() for f, _ in folds],
            "written_by": "edgeswitch benchmark --write-outputs"}
    table = table.replace_schema_metadata({CLASSES_KEY: json.dumps(list(classes)),
                                           META_KEY: json.dumps(meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)  # atomic: never half a file under the real name
    return path


def _part_table(fold: Fold, o: FoldOutputs, part: str, classes: tuple[str, ...]):
    import pyarrow as pa

    aug = part == "aug"
    edge, emb, cloud = (o[f"{m}_{part}_{x}"] for m, x in (("edge", "p"), ("edge", "e"),
                                                          ("cloud", "p")))
    n = len(edge)
    labels = {"test": o.arrays.get("y_test"), "pool": o.arrays.get("hidden_y_pool")}.get(part)
    cols = {
        "fold": pa.array(np.full(n, fold.index, np.int64)),
        "part": pa.array([part] * n, pa.string()),
        "clip_id": pa.array([f"aug:{j}" for j in range(n)] if aug
                            else o[f"ids_{part}"].astype(str).tolist(), pa.string()),
        "group": pa.array(o[f"groups_{part}"].astype(str).tolist(), pa.string()),
        "label": pa.array([None] * n if labels is None
                          else [classes[int(y)] if y >= 0 else None for y in labels],
                          pa.string()),
        "stream": pa.array([""] * n if aug or f"streams_{part}" not in o.arrays
                           else o[f"streams_{part}"].astype(str).tolist(), pa.string()),
        "t": pa.array(np.zeros(n) if aug or f"t_{part}" not in o.arrays
                      else o[f"t_{part}"].astype(np.float64)),
        "edge_proba": _lists(edge), "cloud_proba": _lists(cloud), "edge_embedding": _lists(emb),
    }
    if "members_pool_p" in o.arrays:  # the extra edge models (member 0 is the edge itself)
        extra = None if aug else o[f"members_{part}_p"][1:].transpose(1, 0, 2)
        cols["members_proba"] = (pa.nulls(n, pa.list_(pa.list_(pa.from_numpy_dtype(
            edge.dtype)))) if extra is None else _lists(extra))
    if o.cost_unit is not None:
        for key, value in zip(COSTS[o.cost_unit], o["macs"], strict=True):
            cols[key] = pa.array(np.full(n, value, np.float64))
    return pa.table(cols)


def _lists(a: np.ndarray):
    """`[n, ...]` as an Arrow list column per row (nested for 3-D), the dtype kept."""
    import pyarrow as pa

    values = pa.array(np.ascontiguousarray(a).reshape(-1))
    for size in reversed(a.shape[1:]):
        offsets = pa.array(np.arange(0, len(values) + 1, size, dtype=np.int32))
        values = pa.ListArray.from_arrays(offsets, values)
    return values
