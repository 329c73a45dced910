"""One loop for a stream of clips through the hybrid, shared by `classify` (clip files) and
`watch` (video files, streams, webcams).

Per call the hybrid answers, one JSON line per clip is written and flushed, and the counters
move. The loop ends at the end of the source, after `stop_after` clips, or at the first
Ctrl-C: that one is taken after the call in hand, so no line is left half-written; a second
Ctrl-C interrupts at once.

**Nothing lost on a kill.** Per call, in this order: the decisions are inserted into the log
(not committed), the call's JSON lines are written and flushed to the OS, then the log commits.
A SIGKILL at any moment leaves every committed log row in the JSON lines; the only possible
difference is the clips of the one call in flight (lines written, commit not reached), so
with one clip per call the two differ by at most one clip, and the log is always a subset of
the lines. A flushed line survives the process (it is in the OS's page cache); a power cut is
another matter (`durable=True` on the log; the lines are not fsynced).

**A full or read-only disk stops the run** (`StreamStopped`, a clear error): the call whose
line or log row could not be written is undone on both sides (the log rolls back, the output
is truncated back to where the call began), so the output and the log still hold the same
answers. Going on without a log would give answers nobody can audit, so we stop.

**One bad clip fails alone.** A call that raises an edgeswitch error (a clip the edge model
cannot digest: a value like 3e38 that turns its output non-finite, a clip of the wrong
shape) is retried clip by clip; a clip that still fails gets an error record in the output,
`{"clip_id", "error", "model", ...}`, and no log row (it has no answer), and the loop goes on.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import model_identity
from edgeswitch.runtime.decision_log import LogWriteError
from edgeswitch.runtime.drift import DriftMonitor
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult

if TYPE_CHECKING:  # prometheus_client is an extra (serve): imported only with --metrics-port
    from edgeswitch.runtime.metrics import EdgeMetrics


class StreamStopped(EdgeSwitchError):
    """The output or the log could not be written: the run stopped (see the module doc)."""


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
    clips: int = 0          # answered (a JSON line with a label, and a log row)
    cloud: int = 0          # answered by the cloud
    fallbacks: int = 0      # the cloud was asked and did not answer: the edge answer stands
    seconds: float = 0.0
    stopped_by: str = "end of source"
    failed: int = 0         # clips with an error record instead of an answer
    offloaded: int = 0      # clips the router sent to the cloud
    reasons: Counter = field(default_factory=Counter)  # fallback reason -> offloaded clips
    errors: list[str] = field(default_factory=list)    # the first few error messages

    def cloud_never_answered(self) -> bool:
        """Clips were offloaded and the cloud answered none of them (an edge-only run, reason
        `no_cloud`, is what was asked for and does not count)."""
        return self.offloaded > 0 and self.cloud == 0 and set(self.reasons) != {"no_cloud"}


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
    return [StreamItem(item.inputs[i:i + 1], item.ids[i:i + 1], item.groups[i:i + 1],
                       extra[i:i + 1]) for i in range(len(item.ids))]


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


def run_stream(hybrid: HybridClassifier, items: Iterable[StreamItem], out: TextIO,
               stop_after: int | None = None,
               on_result: Callable[[StreamItem, HybridResult, list[dict]], None] | None = None,
               metrics: EdgeMetrics | None = None,
               drift: DriftMonitor | None = None) -> StreamSummary:
    """Every item through `hybrid`, its JSON lines to `out`; `on_result` sees each call's
    result and rows (for an annotated video, a progress bar...); `drift` each answered clip's
    switcher score, edge class and (an array's) input statistics (runtime.drift); `metrics`
    (runtime.metrics) moves after each call, once its lines are written."""
    summary, t0 = StreamSummary(), time.perf_counter()
    lines = _Lines(out)
    where = getattr(out, "name", "the output")

    def stopped(why: str) -> StreamStopped:
        return StreamStopped(f"{why}; stopped after {summary.clips} answers (the output and "
                             "the decision log hold the same ones)")

    def one(item: StreamItem) -> None:
        rows: list[dict] = []

        def write(res: HybridResult) -> None:
            rows.extend(result_rows(res, hybrid.classes_, item))
            lines.write(rows)

        try:
            res = hybrid.classify(item.inputs, item.ids, item.groups, on_answer=write)
        except LogWriteError as exc:
            if rows:
                lines.undo()
            raise stopped(str(exc)) from None
        except OSError as exc:  # the JSON lines: the log rolled back
            lines.undo()
            raise stopped(f"cannot write {where}: {exc.strerror or exc}") from None
        except EdgeSwitchError as exc:
            if rows:  # after its lines were written: the log did not commit them
                lines.undo()
                raise stopped(str(exc)) from None
            if len(item.ids) > 1:  # find the clip: the others are answered
                for sub in _split(item):
                    one(sub)
                return
            record = clip_error(hybrid, item, exc)
            try:
                lines.write([record])
            except OSError as err:
                lines.undo()
                raise stopped(f"cannot write {where}: {err.strerror or err}") from None
            summary.failed += 1
            if metrics is not None:
                metrics.clip_failed()
            if len(summary.errors) < 5:
                summary.errors.append(f"{item.ids[0]}: {record['error']}")
            return
        summary.clips += len(rows)
        summary.cloud += int((res.answered_by == "cloud").sum())
        summary.fallbacks += int((~res.verified).sum())
        summary.offloaded += int(res.offloaded.sum())
        summary.reasons.update(str(r) for r in res.reason[res.offloaded & ~res.verified])
        if drift is not None:
            try:
                drift.observe(res.score, res.edge.label, item.inputs)
            except LogWriteError as exc:  # the call's answers are in both already
                raise stopped(str(exc)) from None
        if metrics is not None:
            metrics.observe_call(hybrid, res)
            if drift is not None:
                metrics.set_drift(*drift.state())
        if on_result is not None:
            on_result(item, res, rows)

    stop = _StopOnCtrlC()
    try:
        for item in items:
            one(item)
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
