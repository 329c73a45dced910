"""DMD over a corpus in shards, written as a folder of Parquet parts that a rerun resumes.

Each shard (see dmd.corpus) becomes one part, written atomically (temp file, then rename), so a
run killed at any instant leaves every part whole or absent. A manifest, written before any
part, pins the corpus (paths, sizes, mtimes, each shard's clip ids), the models and the batch
size. A restart keeps a part only if its clip ids and model names are the plan's, and computes
the rest: a resumed run holds exactly the records of an uninterrupted one, each clip id once.
One run at a time may write a folder (a lock, released by the OS if the run dies).

Both engines call the same `edge_step` / `cloud_step` / `write_part`, with the same batches:
`local` (this process, the default) and `ray` (scale.ray_distill, actor pools on Ray). So they
write identical records for the same input.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.cloud.spec import CloudSpec
from edgeswitch.data.files import corpus_files, is_video
from edgeswitch.dmd.corpus import (
    Shard,
    ShardReader,
    ids_digest,
    plan_shards,
)
from edgeswitch.dmd.records import DMDRecords
from edgeswitch.errors import DataError, EdgeSwitchError
from edgeswitch.models.base import ModelOutput

MANIFEST = "_edgeswitch_dmd.json"
FORMAT = 2


# ---- the steps every engine runs ----------------------------------------------------------

def edge_step(edge, X: np.ndarray, batch_size: int) -> ModelOutput:
    outs = [edge.outputs(X[i:i + batch_size]) for i in range(0, len(X), batch_size)]
    return ModelOutput(proba=np.concatenate([o.proba for o in outs]).astype(np.float32),
                       embedding=np.concatenate([o.embedding for o in outs]).astype(np.float32))


def cloud_step(cloud, X: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([cloud.predict_proba(X[i:i + batch_size])
                           for i in range(0, len(X), batch_size)]).astype(np.float32)


def shard_records(ids: np.ndarray, groups: np.ndarray, edge_out: ModelOutput,
                  cloud_proba: np.ndarray, manifest: dict) -> DMDRecords:
    return DMDRecords(ids=np.asarray(ids).astype(str), groups=np.asarray(groups).astype(str),
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


# ---- a job --------------------------------------------------------------------------------

@dataclass
class VideoWork:
    """For a corpus of videos: how to cut clips, and the cloud by name (video.registry)."""

    clips: object                     # video.source.ClipSpec
    cloud: dict                       # video_cloud(**cloud): spec, url, model, token, ...


@dataclass
class DistillJob:
    corpus: list[str]                 # .npz files or videos: files, folders or globs
    out: str                          # output folder (sharded Parquet dataset)
    edge: str                         # edge ONNX file; for videos a name (video.registry)
    cloud: CloudSpec | None
    shard_size: int = 2048
    batch_size: int = 256             # clips per model call (and per HTTP request)
    video: VideoWork | None = None    # set for a corpus of videos

    def __post_init__(self) -> None:
        for name in ("shard_size", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise EdgeSwitchError(f"{name.replace('_', '-')} must be an int >= 1, got "
                                      f"{getattr(self, name)!r}")
        out = Path(self.out)
        if out.suffix == ".parquet" or (out.exists() and not out.is_dir()):
            raise EdgeSwitchError(f"--out {out}: a sharded run writes a folder, not a file")


@dataclass
class DistillSummary:
    shards: int
    clips: int | None                 # None for videos until they are decoded
    skipped: int                      # shards already whole from an earlier run
    written: int
    computed_clips: int               # clips this run computed
    seconds: float
    engine: str
    workers: int = 1
    startup_s: float = 0.0            # ray: starting or joining the cluster

    @property
    def clips_per_s(self) -> float:
        """Clips computed by this run per second of work (start-up excluded)."""
        work = self.seconds - self.startup_s
        return self.computed_clips / work if work > 0 else float("nan")


def build_edge(job: DistillJob, edge_bytes: bytes | None = None):
    """The edge model as a worker uses it: the ONNX file (or its bytes), or a video model."""
    if job.video is not None:
        from edgeswitch.video.registry import video_edge

        return video_edge(job.edge)
    from edgeswitch.models import OnnxClassifier

    return OnnxClassifier(edge_bytes or job.edge)


def build_cloud(job: DistillJob, classes: tuple[str, ...], cloud_bytes: bytes | None = None):
    """The cloud client as a worker uses it (anything with `predict_proba`)."""
    if job.video is not None:
        from edgeswitch.video.registry import video_cloud

        return video_cloud(**job.video.cloud, classes=tuple(classes))
    return job.cloud.build(tuple(classes), cloud_bytes)


def _models(job: DistillJob) -> tuple[tuple[str, ...], str, str]:
    from edgeswitch.models import OnnxClassifier, check_same_classes
    from edgeswitch.models.base import model_identity

    if job.video is not None:
        edge = build_edge(job)
        cloud = build_cloud(job, edge.classes_)
        check_same_classes(edge, cloud)
        url = job.video.cloud.get("url")
        if hasattr(cloud, "close"):
            cloud.close()
        return (tuple(edge.classes_), model_identity(edge),
                model_identity(cloud) + (f"#{url}" if url else ""))
    edge = OnnxClassifier(job.edge)
    if job.cloud.model is None:
        return tuple(edge.classes_), model_identity(edge), job.cloud.identity()
    cloud = OnnxClassifier(job.cloud.model)
    check_same_classes(edge, cloud)
    return tuple(edge.classes_), model_identity(edge), model_identity(cloud)


class ShardFailed(Exception):
    """A shard's input cannot be read (a corrupt video): recorded, and the run goes on."""


def read_shard(job: DistillJob, shard: Shard, reader: ShardReader | None):
    """(model input, clip ids, groups) of a shard: clips [n, T, C], or video clips."""
    if not shard.video:
        clips = reader(shard)
        return clips.X, np.asarray(clips.ids).astype(str), np.asarray(clips.groups).astype(str)
    from edgeswitch.data.clips import model_input
    from edgeswitch.video.source import VideoError, iter_clips

    try:
        clips = list(iter_clips(shard.path, job.video.clips, name=shard.path))
    except VideoError as exc:
        raise ShardFailed(str(exc)) from None
    if not clips:
        raise ShardFailed(f"{shard.path}: shorter than one clip")
    return (model_input(clips), np.asarray([c.clip_id for c in clips]),
            np.asarray([c.source for c in clips]))


def write_failed(out: Path, shard: Shard, reason: str) -> Path:
    """A shard whose input cannot be read is done: a marker says why (atomic, like parts)."""
    path = Path(out) / shard.part.replace(".parquet", ".failed.json")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    tmp.write_text(json.dumps({"path": shard.path, "reason": reason}))
    return tmp.replace(path)


@contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One writer per folder. flock dies with its process, so a killed run leaves no lock."""
    with open(out / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgeSwitchError(f"another distill run is writing {out}; wait for it or use "
                                  "another folder") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt manifest ({exc}); use a new folder") from None
    need = {"format", "classes", "edge_model", "cloud_model", "shards", "shard_ids"}
    if not isinstance(manifest, dict) or not need <= manifest.keys():
        raise DataError(f"{path}: corrupt manifest (keys {sorted(need)} expected); use a new "
                        "folder")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: manifest format {manifest.get('format')}, this version "
                        f"reads {FORMAT}; use a new folder")
    return manifest


@contextmanager
def open_run(job: DistillJob) -> Iterator[tuple[dict, list[Shard], list[Shard]]]:
    """(manifest, all shards, shards still to do), with the folder locked for this run.
    Writes the manifest on a fresh folder; on an existing one, refuses a different corpus,
    models or batch size, deletes dead temp files and keeps only parts that check out."""
    out = Path(job.out)
    files = corpus_files(job.corpus)
    if is_video(files[0]) != (job.video is not None):
        raise EdgeSwitchError("a corpus of videos needs video models (--edge nfd ...), and "
                              ".npz clips need ONNX models")
    shards, inputs = plan_shards(files, job.shard_size)
    classes, edge_id, cloud_id = _models(job)
    manifest = {"format": FORMAT, "classes": list(classes), "edge_model": edge_id,
                "cloud_model": cloud_id, "shard_size": job.shard_size,
                "batch_size": job.batch_size, "shards": len(shards),
                "clips": None if job.video else sum(i["clips"] for i in inputs),
                "inputs": inputs,
                "shard_ids": [s.ids for s in shards]}
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        old = _read_manifest(out)
        if old is not None:
            diff = [k for k in manifest if old.get(k) != manifest[k]]
            if diff:
                raise EdgeSwitchError(f"{out} holds a run with a different {', '.join(diff)}; "
                                      "resume only with the same corpus, models, shard and "
                                      "batch size, or write to a new folder")
        else:
            if any(out.glob("part-*.parquet")):
                raise EdgeSwitchError(f"{out} holds part files but no {MANIFEST}; use a new "
                                      "folder")
            tmp = out / f".{MANIFEST}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(manifest, indent=1))
            tmp.replace(out / MANIFEST)
        for dead in out.glob(".*.tmp-*"):  # a killed writer's leftovers (we hold the lock)
            dead.unlink(missing_ok=True)
        todo = [s for s in shards if not _part_ok(out / s.part, s, manifest)]
        yield manifest, shards, todo


def _check_part(table, shard: Shard, manifest: dict) -> str | None:
    """Why a part's table is not this shard's records, or None."""
    ids = table.column("clip_id").to_pylist()
    if shard.video:  # the clips of one video, named after it
        if not ids or any(not i.startswith(shard.path + "@") for i in ids):
            return f"its clip ids are not those of {shard.path}"
    elif len(table) != shard.size:
        return f"{len(table)} rows, the shard has {shard.size}"
    elif ids_digest(ids) != shard.ids:
        return "its clip ids are not the shard's"
    for key in ("edge_model", "cloud_model"):
        if set(table.column(key).to_pylist()) != {manifest[key]}:
            return f"its {key} is not {manifest[key]}"
    return None


def _part_ok(path: Path, shard: Shard, manifest: dict) -> bool:
    import pyarrow.parquet as pq

    if path.with_name(path.name.replace(".parquet", ".failed.json")).exists():
        return True  # done: its input could not be read (see failures())
    if not path.exists():
        return False
    try:
        table = pq.read_table(path, columns=["clip_id", "edge_model", "cloud_model"])
    except Exception:  # noqa: BLE001 - unreadable part: redo it
        table = None
    if table is None or _check_part(table, shard, manifest) is not None:
        path.unlink(missing_ok=True)
        return False
    return True


def run_local(job: DistillJob, progress: bool = True) -> DistillSummary:
    """The embedded engine: every pending shard in this process, in order."""
    from tqdm.auto import tqdm


    t0 = time.perf_counter()
    with open_run(job) as (manifest, shards, todo):
        computed = 0
        if todo:
            edge = build_edge(job)
            cloud = build_cloud(job, edge.classes_)
            read = ShardReader(edge.classes_)
            try:
                for shard in tqdm(todo, desc="DMD shards", disable=not progress, leave=False):
                    try:
                        X, ids, groups = read_shard(job, shard, read)
                    except ShardFailed as exc:
                        write_failed(Path(job.out), shard, str(exc))
                        continue
                    e = edge_step(edge, X, job.batch_size)
                    c = cloud_step(cloud, X, job.batch_size)
                    write_part(Path(job.out), shard, shard_records(ids, groups, e, c, manifest))
                    computed += len(ids)
            finally:
                if hasattr(cloud, "close"):
                    cloud.close()
    return DistillSummary(len(shards), manifest["clips"], len(shards) - len(todo), len(todo),
                          computed, time.perf_counter() - t0, "local")


# ---- reading a finished run ---------------------------------------------------------------

def _finished_parts(folder: Path) -> tuple[dict, list[Path]]:
    manifest = _read_manifest(folder)
    if manifest is None:
        raise DataError(f"{folder}: not a sharded DMD run (no {MANIFEST})")
    parts = [folder / f"part-{i:06d}.parquet" for i in range(manifest["shards"])]
    failed = [p for p in parts if p.with_name(p.name.replace(".parquet", ".failed.json"))
              .exists()]
    missing = [p for p in parts if not p.exists() and p not in failed]
    if missing:
        raise DataError(f"{folder}: unfinished run, {len(missing)} of {len(parts)} shards "
                        "missing; run the same `edgeswitch distill` again to resume")
    kept = [p for p in parts if p not in failed]
    if not kept:
        raise DataError(f"{folder}: no shard could be read: {failures(folder)}")
    return manifest, kept


def failures(folder: str | Path) -> dict[str, str]:
    """Inputs of a sharded run that could not be read, with the reason."""
    out = {}
    for marker in sorted(Path(folder).glob("part-*.failed.json")):
        info = json.loads(marker.read_text())
        out[info["path"]] = info["reason"]
    return out


def read_dataset(folder: str | Path) -> DMDRecords:
    """The records of a finished sharded run, in corpus order, each part checked against the
    manifest; refuses an unfinished or tampered one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    manifest, parts = _finished_parts(folder)
    try:
        tables = [pq.read_table(p) for p in parts]
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{folder}: unreadable part file ({exc})") from None
    paths = {i: inp["path"] for i, inp in enumerate(manifest["inputs"])}
    for part, table in zip(parts, tables, strict=True):
        i = int(part.stem.split("-")[1])
        digest = manifest["shard_ids"][i]
        path = paths.get(i, "") if digest.startswith("video:") else ""
        why = _check_part(table, Shard(i, path, 0, len(table), digest), manifest)
        if why:
            raise DataError(f"{part}: not this run's shard {i}: {why}")
    table = pa.concat_tables(tables)
    return DMDRecords.from_table(table.replace_schema_metadata(tables[0].schema.metadata),
                                 str(folder))


def agreement(folder: str | Path) -> float:
    """Edge/cloud agreement of a finished run, reading one column of each part."""
    import pyarrow.parquet as pq

    _, parts = _finished_parts(Path(folder))
    agree = [pq.read_table(p, columns=["agree"]).column("agree").to_numpy() for p in parts]
    return float(np.concatenate(agree).mean())


def records_equal(a: DMDRecords, b: DMDRecords) -> bool:
    """Bit-identical records (ids, groups, every array, classes and model names)."""
    return (a.classes == b.classes and a.edge_model == b.edge_model
            and a.cloud_model == b.cloud_model and np.array_equal(a.ids, b.ids)
            and np.array_equal(a.groups, b.groups)
            and all(np.array_equal(getattr(a, k), getattr(b, k))
                    for k in ("edge_proba", "edge_embedding", "cloud_proba")))
