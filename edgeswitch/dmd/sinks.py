"""Sinks for the DMD runner (dmd.runner): where the records of finished units go.

`MemorySink`: every unit's records joined in memory (`records`), to use or write as one
Parquet file. `FolderSink`: a folder of Parquet parts, one per unit, which a rerun resumes.

A folder's parts are written atomically (temp file, then rename), so a run killed at any
instant leaves every part whole or absent. A manifest, written before any part, pins the
corpus (paths, sizes, mtimes, each shard's clip ids), the models and the batch size. A restart
keeps a part only if its clip ids and model names are the plan's, and computes the rest: a
resumed run holds exactly the records of an uninterrupted one, each clip id once. One run at a
time may write a folder (a lock, released by the OS if the run dies). The folder's format and
its reading are dmd.parts.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from edgeswitch.dmd.corpus import Shard
from edgeswitch.dmd.parts import FAILED_CLIPS, FORMAT, MANIFEST, marker, part_ok, read_manifest
from edgeswitch.dmd.records import DMDRecords, join
from edgeswitch.dmd.runner import Identity, Plan
from edgeswitch.errors import DataError, EdgeSwitchError


class MemorySink:
    """The records of every unit, in plan order, in memory; failures by input and clip."""

    def __init__(self) -> None:
        self._parts: list[DMDRecords] = []
        self.failed_units: dict[str, str] = {}
        self.failed_clips: dict[str, str] = {}

    @contextmanager
    def open(self, plan: Plan, identity: Identity, batch_size: int) -> Iterator[list[Shard]]:
        yield list(plan.units)  # nothing is kept between runs: every unit is pending

    def write(self, unit: Shard, records: DMDRecords, failed: list[list]) -> None:
        self._parts.append(records)
        self.failed_clips.update({c[1]: c[2] for c in failed})

    def fail(self, unit: Shard, reason: str) -> None:
        self.failed_units[unit.path] = reason

    def stopped(self) -> str:
        return "nothing was written"

    @property
    def records(self) -> DMDRecords:
        """All records; DataError if no clip has both answers."""
        kept = [r for r in self._parts if len(r)]
        if not kept:
            raise DataError(f"no clip has both answers: unreadable inputs "
                            f"{self.failed_units or 'none'}; clips without a cloud answer "
                            f"{list(self.failed_clips.items())[:3] or 'none'}")
        return join(kept)


class FolderSink:
    """A folder of Parquet parts with a manifest: atomic, resumable, one writer at a time.
    It pickles (Ray's workers write the parts); the lock stays with the driver."""

    def __init__(self, out: str | Path, dataset: str = "") -> None:
        self.out = Path(out)
        self.dataset = dataset  # the data set every part's records name
        if self.out.suffix == ".parquet" or (self.out.exists() and not self.out.is_dir()):
            raise EdgeSwitchError(f"--out {self.out}: a sharded run writes a folder, not a file")

    @contextmanager
    def open(self, plan: Plan, identity: Identity, batch_size: int) -> Iterator[list[Shard]]:
        """The units still to do, with the folder locked for this run. Writes the manifest on
        a fresh folder; on an existing one, refuses a different corpus, models or batch size,
        deletes dead temp files and keeps only parts that check out."""
        out = self.out
        manifest = {"format": FORMAT, **asdict(identity), **plan.settings,
                    "batch_size": batch_size, "shards": len(plan.units), "clips": plan.clips,
                    "inputs": plan.inputs, "shard_ids": [s.ids for s in plan.units]}
        manifest["classes"] = list(identity.classes)
        out.mkdir(parents=True, exist_ok=True)
        with _lock(out):
            old = read_manifest(out)
            if old is not None:
                diff = [k for k in manifest if old.get(k) != manifest[k]]
                if diff:
                    raise EdgeSwitchError(f"{out} holds a run with a different "
                                          f"{', '.join(diff)}; resume only with the same "
                                          "corpus, models, shard and batch size, or write to "
                                          "a new folder")
            else:
                if any(out.glob("part-*.parquet")):
                    raise EdgeSwitchError(f"{out} holds part files but no {MANIFEST}; use a "
                                          "new folder")
                _atomic_text(out / MANIFEST, json.dumps(manifest, indent=1))
            for dead in out.glob(".*.tmp-*"):  # a killed writer's leftovers (we hold the lock)
                dead.unlink(missing_ok=True)
            yield [s for s in plan.units if not part_ok(out / s.part, s, manifest)]

    def write(self, unit: Shard, records: DMDRecords, failed: list[list]) -> None:
        """The unit's part; clips without a cloud answer are listed in its metadata."""
        import pyarrow.parquet as pq

        table = replace(records, dataset=self.dataset).to_table()
        if failed:
            meta = dict(table.schema.metadata or {})
            meta[FAILED_CLIPS] = json.dumps(failed)
            table = table.replace_schema_metadata(meta)
        tmp = _temp(self.out / unit.part)
        pq.write_table(table, tmp)
        tmp.replace(self.out / unit.part)

    def fail(self, unit: Shard, reason: str) -> None:
        """A unit whose input cannot be read is done: a marker says why."""
        _atomic_text(marker(self.out / unit.part), json.dumps({"path": unit.path,
                                                               "reason": reason}))

    def stopped(self) -> str:
        return (f"the finished units are kept in {self.out}: run the same command again to "
                "resume")


def _temp(path: Path) -> Path:
    """A temp name unique to this writer; a killed writer leaves only a `.tmp-*` file, which
    the next run deletes."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")


def _atomic_text(path: Path, text: str) -> Path:
    tmp = _temp(path)
    tmp.write_text(text)
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
