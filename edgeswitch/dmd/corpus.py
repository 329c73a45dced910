"""A corpus of unlabelled clip files, cut into shards: the unit of work, resume and parallelism.

A corpus is a folder (or glob, or list) of `.npz` clip files, labelled or not (labels are never
read), or of videos (one shard per video, cut into clips by its worker). `.npz` shards hold at
most `shard_size` clips and never straddle two files. Planning reads only
each file's header and ids, so it is cheap on a large corpus. A file whose header or ids
cannot be read becomes one shard that carries the reason (`Shard.problem`): the runner records
it as failed and goes on (see dmd.runner). Files of about `shard_size`
clips are best on Ray: a worker loads a whole file to read one of its shards.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.data.clips import ClipBatch
from edgeswitch.data.files import is_video
from edgeswitch.data.loaders import load_npz
from edgeswitch.errors import DataError, EdgeSwitchError


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


def clip_ids(path: Path, n: int) -> list[str]:
    """The file's clip ids (its `ids` array, else the loader's default), reading nothing else."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "ids" not in f.files:
                return [f"{path.stem}/{i:06d}" for i in range(n)]
            ids = f["ids"]
    except ValueError as exc:  # e.g. an object array, which would need pickle
        raise DataError(f"{path}: ids must be an array of strings ({exc})") from None
    if ids.shape != (n,) or len(set(ids.tolist())) != n:
        raise DataError(f"{path}: ids must be {n} unique strings, one per clip, got shape "
                        f"{list(ids.shape)}")
    return [str(i) for i in ids]


def ids_digest(ids: Sequence[str]) -> str:
    """A short fingerprint of a shard's clip ids, in order."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Shard:
    index: int    # position in corpus order; names the part file
    path: str
    start: int
    stop: int
    ids: str = ""  # ids_digest of its clips; "video:..." / "unreadable:..." fingerprint a file
    problem: str = ""  # why the file cannot be read ("" when it can)

    @property
    def part(self) -> str:
        return f"part-{self.index:06d}.parquet"

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def video(self) -> bool:
        return self.ids.startswith("video:")


def _fingerprint(kind: str, f: Path) -> tuple[dict, str]:
    """A file known only by path, size and mtime (a video, an unreadable file): its manifest
    entry, and the shard fingerprint that pins it."""
    st = f.stat()
    entry = {"path": str(f.resolve()), "clips": None, "bytes": st.st_size,
             "mtime_ns": st.st_mtime_ns}
    return entry, f"{kind}:" + ids_digest([entry["path"], str(st.st_size), str(st.st_mtime_ns)])


def plan_shards(files: Sequence[Path], shard_size: int) -> tuple[list[Shard], list[dict]]:
    """Shards in corpus order, and a fingerprint of each input (to refuse a changed corpus).
    Clip ids must be unique across the corpus: records are keyed by them. A file that cannot
    be read is one shard with its `problem`."""
    if shard_size < 1:
        raise EdgeSwitchError(f"shard size must be >= 1, got {shard_size}")
    shards, inputs, seen = [], [], {}
    for f in files:
        if is_video(f):  # one shard per video: its clips are known only once it is decoded
            entry, digest = _fingerprint("video", f)
            inputs.append(entry)
            shards.append(Shard(len(shards), entry["path"], 0, 0, digest))
            continue
        try:
            n = clip_count(f)
            ids = clip_ids(f, n)
        except DataError as exc:  # this file fails, not the corpus (see dmd.runner)
            entry, digest = _fingerprint("unreadable", f)
            inputs.append(entry)
            shards.append(Shard(len(shards), entry["path"], 0, 0, digest, problem=str(exc)))
            continue
        for clip_id in ids:
            other = seen.setdefault(clip_id, f)
            if other != f:
                raise DataError(f"clip id {clip_id!r} is in both {other} and {f}; clip ids "
                                "must be unique across the corpus")
        st = f.stat()
        inputs.append({"path": str(f.resolve()), "clips": n, "bytes": st.st_size,
                       "mtime_ns": st.st_mtime_ns})
        for start in range(0, n, shard_size):
            stop = min(n, start + shard_size)
            shards.append(Shard(len(shards), str(f.resolve()), start, stop,
                                ids_digest(ids[start:stop])))
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
        clips = self._batch.subset(np.arange(shard.start, shard.stop))
        if shard.ids and ids_digest([str(i) for i in clips.ids]) != shard.ids:
            raise DataError(f"{shard.path}: clip ids of clips {shard.start}..{shard.stop} "
                            "differ from the plan; the file changed during the run")
        return clips
