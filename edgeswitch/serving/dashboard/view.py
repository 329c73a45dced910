"""The dashboard's figures: aggregates of a decision log, computed in SQL on each poll.

The log is opened with `runtime.decision_log.DecisionLog` in its reader mode (SQLite
mode=ro; refused unless it has a decision log's tables), never written. Aggregates run in
SQL, not on a pandas frame of every row as `edgeswitch log` does, because the page asks once a
second and a device's log grows without bound: counts, buckets and agreement are one pass
over the table without its embeddings; latency percentiles use the most recent
`LATENCY_WINDOW` decisions only (said so in the answer).

A log that does not exist yet (the dashboard started before the device) is "waiting"; the
next poll opens it once it appears. The `drift` table is read when the drift monitor has made
it (its latest row is the state); fall events come from `watch --events FILE` (JSON lines, a
last line cut mid-write skipped).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeswitch.errors import DataError
from edgeswitch.evaluation.timing import tail_ms
from edgeswitch.runtime.decision_log import DecisionLog

LATENCY_WINDOW = 10_000   # decisions the latency percentiles are taken over (the latest)
MAX_BUCKETS, MAX_LAST, MAX_EVENTS = 200, 200, 50
LAST_COLUMNS = ("id", "time", "clip_id", "grp", "label", "answered_by", "verified",
                "fallback_reason", "offloaded", "shadow", "score", "edge_label", "cloud_label",
                "edge_ms", "cloud_ms", "total_ms")


@dataclass
class LogView:
    """Figures of the log at `path` (and the events file, if given), for the page."""

    path: Path
    events: Path | None = None
    _log: DecisionLog | None = None
    _has_device: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self) -> None:
        """Refuse at start a file that exists and is not a decision log (a clear error, not
        a page that says "waiting" forever)."""
        if self.path.exists():
            with self._lock:
                self._open()

    def _open(self) -> DecisionLog:
        if self._log is None:
            self._log = DecisionLog(self.path)  # read-only; refuses other databases
            cols = {r[1] for r in self._log.db.execute("PRAGMA table_info(decisions)")}
            self._has_device = "device" in cols
        return self._log

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def summary(self, buckets: int = 30, last: int = 20) -> dict:
        """Everything the page shows, as one JSON-able dict."""
        out: dict = {"log": str(self.path), "generated_at": time.time(),
                     "events": self._events()}
        if not self.path.exists():
            return out | {"status": "waiting",
                          "message": f"waiting for {self.path} to be created"}
        with self._lock:
            try:
                log = self._open()
                return out | {"status": "ok"} | self._figures(log.db, log, buckets, last)
            except (DataError, sqlite3.Error) as exc:  # e.g. a writer mid-creation: retry
                if self._log is not None:
                    self._log.close()
                    self._log = None
                return out | {"status": "waiting", "message": str(exc)}

    def _figures(self, db: sqlite3.Connection, log: DecisionLog, buckets: int,
                 last: int) -> dict:
        with db:  # one read transaction: every figure is of the same snapshot
            db.execute("BEGIN")
            n, offloaded, shadow, fallbacks, t0, t1 = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(offloaded), 0), COALESCE(SUM(shadow), 0), "
                "COALESCE(SUM(verified = 0), 0), MIN(time), MAX(time) FROM decisions"
            ).fetchone()
            figures = {
                "classes": list(log.classes), "edge_model": log.edge_model,
                "cloud_model": log.cloud_model, "clips": n, "offloaded": offloaded,
                "offload_rate": offloaded / n if n else None, "shadow": shadow,
                "fallbacks": fallbacks, "fallback_rate": fallbacks / n if n else None,
                "from": t0, "to": t1,
                "fallback_reasons": dict(db.execute(
                    "SELECT fallback_reason, COUNT(*) FROM decisions WHERE fallback_reason IS "
                    "NOT NULL GROUP BY fallback_reason ORDER BY 2 DESC").fetchall()),
                "over_time": _over_time(db, t0, t1, buckets) if n else [],
                "agreement": _agreement(db, log.classes),
                "latency_ms": _latency(db),
                "latency_window": LATENCY_WINDOW,
                "devices": dict(db.execute(
                    "SELECT device, COUNT(*) FROM decisions WHERE device IS NOT NULL GROUP BY "
                    "device ORDER BY 2 DESC LIMIT 100").fetchall()) if self._has_device else {},
                "drift": _drift(db),
                "last": _last(db, last),
            }
        return figures

    def _events(self) -> dict:
        if self.events is None:
            return {"given": False}
        try:
            text = self.events.read_text(errors="replace")
        except FileNotFoundError:
            return {"given": True, "path": str(self.events), "count": 0, "events": [],
                    "message": f"waiting for {self.events} to be created"}
        except OSError as exc:
            return {"given": True, "path": str(self.events), "count": 0, "events": [],
                    "message": f"cannot read {self.events}: {exc.strerror}"}
        events, bad = [], 0
        for line in text.split("\n")[:-1]:  # the last piece has no newline yet: not whole
            if not line.strip():
                continue
            try:
                e = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(e, dict):
                events.append({k: e.get(k) for k in ("id", "source", "start_s", "end_s",
                                                     "peak_probability", "confirmed_by")}
                              | {"clips": len(e.get("clip_ids") or [])})
            else:
                bad += 1
        return {"given": True, "path": str(self.events), "count": len(events),
                "unreadable_lines": bad, "events": events[-MAX_EVENTS:][::-1]}


def _over_time(db: sqlite3.Connection, t0: float, t1: float, buckets: int) -> list[dict]:
    """`buckets` equal spans of [first, last decision]: clips, offload and fallback rates."""
    width = (t1 - t0) / buckets if t1 > t0 else 1.0
    rows = db.execute(
        "SELECT MIN(CAST((time - ?) / ? AS INTEGER), ?) AS b, COUNT(*), SUM(offloaded), "
        "SUM(verified = 0) FROM decisions GROUP BY b ORDER BY b", (t0, width, buckets - 1))
    return [{"start": t0 + b * width, "end": t0 + (b + 1) * width, "clips": c,
             "offload_rate": o / c, "fallback_rate": f / c, "fallbacks": f}
            for b, c, o, f in rows]


def _agreement(db: sqlite3.Connection, classes: tuple[str, ...]) -> dict:
    """Edge vs cloud where the cloud answered: overall, on offloaded and on shadow clips (a
    random sample of kept ones: the unbiased figure), and per class the edge said."""
    def rate(where: str) -> dict:
        m, a = db.execute("SELECT COUNT(*), COALESCE(SUM(edge_label = cloud_label), 0) FROM "
                          f"decisions WHERE cloud_label IS NOT NULL AND {where}").fetchone()
        return {"answered": m, "agreed": a, "rate": a / m if m else None}

    by = {c: {"edge_said": 0, "agreed": 0, "rate": None} for c in classes}
    for c, m, a in db.execute("SELECT edge_label, COUNT(*), SUM(edge_label = cloud_label) FROM "
                              "decisions WHERE cloud_label IS NOT NULL GROUP BY edge_label"):
        by[c] = {"edge_said": m, "agreed": a, "rate": a / m}
    return {"all": rate("1"), "offloaded": rate("offloaded = 1"),
            "shadow": rate("shadow = 1"), "by_class": by}


def _latency(db: sqlite3.Connection) -> dict:
    rows = db.execute("SELECT edge_ms, cloud_ms, total_ms FROM decisions ORDER BY id DESC "
                      "LIMIT ?", (LATENCY_WINDOW,)).fetchall()
    return {col: tail_ms([r[i] if r[i] is not None else float("nan") for r in rows])
            for i, col in enumerate(("edge_ms", "cloud_ms", "total_ms"))}


def _drift(db: sqlite3.Connection) -> dict:
    """The drift monitor's latest state, if it has made its table in this log."""
    has = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'drift'") \
        .fetchone()
    if not has:
        return {"monitored": False, "message": "no drift monitor"}
    row = db.execute("SELECT time, state, statistic, value, threshold, window FROM drift "
                     "ORDER BY time DESC, rowid DESC LIMIT 1").fetchone()
    alarms = db.execute("SELECT COUNT(*) FROM drift WHERE state = 'alarm'").fetchone()[0]
    if row is None:
        return {"monitored": True, "state": "clear", "alarms": 0,
                "message": "drift monitor on, nothing recorded yet"}
    keys = ("time", "state", "statistic", "value", "threshold", "window")
    return {"monitored": True, **dict(zip(keys, row, strict=True)), "alarms": alarms}


def _last(db: sqlite3.Connection, last: int) -> list[dict]:
    rows = db.execute(f"SELECT {', '.join(LAST_COLUMNS)} FROM decisions ORDER BY id DESC "
                      "LIMIT ?", (last,)).fetchall()
    return [dict(zip(LAST_COLUMNS, r, strict=True)) for r in rows]
