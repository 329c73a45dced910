"""The on-disk form of a sharded DMD run: a folder of Parquet parts, one per shard, pinned by
a manifest. Writing it is `dmd.sinks.FolderSink`; this module reads and checks it, and knows
nothing of `DMDRecords` (records.py reads a folder through `read_table`), so neither imports
the other's user.

A part is the shard's records. Clips the cloud answered unusably are left out of it and
listed, with their position in the shard and the reason, in its metadata
(`edgeswitch.failed_clips`), so the part plus that list is the whole shard. A shard whose
input cannot be read has no part but a marker `part-NNNNNN.failed.json` with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeswitch.dmd.corpus import Shard, ids_digest
from edgeswitch.errors import DataError

MANIFEST = "_edgeswitch_dmd.json"
FORMAT = 2
FAILED_CLIPS = b"edgeswitch.failed_clips"  # part metadata: [[position, clip id, reason], ...]


def marker(part: Path) -> Path:
    """The marker that says a shard's input could not be read."""
    return part.with_name(part.name.replace(".parquet", ".failed.json"))


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
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


def failed_clips(schema) -> list[list]:
    """[[position in the shard, clip id, reason], ...] from a part's schema."""
    raw = (schema.metadata or {}).get(FAILED_CLIPS)
    return json.loads(raw) if raw else []


def check_part(table, shard: Shard, manifest: dict) -> str | None:
    """Why a part's table is not this shard's records, or None."""
    ids = table.column("clip_id").to_pylist()
    failed = failed_clips(table.schema)
    if shard.video:  # the clips of one video, named after it
        every = ids + [c[1] for c in failed]
        if not every or any(not i.startswith(shard.path + "@") for i in every):
            return f"its clip ids are not those of {shard.path}"
    else:
        if len(table) + len(failed) != shard.size:
            return f"{len(table)} rows and {len(failed)} failed clips, the shard has {shard.size}"
        whole = list(ids)
        for position, clip_id, _ in sorted(failed):  # put the failed clips back in their place
            whole.insert(position, clip_id)
        if ids_digest(whole) != shard.ids:
            return "its clip ids are not the shard's"
    for key in ("edge_model", "cloud_model"):
        if len(table) and set(table.column(key).to_pylist()) != {manifest[key]}:
            return f"its {key} is not {manifest[key]}"
    return None


def part_ok(path: Path, shard: Shard, manifest: dict) -> bool:
    """Is this shard done (a part that checks out, or a failure marker)? A part that does not
    check out is deleted, so the run computes it again."""
    import pyarrow.parquet as pq

    if marker(path).exists():
        return True  # done: its input could not be read (see failures())
    if not path.exists():
        return False
    try:
        table = pq.read_table(path, columns=["clip_id", "edge_model", "cloud_model"])
    except Exception:  # noqa: BLE001 - unreadable part: redo it
        table = None
    if table is None or check_part(table, shard, manifest) is not None:
        path.unlink(missing_ok=True)
        return False
    return True


def finished_parts(folder: Path) -> tuple[dict, list[Path]]:
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(f"{folder}: not a sharded DMD run (no {MANIFEST})")
    parts = [folder / f"part-{i:06d}.parquet" for i in range(manifest["shards"])]
    failed = [p for p in parts if marker(p).exists()]
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
    for path in sorted(Path(folder).glob("part-*.failed.json")):
        info = json.loads(path.read_text())
        out[info["path"]] = info["reason"]
    return out


def clip_failures(folder: str | Path) -> dict[str, str]:
    """Clips of a finished sharded run that the cloud answered unusably, with the reason."""
    import pyarrow.parquet as pq

    _, parts = finished_parts(Path(folder))
    return {c[1]: c[2] for p in parts for c in failed_clips(pq.read_schema(p))}


def read_table(folder: str | Path):
    """The records table of a finished sharded run, in corpus order, each part checked against
    the manifest; refuses an unfinished or tampered one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(folder)
    manifest, parts = finished_parts(folder)
    try:
        tables = [pq.read_table(p) for p in parts]
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{folder}: unreadable part file ({exc})") from None
    paths = {i: inp["path"] for i, inp in enumerate(manifest["inputs"])}
    for part, table in zip(parts, tables, strict=True):
        i = int(part.stem.split("-")[1])
        digest = manifest["shard_ids"][i]
        path = paths.get(i, "") if digest.startswith("video:") else ""
        size = len(table) + len(failed_clips(table.schema))
        why = check_part(table, Shard(i, path, 0, size, digest), manifest)
        if why:
            raise DataError(f"{part}: not this run's shard {i}: {why}")
    meta = tables[0].schema.metadata or {}
    return pa.concat_tables([t.replace_schema_metadata(None) for t in tables]) \
        .replace_schema_metadata({k: v for k, v in meta.items() if k != FAILED_CLIPS})


def agreement(folder: str | Path) -> float:
    """Edge/cloud agreement of a finished run, reading one column of each part."""
    import numpy as np
    import pyarrow.parquet as pq

    _, parts = finished_parts(Path(folder))
    agree = [pq.read_table(p, columns=["agree"]).column("agree").to_numpy() for p in parts]
    return float(np.concatenate(agree).mean())
