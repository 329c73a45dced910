"""Run a router over recorded streams: every clip's edge output, the cloud's answer and the
answer an offload gets are known in advance, so many thresholds run at once.

Clips of a stream go through the router in time order; a decision changes later states, so
each threshold of a stream router is its own run (rows = threshold x stream, batched).
A per-clip router carries nothing, and its whole path is one sort (`RankedPath`).
A sweep and a calibration are **searches** over thresholds, round after round
(`run_searches`): the rounds of several searches, on several sets of clips, run side by side
as rows of one run, since a replay's cost is mostly numpy's fixed cost per step.
A router's **twins** decide as it does at every step (the same trust and states: the same
belief answering offloaded clips another way); one run labels the clips as each of them would,
so a benchmark replays such routers once (`sweeps`, `run_streams_twins`).
Used by the benchmark and `evaluate` (curves, operating points) and by the stream router's
own fit on unlabelled pool streams (switcher.stream).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence

import numpy as np

from edgeswitch.evaluation.curves import RankedPath, SweptPath
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.routers import Router, Step, StreamState


def padded(streams: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Streams (clip indices in time order) as `[S, L]` indices and a validity mask."""
    length = max((len(s) for s in streams), default=0)
    idx = np.zeros((len(streams), length), np.int64)
    valid = np.zeros((len(streams), length), bool)
    for j, s in enumerate(streams):
        idx[j, :len(s)] = s
        valid[j, :len(s)] = True
    return idx, valid


def run_rows(router: Router, edge: ModelOutput, cloud: np.ndarray, answer: np.ndarray,
             idx: np.ndarray, valid: np.ndarray,
             decide: Callable[[np.ndarray, np.ndarray], np.ndarray],
             seen: Callable[[np.ndarray, StreamState, Step, ModelOutput], None] | None = None,
             twins: Sequence[Router] = (), cuts: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of clips (`idx [R, L]`, each row one stream in time order) through `router`;
    `decide(trust, rows)` says which of the rows' current clips are offloaded. Offloaded clips
    are answered by `answer` and the cloud's own posterior (`cloud`) goes into the state.
    `seen(clips, state, step, edge)` sees every step (a stream switcher's training data).
    Returns offloaded `[R, L]`, the labels `[1 + len(twins), R, L]` (the router's, then each
    twin's: see the module doc) and trust `[R, L]` (undefined where not `valid`). `cuts`:
    the rows where separate runs start, for a router that is not `rowwise` (each run's rows are
    scored apart, as that run alone would score them)."""
    R, L = idx.shape
    k = edge.proba.shape[1]
    state = router.start(R, k)
    replay = router.replay(edge, cloud)
    answerers = (router, *twins)
    off = np.zeros((R, L), bool)
    label = np.zeros((len(answerers), R, L), np.int64)
    trust = np.zeros((R, L))
    for t in range(L):
        rows = np.nonzero(valid[:, t])[0]
        if not len(rows):
            continue
        clips = idx[rows, t]
        every = len(rows) == R   # every row steps: the state itself, no copy in or out
        now = state if every else state.rows(rows)
        step = replay.step(now, clips, None if cuts is None else _parts(rows, cuts))
        if seen is not None:
            seen(clips, now, step, replay.view(clips))
        o = np.asarray(decide(step.trust, rows), bool)
        off[rows, t], trust[rows, t] = o, step.trust
        after = replay.observe(now, step, clips, o)
        kept = step.kept_label
        for a, r in enumerate(answerers):
            given = r.answer(step, after, answer[clips]).argmax(axis=1)
            label[a, rows, t] = np.where(o, given, kept)
        if every:   # a router returns a new state (it never writes into the one it reads)
            state = after
        else:
            state.put(rows, after)
    return off, label, trust


def _parts(rows: np.ndarray, cuts: np.ndarray) -> list[slice]:
    """The runs' parts of a step's `rows` (sorted), where runs start at rows `cuts`."""
    ends = [0, *np.searchsorted(rows, cuts).tolist(), len(rows)]
    return [slice(a, z) for a, z in zip(ends[:-1], ends[1:], strict=True) if z > a]


def _flat(n: int, idx: np.ndarray, valid: np.ndarray, a: np.ndarray) -> np.ndarray:
    """`[M * S, L]` per-row values -> `[M, n]` per clip (each clip is in one stream)."""
    S = idx.shape[0]
    M = a.shape[0] // S
    out = np.zeros((M, n), a.dtype)
    rows, cols = np.nonzero(valid)
    for m in range(M):
        out[m, idx[rows, cols]] = a[m * S + rows, cols]
    return out


def sweep(router: Router, edge: ModelOutput, cloud: np.ndarray, answer: np.ndarray,
          streams: Sequence[np.ndarray], seed: int = 0, points: int = 64,
          refine: int = 3, max_gap: float = 0.02) -> RankedPath | SweptPath:
    """The router's path of hybrids over these streams, from no offload to all (see
    evaluation.curves). A stream router is run at `points` thresholds (quantiles of its trust
    with nothing offloaded, plus -inf and +inf), then at midpoints wherever two neighbouring
    thresholds' offload rates differ by more than `max_gap`, up to `refine` rounds."""
    return sweeps(router, (), edge, cloud, answer, [streams], seed, points, refine,
                  max_gap)[0][0]


def sweeps(router: Router, twins: Sequence[Router], edge: ModelOutput, cloud: np.ndarray,
           answer: np.ndarray, stream_sets: Sequence[Sequence[np.ndarray]], seed: int = 0,
           points: int = 64, refine: int = 3, max_gap: float = 0.02
           ) -> list[list[RankedPath | SweptPath]]:
    """`sweep` over each of `stream_sets` of the router and of each of its `twins` (see the
    module doc): per set, their paths (the router's first), the sets' rounds side by side."""
    answer_label = np.asarray(answer).argmax(axis=1)
    if not router.stateful:   # a per-clip router's twins answer as it does
        path = RankedPath.from_scores(router.trust(edge), edge.label, answer_label, seed)
        return [[path] * (1 + len(twins)) for _ in stream_sets]
    return run_searches(router, twins, [(edge, cloud, answer)],
                        [(0, s, sweep_search(s, points, refine, max_gap)) for s in stream_sets])


# A search over thresholds (a sweep's, a calibration's): it yields the thresholds it wants run
# next over its streams, is sent what those runs gave for each clip of its set (offloaded
# `[m, n]`, labels `[1 + twins, m, n]`, trust `[m, n]`) and returns its result.
Search = Generator[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], object]


def sweep_search(streams: Sequence[np.ndarray], points: int = 64, refine: int = 3,
                 max_gap: float = 0.02) -> Search:
    """`sweep`'s search; returns the paths of the router and of each twin."""
    clips = np.concatenate([np.asarray(s, np.int64) for s in streams])
    _, _, trust = yield np.asarray([-np.inf])   # the trust, nothing offloaded
    levels = np.unique(np.quantile(trust[0, clips], np.linspace(0, 1, points)))
    th = np.concatenate([[-np.inf], levels, [np.inf]])
    off, lab, _ = yield th
    for _ in range(refine):
        new = _midpoints(th, off, max_gap)
        if not len(new):
            break
        off2, lab2, _ = yield new
        th, off = np.concatenate([th, new]), np.concatenate([off, off2])
        lab = np.concatenate([lab, lab2], axis=1)
    return [SweptPath(off, a, th) for a in lab]


def run_searches(router: Router, twins: Sequence[Router],
                 clip_sets: Sequence[tuple[ModelOutput, np.ndarray, np.ndarray]],
                 searches: Sequence[tuple[int, Sequence[np.ndarray], Search]]) -> list:
    """Each search (`(i, streams, search)`: streams of clip set `i`, a set being the edge's
    outputs, the cloud's posteriors and the answers an offload gets) to its end, every round of
    them all in one run over the sets' clips together (rows = threshold x stream; a router
    that is not `rowwise` scores each search's rows apart, as a run of its own would). Returns
    each search's result."""
    sizes = [len(e) for e, _, _ in clip_sets]
    start = np.concatenate([[0], np.cumsum(sizes)])
    if len(clip_sets) == 1:
        edge, cloud, answer = clip_sets[0]
    else:   # one replay over every set's clips (what a replay computes per clip is elementwise)
        edge = ModelOutput(np.concatenate([e.proba for e, _, _ in clip_sets]),
                           np.concatenate([e.embedding for e, _, _ in clip_sets]))
        cloud = np.concatenate([c for _, c, _ in clip_sets])
        answer = np.concatenate([a for _, _, a in clip_sets])
    pads = [padded([np.asarray(s, np.int64) + start[i] for s in streams])
            for i, streams, _ in searches]
    want = {j: next(search) for j, (_, _, search) in enumerate(searches)}
    done: list = [None] * len(searches)
    while want:
        ids = list(want)
        runs = _side_by_side(router, twins, edge, cloud, answer, [pads[j] for j in ids],
                             [want[j] for j in ids])
        want = {}
        for j, (off, lab, trust) in zip(ids, runs, strict=True):
            i = searches[j][0]
            part = slice(start[i], start[i + 1])
            flat = lambda a, j=j, part=part: _flat(len(edge), *pads[j], a)[:, part]  # noqa: E731
            try:
                want[j] = searches[j][2].send((flat(off), np.stack([flat(a) for a in lab]),
                                               flat(trust)))
            except StopIteration as stop:
                done[j] = stop.value
    return done


def _midpoints(th: np.ndarray, off: np.ndarray, max_gap: float) -> np.ndarray:
    """Thresholds halfway between neighbours whose offload rates differ by over `max_gap`."""
    order = np.argsort(th)
    rates = off[order].mean(axis=1)
    finite = np.isfinite(th[order][:-1]) & np.isfinite(th[order][1:])
    gaps = np.nonzero((np.diff(rates) > max_gap) & finite)[0]
    return (th[order][gaps] + th[order][gaps + 1]) / 2


def _side_by_side(router: Router, twins: Sequence[Router], edge: ModelOutput,
                  cloud: np.ndarray, answer: np.ndarray,
                  pads: list[tuple[np.ndarray, np.ndarray]], ths: list[np.ndarray]
                  ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each padded set of streams (`pads`) at its thresholds (rows = threshold x stream), all
    in one `run_rows`: per set, its rows' offloaded, labels and trust as `run_rows` gives
    them."""
    L = max(idx.shape[1] for idx, _ in pads)
    wide = lambda a, m: np.tile(np.pad(a, ((0, 0), (0, L - a.shape[1]))), (m, 1))  # noqa: E731
    idx = np.vstack([wide(i, len(th)) for (i, _), th in zip(pads, ths, strict=True)])
    valid = np.vstack([wide(v, len(th)) for (_, v), th in zip(pads, ths, strict=True)])
    row_th = np.concatenate([np.repeat(th, len(i)) for (i, _), th in zip(pads, ths,
                                                                         strict=True)])
    cuts = np.cumsum([len(th) * len(i) for (i, _), th in zip(pads, ths, strict=True)])[:-1]
    off, lab, trust = run_rows(router, edge, cloud, answer, idx, valid,
                               lambda t, rows: t < row_th[rows], twins=twins,
                               cuts=None if router.rowwise else cuts)
    return [(o[:, :i.shape[1]], a[:, :, :i.shape[1]], t[:, :i.shape[1]])
            for (i, _), o, a, t in zip(pads, np.split(off, cuts), np.split(lab, cuts, axis=1),
                                       np.split(trust, cuts), strict=True)]


def run_streams(router: Router, edge: ModelOutput, cloud: np.ndarray, answer: np.ndarray,
                streams: Sequence[np.ndarray], decide: Callable[[np.ndarray], np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One deployed hybrid over the streams one after another, as a device would meet them:
    `decide(trust)` (a threshold, or an adaptive controller with its own memory) sees the
    clips in that order, some clips at a time (a `rowwise` per-clip router's whole stream
    at once: it must decide an array's clips one after another, as both do). Returns per
    clip `[n]`: offloaded, the answer, and the answer the router would have given had it kept
    the clip (a stream router's belief)."""
    off, labels, kept = run_streams_twins(router, (), edge, cloud, answer, streams, decide)
    return off, labels[0], kept


def run_streams_twins(router: Router, twins: Sequence[Router], edge: ModelOutput,
                      cloud: np.ndarray, answer: np.ndarray, streams: Sequence[np.ndarray],
                      decide: Callable[[np.ndarray], np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`run_streams` of the router and of each of its `twins` (see the module doc), from one
    run: the answers are `[1 + len(twins), n]`, the router's first."""
    n = len(edge)
    if not router.stateful:   # a per-clip router's twins answer as it does
        off, label, kept = _run_clips(router, edge, answer, streams, decide)
        return off, np.stack([label] * (1 + len(twins))), kept
    off, kept = np.zeros(n, bool), np.zeros(n, np.int64)
    label = np.zeros((1 + len(twins), n), np.int64)

    def seen(clips, state, step, view) -> None:
        kept[clips] = step.kept_label

    for s in streams:
        idx, valid = padded([s])
        o, lab, _ = run_rows(router, edge, cloud, answer, idx, valid,
                             lambda trust, rows: decide(trust), seen, twins)
        off[s], label[:, s] = o[0, :len(s)], lab[:, 0, :len(s)]
    return off, label, kept


def _run_clips(router: Router, edge: ModelOutput, answer: np.ndarray,
               streams: Sequence[np.ndarray], decide: Callable[[np.ndarray], np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`run_streams` for a per-clip router: it reads nothing from the state, so the run is
    each clip's trust and `decide` seeing the scores in stream order (a controller decides
    an array's clips one after another); the state's bookkeeping is skipped (a benchmark runs
    28 per-clip routers per fold). A `rowwise` router scores a stream at once; any other
    scores each clip alone, as `run_rows` does (a BLAS product's bits depend on its batch)."""
    n = len(edge)
    off, label = np.zeros(n, bool), np.zeros(n, np.int64)
    kept = edge.proba.argmax(axis=1)
    answer_label = np.asarray(answer).argmax(axis=1)
    for s in streams:
        s = np.asarray(s, np.int64)
        if not len(s):
            continue
        batches = [s] if getattr(router, "rowwise", False) else s.reshape(-1, 1)
        for c in batches:
            o = np.asarray(decide(router.trust(ModelOutput(edge.proba[c], edge.embedding[c]))),
                           bool)
            off[c] = o
            label[c] = np.where(o, answer_label[c], kept[c])
    return off, label, kept
