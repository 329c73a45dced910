"""Fall events from clip answers: consecutive clips merged into episodes, with hysteresis.

A caregiver needs "a fall started at 12 s, the cloud confirmed it, it ended at 19 s", not one
line per overlapping clip. Each clip has a fall score: the edge's P(fall), raised to the
cloud's P(fall) when the cloud answered (so a fall the edge doubted but the cloud saw opens an
event, and a cloud that says "adl" does not erase what the edge saw: it marks the event
`overruled`). An event opens at a clip scoring at least `on`, takes in every later clip
scoring at least `off`, and ends after `gap` clips in a row below `off` (on > off: the
hysteresis that keeps one fall from flickering into several events).

Who confirmed it: `cloud` when the cloud said fall for one of its clips; `overruled` when the
cloud answered for some of its clips and said adl every time; `edge` when the cloud answered
none of them (no cloud, or it timed out, failed or was dropped: the edge's word stands).

Cloud answers come late, so the episodes are recomputed over the recent clips whenever one
arrives. An event is final (written to `--events`) once it has ended and every clip in it and
in its ending is settled; it is alerted earlier, as soon as it is confirmed (`cloud`), or once
all its clips so far are settled with no cloud answer (`edge`). An overruled event is written
but never alerted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeswitch.errors import EdgeSwitchError


@dataclass
class _Clip:
    clip_id: str
    start_s: float
    end_s: float
    edge_p: float
    settled: bool
    cloud_p: float | None = None   # the cloud's P(fall) when it answered

    @property
    def score(self) -> float:
        return self.edge_p if self.cloud_p is None else max(self.edge_p, self.cloud_p)


@dataclass
class FallEvent:
    id: str
    start_s: float
    end_s: float
    peak: float              # highest fall score of its clips
    confirmed_by: str        # edge | cloud | overruled
    clips: list[str]
    source: str = ""
    ended: bool = True       # False in an alert sent while the event is still going on

    def json(self) -> dict:
        return {"id": self.id, "source": self.source, "start_s": self.start_s,
                "end_s": self.end_s, "ended": self.ended,
                "peak_probability": round(self.peak, 6), "confirmed_by": self.confirmed_by,
                "clip_ids": list(self.clips)}


@dataclass
class EventTracker:
    """Feed it every clip (`add`) and every cloud answer (`settle`); each returns
    (final events, events to alert now)."""

    on: float = 0.5
    off: float = 0.3
    gap: int = 2
    source: str = ""
    _clips: list[_Clip] = field(default_factory=list)
    _index: dict[str, int] = field(default_factory=dict)
    _ids: dict[str, str] = field(default_factory=dict)     # clip id -> its event's id
    _alerted: set[str] = field(default_factory=set)        # event ids
    _final: set[str] = field(default_factory=set)          # event ids written
    _count: int = 0
    emitted: list[FallEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0 <= self.off <= self.on <= 1:
            raise EdgeSwitchError(f"fall events need 0 <= event_off <= event_on <= 1, got "
                                  f"event_off {self.off}, event_on {self.on}")

    def add(self, clip_id: str, start_s: float, end_s: float, edge_p: float,
            settled: bool, source: str = "") -> tuple[list[FallEvent], list[FallEvent]]:
        if source and source != self.source and self._clips:  # a new file: the last one ended
            final = self.finish()
            self.source = source
            more, alerts = self.add(clip_id, start_s, end_s, edge_p, settled)
            return final + more, alerts
        self.source = source or self.source
        self._index[clip_id] = len(self._clips)
        self._clips.append(_Clip(clip_id, start_s, end_s, float(edge_p), settled))
        return self._update(end=False)

    def settle(self, clip_id: str, cloud_p: float | None) -> tuple[list[FallEvent],
                                                                 list[FallEvent]]:
        """The clip's cloud outcome: its P(fall), or None (no answer: timeout, drop...)."""
        i = self._index.get(clip_id)
        if i is None:
            return [], []  # an earlier file's clip, already final
        self._clips[i].settled, self._clips[i].cloud_p = True, cloud_p
        return self._update(end=False)

    def finish(self) -> list[FallEvent]:
        """End of the source: every clip counts as settled, an open event ends."""
        for c in self._clips:
            c.settled = True
        final, _ = self._update(end=True)
        self._clips, self._index = [], {}
        return final

    def _episodes(self) -> list[tuple[int, int, int | None]]:
        """(first, last, index of the clip that ended it or None while open)."""
        out, first, last, below = [], None, None, 0
        for i, c in enumerate(self._clips):
            s = c.score
            if first is None:
                if s >= self.on:
                    first, last, below = i, i, 0
            elif s >= self.off:
                last, below = i, 0
            else:
                below += 1
                if below >= self.gap:
                    out.append((first, last, i))
                    first = None
        if first is not None:
            out.append((first, last, None))
        return out

    def _update(self, end: bool) -> tuple[list[FallEvent], list[FallEvent]]:
        final, alerts, open_firsts = [], [], []
        for first, last, closer in self._episodes():
            clips = self._clips[first:last + 1]
            ev = self._event(clips, ended=closer is not None or end)
            stop = closer if closer is not None else len(self._clips) - 1
            if ev.confirmed_by != "overruled" and ev.id not in self._alerted and (
                    ev.confirmed_by == "cloud" or all(c.settled for c in clips)):
                self._alerted.add(ev.id)
                alerts.append(ev)
            if (closer is not None or end) and all(c.settled for c in
                                                   self._clips[first:stop + 1]):
                if ev.id not in self._final:
                    self._final.add(ev.id)
                    final.append(ev)
            else:
                open_firsts.append(first)
        self.emitted.extend(final)
        # what can no longer change is forgotten: settled clips ahead of the first event still
        # open and of the first clip still pending (a camera watched for days keeps a few
        # clips, not all); the hysteresis restarts there in its "no event" state
        unsettled = next((i for i, c in enumerate(self._clips) if not c.settled),
                         len(self._clips))
        cut = min([unsettled] + open_firsts[:1])
        if cut:
            for c in self._clips[:cut]:
                self._ids.pop(c.clip_id, None)
            self._clips = self._clips[cut:]
            self._index = {c.clip_id: i for i, c in enumerate(self._clips)}
        return final, alerts

    def _event(self, clips: list[_Clip], ended: bool) -> FallEvent:
        known = [self._ids[c.clip_id] for c in clips if c.clip_id in self._ids]
        if known:
            eid = known[0]
        else:
            self._count += 1
            eid = f"fall-{self._count:04d}"
        for c in clips:
            self._ids.setdefault(c.clip_id, eid)
        answered = [c.cloud_p for c in clips if c.cloud_p is not None]
        who = "edge" if not answered else "cloud" if max(answered) >= self.on else "overruled"
        return FallEvent(eid, clips[0].start_s, clips[-1].end_s, max(c.score for c in clips),
                         who, [c.clip_id for c in clips], self.source, ended)
