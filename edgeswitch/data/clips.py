"""The one batch type every part of edgeswitch speaks: fixed-length multichannel clips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from edgeswitch.errors import DataError


def check_clips(X: object, name: str = "X") -> np.ndarray:
    """Validate an array of clips `[n, T, C]` and return it as C-contiguous float32.

    Raises DataError naming the problem: wrong rank, non-numeric dtype, empty, NaN or inf.
    """
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise DataError(f"{name}: cannot be read as an array of clips ({exc})") from None
    if X.ndim != 3:
        raise DataError(
            f"{name}: expected clips shaped [n, T, C] (3 dims), got shape {X.shape}"
        )
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise DataError(f"{name}: expected a real numeric dtype, got {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0 or X.shape[2] == 0:
        raise DataError(f"{name}: empty clips array, shape {X.shape}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        clips = np.unique(np.nonzero(bad)[0])
        kind = "NaN" if np.isnan(X[bad]).any() else "inf"
        raise DataError(
            f"{name}: {int(bad.sum())} non-finite values ({kind}) in {len(clips)} clip(s), "
            f"first at clip index {int(clips[0])}"
        )
    return X


# The input range of a model that records none (models exported before the range was recorded,
# other backends): |x| <= 1e6 in the sensor's units. No body-worn or home sensor reads that
# high, and a float32 network's activations stay far from overflow (3.4e38) below it.
DEFAULT_INPUT_BOUND = 1e6
# A trained model records max |x| over its training clips times this margin as its range:
# wide enough for a harder movement than any seen in training, narrow enough that a clip of
# 1e30s (a corrupt sensor, an attacker) is refused before it reaches the network.
INPUT_MARGIN = 10.0


def input_bound(X: np.ndarray, margin: float = INPUT_MARGIN) -> float:
    """The range a model trained on clips `X` records: max |x| times `margin` (at least 1)."""
    return float(max(float(np.abs(X).max(initial=0.0)) * margin, 1.0))


def check_clip_range(X: np.ndarray, bound: float, name: str = "X") -> np.ndarray:
    """Finite clips `X` must stay within `|x| <= bound` (the model's input range); DataError
    names the first clip outside it, the value it holds and how many clips are outside."""
    over = np.abs(X) > bound
    if over.any():
        clips = np.unique(np.nonzero(over)[0])
        first = int(clips[0])
        value = float(X[first][over[first]][0])
        raise DataError(f"{name}: clip index {first} holds {value:.6g}, outside this model's "
                        f"input range |x| <= {bound:.6g} ({len(clips)} clip(s) outside)")
    return X


def model_input(X: object) -> np.ndarray:
    """What a model call takes: sensor clips [n, T, C] (checked), or a list of other clip
    objects (video clips) as a 1-D object array, so boolean masks select from either."""
    if isinstance(X, list | tuple) or (isinstance(X, np.ndarray) and X.dtype == object):
        items = list(X)
        if items and not isinstance(items[0], np.ndarray | list | tuple | float | int):
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
    return check_clips(X)


@dataclass(frozen=True)
class ClipBatch:
    """Clips `X [n, T, C]` with optional labels, their groups (subject / recording) and ids.

    `y` holds indices into `classes`; `y is None` means unlabelled (DMD pool, calibration set,
    a user's production data). `groups` decide splits: a group never spans two splits.
    `streams` says which clips one device saw one after another (a recording, or a wearer's
    day) and `t` when each clip starts, in seconds; without them every clip is its own stream
    (see data/streams.py). A stream lies within one group, and never holds two clips at one time.
    """

    X: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray
    classes: tuple[str, ...]
    ids: np.ndarray
    name: str = "clips"
    sample_rate_hz: float | None = None
    meta: dict = field(default_factory=dict, compare=False)
    streams: np.ndarray | None = None
    t: np.ndarray | None = None

    def __post_init__(self) -> None:
        X = check_clips(self.X, f"{self.name}.X")
        n = X.shape[0]
        object.__setattr__(self, "X", X)
        classes = tuple(str(c) for c in self.classes)
        if len(classes) < 2:
            raise DataError(f"{self.name}: need at least 2 classes, got {list(classes)}")
        if len(set(classes)) != len(classes):
            raise DataError(f"{self.name}: duplicate class names in {list(classes)}")
        object.__setattr__(self, "classes", classes)
        if self.y is not None:
            y = np.asarray(self.y)
            if y.shape != (n,):
                raise DataError(f"{self.name}: y has shape {y.shape}, expected ({n},)")
            if not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{self.name}: y must hold integer class indices, got dtype {y.dtype}"
                )
            if y.size and (y.min() < 0 or y.max() >= len(classes)):
                bad = int(y.max() if y.max() >= len(classes) else y.min())
                raise DataError(f"{self.name}: label index {bad} outside the {len(classes)} "
                                f"classes {list(classes)}")
            object.__setattr__(self, "y", y.astype(np.int64))
        groups = np.asarray(self.groups).astype(str)
        if groups.shape != (n,):
            raise DataError(f"{self.name}: groups has shape {groups.shape}, expected ({n},)")
        object.__setattr__(self, "groups", groups)
        ids = np.asarray(self.ids).astype(str)
        if ids.shape != (n,):
            raise DataError(f"{self.name}: ids has shape {ids.shape}, expected ({n},)")
        if len(np.unique(ids)) != n:
            raise DataError(f"{self.name}: clip ids are not unique")
        object.__setattr__(self, "ids", ids)
        self._check_streams(n)

    def _check_streams(self, n: int) -> None:
        streams = self.ids if self.streams is None else np.asarray(self.streams).astype(str)
        if streams.shape != (n,):
            raise DataError(f"{self.name}: streams has shape {streams.shape}, expected ({n},) "
                            "(one stream id per clip)")
        if self.t is None:
            t = np.zeros(n)
        else:
            try:
                t = np.asarray(self.t, dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{self.name}: t must hold numbers (clip start, seconds)") \
                    from None
        if t.shape != (n,):
            raise DataError(f"{self.name}: t has shape {t.shape}, expected ({n},)")
        if not np.isfinite(t).all():
            first = int(np.nonzero(~np.isfinite(t))[0][0])
            raise DataError(f"{self.name}: t holds NaN or inf (first at clip {self.ids[first]!r})")
        object.__setattr__(self, "streams", streams)
        object.__setattr__(self, "t", t)
        if self.streams_given:
            check_streams(streams, t, self.groups, self.ids, self.name, in_order=False)

    @property
    def streams_given(self) -> bool:
        """Whether any stream holds more than one clip (else every clip stands alone)."""
        return len(np.unique(self.streams)) < len(self.streams)

    def stream_order(self) -> np.ndarray:
        """Clip indices stream by stream (streams in order of first appearance), each stream in
        time order: the order in which a device meets the clips."""
        parts = stream_lists(self.streams, self.t)
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def clip_shape(self) -> tuple[int, int]:
        """(T, C): samples per clip and channels."""
        return int(self.X.shape[1]), int(self.X.shape[2])

    @property
    def labelled(self) -> bool:
        return self.y is not None

    def subset(self, index: np.ndarray | Sequence[int], name: str | None = None) -> ClipBatch:
        """A new batch with the clips at `index` (integer indices or a boolean mask)."""
        idx = np.asarray(index)
        return replace(self, X=self.X[idx], y=None if self.y is None else self.y[idx],
                       groups=self.groups[idx], ids=self.ids[idx], name=name or self.name,
                       meta=dict(self.meta), streams=self.streams[idx], t=self.t[idx])

    def without_labels(self) -> ClipBatch:
        """The same clips with the labels removed: what DMD and calibration are allowed to see."""
        return replace(self, y=None, meta=dict(self.meta))

    def require_labels(self, purpose: str) -> np.ndarray:
        if self.y is None:
            raise DataError(f"{self.name}: {purpose} needs labels, but this batch is unlabelled")
        return self.y


def check_streams(streams: np.ndarray, t: np.ndarray, groups: np.ndarray | None,
                  ids: np.ndarray, name: str, in_order: bool = True) -> None:
    """A stream lies in one group and holds no two clips at one time; with `in_order` (a file
    as given), each stream's clips also come in time order. DataError names the stream."""
    order = np.lexsort((np.arange(len(t)), t, streams))
    s, tt = streams[order], t[order]
    same = s[1:] == s[:-1]
    dup = np.nonzero(same & (tt[1:] == tt[:-1]))[0]
    if len(dup):
        i, j = order[dup[0]], order[dup[0] + 1]
        raise DataError(f"{name}: stream {str(s[dup[0]])!r} has two clips at t={tt[dup[0]]:g} s "
                        f"({str(ids[i])!r} and {str(ids[j])!r}); each clip of a stream needs its "
                        "own time")
    if groups is not None:
        split = np.nonzero(same & (groups[order][1:] != groups[order][:-1]))[0]
        if len(split):
            k = split[0]
            raise DataError(f"{name}: stream {str(s[k])!r} spans groups "
                            f"{str(groups[order][k])!r} and {str(groups[order][k + 1])!r}; a "
                            "stream must lie within one group")
    if in_order:
        order = np.lexsort((np.arange(len(t)), streams))   # each stream in file order
        back = np.nonzero((streams[order][1:] == streams[order][:-1])
                          & (np.diff(t[order]) < 0))[0]
        if len(back):
            a, b = order[back[0]], order[back[0] + 1]
            raise DataError(f"{name}: clips of stream {str(streams[a])!r} are out of time order: "
                            f"{str(ids[b])!r} (t={t[b]:g} s) comes after {str(ids[a])!r} "
                            f"(t={t[a]:g} s)")


def stream_lists(streams: np.ndarray, t: np.ndarray) -> list[np.ndarray]:
    """The clip indices of each stream in time order (streams in order of first appearance)."""
    streams, t = np.asarray(streams), np.asarray(t, dtype=np.float64)
    _, first, inv = np.unique(streams, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    order = np.lexsort((t, rank[inv]))
    cuts = np.nonzero(np.diff(rank[inv][order]))[0] + 1
    return np.split(order, cuts) if len(order) else []
