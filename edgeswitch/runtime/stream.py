"""The one loop that runs a stream of clips through the hybrid: `classify` (clip files), `watch`
(videos, sensor recordings, live sources) and the demo's served replay.

Per item (one hybrid call) the router reads each clip in its stream's state (runtime.hybrid),
one JSON line per clip is written and flushed, the decision log takes its rows, and the
counters move. The loop ends at the end of the source, after `stop_after` clips, or at the
first Ctrl-C: that one is taken after the call in hand, so no line is left half-written; a
second Ctrl-C interrupts at once.

**Two ways to reach the cloud.** Synchronously (`classify`, the replay): the call waits for
the cloud's answers, and every line is final. Asynchronously (`watch` with a cloud,
`CloudQueue`): the edge answers every clip at once; an offloaded clip's line says
`"cloud": "pending"` and its clip goes to a bounded queue served by worker threads
(runtime.async_cloud), so a slow cloud never delays the next clip; when the request settles an
update line follows (`"kind": "update"`, same `clip_id`) whose `cloud` says what happened:
`confirmed` (the answer is the edge's), `overruled` (it changed), `timeout`, `failed` (with
the `fallback_reason`), `dropped` (`queue_full`: newer clips pushed it out unasked;
`drain_deadline`: unanswered when the end-of-stream wait ran out) or `not_sent` (a hook chose
to send nothing, e.g. `--vlm-crop` found nobody). Other clips are final in their first line:
`"cloud": "not_asked"` (the router kept it) or `"no_cloud"` (edge only). The answer enters its
stream's state when it settles; with `CloudQueue.wait` the loop waits for it before the
stream's next clip (a recording replayed offline gets exactly the decisions of the benchmark).

**Nothing lost on a kill.** A settled answer's line is written and flushed inside its decision
log transaction: a SIGKILL at any moment leaves every committed log row in the JSON lines; the
only possible difference is the one call in flight (lines written, commit not reached), so the
log is always a subset of the lines. A flushed line survives the process (it is in the OS's
page cache); a power cut is another matter (`durable=True` on the log).

**A full or read-only disk stops the run** (`StreamStopped`, a clear error): the call whose
line or log row could not be written is undone on both sides where the output can seek (the
log rolls back, the output is truncated back to where the call began), so the output and the
log still hold the same answers. Going on without a log would give answers nobody can audit.

**One bad clip fails alone.** A call that raises an edgeswitch error (a clip the edge model
cannot digest: a value like 3e38 that turns its output non-finite, a clip of the wrong shape)
is retried clip by clip; a clip that still fails gets an error record in the output,
`{"clip_id", "error", "model", ...}`, and no log row (it has no answer), and the loop goes on.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from edgeswitch.cloud.client import ask
from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import model_identity
from edgeswitch.runtime.async_cloud import AsyncCloud, Job, QueueStats
from edgeswitch.runtime.decision_log import LogWriteError
from edgeswitch.runtime.drift import DriftMonitor
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult, Pending

if TYPE_CHECKING:  # prometheus_client is an extra (serve): imported only with --metrics-port
    from edgeswitch.runtime.metrics import EdgeMetrics

NOT_SENT = str(FallbackReason.NO_PERSON)


class StreamStopped(EdgeSwitchError):
    """The output or the log could not be written: the run stopped (see the module doc)."""


@dataclass(frozen=True)
class StreamItem:
    """One hybrid call: clips (an array [n, T, C], or a list of VideoClip), their ids, groups
    and streams (None: one stream), and per clip any fields to add to its JSON line (e.g. a
    video's time range: `end_s` there also gives a live clip's lag)."""

    inputs: Any
    ids: Sequence[str]
    groups: Sequence[str]
    extra: Sequence[dict] = field(default_factory=tuple)
    streams: Sequence[str] | None = None


@dataclass(frozen=True)
class CloudQueue:
    """The asynchronous cloud of a run: `workers` requests at once, at most `bound` waiting
    (the oldest dropped beyond), `deadline_ms` per request, `drain_s` at the end for what is
    still pending; `wait`: the stream's next clip waits for its pending answers."""

    cloud: Any
    workers: int = 2
    bound: int = 8
    deadline_ms: float = 60_000.0
    drain_s: float = 30.0
    wait: bool = False


@dataclass
class StreamSummary:
    clips: int = 0          # answered (a JSON line with a label)
    cloud: int = 0          # answered by the cloud
    fallbacks: int = 0      # the cloud was asked and did not answer: the edge answer stands
    seconds: float = 0.0
    stopped_by: str = "end of source"
    failed: int = 0         # clips with an error record instead of an answer
    offloaded: int = 0      # clips the router sent to the cloud
    asked: int = 0          # offloaded clips whose request was made (not dropped unasked)
    reasons: Counter = field(default_factory=Counter)  # fallback reason -> offloaded clips
    errors: list[str] = field(default_factory=list)    # the first few error messages
    outcomes: Counter = field(default_factory=Counter)  # asynchronous: update lines by `cloud`
    lag_ms: list[float] = field(default_factory=list)
    sent_bytes: list[int] = field(default_factory=list)  # per offloaded clip sent
    cloud_ms: list[float] = field(default_factory=list)
    queue: QueueStats | None = None
    events: int = 0         # counted by the hooks (video: fall events, alerts)
    alerts: int = 0

    def cloud_never_answered(self) -> bool:
        """Requests were made and the cloud answered none of them (unauthorized, connection,
        timeout...): the run did not do what was asked. An edge-only run (reason `no_cloud`)
        and clips only dropped from a full queue (a slow but healthy cloud) do not count."""
        return self.asked > 0 and self.cloud == 0 and set(self.reasons) != {"no_cloud"}

    def metrics(self) -> dict:
        """The run's summary as JSON (`watch --summary FILE`)."""
        def q(v, p):
            return round(float(np.percentile(v, p)), 1) if len(v) else None

        return {"clips": self.clips, "failed": self.failed, "offloaded": self.offloaded,
                "cloud_outcomes": dict(self.outcomes),
                "fallback_reasons": dict(self.reasons),
                "unsettled": self.offloaded - sum(self.outcomes.values()) if self.queue else 0,
                "events": self.events, "alerts_queued": self.alerts,
                "lag_ms": {"p50": q(self.lag_ms, 50), "p99": q(self.lag_ms, 99),
                           "max": q(self.lag_ms, 100), "n": len(self.lag_ms)},
                "cloud_ms": {"p50": q(self.cloud_ms, 50), "p99": q(self.cloud_ms, 99)},
                "sent_bytes_per_clip": {"mean": round(float(np.mean(self.sent_bytes)))
                                        if self.sent_bytes else None,
                                        "max": q(self.sent_bytes, 100),
                                        "clips": len(self.sent_bytes),
                                        "total": int(sum(self.sent_bytes))},
                "queue": None if self.queue is None else {
                    "bound": self.queue.bound, "workers": self.queue.workers,
                    "max_queued": self.queue.max_queued, "submitted": self.queue.submitted,
                    "dropped": dict(self.queue.dropped)},
                "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by}


class StreamHooks:
    """What a caller adds to the loop (video: the clip sent, fall events, alerts, an annotated
    video). Every hook but `payload` runs under the runner's lock."""

    def payload(self, clip: Any) -> Any:
        """What an offloaded clip sends to the cloud; None: nothing (settled `not_sent`)."""
        return clip

    def on_clip(self, clip: Any, res: HybridResult, i: int, row: dict, settled: bool) -> None:
        """After clip `i` of a call got its line (`settled`: final in it)."""

    def on_update(self, row: dict, cloud_proba: np.ndarray | None) -> None:
        """After an asynchronous clip's update line."""

    def finish(self) -> None:
        """At the end of the stream, after the cloud queue drained."""


class _StopOnCtrlC:
    """The first Ctrl-C asks the loop to stop after the current call; a second interrupts."""

    def __init__(self) -> None:
        self.requested = False
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
            self._old = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def restore(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class _Lines:
    """JSON lines to `out`, flushed per call; the last call's lines can be taken back (a
    seekable file is truncated to where they began)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        try:
            self.seekable = out.seekable()
        except (AttributeError, OSError, ValueError):
            self.seekable = False
        self.mark: int | None = None

    def write(self, rows: list[dict]) -> None:
        self.mark = self.out.tell() if self.seekable else None
        self.out.write("".join(json.dumps(row) + "\n" for row in rows))
        self.out.flush()

    def undo(self) -> None:
        if self.mark is not None:
            try:
                self.out.seek(self.mark)
                self.out.truncate()
                self.out.flush()
            except (OSError, ValueError):  # the undo is best effort on a broken disk
                pass
        self.mark = None


def _split(item: StreamItem) -> list[StreamItem]:
    extra = list(item.extra) + [{}] * (len(item.ids) - len(item.extra))
    streams = item.streams
    return [StreamItem(item.inputs[i:i + 1], item.ids[i:i + 1], item.groups[i:i + 1],
                       extra[i:i + 1], None if streams is None else streams[i:i + 1])
            for i in range(len(item.ids))]


def clip_error(hybrid: HybridClassifier, item: StreamItem, exc: Exception) -> dict:
    """The error record of a one-clip item: the clip, the problem and the edge model."""
    note = ""
    x = item.inputs
    if isinstance(x, np.ndarray) and x.size and np.issubdtype(x.dtype, np.number):
        finite = np.isfinite(x)
        if not finite.all():
            note = f" (the clip holds {int((~finite).sum())} NaN or inf values)"
        else:
            top = float(np.abs(x).max())
            note = f" (the clip's largest |value| is {top:.3g})"
            if top > 1e6:
                note = note[:-1] + ", likely outside the model's input range)"
    model = model_identity(hybrid.edge)
    row = {"clip_id": str(item.ids[0]), "error": f"edge model {model}: {exc}{note}",
           "model": model}
    row.update(item.extra[0] if item.extra else {})
    return row


@dataclass
class _Sent:
    """An offloaded clip in the cloud queue."""

    res: HybridResult
    pending: Pending
    item: StreamItem
    row: dict            # its clip line
    clip: Any            # what is sent
    t_line: float        # when its clip line went out


class StreamRunner:
    """`hybrid` over items to `out` (see the module doc). `queue`: the asynchronous cloud
    (None: the hybrid's own, synchronously); `watch_lines`: lines carry `kind` and `cloud`
    (watch's format); `clock`: a live or paced source's schedule (lag). `metrics` move after
    each line, `drift` sees each answered clip's score, edge class and array input."""

    def __init__(self, hybrid: HybridClassifier, out: TextIO, *,
                 queue: CloudQueue | None = None, watch_lines: bool = False,
                 metrics: EdgeMetrics | None = None, drift: DriftMonitor | None = None,
                 hooks: StreamHooks | None = None, clock=None,
                 on_result: Callable[[StreamItem, HybridResult, list[dict]], None] | None = None
                 ) -> None:
        self.hybrid, self.out, self.metrics, self.drift = hybrid, out, metrics, drift
        self.hooks = hooks or StreamHooks()
        self.clock, self.on_result = clock, on_result
        self.watch_lines = watch_lines or queue is not None
        self.summary = StreamSummary()
        self.lines = _Lines(out)
        self.lock = threading.RLock()
        self.qcfg = queue
        self.queue: AsyncCloud | None = None
        self._settled = threading.Condition(self.lock)
        self._waiting: set[int] = set()
        if queue is not None:
            # a remote client serves threads at once; a model in this process one at a time
            self._gate = nullcontext() if hasattr(queue.cloud, "request") else threading.Lock()
            self.queue = AsyncCloud(self._ask, self._done, queue.workers, queue.bound)
            self.summary.queue = self.queue.stats
            if metrics is not None:
                metrics.watch_queue(lambda: self.queue.queued)

    # -- the loop --------------------------------------------------------------------------
    def run(self, items: Iterable[StreamItem], stop_after: int | None = None) -> StreamSummary:
        s, t0, stop = self.summary, time.perf_counter(), _StopOnCtrlC()
        try:
            for item in items:
                self._call(item)
                if stop_after and s.clips + s.failed >= stop_after:
                    s.stopped_by = f"--stop-after {stop_after}"
                    break
                if stop.requested:
                    s.stopped_by = "Ctrl-C"
                    break
        except KeyboardInterrupt:  # a second Ctrl-C, or one while waiting for a stream
            s.stopped_by = "Ctrl-C"
        finally:
            try:
                if self.queue is not None:
                    self.queue.drain(time.monotonic() + self.qcfg.drain_s)
                with self.lock:
                    self.hooks.finish()
            finally:
                stop.restore()
                s.seconds = time.perf_counter() - t0
        return s

    def _stopped(self, why: str) -> StreamStopped:
        return StreamStopped(f"{why}; stopped after {self.summary.clips} answers (the output "
                             "and the decision log hold the same ones)")

    def _call(self, item: StreamItem) -> None:
        """One hybrid call; an edge error is retried clip by clip (see the module doc)."""
        where = getattr(self.out, "name", "the output")
        rows: list[dict] = []

        def write(res: HybridResult) -> None:
            rows.extend(self._rows(item, res))
            self.lines.write(rows)

        try:
            with self.lock:
                res = self.hybrid.classify(item.inputs, item.ids, item.groups, on_answer=write,
                                           streams=item.streams, defer=self.queue is not None)
        except LogWriteError as exc:
            if rows:
                self.lines.undo()
            raise self._stopped(str(exc)) from None
        except OSError as exc:  # the JSON lines: the log rolled back
            self.lines.undo()
            raise self._stopped(f"cannot write {where}: {exc.strerror or exc}") from None
        except EdgeSwitchError as exc:
            if rows:  # after its lines were written: the log did not commit them
                self.lines.undo()
                raise self._stopped(str(exc)) from None
            if len(item.ids) > 1:  # find the clip: the others are answered
                for sub in _split(item):
                    self._call(sub)
                return
            self._failed(item, exc, where)
            return
        self._after(item, res, rows)

    def _rows(self, item: StreamItem, res: HybridResult) -> list[dict]:
        rows = res.records(self.hybrid.classes_, list(item.ids))
        for i, (row, extra) in enumerate(zip(rows, list(item.extra) + [{}] * len(rows),
                                             strict=False)):
            row.update(extra)
            if not self.watch_lines:
                continue
            row = {"kind": "clip", **row}
            if res.offloaded[i]:
                if self.queue is not None:
                    row.update(cloud="pending", fallback_reason=None)
                else:
                    row["cloud"] = "no_cloud" if res.reason[i] == "no_cloud" else \
                        ("confirmed" if res.verified[i] else "failed")
            else:
                row["cloud"] = "not_asked"
            if self.clock is not None and self.clock.wall0 is not None and "end_s" in extra:
                lag = self.clock.lag_s(extra["end_s"]) * 1000
                row["lag_ms"] = round(lag, 1)
                self.summary.lag_ms.append(lag)
            rows[i] = row
        return rows

    def _failed(self, item: StreamItem, exc: Exception, where: str) -> None:
        record = clip_error(self.hybrid, item, exc)
        if self.watch_lines:
            record = {"kind": "clip", **record}
        try:
            with self.lock:
                self.lines.write([record])
        except OSError as err:
            self.lines.undo()
            raise self._stopped(f"cannot write {where}: {err.strerror or err}") from None
        s = self.summary
        s.failed += 1
        if self.metrics is not None:
            self.metrics.clip_failed()
        if len(s.errors) < 5:
            s.errors.append(f"{item.ids[0]}: {record['error']}")

    def _after(self, item: StreamItem, res: HybridResult, rows: list[dict]) -> None:
        """Counters, drift, metrics, hooks; an asynchronous call's offloads go to the queue."""
        s, m = self.summary, self.metrics
        deferred = self.queue is not None
        with self.lock:
            s.clips += len(rows)
            s.offloaded += int(res.offloaded.sum())
            if not deferred:
                s.cloud += int((res.answered_by == "cloud").sum())
                s.fallbacks += int((~res.verified).sum())
                s.asked += int((res.offloaded & (res.reason != "no_cloud")).sum())
                s.reasons.update(str(r) for r in res.reason[res.offloaded & ~res.verified])
            if self.drift is not None:
                try:
                    self.drift.observe(res.score, res.edge.label,
                                       item.inputs if isinstance(item.inputs, np.ndarray)
                                       else None)
                except LogWriteError as exc:  # the call's answers are in both already
                    raise self._stopped(str(exc)) from None
            for i, row in enumerate(rows):
                clip = item.inputs[i] if not isinstance(item.inputs, np.ndarray) else None
                self.hooks.on_clip(clip, res, i, row, not (deferred and res.offloaded[i]))
        if m is not None:
            if self.watch_lines:
                for i, row in enumerate(rows):
                    lag = row.get("lag_ms")
                    m.edge_clip(self.hybrid, float(res.score[i]), bool(res.offloaded[i]),
                                None if lag is None else lag / 1000)
                    if res.offloaded[i] and not deferred:
                        m.settled(int(res.edge.label[i]), None, str(res.reason[i]) or
                                  str(FallbackReason.NO_CLOUD), False, None, None)
            else:
                m.observe_call(self.hybrid, res)
            if self.drift is not None:
                m.set_drift(*self.drift.state())
        if self.on_result is not None:
            self.on_result(item, res, rows)
        for p in res.pending:
            self._send(item, res, p, rows[p.index])

    # -- the asynchronous cloud --------------------------------------------------------------
    def _send(self, item: StreamItem, res: HybridResult, p: Pending, row: dict) -> None:
        clip = item.inputs[p.index]
        payload = self.hooks.payload(clip)
        sent = _Sent(res, p, item, row, clip if payload is None else payload, time.monotonic())
        if payload is None:  # nothing leaves the device
            self._settle(sent, None, NOT_SENT, None)
            return
        job = self.queue.submit(str(item.ids[p.index]), sent)
        if self.qcfg.wait:
            with self._settled:
                while not job.done:
                    self._settled.wait(0.1)

    def _ask(self, sent: _Sent):
        with self._gate:
            return ask(self.qcfg.cloud, [sent.clip] if not isinstance(sent.clip, np.ndarray)
                       else sent.clip[None],
                       time.monotonic() + self.qcfg.deadline_ms / 1000)

    def _done(self, job: Job, reply, drop: str | None) -> None:
        self._settle(job.payload, reply, drop, job)

    def _settle(self, p: _Sent, reply, drop: str | None, job: Job | None) -> None:
        """An offloaded clip's update line: the answer enters its stream's state, the log takes
        its row (the line written inside the row's transaction)."""
        res, i, base = p.res, p.pending.index, p.row
        upd: dict[str, Any] = {"kind": "update", "clip_id": base["clip_id"]}
        upd.update({k: base[k] for k in ("source", "start_s", "end_s", "stream") if k in base})
        if drop is not None:
            outcome, why, reply_ok = ("not_sent" if drop == NOT_SENT else "dropped"), drop, None
        elif isinstance(reply, Exception):
            outcome, why, reply_ok = "failed", str(FallbackReason.ERROR), None
        elif reply.ok:
            outcome, why, reply_ok = None, None, reply
        else:
            outcome = "timeout" if reply.reason == FallbackReason.TIMEOUT else "failed"
            why, reply_ok = str(reply.reason), None
        asked = job is not None and job.started_at is not None and drop is None
        cloud_ms = reply.latency_ms if asked and not isinstance(reply, Exception) else None
        sent = p.clip.meta.get("sent_bytes") if asked and hasattr(p.clip, "meta") else None
        classes = self.hybrid.classes_
        cloud_p = np.asarray(reply_ok.proba[0], np.float64) if reply_ok is not None else None

        def line(proba: np.ndarray, answered: bool) -> None:
            nonlocal outcome
            if answered:
                outcome = "confirmed" if int(np.argmax(proba)) == int(res.edge.label[i]) \
                    else "overruled"
            upd.update(label=classes[int(np.argmax(proba))],
                       answered_by="cloud" if answered else "edge", verified=answered,
                       fallback_reason=why, cloud=outcome,
                       proba={c: round(float(v), 6) for c, v in zip(classes, proba,
                                                                    strict=True)})
            if cloud_p is not None:
                upd["cloud_proba"] = {c: round(float(v), 6)
                                      for c, v in zip(classes, cloud_p, strict=True)}
            upd["latency_ms"] = {"queued": round(job.waited_s * 1000, 1) if job else 0.0,
                                 "cloud": None if cloud_ms is None else round(cloud_ms, 1),
                                 "since_clip_line": round((time.monotonic() - p.t_line) * 1000,
                                                          1)}
            if sent is not None:
                upd["sent_bytes"] = sent
            self.lines.write([upd])

        with self.lock:
            try:
                self.hybrid.settle(res, p.pending, reply if asked and not isinstance(
                    reply, Exception) else None, why, p.item.ids, p.item.groups, on_answer=line)
            except (LogWriteError, OSError) as exc:  # a worker thread: say it, the run goes on
                self.summary.errors.append(f"{base['clip_id']}: {exc}")
            s = self.summary
            s.outcomes[outcome] += 1
            s.asked += int(asked)
            if outcome in ("confirmed", "overruled"):
                s.cloud += 1
            else:
                s.fallbacks += int(drop is None)
                s.reasons[why] += 1
            if sent is not None:
                s.sent_bytes.append(sent)
            if cloud_ms is not None:
                s.cloud_ms.append(cloud_ms)
            self.hooks.on_update(upd, cloud_p)
            self._settled.notify_all()
        if self.metrics is not None:
            self.metrics.settled(int(res.edge.label[i]),
                                 None if cloud_p is None else int(np.argmax(cloud_p)), why,
                                 outcome in ("dropped", "not_sent"),
                                 None if cloud_ms is None else cloud_ms / 1000, sent)


def run_stream(hybrid: HybridClassifier, items: Iterable[StreamItem], out: TextIO,
               stop_after: int | None = None,
               on_result: Callable[[StreamItem, HybridResult, list[dict]], None] | None = None,
               metrics: EdgeMetrics | None = None,
               drift: DriftMonitor | None = None) -> StreamSummary:
    """Every item through `hybrid` with its own (synchronous) cloud, its JSON lines to `out`:
    `classify`'s loop (see StreamRunner)."""
    return StreamRunner(hybrid, out, metrics=metrics, drift=drift,
                        on_result=on_result).run(items, stop_after)
