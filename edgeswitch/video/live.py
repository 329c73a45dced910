"""`watch`: the one stream loop (runtime.stream) over video clips or recorded sensor clips,
with what video adds: what is sent (a cropped clip), fall events, alerts, an annotated video.

Each source is one stream: its clips are routed in its own state. With a cloud, the edge
answers every clip at once and the cloud answers later (runtime.stream's asynchronous queue:
`"cloud": "pending"` clip lines, then update lines); without one, offloaded clips say
`"cloud": "no_cloud"`. Fall events (video.events) follow both kinds of line; alerts go out
from their own thread (video.alerts). `lag_ms` on a clip line, for a paced file or a live
source, is how long after its end in real time the line was written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from edgeswitch.config import VideoConfig
from edgeswitch.runtime.drift import DriftMonitor
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult
from edgeswitch.runtime.stream import (
    CloudQueue,
    StreamHooks,
    StreamItem,
    StreamRunner,
    StreamSummary,
)
from edgeswitch.video.alerts import AlertSender
from edgeswitch.video.annotate import AnnotatedVideo, update_text
from edgeswitch.video.events import EventTracker, FallEvent
from edgeswitch.video.privacy import crop_clip, person_box

if TYPE_CHECKING:  # prometheus_client is an extra: imported only with --metrics-port
    from edgeswitch.runtime.metrics import EdgeMetrics


@dataclass
class WatchOutputs:
    out: TextIO
    events: TextIO | None = None
    video: AnnotatedVideo | None = None
    alerts: AlertSender | None = None
    metrics: EdgeMetrics | None = None  # moved after each clip line and each update
    drift: DriftMonitor | None = None   # fed each clip's switcher score and edge class


class VideoHooks(StreamHooks):
    """Fall events and alerts from the edge's and the cloud's P(fall), the annotated video, and
    (`crop`) only the tracked person's box sent."""

    def __init__(self, hybrid: HybridClassifier, outputs: WatchOutputs, cfg: VideoConfig,
                 summary: StreamSummary, crop: bool = False) -> None:
        self.hybrid, self.o, self.cfg, self.summary, self.crop = hybrid, outputs, cfg, \
            summary, crop
        classes = hybrid.classes_
        self.fall = classes.index("fall") if "fall" in classes else None
        self.events = EventTracker(cfg.event_on, cfg.event_off, cfg.event_gap) \
            if self.fall is not None and (outputs.events or outputs.alerts) else None

    def payload(self, clip: Any) -> Any:
        if not self.crop:
            return clip
        box = person_box(self.hybrid.edge, clip)
        return crop_clip(clip, box) if box is not None else None

    def on_clip(self, clip: Any, res: HybridResult, i: int, row: dict, settled: bool) -> None:
        if self.events is not None and "start_s" in row:
            self._on_events(*self.events.add(
                row["clip_id"], row["start_s"], row["end_s"],
                float(res.edge.proba[i, self.fall]), settled=settled,
                source=row.get("source", "")))
        if self.o.video is not None and clip is not None:
            self.o.video.show(clip, row)

    def on_update(self, row: dict, cloud_proba: np.ndarray | None) -> None:
        if self.events is not None:
            self._on_events(*self.events.settle(
                row["clip_id"], None if cloud_proba is None else float(cloud_proba[self.fall])))
        if self.o.video is not None:
            self.o.video.note = update_text(row)

    def finish(self) -> None:
        if self.events is not None:
            self._on_events(self.events.finish(), [])
        if self.o.alerts is not None:
            c = self.cfg
            import time

            self.o.alerts.close(time.monotonic() + c.alert_timeout_s * (c.alert_retries + 1))

    def _on_events(self, final: list[FallEvent], alerts: list[FallEvent]) -> None:
        import json

        for ev in final:
            self.summary.events += 1
            if self.o.metrics is not None:
                self.o.metrics.fall_event()
            if self.o.events is not None:
                self.o.events.write(json.dumps(ev.json()) + "\n")
                self.o.events.flush()
        if self.o.alerts is not None:
            for ev in alerts:
                self.summary.alerts += 1
                self.o.alerts.send(ev.json())


def watch_items(clips: Iterable[Any]) -> Iterable[StreamItem]:
    """One item per clip: a video clip (its source is its stream), or a recorded sensor clip
    `(array [T, C], clip id, stream, start_s, end_s)`."""
    for clip in clips:
        if isinstance(clip, tuple):
            x, cid, stream, start, end = clip
            yield StreamItem(np.asarray(x)[None], [cid], [stream],
                             [{"source": stream, "start_s": start, "end_s": end}], [stream])
        else:
            yield StreamItem([clip], [clip.clip_id], [clip.source],
                             [{"source": clip.source, "start_s": clip.start_s,
                               "end_s": clip.end_s}], [clip.source])


def watch(hybrid: HybridClassifier, cloud, outputs: WatchOutputs, cfg: VideoConfig,
          clips: Iterable[Any], clock=None, crop: bool = False,
          stop_after: int | None = None, deadline_ms: float | None = None) -> StreamSummary:
    """`watch`'s run: `hybrid` (its cloud unused when `cloud` is given: the runner's queue asks
    it; with None, edge only) over `clips` (see `watch_items`); `deadline_ms` per cloud
    request (default: the VLM's, [video] vlm_deadline_ms)."""
    queue = None if cloud is None else CloudQueue(
        cloud, cfg.cloud_workers, cfg.cloud_queue,
        cfg.vlm_deadline_ms if deadline_ms is None else deadline_ms, cfg.drain_s,
        cfg.cloud_wait)
    runner = StreamRunner(hybrid, outputs.out, queue=queue, watch_lines=True,
                          metrics=outputs.metrics, drift=outputs.drift, clock=clock)
    runner.hooks = VideoHooks(hybrid, outputs, cfg, runner.summary, crop)
    return runner.run(watch_items(clips), stop_after)
