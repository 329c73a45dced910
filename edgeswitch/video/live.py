"""`watch`'s loop: the edge answers every clip at once, the cloud answers later.

Per clip, in the decoding thread: the edge model and the router run (the hybrid, with no
cloud of its own), and the clip's JSON line goes out at once (`"kind": "clip"`). A clip the
router offloads is `"cloud": "pending"`, `verified: false`, and goes to the bounded cloud queue
(runtime.async_cloud); when its cloud request settles, an update line follows
(`"kind": "update"`, same `clip_id`) whose `cloud` says what happened: `confirmed` (the cloud's
answer is the edge's), `overruled` (the answer changed), `timeout`, `failed` (with the
`fallback_reason`), `dropped` (`queue_full`: newer clips pushed it out unasked;
`drain_deadline`: still unanswered when the end-of-stream wait ran out) or `not_sent`
(`no_person`: `--vlm-crop` found nobody to crop to). Other clips are final in their first
line: `"cloud": "not_asked"` (the router trusted the edge) or `"no_cloud"` (edge only).

The decision log gets one row per clip when it is settled (an offloaded clip's row carries the
cloud's answer). Fall events (video.events) follow both kinds of line; alerts go out from
their own thread (video.alerts). `lag_ms` on a clip line, for a paced file or a live source,
is how long after its end in real time the line was written.

Every output is written under one lock: update lines come from the cloud worker threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from edgeswitch.cloud.client import ask
from edgeswitch.cloud.reasons import FallbackReason
from edgeswitch.config import VideoConfig
from edgeswitch.runtime.async_cloud import AsyncCloud, Job, QueueStats
from edgeswitch.runtime.decision_log import Decision, DecisionLog
from edgeswitch.runtime.drift import DriftMonitor
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult
from edgeswitch.runtime.stream import StreamItem, _StopOnCtrlC, result_rows
from edgeswitch.video.alerts import AlertSender
from edgeswitch.video.annotate import AnnotatedVideo, update_text
from edgeswitch.video.events import EventTracker, FallEvent
from edgeswitch.video.privacy import crop_clip, person_box
from edgeswitch.video.source import Clock, VideoClip

if TYPE_CHECKING:  # prometheus_client is an extra: imported only with --metrics-port
    from edgeswitch.runtime.metrics import EdgeMetrics

NO_PERSON = str(FallbackReason.NO_PERSON)


@dataclass
class WatchOutputs:
    out: TextIO
    events: TextIO | None = None
    video: AnnotatedVideo | None = None
    log: DecisionLog | None = None
    alerts: AlertSender | None = None
    metrics: EdgeMetrics | None = None  # moved after each clip line and each update
    drift: DriftMonitor | None = None   # fed each clip's switcher score and edge class


@dataclass
class WatchSummary:
    clips: int = 0
    offloaded: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # update lines by `cloud`
    reasons: dict[str, int] = field(default_factory=dict)   # ... by fallback_reason
    events: int = 0
    alerts: int = 0
    lag_ms: list[float] = field(default_factory=list)
    sent_bytes: list[int] = field(default_factory=list)     # per offloaded clip sent
    cloud_ms: list[float] = field(default_factory=list)
    queue: QueueStats | None = None
    seconds: float = 0.0
    stopped_by: str = "end of source"

    def cloud_never_answered(self) -> bool:
        """Clips went to the cloud and it answered none of them (unauthorized, connection...):
        the run did not do what was asked (exit 3, as for classify)."""
        sent = sum(n for k, n in self.outcomes.items() if k != "not_sent")
        answered = self.outcomes.get("confirmed", 0) + self.outcomes.get("overruled", 0)
        return self.queue is not None and sent > 0 and answered == 0

    def metrics(self) -> dict:
        def q(v, p):
            return round(float(np.percentile(v, p)), 1) if len(v) else None

        return {"clips": self.clips, "offloaded": self.offloaded,
                "cloud_outcomes": dict(self.outcomes), "fallback_reasons": dict(self.reasons),
                "unsettled": self.offloaded - sum(self.outcomes.values()) if self.queue else 0,
                "events": self.events, "alerts_queued": self.alerts,
                "lag_ms": {"p50": q(self.lag_ms, 50), "p99": q(self.lag_ms, 99),
                           "max": q(self.lag_ms, 100), "n": len(self.lag_ms)},
                "cloud_ms": {"p50": q(self.cloud_ms, 50), "p99": q(self.cloud_ms, 99)},
                "sent_bytes_per_clip": {"mean": round(float(np.mean(self.sent_bytes)))
                                        if self.sent_bytes else None,
                                        "max": q(self.sent_bytes, 100),
                    "clips": len(self.sent_bytes), "total": int(sum(self.sent_bytes))},
                "queue": None if self.queue is None else {
                    "bound": self.queue.bound, "workers": self.queue.workers,
                    "max_queued": self.queue.max_queued, "submitted": self.queue.submitted,
                    "dropped": dict(self.queue.dropped)},
                "seconds": round(self.seconds, 3), "stopped_by": self.stopped_by}


@dataclass
class _Pending:
    clip: VideoClip       # what is sent (cropped with --vlm-crop)
    res: HybridResult     # the edge's answer
    row: dict             # its clip line
    t_line: float         # when that line went out


class Watch:
    """The hybrid's edge (its cloud must be `NoCloud` and it must log nothing: this loop asks
    `cloud` and logs), `cloud` or None (edge only), the outputs, the [video] settings."""

    def __init__(self, hybrid: HybridClassifier, cloud, outputs: WatchOutputs,
                 cfg: VideoConfig, clock: Clock | None = None, crop: bool = False) -> None:
        self.hybrid, self.cloud, self.o, self.cfg, self.clock = hybrid, cloud, outputs, cfg, \
            clock
        self.classes = hybrid.classes_
        self.fall = self.classes.index("fall") if "fall" in self.classes else None
        self.crop = crop
        self.summary = WatchSummary()
        self.lock = threading.RLock()
        self.events = EventTracker(cfg.event_on, cfg.event_off, cfg.event_gap) \
            if self.fall is not None and (outputs.events or outputs.alerts) else None
        # a remote client serves threads at once; a model in this process takes one at a time
        self._cloud_gate = nullcontext() if hasattr(cloud, "request") else threading.Lock()
        self.queue = AsyncCloud(self._ask, self._settled, cfg.cloud_workers, cfg.cloud_queue) \
            if cloud is not None else None
        self.summary.queue = self.queue.stats if self.queue else None
        if outputs.metrics is not None and self.queue is not None:
            outputs.metrics.watch_queue(lambda: self.queue.queued)

    # -- the decoding thread ----------------------------------------------------------------
    def run(self, clips: Iterable[VideoClip], stop_after: int | None = None) -> WatchSummary:
        t0, stop = time.perf_counter(), _StopOnCtrlC()
        try:
            for clip in clips:
                self._clip(clip)
                if stop_after and self.summary.clips >= stop_after:
                    self.summary.stopped_by = f"--stop-after {stop_after}"
                    break
                if stop.requested:
                    self.summary.stopped_by = "Ctrl-C"
                    break
        except KeyboardInterrupt:
            self.summary.stopped_by = "Ctrl-C"
        finally:
            try:
                self._finish()
            finally:
                stop.restore()
                self.summary.seconds = time.perf_counter() - t0
        return self.summary

    def _clip(self, clip: VideoClip) -> None:
        item = StreamItem([clip], [clip.clip_id], [clip.source],
                          [{"source": clip.source, "start_s": clip.start_s,
                            "end_s": clip.end_s}])
        res = self.hybrid.classify(item.inputs, item.ids, item.groups)
        row = {"kind": "clip", **result_rows(res, self.classes, item)[0]}
        offloaded = bool(res.offloaded[0])
        send = None
        if offloaded and self.queue is not None:
            row.update(cloud="pending", fallback_reason=None)
            send = clip
            if self.crop:
                box = person_box(self.hybrid.edge, clip)
                send = crop_clip(clip, box) if box is not None else None
        else:
            row["cloud"] = "no_cloud" if offloaded else "not_asked"
        lag = None
        with self.lock:
            if self.clock is not None and self.clock.wall0 is not None:
                lag = self.clock.lag_s(clip.end_s) * 1000
                row["lag_ms"] = round(lag, 1)
                self.summary.lag_ms.append(lag)
            if row["cloud"] == "pending":  # not an answer yet: its update will be logged
                self._write(self.o.out, row)
            else:
                self._log(res, row, None, offloaded)
            self.summary.clips += 1
            self.summary.offloaded += int(offloaded)
            if self.o.drift is not None:
                self.o.drift.observe(res.score, res.edge.label)
                if self.o.metrics is not None:
                    self.o.metrics.set_drift(*self.o.drift.state())
            if self.events is not None:
                self._on_events(*self.events.add(
                    clip.clip_id, clip.start_s, clip.end_s, float(res.edge.proba[0, self.fall]),
                    settled=row["cloud"] != "pending", source=clip.source))
        m = self.o.metrics
        if m is not None:
            m.edge_clip(self.hybrid, float(res.score[0]), offloaded,
                        None if lag is None else lag / 1000)
            if offloaded and self.queue is None:
                m.settled(int(res.edge.proba[0].argmax()), None, str(res.reason[0]) or
                          str(FallbackReason.NO_CLOUD), False, None, None)
        if self.o.video is not None:
            self.o.video.show(clip, row)
        if row["cloud"] == "pending":
            pending = _Pending(send if send is not None else clip, res, row, time.monotonic())
            if send is None:  # --vlm-crop and nobody to crop to: nothing leaves the device
                self._settle(pending, None, NO_PERSON, job=None)
            else:
                self.queue.submit(clip.clip_id, pending)

    def _finish(self) -> None:
        if self.queue is not None:
            self.queue.drain(time.monotonic() + self.cfg.drain_s)
        with self.lock:
            if self.events is not None:
                self._on_events(self.events.finish(), [])
        if self.o.alerts is not None:
            c = self.cfg
            self.o.alerts.close(time.monotonic() + c.alert_timeout_s * (c.alert_retries + 1))

    # -- the cloud worker threads -----------------------------------------------------------
    def _ask(self, pending: _Pending):
        with self._cloud_gate:
            return ask(self.cloud, [pending.clip],
                       time.monotonic() + self.cfg.vlm_deadline_ms / 1000)

    def _settled(self, job: Job, reply, drop: str | None) -> None:
        self._settle(job.payload, reply, drop, job)

    def _settle(self, p: _Pending, reply, drop: str | None, job: Job | None) -> None:
        res, base = p.res, p.row
        upd: dict[str, Any] = {"kind": "update", "clip_id": base["clip_id"],
                               "source": base["source"], "start_s": base["start_s"],
                               "end_s": base["end_s"]}
        edge_proba = res.edge.proba[0].astype(np.float64)
        proba, cloud_p, answered = edge_proba, None, False
        if drop is not None:
            outcome, reason = ("not_sent" if drop == NO_PERSON else "dropped"), drop
        elif isinstance(reply, Exception):
            outcome, reason = "failed", str(FallbackReason.ERROR)
        elif reply.ok:
            cloud_p, answered, reason = np.asarray(reply.proba[0], np.float64), True, None
            fusion = self.hybrid.fusion
            proba = cloud_p if fusion is None else \
                fusion.combine(res.edge.proba[:1], cloud_p[None])[0]
            outcome = "confirmed" if proba.argmax() == edge_proba.argmax() else "overruled"
        else:
            outcome = "timeout" if reply.reason == FallbackReason.TIMEOUT else "failed"
            reason = str(reply.reason)
        upd.update(label=self.classes[int(np.argmax(proba))],
                   answered_by="cloud" if answered else "edge", verified=answered,
                   fallback_reason=reason, cloud=outcome,
                   proba={c: round(float(v), 6) for c, v in zip(self.classes, proba,
                                                                strict=True)})
        if cloud_p is not None:
            upd["cloud_proba"] = {c: round(float(v), 6)
                                  for c, v in zip(self.classes, cloud_p, strict=True)}
        asked = job is not None and job.started_at is not None and drop is None
        cloud_ms = reply.latency_ms if asked and not isinstance(reply, Exception) else None
        upd["latency_ms"] = {"queued": round(job.waited_s * 1000, 1) if job else 0.0,
                             "cloud": None if cloud_ms is None else round(cloud_ms, 1),
                             "since_clip_line": round((time.monotonic() - p.t_line) * 1000, 1)}
        sent = p.clip.meta.get("sent_bytes") if asked else None
        if sent is not None:
            upd["sent_bytes"] = sent
        with self.lock:
            self._log(res, upd, cloud_p, True, reply if asked else None)
            s = self.summary
            s.outcomes[outcome] = s.outcomes.get(outcome, 0) + 1
            if reason:
                s.reasons[reason] = s.reasons.get(reason, 0) + 1
            if sent is not None:
                s.sent_bytes.append(sent)
            if cloud_ms is not None:
                s.cloud_ms.append(cloud_ms)
            if self.events is not None:
                self._on_events(*self.events.settle(
                    upd["clip_id"], None if cloud_p is None else float(cloud_p[self.fall])))
        if self.o.metrics is not None:
            self.o.metrics.settled(int(edge_proba.argmax()),
                                   None if cloud_p is None else int(np.argmax(cloud_p)), reason,
                                   outcome in ("dropped", "not_sent"),
                                   None if cloud_ms is None else cloud_ms / 1000, sent)
        if self.o.video is not None:
            self.o.video.note = update_text(upd)

    # -- outputs (under self.lock) ----------------------------------------------------------
    def _write(self, f: TextIO, row: dict) -> None:
        f.write(json.dumps(row) + "\n")
        f.flush()

    def _on_events(self, final: list[FallEvent], alerts: list[FallEvent]) -> None:
        for ev in final:
            self.summary.events += 1
            if self.o.metrics is not None:
                self.o.metrics.fall_event()
            if self.o.events is not None:
                self._write(self.o.events, ev.json())
        if self.o.alerts is not None:
            for ev in alerts:
                self.summary.alerts += 1
                self.o.alerts.send(ev.json())

    def _log(self, res: HybridResult, row: dict, cloud_p, offloaded: bool,
             reply=None) -> None:
        """A settled answer: its line is written inside the decision log's transaction (as in
        runtime.stream), so after a kill the log's rows are exactly the settled lines, or one
        fewer."""
        if self.o.log is None:
            self._write(self.o.out, row)
            return
        reason = row.get("fallback_reason")
        if reason is not None:
            reason = FallbackReason(reason)
        self.o.log.append([Decision(
            clip_id=row["clip_id"], group=row["source"], label=row["label"],
            answered_by=row["answered_by"], verified=bool(row["verified"]),
            fallback_reason=reason, offloaded=offloaded, shadow=False,
            score=float(res.score[0]), edge_proba=res.edge.proba[0],
            edge_embedding=res.edge.embedding[0], cloud_proba=cloud_p, edge_ms=res.edge_ms,
            cloud_ms=None if reply is None else reply.latency_ms, total_ms=res.total_ms,
            attempts=0 if reply is None else reply.attempts,
            device=getattr(reply, "device", None))],
            before_commit=lambda: self._write(self.o.out, row))
