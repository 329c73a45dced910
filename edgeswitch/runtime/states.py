"""The routers' per-stream states on a device: one row each, bounded in number.

A process may route many streams at once (a gateway for a fleet of watches, `classify` over a
file of many recordings). Each stream's state is a few numbers per class (router.start); at
most `max_streams` are kept, and the least recently seen is forgotten first. An unknown stream,
or one forgotten, starts fresh: it is routed as a new device would be.
"""

from __future__ import annotations

from collections import OrderedDict

from edgeswitch.errors import EdgeSwitchError
from edgeswitch.switcher.routers import Router, StreamState

DEFAULT_STREAM = "default"   # the stream of clips whose call names none


class StreamStates:
    def __init__(self, router: Router, n_classes: int, max_streams: int = 10_000) -> None:
        if max_streams < 1:
            raise EdgeSwitchError(f"max_streams must be >= 1, got {max_streams}")
        self.router, self.n_classes, self.max_streams = router, n_classes, max_streams
        self._states: OrderedDict[str, StreamState] = OrderedDict()
        self.forgotten = 0   # streams dropped to stay within max_streams

    def get(self, stream: str) -> StreamState:
        """The stream's state (one row; a fresh one for a stream not held)."""
        st = self._states.get(stream)
        if st is None:
            return self.router.start(1, self.n_classes)
        self._states.move_to_end(stream)
        return st

    def set(self, stream: str, state: StreamState) -> None:
        self._states[stream] = state
        self._states.move_to_end(stream)
        while len(self._states) > self.max_streams:
            self._states.popitem(last=False)
            self.forgotten += 1

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, stream: str) -> bool:
        return stream in self._states
