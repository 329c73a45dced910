"""DMD over a corpus of clip files, in shards: the unit of work, of resume and of parallelism.

A corpus is a folder (or glob, or list) of `.npz` clip files, labelled or not: labels are never
read. It is cut into shards of at most `shard_size` clips that never straddle two files. Each
shard becomes one Parquet part in the output folder, written atomically (temp file, then
rename), so a run killed at any instant leaves every part whole or absent. A restart skips the
whole parts: a resumed run holds exactly the records of an uninterrupted one, each clip id once.

Both engines call the same `edge_step` / `cloud_step` / `write_part`, with the same batches:
`local` (this process, the default) and `ray` (edgeswitch.scale.ray_distill, actor pools on a
Ray cluster). So they write identical records for the same input.
"""

from __future__ import annotations

import glob
import io
import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.config import RuntimeConfig
from edgeswitch.data.clips import ClipBatch
from edgeswitch.data.loaders import load_npz
from edgeswitch.dmd.records import DMDRecords
from edgeswitch.errors import DataError, EdgeSwitchError
from edgeswitch.models.base import ModelOutput

MANIFEST = "_edgeswitch_dmd.json"
FORMAT = 1


# ---- the corpus and its shards ------------------------------------------------------------

def corpus_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The `.npz` files of a corpus: a folder (its `*.npz`, sorted), a glob, one file, or a
    list of any of these. Order matters: it is the order of the records."""
    if isinstance(spec, str | Path):
        text = str(spec)
        path = Path(text).expanduser()
        if path.is_dir():
            files = sorted(path.glob("*.npz"))
            if not files:
                raise DataError(f"{path}: the folder holds no .npz clip files")
        elif any(c in text for c in "*?["):
            files = sorted(Path(p) for p in glob.glob(os.path.expanduser(text)))
            if not files:
                raise DataError(f"{text}: the pattern matches no files")
        elif path.is_file():
            files = [path]
        else:
            raise DataError(f"corpus {text}: no such file or folder")
    else:
        files = [f for s in spec for f in corpus_files(s)]
    bad = [f for f in files if f.suffix != ".npz"]
    if bad:
        raise DataError(f"{bad[0]}: corpus files must be .npz (X [n,T,C], optional ids, groups)")
    return files


def clip_count(path: Path) -> int:
    """Clips in an `.npz` from the header of its X array, without reading the data."""
    try:
        with zipfile.ZipFile(path) as z, z.open("X.npy") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, _ = read(f)
    except KeyError:
        raise DataError(f"{path}: missing array 'X'") from None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    if len(shape) != 3:
        raise DataError(f"{path}: X must be [n, T, C], got shape {list(shape)}")
    return int(shape[0])


def _clip_ids(path: Path, n: int) -> list[str]:
    """The file's clip ids (its `ids` array, else the loader's default), reading nothing else."""
    with np.load(path, allow_pickle=False) as f:
        if "ids" not in f.files:
            return [f"{path.stem}/{i:06d}" for i in range(n)]
        ids = f["ids"].astype(str)
    if len(ids) != n or len(set(ids)) != n:
        raise DataError(f"{path}: ids must be {n} unique strings, one per clip")
    return [str(i) for i in ids]


@dataclass(frozen=True)
class Shard:
    index: int    # position in corpus order; names the part file
    path: str
    start: int
    stop: int

    @property
    def part(self) -> str:
        return f"part-{self.index:06d}.parquet"


def plan_shards(files: Sequence[Path], shard_size: int) -> tuple[list[Shard], list[dict]]:
    """Shards in corpus order, and a fingerprint of each input (to refuse a changed corpus)."""
    if shard_size < 1:
        raise EdgeSwitchError(f"shard size must be >= 1, got {shard_size}")
    shards, inputs, seen = [], [], {}
    for f in files:
        n, st = clip_count(f), f.stat()
        for clip_id in _clip_ids(f, n):  # records are keyed by clip id: refuse clashes now
            other = seen.setdefault(clip_id, f)
            if other != f:
                raise DataError(f"clip id {clip_id!r} is in both {other} and {f}; clip ids "
                                "must be unique across the corpus")
        inputs.append({"path": str(f.resolve()), "clips": n, "bytes": st.st_size,
                       "mtime_ns": st.st_mtime_ns})
        for start in range(0, n, shard_size):
            shards.append(Shard(len(shards), str(f.resolve()), start, min(n, start + shard_size)))
    if not shards:
        raise DataError("the corpus holds no clips")
    return shards, inputs


class ShardReader:
    """Reads a shard's clips; keeps the last file, since consecutive shards share it."""

    def __init__(self, classes: tuple[str, ...]) -> None:
        self.classes = tuple(classes)
        self._path, self._batch = None, None

    def __call__(self, shard: Shard) -> ClipBatch:
        if shard.path != self._path:
            batch = load_npz(Path(shard.path), self.classes).without_labels()
            if len(batch) < shard.stop:
                raise DataError(f"{shard.path}: holds {len(batch)} clips, the plan expected "
                                f"{shard.stop}; the file changed during the run")
            self._path, self._batch = shard.path, batch
        return self._batch.subset(np.arange(shard.start, shard.stop))


# ---- the steps every engine runs ----------------------------------------------------------

def edge_step(edge, X: np.ndarray, batch_size: int) -> ModelOutput:
    outs = [edge.outputs(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    return ModelOutput(proba=np.concatenate([o.proba for o in outs]).astype(np.float32),
                       embedding=np.concatenate([o.embedding for o in outs]).astype(np.float32))


def cloud_step(cloud, X: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([cloud.classify(X[i:i + batch_size])
                           for i in range(0, len(X), batch_size)]).astype(np.float32)


def shard_records(clips: ClipBatch, edge_out: ModelOutput, cloud_proba: np.ndarray,
                  manifest: dict) -> DMDRecords:
    return DMDRecords(ids=np.asarray(clips.ids).astype(str),
                      groups=np.asarray(clips.groups).astype(str),
                      edge_proba=edge_out.proba, edge_embedding=edge_out.embedding,
                      cloud_proba=cloud_proba, classes=tuple(manifest["classes"]),
                      edge_model=manifest["edge_model"], cloud_model=manifest["cloud_model"])


def write_part(out: Path, shard: Shard, records: DMDRecords) -> Path:
    """Atomic: a temp name unique to this writer, then rename. A killed writer leaves only
    a `.tmp-*` file, which the next run deletes."""
    tmp = Path(out) / f".{shard.part}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    records.to_parquet(tmp)
    return tmp.replace(Path(out) / shard.part)


def pack(a: np.ndarray) -> bytes:
    """An array as `.npy` bytes (no pickle), to pass between Ray stages."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def unpack(b: bytes) -> np.ndarray:
    return np.load(io.BytesIO(b), allow_pickle=False)


# ---- a job: plan, resume, run, read -------------------------------------------------------

@dataclass
class CloudSpec:
    """How each worker reaches the cloud: an ONNX file loaded in the worker, or a server."""

    model: str | None = None          # ONNX file (the cloud runs in-worker)
    url: str | None = None            # or an `edgeswitch serve-cloud` / OpenAI-compatible URL
    token: str | None = None
    served_model: str | None = None   # model name to ask the server for
    ca_cert: str | None = None        # CA or self-signed certificate to trust (https)
    runtime: RuntimeConfig = field(default_factory=lambda: RuntimeConfig(deadline_ms=60_000))

    def __post_init__(self) -> None:
        if (self.model is None) == (self.url is None):
            raise EdgeSwitchError("give the cloud as an ONNX model file or a server URL, "
                                  "not both or neither")

    def build(self, classes: tuple[str, ...], model_bytes: bytes | None = None):
        """The cloud client (anything with `classify`)."""
        if self.model is not None:
            from edgeswitch.models import OnnxClassifier
            from edgeswitch.runtime.cloud import InProcessCloud

            return InProcessCloud(OnnxClassifier(model_bytes or self.model))
        from edgeswitch.runtime.remote import RemoteCloud

        return RemoteCloud(self.url, classes, self.runtime, token=self.token,
                           model=self.served_model, verify=self.ca_cert or True)


@dataclass
class DistillJob:
    corpus: list[str]                 # .npz files, folders or globs
    out: str                          # output folder (sharded Parquet dataset)
    edge: str                         # edge ONNX file
    cloud: CloudSpec
    shard_size: int = 2048
    batch_size: int = 256             # clips per model call (and per HTTP request)


@dataclass
class DistillSummary:
    shards: int
    clips: int
    skipped: int                      # shards already whole from an earlier run
    written: int
    seconds: float
    engine: str
    workers: int = 1
    startup_s: float = 0.0            # ray: starting or joining the cluster

    @property
    def clips_per_s(self) -> float:
        """Clips computed by this run per second of work (start-up excluded)."""
        done = self.clips * self.written / max(self.shards, 1)
        work = self.seconds - self.startup_s
        return done / work if work > 0 else float("nan")


def _identity(job: DistillJob) -> tuple[tuple[str, ...], str, str]:
    from edgeswitch.dmd.generate import model_identity
    from edgeswitch.models import OnnxClassifier, check_same_classes

    edge = OnnxClassifier(job.edge)
    if job.cloud.model is not None:
        cloud = OnnxClassifier(job.cloud.model)
        check_same_classes(edge, cloud)
        cloud_id = model_identity(cloud)
    else:
        cloud_id = f"remote:{job.cloud.url.rstrip('/')}" + \
            (f"#{job.cloud.served_model}" if job.cloud.served_model else "")
    return tuple(edge.classes_), model_identity(edge), cloud_id


def prepare(job: DistillJob) -> tuple[dict, list[Shard], list[Shard]]:
    """(manifest, all shards, shards still to do). Writes the manifest on a fresh folder;
    on an existing one, refuses a different corpus or models and clears dead temp files."""
    out = Path(job.out)
    if out.suffix == ".parquet" or (out.exists() and not out.is_dir()):
        raise EdgeSwitchError(f"--out {out}: a sharded run writes a folder, not a file")
    shards, inputs = plan_shards(corpus_files(job.corpus), job.shard_size)
    classes, edge_id, cloud_id = _identity(job)
    manifest = {"format": FORMAT, "classes": list(classes), "edge_model": edge_id,
                "cloud_model": cloud_id, "shard_size": job.shard_size, "shards": len(shards),
                "clips": sum(i["clips"] for i in inputs), "inputs": inputs}
    path = out / MANIFEST
    if path.exists():
        old = json.loads(path.read_text())
        diff = [k for k in manifest if old.get(k) != manifest[k]]
        if diff:
            raise EdgeSwitchError(f"{out} holds a run with a different {', '.join(diff)}; "
                                  "resume only with the same corpus, models and shard size, "
                                  "or write to a new folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if any(out.glob("part-*.parquet")):
            raise EdgeSwitchError(f"{out} holds part files but no {MANIFEST}; use a new folder")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(path)
    for dead in out.glob(".part-*.tmp-*"):  # a killed writer's leftovers
        dead.unlink(missing_ok=True)
    todo = [s for s in shards if not _part_ok(out / s.part, s)]
    return manifest, shards, todo


def _part_ok(path: Path, shard: Shard) -> bool:
    import pyarrow.parquet as pq

    if not path.exists():
        return False
    try:
        return pq.ParquetFile(path).metadata.num_rows == shard.stop - shard.start
    except Exception:  # noqa: BLE001 - unreadable part: redo it
        path.unlink(missing_ok=True)
        return False


def run_local(job: DistillJob, progress: bool = True) -> DistillSummary:
    """The embedded engine: every shard in this process, in order."""
    from tqdm.auto import tqdm

    from edgeswitch.models import OnnxClassifier

    t0 = time.perf_counter()
    manifest, shards, todo = prepare(job)
    if todo:
        edge = OnnxClassifier(job.edge)
        cloud = job.cloud.build(edge.classes_)
        read = ShardReader(edge.classes_)
        for shard in tqdm(todo, desc="DMD shards", disable=not progress, leave=False):
            clips = read(shard)
            e = edge_step(edge, clips.X, job.batch_size)
            c = cloud_step(cloud, clips.X, job.batch_size)
            write_part(Path(job.out), shard, shard_records(clips, e, c, manifest))
    return DistillSummary(len(shards), manifest["clips"], len(shards) - len(todo), len(todo),
                          time.perf_counter() - t0, "local")


def read_dataset(folder: str | Path) -> DMDRecords:
    """The records of a finished sharded run, in corpus order; refuses an unfinished one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise DataError(f"{folder}: not a sharded DMD run (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    parts = [folder / f"part-{i:06d}.parquet" for i in range(manifest["shards"])]
    missing = [p for p in parts if not p.exists()]
    if missing:
        raise DataError(f"{folder}: unfinished run, {len(missing)} of {len(parts)} shards "
                        "missing; run the same `edgeswitch distill` again to resume")
    try:
        table = pa.concat_tables([pq.read_table(p) for p in parts])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{folder}: unreadable part file ({exc})") from None
    ids = table.column("clip_id").to_numpy(zero_copy_only=False)
    if len(np.unique(ids)) != len(ids):
        raise DataError(f"{folder}: duplicate clip ids across parts")
    meta = pq.read_schema(parts[0]).metadata
    return DMDRecords.from_table(table.replace_schema_metadata(meta), str(folder))


def records_equal(a: DMDRecords, b: DMDRecords) -> bool:
    """Bit-identical records (ids, groups, every array, classes and model names)."""
    return (a.classes == b.classes and a.edge_model == b.edge_model
            and a.cloud_model == b.cloud_model and np.array_equal(a.ids, b.ids)
            and np.array_equal(a.groups, b.groups)
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("edge_proba", "edge_embedding", "cloud_proba")))


def write_corpus(clips: ClipBatch, out: str | Path, files: int) -> list[Path]:
    """Split clips into `files` unlabelled `.npz` files (ids, groups, classes, X): a corpus as
    devices would upload it. Labels are dropped."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, idx in enumerate(np.array_split(np.arange(len(clips)), files)):
        p = out / f"clips-{i:04d}.npz"
        np.savez(p, X=clips.X[idx].astype(np.float32), ids=np.asarray(clips.ids)[idx].astype(str),
                 groups=np.asarray(clips.groups)[idx].astype(str),
                 classes=np.asarray(clips.classes, dtype=str))
        paths.append(p)
    return paths
