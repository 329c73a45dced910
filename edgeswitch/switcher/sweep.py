"""Run a router over recorded streams: every clip's edge output, the cloud's answer and the
answer an offload gets are known in advance, so many thresholds run at once.

Clips of a stream go through the router in time order; a decision changes later states, so
each threshold of a stream router is its own run (rows = threshold x stream, batched).
A per-clip router carries nothing, and its whole path is one sort (`RankedPath`).
A router's **twins** decide as it does at every step (the same trust and states: the same
belief answering offloaded clips another way); one run labels the clips as each of them would,
so a benchmark replays such routers once (`sweep_twins`, `run_streams_twins`).
Used by the benchmark and `evaluate` (curves, operating points) and by the stream router's
own fit on unlabelled pool streams (switcher.stream).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
             twins: Sequence[Router] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of clips (`idx [R, L]`, each row one stream in time order) through `router`;
    `decide(trust, rows)` says which of the rows' current clips are offloaded. Offloaded clips
    are answered by `answer` and the cloud's own posterior (`cloud`) goes into the state.
    `seen(clips, state, step, edge)` sees every step (a stream switcher's training data).
    Returns offloaded `[R, L]`, the labels `[1 + len(twins), R, L]` (the router's, then each
    twin's: see the module doc) and trust `[R, L]` (undefined where not `valid`)."""
    R, L = idx.shape
    k = edge.proba.shape[1]
    state = router.start(R, k)
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
        view = ModelOutput(edge.proba[clips], edge.embedding[clips])
        step = router.step(now, view)
        if seen is not None:
            seen(clips, now, step, view)
        o = np.asarray(decide(step.trust, rows), bool)
        off[rows, t], trust[rows, t] = o, step.trust
        after = router.observe(now, step, cloud[clips], o)
        kept = step.kept_label
        for a, r in enumerate(answerers):
            given = r.answer(step, after, answer[clips]).argmax(axis=1)
            label[a, rows, t] = np.where(o, given, kept)
        if every:   # a router returns a new state (it never writes into the one it reads)
            state = after
        else:
            state.put(rows, after)
    return off, label, trust


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
    return sweep_twins(router, (), edge, cloud, answer, streams, seed, points, refine,
                       max_gap)[0]


def sweep_twins(router: Router, twins: Sequence[Router], edge: ModelOutput,
                cloud: np.ndarray, answer: np.ndarray, streams: Sequence[np.ndarray],
                seed: int = 0, points: int = 64, refine: int = 3, max_gap: float = 0.02
                ) -> list[RankedPath | SweptPath]:
    """`sweep` of the router and of each of its `twins` (see the module doc), from one run:
    their paths, the router's first."""
    n = len(edge)
    answer_label = np.asarray(answer).argmax(axis=1)
    if not router.stateful:   # a per-clip router's twins answer as it does
        path = RankedPath.from_scores(router.trust(edge), edge.label, answer_label, seed)
        return [path] * (1 + len(twins))
    idx, valid = padded(streams)
    S = len(streams)

    def run(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Offloaded `[m, n]` and labels `[1 + len(twins), m, n]` at these thresholds."""
        m = len(thresholds)
        th = np.repeat(thresholds, S)
        off, lab, _ = run_rows(router, edge, cloud, answer, np.tile(idx, (m, 1)),
                               np.tile(valid, (m, 1)),
                               lambda trust, rows: trust < th[rows], twins=twins)
        return _flat(n, idx, valid, off), np.stack([_flat(n, idx, valid, a) for a in lab])

    _, _, trust = run_rows(router, edge, cloud, answer, idx, valid,
                           lambda trust, rows: np.zeros(len(rows), bool))
    levels = np.unique(np.quantile(trust[valid], np.linspace(0, 1, points)))
    th = np.concatenate([[-np.inf], levels, [np.inf]])
    off, lab = run(th)
    for _ in range(refine):
        order = np.argsort(th)
        rates = off[order].mean(axis=1)
        finite = np.isfinite(th[order][:-1]) & np.isfinite(th[order][1:])
        gaps = np.nonzero((np.diff(rates) > max_gap) & finite)[0]
        if not len(gaps):
            break
        new = (th[order][gaps] + th[order][gaps + 1]) / 2
        o2, l2 = run(new)
        th, off, lab = np.concatenate([th, new]), np.concatenate([off, o2]), \
            np.concatenate([lab, l2], axis=1)
    return [SweptPath(off, a, th) for a in lab]


def offload_rates(router: Router, edge: ModelOutput, cloud: np.ndarray, answer: np.ndarray,
                  streams: Sequence[np.ndarray], thresholds: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold, the share of the streams' clips the router offloads, and the trust of
    every clip `[thresholds, n]` (as the router read it in that run)."""
    n = len(edge)
    idx, valid = padded(streams)
    S, m = len(streams), len(thresholds)
    th = np.repeat(np.asarray(thresholds, float), S)
    off, _, trust = run_rows(router, edge, cloud, answer, np.tile(idx, (m, 1)),
                             np.tile(valid, (m, 1)), lambda t, rows: t < th[rows])
    return _flat(n, idx, valid, off).mean(axis=1), _flat(n, idx, valid, trust)


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
