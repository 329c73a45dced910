"""One loop for a stream of clips through the hybrid, shared by `classify` (clip files) and
`watch` (video files, streams, webcams).

Per call the hybrid answers, one JSON line per clip is written and flushed (so a reader
tailing the file sees every answer as it comes), and the counters move. The loop ends at the
end of the source, after `stop_after` clips, or at the first Ctrl-C: that one is taken after
the call in hand, so no line is left half-written; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult


@dataclass(frozen=True)
class StreamItem:
    """One hybrid call: clips (an array [n, T, C], or a list of VideoClip), their ids and
    groups, and per clip any fields to add to its JSON line (e.g. a video's time range)."""

    inputs: Any
    ids: Sequence[str]
    groups: Sequence[str]
    extra: Sequence[dict] = field(default_factory=tuple)


@dataclass
class StreamSummary:
    clips: int = 0
    cloud: int = 0          # answered by the cloud
    fallbacks: int = 0      # the cloud was asked and did not answer: the edge answer stands
    seconds: float = 0.0
    stopped_by: str = "end of source"


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


def result_rows(res: HybridResult, classes: tuple[str, ...], item: StreamItem) -> list[dict]:
    rows = res.records(classes, list(item.ids))
    for row, extra in zip(rows, item.extra, strict=False):
        row.update(extra)
    return rows


def run_stream(hybrid: HybridClassifier, items: Iterable[StreamItem], out: TextIO,
               stop_after: int | None = None,
               on_result: Callable[[StreamItem, HybridResult, list[dict]], None] | None = None,
               ) -> StreamSummary:
    """Every item through `hybrid`, its JSON lines to `out`; `on_result` sees each call's
    result and rows (for an annotated video, a progress bar...)."""
    summary, t0 = StreamSummary(), time.perf_counter()
    stop = _StopOnCtrlC()
    try:
        for item in items:
            res = hybrid.classify(item.inputs, item.ids, item.groups)
            rows = result_rows(res, hybrid.classes_, item)
            out.write("".join(json.dumps(row) + "\n" for row in rows))
            out.flush()
            summary.clips += len(rows)
            summary.cloud += int((res.answered_by == "cloud").sum())
            summary.fallbacks += int((~res.verified).sum())
            if on_result is not None:
                on_result(item, res, rows)
            if stop_after and summary.clips >= stop_after:
                summary.stopped_by = f"--stop-after {stop_after}"
                break
            if stop.requested:
                summary.stopped_by = "Ctrl-C"
                break
    except KeyboardInterrupt:  # a second Ctrl-C, or one while waiting for a stream
        summary.stopped_by = "Ctrl-C"
    finally:
        stop.restore()
        summary.seconds = time.perf_counter() - t0
    return summary
