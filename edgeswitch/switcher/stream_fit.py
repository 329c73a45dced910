"""Fit a belief router on unlabelled pool streams: Dual-Model Distillation over time.

The pool's DMD records hold, for every clip of every pool stream, the edge's posterior and the
cloud's. Any router can therefore be replayed over them at any threshold, with the cloud's
answer arriving wherever it offloads, and its answers compared with a **teacher** that needs no
label: the answer each clip would get from the cloud. Each candidate setting of the belief
(switch rate, edge and cloud weights) is replayed at a range of thresholds, and the one whose
hybrid agrees most with the teacher over the offload rates of the curve (2% to 70%) is kept: a
label-free stand-in for the area the benchmark measures.

The teacher is the cloud's (fused) answers **smoothed over the stream** (forward-backward,
which only a recorded stream allows): a belief is judged against what the cloud says of the
whole episode, not against each single answer. Against the raw answers a belief could only win
by copying each of them, so every fit would trust the cloud without limit; smoothed, an
isolated cloud slip counts against the settings that copy it.

All candidates x thresholds x streams run at once, as rows of one array (the math is the
router's own: switcher.stream.edge_step / evidence), so a fit takes seconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.switcher.stream import BeliefRouter, edge_step, evidence, margin
from edgeswitch.switcher.sweep import padded

# what a fit searches (with the memoryless regime always beside the fitted switch rate)
GRID = {"switch": (0.01, 0.02, 0.05, 0.1),
        "edge_weight": (0.2, 0.3, 0.5, 0.7),
        "cloud_weight": (0.5, 1.0, 2.0, 4.0)}
RATES = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7)     # where agreement is compared: the curve
THRESHOLDS = np.concatenate([[-np.inf], 1 - np.logspace(-4, 0, 20)[::-1]])  # margins
TEACHER_SWITCH = 0.02                               # the teacher's smoothing


def smoothed_teacher(answer: np.ndarray, streams: Sequence[np.ndarray],
                     switch: float = TEACHER_SWITCH) -> np.ndarray:
    """`[n, K]`: each stream's answer posteriors smoothed forward and backward (a hidden
    Markov model whose activity changes with probability `switch` per clip; each answer is
    evidence about its clip)."""
    answer = np.asarray(answer, np.float64)
    k = answer.shape[1]
    trans = (1 - switch) * np.eye(k) + switch / k
    out = answer.copy()
    for s in streams:
        lik = np.clip(answer[s], 1e-6, 1.0)
        n = len(s)
        fwd = np.empty((n, k))
        bwd = np.ones((n, k))
        prev = np.full(k, 1.0 / k)
        for t in range(n):
            v = (prev @ trans) * lik[t]
            fwd[t] = prev = v / v.sum()
        for t in range(n - 2, -1, -1):
            v = trans @ (bwd[t + 1] * lik[t + 1])
            bwd[t] = v / v.sum()
        p = fwd * bwd
        out[s] = p / p.sum(axis=1, keepdims=True)
    return out


def candidates(grid: dict[str, Sequence[float]] = GRID) -> list[dict[str, float]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def replay_agreement(base: BeliefRouter, settings: list[dict[str, float]],
                     edge_proba: np.ndarray, cloud_proba: np.ndarray, answer: np.ndarray,
                     teacher: np.ndarray, streams: Sequence[np.ndarray],
                     thresholds: np.ndarray = THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Every setting (overriding `base`'s switch, edge and cloud weights) replayed over the
    streams at every threshold: offload rate and agreement with `teacher` labels, each
    `[settings, thresholds]`. Offloaded clips are answered as `base.answers` says."""
    idx, valid = padded(streams)
    S, L = idx.shape
    C, P = len(settings), len(thresholds)
    k = edge_proba.shape[1]
    per_row = lambda key: np.repeat([s[key] for s in settings], P * S)  # noqa: E731
    switch = np.stack([per_row("switch")] + [np.full(C * P * S, h) for h in base.switch[1:]],
                      axis=1)[:, :, None]
    edge_w = per_row("edge_weight")[:, None, None]
    cloud_w = np.concatenate([np.repeat(replace(base, cloud_weight=s["cloud_weight"])
                                        .cloud_weights(), P * S, axis=0) for s in settings])
    th = np.tile(np.repeat(thresholds, S), C)
    rows_idx, rows_valid = np.tile(idx, (C * P, 1)), np.tile(valid, (C * P, 1))
    R = len(th)
    belief = np.full((R, len(base.switch), k), -np.log(len(base.switch) * k))
    agree, off_n, n = np.zeros(R), np.zeros(R), np.zeros(R)
    answer_label, teacher = np.asarray(answer).argmax(axis=1), np.asarray(teacher)
    for t in range(L):
        rows = np.nonzero(rows_valid[:, t])[0]
        if not len(rows):
            continue
        clip = rows_idx[rows, t]
        lb = edge_step(belief[rows], edge_proba[clip], switch[rows], base.regime_switch,
                       edge_w[rows], base.regime_weight)
        post = np.exp(lb).sum(axis=1)
        off = margin(post) < th[rows]
        label = post.argmax(axis=1)
        if off.any():
            lb[off] = evidence(lb[off], cloud_proba[clip[off]], cloud_w[rows][off],
                               base.regime_weight)
            label[off] = np.exp(lb[off]).sum(axis=1).argmax(axis=1) \
                if base.answers == "belief" else answer_label[clip[off]]
        belief[rows] = lb
        agree[rows] += label == teacher[clip]
        off_n[rows] += off
        n[rows] += 1
    shape = (C, P, S)
    total = n.reshape(shape).sum(axis=2)
    return off_n.reshape(shape).sum(axis=2) / total, agree.reshape(shape).sum(axis=2) / total


def fit_belief(base: BeliefRouter, edge_proba: np.ndarray, cloud_proba: np.ndarray,
               answer: np.ndarray, streams: Sequence[np.ndarray],
               grid: dict[str, Sequence[float]] = GRID, rates: Sequence[float] = RATES,
               teacher_switch: float = TEACHER_SWITCH) -> BeliefRouter:
    """`base` with the setting of `grid` whose hybrid agrees best with the smoothed teacher on
    these unlabelled streams, at the offload `rates` (see the module doc). No label is read:
    only the two models' posteriors (`answer`: what an offloaded clip gets, e.g. fused)."""
    edge_proba, cloud_proba = np.asarray(edge_proba), np.asarray(cloud_proba)
    if edge_proba.shape != cloud_proba.shape or edge_proba.ndim != 2:
        raise DataError(f"fit: edge and cloud posteriors must be [n, K] alike, got "
                        f"{edge_proba.shape} and {cloud_proba.shape}")
    if not any(len(s) > 1 for s in streams):
        raise DataError("fit: the pool has no stream of two clips or more (a stream router "
                        "learns nothing from clips that stand alone)")
    teacher = smoothed_teacher(answer, streams, teacher_switch).argmax(axis=1)
    settings = candidates(grid)
    rate, agree = replay_agreement(base, settings, edge_proba, cloud_proba, answer, teacher,
                                   streams)
    score = np.asarray([np.mean(np.interp(rates, r[np.argsort(r, kind="stable")],
                                          a[np.argsort(r, kind="stable")]))
                        for r, a in zip(rate, agree, strict=True)])
    best = int(np.argmax(score))
    chosen = settings[best]
    table = [{**s, "agreement": round(float(v), 5)} for s, v in zip(settings, score,
                                                                     strict=True)]
    return replace(base, switch=(chosen["switch"], *base.switch[1:]),
                   edge_weight=chosen["edge_weight"], cloud_weight=chosen["cloud_weight"],
                   meta={"fitted_on": int(sum(len(s) for s in streams)),
                         "streams": len(streams), "teacher": "smoothed",
                         "teacher_switch": teacher_switch, "rates": list(rates),
                         "agreement": round(float(score[best]), 5), "grid": table})


def switcher_records(router: BeliefRouter, edge, cloud_proba: np.ndarray, answer: np.ndarray,
                     streams: Sequence[np.ndarray],
                     rates: Sequence[float] = (0.05, 0.1, 0.2, 0.35, 0.5),
                     teacher_switch: float = TEACHER_SWITCH):
    """A stream switcher's training set, read from the unlabelled pool streams replayed by
    `router` at thresholds offloading about `rates`: per clip, what the switcher reads then
    (a `ModelOutput`), whether the belief's answer agrees with the smoothed teacher, and its
    stream (the groups of the switcher's validation). One set serves every family."""
    from edgeswitch.models.base import ModelOutput
    from edgeswitch.switcher.calibrate import stream_thresholds
    from edgeswitch.switcher.stream import switcher_view
    from edgeswitch.switcher.sweep import run_rows

    teacher = smoothed_teacher(answer, streams, teacher_switch).argmax(axis=1)
    group = np.empty(len(edge), dtype=object)
    for j, s in enumerate(streams):
        group[s] = f"stream{j}"
    views, targets, groups = [], [], []

    def seen(clips, state, step, view) -> None:
        views.append(switcher_view(state, step, view))
        targets.append(step.kept_label == teacher[clips])
        groups.append(group[clips])

    idx, valid = padded(streams)
    for th, _, _ in stream_thresholds(router, edge, cloud_proba, answer, streams, rates):
        run_rows(router, edge, cloud_proba, answer, idx, valid,
                 lambda trust, rows, th=th: trust < th, seen)
    data = ModelOutput(np.concatenate([v.proba for v in views]),
                       np.concatenate([v.embedding for v in views]))
    return data, np.concatenate(targets).astype(np.float32), np.concatenate(groups).astype(str)


def fit_belief_switcher(router: BeliefRouter, spec, records, seed: int = 0):
    """A `BeliefSwitcherRouter`: `router`'s belief with a DMD switcher (`spec`, any family)
    for its trust, trained on `records` (`switcher_records` of the same router)."""
    from edgeswitch.switcher.stream import BeliefSwitcherRouter

    data, targets, groups = records
    sw = spec.build(seed, "belief-switcher")
    sw.fit(data, targets, groups)
    return BeliefSwitcherRouter(**{f: getattr(router, f) for f in (
        "switch", "regime_switch", "edge_weight", "cloud_weight", "fusion_weight",
        "regime_weight", "alarm", "answers")}, meta=dict(router.meta), switcher=sw)
