"""Fall events from clip answers: hysteresis, who confirmed them, late cloud answers."""

from __future__ import annotations

import pytest

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.video.events import EventTracker


def feed(tracker, scores, settled=True):
    """Clips every second, 4 s long; returns (final events, alerts) over all of them."""
    final, alerts = [], []
    for i, p in enumerate(scores):
        f, a = tracker.add(f"c{i}", float(i), i + 4.0, p, settled)
        final += f
        alerts += a
    return final, alerts


def test_hysteresis_makes_one_event_of_a_flickering_fall():
    t = EventTracker(on=0.6, off=0.3, gap=2)
    # opens at 0.7, dips to 0.4 (above off: still in), one clip below off is not the end
    final, alerts = feed(t, [0.1, 0.7, 0.4, 0.9, 0.2, 0.5, 0.1, 0.1, 0.1])
    assert len(final) == 1 and len(alerts) == 1
    ev = final[0]
    assert (ev.start_s, ev.end_s) == (1.0, 9.0)  # clips 1..5 (the last one >= off)
    assert ev.clips == ["c1", "c2", "c3", "c4", "c5"] and ev.peak == 0.9
    assert ev.confirmed_by == "edge" and ev.id == alerts[0].id


def test_two_falls_far_apart_are_two_events_and_an_open_one_ends_with_the_source():
    t = EventTracker(on=0.5, off=0.3, gap=2)
    final, _ = feed(t, [0.9, 0.1, 0.1, 0.1, 0.8, 0.8])
    assert [e.clips for e in final] == [["c0"]]
    last = t.finish()
    assert [e.clips for e in last] == [["c4", "c5"]] and last[0].id != final[0].id


def test_the_cloud_confirms_overrules_and_finds_a_fall_the_edge_missed():
    t = EventTracker(on=0.5, off=0.3, gap=1)
    final, alerts = feed(t, [0.9, 0.1], settled=False)
    assert final == [] and alerts == []          # pending: nothing said yet
    f, a = t.settle("c0", 0.95)                  # the cloud says fall: alert at once
    assert [e.confirmed_by for e in a] == ["cloud"] and f == []
    f, a = t.settle("c1", 0.0)                   # its ending settles: the event is final
    assert [e.confirmed_by for e in f] == ["cloud"] and a == []

    t = EventTracker(on=0.5, off=0.3, gap=1)
    feed(t, [0.9, 0.1], settled=False)
    t.settle("c0", 0.05)                          # the cloud says adl
    f, a = t.settle("c1", None)
    assert [e.confirmed_by for e in f] == ["overruled"] and a == []  # never alerted

    t = EventTracker(on=0.5, off=0.3, gap=1)
    feed(t, [0.2, 0.1], settled=False)            # the edge saw nothing ...
    f, a = t.settle("c0", 0.9)                    # ... the cloud saw a fall
    assert [e.confirmed_by for e in a] == ["cloud"] and a[0].clips == ["c0"]


def test_an_edge_event_is_alerted_once_however_many_updates_follow():
    t = EventTracker(on=0.5, off=0.3, gap=3)
    _, alerts = feed(t, [0.9, 0.9, 0.9, 0.9])
    assert len(alerts) == 1 and alerts[0].ended is False  # sent while it goes on
    assert [e.id for e in t.finish()] == [alerts[0].id]


def test_bad_thresholds_are_refused():
    with pytest.raises(EdgeSwitchError, match="event_off <= event_on"):
        EventTracker(on=0.3, off=0.5)


def test_a_long_quiet_stream_keeps_only_the_clips_that_can_still_change():
    t = EventTracker(on=0.5, off=0.3, gap=2)
    final, _ = feed(t, [0.1] * 1000 + [0.9, 0.9, 0.1, 0.1] + [0.1] * 1000)
    assert len(final) == 1 and final[0].clips == ["c1000", "c1001"]
    assert len(t._clips) <= 1  # settled, outside any event: forgotten
    t.add("p", 2004.0, 2008.0, 0.1, settled=False)
    t.add("q", 2005.0, 2009.0, 0.9, settled=True)
    assert [c.clip_id for c in t._clips] == ["p", "q"]  # from the pending one on
