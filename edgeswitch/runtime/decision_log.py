"""Every hybrid decision, appended to an embedded SQLite database (WAL mode).

One row per clip: when, which clip, what the edge said (label, probabilities, embedding), the
switcher score, offloaded or not, what the cloud said, who answered, whether the answer is
verified and, if not, why; latencies. WAL lets `edgeswitch log` read while a device writes, and
each `append` is one transaction, so a process crash loses no committed decision
(`synchronous=NORMAL`: a power cut may lose the last few; set `durable=True` for FULL).
One log holds one edge model: its rows are DMD data for that model only.

Committed rows live in `FILE-wal` until a checkpoint: `close()` checkpoints, so after a clean
exit the file alone holds every row; after a kill, copy `FILE-wal` with it (SQLite replays it).
`append(before_commit=...)` runs a callback between the insert and the commit (the stream
writes its JSON lines there): if the callback fails nothing is committed.

Opened without `classes` the log is read (`edgeswitch log`): read-only, and refused unless
the file has a decision log's tables, so an unrelated database is never changed.

Rows where the cloud answered are DMD records (`dmd_records()`): the device's own traffic can
retrain its switcher. Offloaded clips are the ones the switcher doubted, a biased sample; set
the hybrid's `shadow_rate` to also send a random share of kept clips to the cloud for the log.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.errors import DataError
from edgeswitch.evaluation.timing import tail_ms

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,              -- unix seconds when the answer was given
    clip_id TEXT NOT NULL,
    grp TEXT NOT NULL,               -- device, subject or recording
    label TEXT NOT NULL,             -- the answer given
    answered_by TEXT NOT NULL,       -- edge | cloud
    verified INTEGER NOT NULL,       -- 0 when the cloud was asked and did not answer in time
    fallback_reason TEXT,            -- a cloud.reasons.FallbackReason: timeout, http_500, ...
    offloaded INTEGER NOT NULL,      -- the router sent it to the cloud
    shadow INTEGER NOT NULL,         -- sent to the cloud for the log only
    score REAL NOT NULL,             -- switcher score (higher = trust the edge)
    edge_label TEXT NOT NULL,
    edge_proba TEXT NOT NULL,        -- JSON list, class order of meta.classes
    edge_embedding BLOB,             -- float32
    cloud_label TEXT,
    cloud_proba TEXT,                -- JSON list
    edge_ms REAL, cloud_ms REAL, total_ms REAL, attempts INTEGER,
    device TEXT,                     -- the credential the cloud server took (NULL: not asked)
    stream TEXT,                     -- the clip's stream (device, camera, recording)
    cloud_age REAL                   -- the state the router read: clips since the stream's
                                     -- cloud last answered (NULL: never)
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (time);
"""
# drift alarms raised and cleared (runtime.drift): created with the first one, so a log without
# alarms is what it was before the table existed; read only where it exists
DRIFT_SCHEMA = """CREATE TABLE IF NOT EXISTS drift (time REAL NOT NULL,
    state TEXT NOT NULL /* 'alarm' or 'clear' */, statistic TEXT NOT NULL, value REAL,
    threshold REAL, window INTEGER)"""


# the columns a reader needs: a log may have more (later versions add columns, never remove)
READ_COLUMNS = {"id", "time", "clip_id", "grp", "label", "answered_by", "verified",
                "fallback_reason", "offloaded", "shadow", "score", "edge_label", "edge_proba",
                "edge_embedding", "cloud_label", "cloud_proba", "edge_ms", "cloud_ms",
                "total_ms", "attempts"}


class LogWriteError(DataError):
    """The log could not take a row (disk full, read-only, locked): the run must stop, since
    going on would give answers the log does not hold."""


@dataclass(frozen=True)
class Decision:
    clip_id: str
    group: str
    label: str
    answered_by: str
    verified: bool
    fallback_reason: FallbackReason | None
    offloaded: bool
    shadow: bool
    score: float
    edge_proba: np.ndarray
    edge_embedding: np.ndarray | None
    cloud_proba: np.ndarray | None
    edge_ms: float
    cloud_ms: float | None
    total_ms: float
    attempts: int
    time: float = 0.0
    device: str | None = None  # the device the cloud server says this client's token is
    stream: str | None = None
    cloud_age: float | None = None  # clips since the stream's cloud last answered (None: never)

    def __post_init__(self) -> None:
        if self.fallback_reason is not None:  # a known reason, or the log's summary lies
            try:
                object.__setattr__(self, "fallback_reason", FallbackReason(self.fallback_reason))
            except ValueError:
                raise DataError(f"unknown fallback reason {self.fallback_reason!r}; use one of "
                                f"{[r.value for r in FallbackReason]}") from None


class DecisionLog:
    def __init__(self, path: str | Path, classes: tuple[str, ...] | None = None,
                 edge_model: str = "", cloud_model: str = "", durable: bool = False) -> None:
        self.path = Path(path)
        self.readonly = classes is None
        self.db = self._open_reader() if self.readonly else self._open_writer(durable)
        self._lock = threading.Lock()
        if classes is not None:  # a writer: a log from before the newer columns gets them
            add_new_columns(self.db, self.path)
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        if classes is not None:
            stored = json.loads(meta["classes"]) if "classes" in meta else None
            if stored is not None and stored != list(classes):
                raise DataError(f"{self.path} logs classes {stored}, not {list(classes)}; use "
                                "a new log for another label set")
            if meta.get("edge_model") and edge_model and meta["edge_model"] != edge_model:
                raise DataError(f"{self.path} logs edge model {meta['edge_model']}, not "
                                f"{edge_model}; use a new log for a new edge model (its rows "
                                "are DMD data for one model only)")
            try:
                with self.db:
                    for k, v in (("classes", json.dumps(list(classes))),
                                 ("edge_model", edge_model), ("cloud_model", cloud_model)):
                        if k not in meta or (v and k != "classes"):
                            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v))
            except sqlite3.Error as exc:
                raise LogWriteError(f"cannot write the decision log {self.path}: {exc}") \
                    from None
        elif "classes" not in meta:
            raise DataError(f"{self.path} holds no decisions (no classes recorded)")
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        self.classes = tuple(json.loads(meta["classes"]))
        self.edge_model, self.cloud_model = meta.get("edge_model", ""), meta.get("cloud_model", "")

    def _open_writer(self, durable: bool) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LogWriteError(f"cannot create the folder of the decision log {self.path}: "
                                f"{exc.strerror}") from None
        try:
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise LogWriteError(f"cannot open the decision log {self.path}: {exc} "
                                f"({_why_unwritable(self.path)})") from None
        try:
            if _tables(db) and not _is_log(db):  # before anything that writes
                raise DataError(f"{self.path} is a database but not a decision log (it has "
                                "other tables); give a new file for --log")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            db.close()
            what = str(exc)
            if "readonly" in what or "disk" in what or "unable to open" in what:
                raise LogWriteError(f"cannot write the decision log {self.path}: {exc} "
                                    f"({_why_unwritable(self.path)})") from None
            raise DataError(f"{self.path} is not a usable decision log: {exc}") from None
        except DataError:
            db.close()
            raise
        return db

    def _open_reader(self) -> sqlite3.Connection:
        """Read-only (SQLite's mode=ro: no schema, no pragma that writes), and refused unless
        the file has a decision log's tables."""
        from urllib.parse import quote

        try:
            db = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True,
                                 timeout=30, check_same_thread=False)
        except sqlite3.Error as exc:
            raise DataError(f"cannot open {self.path} read-only: {exc}") from None
        try:
            ok = _is_log(db)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise DataError(f"{self.path} is not a usable decision log: {exc}") from None
        if not ok:
            db.close()
            raise DataError(f"{self.path} is not an edgeswitch decision log (no meta and "
                            "decisions tables with the log's columns); nothing was changed")
        return db

    def append(self, decisions: list[Decision],
               before_commit: Callable[[], None] | None = None) -> None:
        """All of `decisions` in one transaction. `before_commit` runs after the insert and
        before the commit; if it raises, nothing is committed and its exception propagates."""
        now = time.time()
        rows = [(d.time or now, d.clip_id, d.group, d.label, d.answered_by, int(d.verified),
                 d.fallback_reason and d.fallback_reason.value, int(d.offloaded),
                 int(d.shadow), float(d.score),
                 self.classes[int(np.argmax(d.edge_proba))], _json(d.edge_proba),
                 None if d.edge_embedding is None else
                 np.asarray(d.edge_embedding, "<f4").tobytes(),
                 None if d.cloud_proba is None else self.classes[int(np.argmax(d.cloud_proba))],
                 None if d.cloud_proba is None else _json(d.cloud_proba),
                 d.edge_ms, d.cloud_ms, d.total_ms, d.attempts, d.device, d.stream,
                 d.cloud_age) for d in decisions]
        if self.readonly:
            raise LogWriteError(f"{self.path} was opened to read; it takes no rows")
        try:
            self._insert(rows, before_commit)
        except sqlite3.Error as exc:
            raise LogWriteError(f"{self.path}: cannot log {len(rows)} decisions: {exc}") \
                from None

    def _insert(self, rows: list[tuple], before_commit: Callable[[], None] | None) -> None:
        with self._lock, self.db:
            self.db.executemany(
                "INSERT INTO decisions (time, clip_id, grp, label, answered_by, verified, "
                "fallback_reason, offloaded, shadow, score, edge_label, edge_proba, "
                "edge_embedding, cloud_label, cloud_proba, edge_ms, cloud_ms, total_ms, attempts,"
                " device, stream, cloud_age) VALUES (" + ", ".join("?" * 22) + ")", rows)
            if before_commit is not None:
                before_commit()

    def append_drift(self, when: float, state: str, statistic: str, value: float,
                     threshold: float, window: int) -> None:
        """One drift alarm raised (`alarm`) or cleared (`clear`), in its own transaction."""
        if state not in ("alarm", "clear"):
            raise DataError(f"drift state must be 'alarm' or 'clear', got {state!r}")
        if self.readonly:
            raise LogWriteError(f"{self.path} was opened to read; it takes no rows")
        try:
            with self._lock, self.db:
                self.db.execute(DRIFT_SCHEMA)
                self.db.execute("INSERT INTO drift VALUES (?, ?, ?, ?, ?, ?)",
                                (when, state, statistic, value, threshold, window))
        except sqlite3.Error as exc:
            raise LogWriteError(f"{self.path}: cannot log a drift {state}: {exc}") from None

    def drift_history(self) -> list[dict]:
        """Every drift raise and clear, oldest first (none in a log from before the table)."""
        with self._lock:
            if "drift" not in _tables(self.db):
                return []
            rows = self.db.execute("SELECT time, state, statistic, value, threshold, window "
                                   "FROM drift ORDER BY rowid").fetchall()
        keys = ("time", "state", "statistic", "value", "threshold", "window")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return self.db.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    def frame(self):
        """All decisions as a pandas DataFrame (probabilities as lists)."""
        import pandas as pd

        with self._lock:
            df = pd.read_sql_query("SELECT * FROM decisions ORDER BY id", self.db)
        for col in ("edge_proba", "cloud_proba"):
            df[col] = [json.loads(v) if isinstance(v, str) else None for v in df[col]]
        for col in ("device", "stream", "cloud_age"):  # a log from before the column, read
            if col not in df:                           # without changing it
                df[col] = None
        return df

    def dmd_records(self):
        """The decisions where the cloud answered, as DMD records for retraining the switcher."""
        from edgeswitch.dmd.records import DMDRecords

        with self._lock:
            rows = self.db.execute(
                "SELECT clip_id, grp, edge_proba, edge_embedding, cloud_proba FROM decisions "
                "WHERE cloud_proba IS NOT NULL AND edge_embedding IS NOT NULL ORDER BY id"
            ).fetchall()
        if not rows:
            raise DataError(f"{self.path} has no decision with a cloud answer to learn from")
        return DMDRecords(
            ids=np.array([r[0] for r in rows]), groups=np.array([r[1] for r in rows]),
            edge_proba=np.array([json.loads(r[2]) for r in rows], dtype=np.float32),
            edge_embedding=np.stack([np.frombuffer(r[3], "<f4") for r in rows]),
            cloud_proba=np.array([json.loads(r[4]) for r in rows], dtype=np.float32),
            classes=self.classes, edge_model=self.edge_model, cloud_model=self.cloud_model)

    def summary(self, buckets: int = 10) -> dict:
        """Offload rate over time, fallbacks by reason, per-class agreement, latencies. Read
        with numpy, not pandas: `edgeswitch log` runs on a device's core install."""
        if not isinstance(buckets, int) or buckets < 1:
            raise DataError(f"buckets must be a whole number >= 1, got {buckets!r}")
        names = ("time", "offloaded", "verified", "shadow", "edge_label", "cloud_label",
                 "answered_by", "fallback_reason", "device", "total_ms", "edge_ms", "cloud_ms")
        with self._lock:
            have = {r[1] for r in self.db.execute("PRAGMA table_info(decisions)")}
            # a log from before a column: NULL in its place, read without changing the file
            rows = self.db.execute(f"SELECT {', '.join(n if n in have else 'NULL' for n in names)}"
                                   " FROM decisions ORDER BY id").fetchall()
        if not rows:
            return {"decisions": 0}
        columns = (np.array(values, dtype=object) for values in zip(*rows, strict=True))
        col = dict(zip(names, columns, strict=True))
        t = col["time"].astype(float)
        offloaded, fell_back = col["offloaded"] == 1, col["verified"] == 0
        edges = np.linspace(t.min(), t.max(), buckets + 1) if t.max() > t.min() else None
        where = np.zeros(len(t), int) if edges is None else \
            np.clip(np.searchsorted(edges, t, side="right") - 1, 0, buckets - 1)
        over_time = [{"start": float(edges[b] if edges is not None else t.min()),
                      "decisions": int((where == b).sum()),
                      "offload_rate": float(offloaded[where == b].mean()),
                      "fallback_rate": float(fell_back[where == b].mean())}
                     for b in np.unique(where)]
        asked = offloaded | (col["shadow"] == 1)
        answered = np.array([v is not None for v in col["cloud_label"]])
        edge_said, cloud_said = col["edge_label"][answered], col["cloud_label"][answered]
        per_class = {}
        for c in self.classes:
            said = edge_said == c
            per_class[c] = {"edge_said": int(said.sum()),
                            "cloud_agreed": float((cloud_said[said] == c).mean())
                            if said.any() else None}

        def counts(values: np.ndarray) -> dict[str, int]:  # most common first, NULLs left out
            return {str(k): n for k, n in Counter(v for v in values if v is not None)
                    .most_common()}

        def ms(name: str) -> np.ndarray:
            return np.array([np.nan if v is None else v for v in col[name]], dtype=float)

        return {
            "decisions": len(rows), "from": float(t.min()), "to": float(t.max()),
            "edge_model": self.edge_model, "cloud_model": self.cloud_model,
            "offload_rate": float(offloaded.mean()),
            "answered_by": counts(col["answered_by"]),
            "fallbacks": int(fell_back.sum()),
            "fallback_share_of_cloud_requests": float(fell_back[asked].mean())
            if asked.any() else None,
            "fallback_reasons": counts(col["fallback_reason"]),
            "devices": counts(col["device"]),
            "agreement": float((edge_said == cloud_said).mean()) if answered.any() else None,
            "agreement_by_edge_class": per_class,
            "latency_ms": {name: tail_ms(ms(name)) for name in ("total_ms", "edge_ms",
                                                                  "cloud_ms")},
            "over_time": over_time,
        }

    def close(self) -> None:
        """Close; a writer checkpoints first, so the file alone holds every row."""
        with self._lock:
            if not self.readonly:
                try:
                    self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:  # e.g. a full disk: the rows stay in FILE-wal
                    pass
            self.db.close()

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _why_unwritable(path: Path) -> str:
    """What a user can check when SQLite says only 'unable to open database file'."""
    import os

    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"{folder} is on a read-only file system"
    except OSError:
        pass
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable by this user"
    return "is the folder writable, the disk not full?"


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _is_log(db: sqlite3.Connection) -> bool:
    """The file has a decision log's tables (and the columns a reader needs)."""
    if not {"meta", "decisions"} <= _tables(db):
        return False
    cols = {r[1] for r in db.execute("PRAGMA table_info(decisions)")}
    return READ_COLUMNS <= cols


def add_new_columns(db: sqlite3.Connection, path: Path) -> None:
    """Migrate a log written before the `device`, `stream` or `cloud_age` columns (NULL in its
    old rows)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
    for name, kind in (("device", "TEXT"), ("stream", "TEXT"), ("cloud_age", "REAL")):
        if name not in columns:
            try:
                with db:
                    db.execute(f"ALTER TABLE decisions ADD COLUMN {name} {kind}")
            except sqlite3.Error as exc:
                raise DataError(f"{path}: cannot add the {name} column: {exc}") from None


def _json(p: np.ndarray) -> str:
    return json.dumps([round(float(v), 7) for v in np.asarray(p).ravel()])


def summary_text(s: dict) -> str:
    """The summary for a terminal."""
    if not s.get("decisions"):
        return "no decisions logged"
    span = s["to"] - s["from"]
    lines = [f"{s['decisions']} decisions over {span:.1f} s "
             f"(edge {s['edge_model'] or '?'}, cloud {s['cloud_model'] or '?'})",
             f"offload rate {s['offload_rate']:.1%}; answered by "
             + ", ".join(f"{k} {v}" for k, v in s["answered_by"].items()),
             f"fallbacks {s['fallbacks']}"
             + (f" ({s['fallback_share_of_cloud_requests']:.1%} of cloud requests)"
                if s["fallback_share_of_cloud_requests"] is not None else "")
             + (": " + ", ".join(f"{k} {v}" for k, v in s["fallback_reasons"].items())
                if s["fallback_reasons"] else "")]
    if s.get("devices"):  # the credential the cloud server took, per decision it was asked
        lines.append("cloud requests by device: " + ", ".join(f"{k} {v}"
                                                           for k, v in s["devices"].items()))
    if s["agreement"] is not None:
        lines.append(f"edge/cloud agreement where the cloud answered: {s['agreement']:.1%}")
        lines.append("  by edge class: " + ", ".join(
            f"{c} {v['cloud_agreed']:.0%} of {v['edge_said']}"
            for c, v in s["agreement_by_edge_class"].items() if v["cloud_agreed"] is not None))
    lat = s["latency_ms"]
    for col in ("total_ms", "cloud_ms"):
        if lat[col]:
            lines.append(f"{col[:-3]} latency ms: p50 {lat[col]['p50']:.2f}, "
                         f"p99 {lat[col]['p99']:.2f}, max {lat[col]['max']:.2f}")
    lines.append("over time (start offset s: decisions, offload, fallback):")
    lines += [f"  +{b['start'] - s['from']:8.1f}: {b['decisions']:6d}  {b['offload_rate']:6.1%}"
              f"  {b['fallback_rate']:6.1%}" for b in s["over_time"]]
    return "\n".join(lines)
