"""Drift alarm on watch: the default thresholds tuned on calibration data, false alarms and
detection measured (the thresholds are constants of the [drift] table: this is how they were
found for the watch data; other data needs its own run of the same procedure).

    python benchmarks/drift.py [--streams 40] [--length 1000] [--json out.json]

1. The default pipeline (`build`, cached models) gives the edge model, the DMD switcher and
   the splits: calib is subject02, test subjects 08, 09, 10; none of them trained anything.
2. **Threshold, on calibration data only.** The calib subject's recordings are halved (each
   majority edge class of each recording, no labels); the reference is built on one half and the
   other half is replayed as streams: recordings drawn at random, each in its own clip order,
   until a stream has `--length` clips (a user doing the exercises in some order). The
   threshold is the smallest of a grid whose alarm rate over those streams is at most the
   target (1 per 10,000 clips). Several halvings, both ways round. The score/class-mix
   threshold is chosen first; then the input part's (novelty of the per-channel clip mean and
   std), the smallest whose alarms together with the first part's stay within the same target,
   on streams of the calibration recordings drawn the same way, each clip's novelty measured
   against the calibration reference without its own recording (`--input-folds 0`, the
   default: that is how the reference's own novelty quantiles are counted, so the replay
   measures only what a stream's lumpiness adds). `--input-folds 2` uses the halving instead:
   a nearest-neighbour reference of half of one subject's recordings lacks half its poses, so
   that threshold comes out far higher (docs/results.md "Drift" gives both).
3. **False alarms**: the reference of all calibration clips (what `calibrate` stores), streams
   of each held-out test subject built the same way, and each subject's stream in its
   recorded order: alarms per 1,000 clips and share of streams with any alarm.
4. **Detection**: the same streams, with the sensor frame turned from clip `--onset` on (a
   watch worn differently): a fixed rotation of both xyz triplets (accelerometer and
   gyroscope) by 30, 60 and 90 degrees about a fixed axis, x/y swapped, and another device
   (BasicMotions clips, same shape, other rate, units and activities). Detected: an alarm
   after the onset (one before it is a false alarm); delay: clips from the onset to it;
   `fired_by`: which part raised that first alarm (scores/class mix, or input statistics).
The machine is shared and busy; only the counts matter here, not the time.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeswitch.config import DriftConfig  # noqa: E402
from edgeswitch.runtime.drift import (  # noqa: E402
    DriftDetector,
    clip_summary,
    loro_novelty,
    recordings_of,
    reference,
)

TARGET = 1e-4     # false alarms per clip on held-out calibration streams
GRIDS = {"ks": np.round(np.arange(0.05, 1.0001, 0.01), 3),
         "psi": np.round(np.arange(0.05, 20.001, 0.05), 3),
         "input": np.round(np.arange(0.05, 1.0001, 0.01), 3)}


def rotation(axis, deg: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def turn(X: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Every xyz triplet of the clips in the sensor frame turned by R."""
    parts = [X[:, :, i:i + 3] @ R.T for i in range(0, X.shape[2], 3)]
    return np.concatenate(parts, axis=2).astype(X.dtype)


SHIFTS = {"rot30": rotation([1, 1, 0], 30), "rot60": rotation([1, 1, 0], 60),
          "rot90": rotation([1, 1, 0], 90),
          "swap_xy": np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], float)}


def recordings(ids: np.ndarray) -> dict[str, np.ndarray]:
    """Clip indices of each recording, in clip order."""
    rec = np.array([i.rsplit("/", 1)[0] for i in ids])
    return {r: np.flatnonzero(rec == r) for r in dict.fromkeys(rec)}


def streams(recs: dict[str, np.ndarray], n: int, length: int, rng) -> list[np.ndarray]:
    """`n` streams of `length` clips: recordings drawn at random, each in its clip order."""
    keys = list(recs)
    out = []
    for _ in range(n):
        parts, total = [], 0
        while total < length:
            r = recs[keys[rng.integers(len(keys))]]
            parts.append(r)
            total += len(r)
        out.append(np.concatenate(parts)[:length])
    return out


def check_values(ref: dict, cfg: DriftConfig, scores, labels, summaries=None,
                 novelty=None) -> np.ndarray:
    """The statistics at every check of one stream (clip index, score/mix value, input value
    or NaN without the input part)."""
    det = DriftDetector(ref, replace(cfg, ks_threshold=1.0, psi_threshold=np.inf,
                                     input_threshold=1.0))  # no alarm
    vals = []
    for i, (s, lab) in enumerate(zip(scores, labels, strict=True)):
        c = det.add(s, lab, None if summaries is None else summaries[i],
                    None if novelty is None else novelty[i])
        if c is not None:
            vals.append((i, c.values[det.statistic], c.values.get("input-ks", np.nan)))
    return np.asarray(vals)


def raises(vals: np.ndarray, threshold: float, clear_after: int,
           input_threshold: float = np.inf, parts: list | None = None) -> list[int]:
    """Clip indices where an alarm is raised (the detector's hysteresis on a value series);
    `parts` gets, per alarm, which part exceeded its threshold ("scores", "inputs", "both")."""
    alarm, passed, out = False, 0, []
    for i, v, w in vals:
        if v > threshold or w > input_threshold:
            passed = 0
            if not alarm:
                alarm = True
                out.append(int(i))
                if parts is not None:
                    parts.append("both" if v > threshold and w > input_threshold else
                                 "scores" if v > threshold else "inputs")
        elif alarm:
            passed += 1
            if passed >= clear_after:
                alarm, passed = False, 0
    return out


def halves(recs: dict[str, np.ndarray], labels_of: dict[str, int], rng):
    """Two halves of the recordings, each exercise's recordings dealt to both in turn."""
    a, b = {}, {}
    by_class: dict[int, list[str]] = {}
    for r, c in labels_of.items():
        by_class.setdefault(c, []).append(r)
    for rs in by_class.values():
        rs = list(rng.permutation(rs))
        for j, r in enumerate(rs):
            (a if j % 2 == 0 else b)[r] = recs[r]
    return a, b


def folds(recs: dict[str, np.ndarray], labels_of: dict[str, int], k: int, rng):
    """`k` parts of the recordings, each exercise's recordings dealt round them in turn."""
    out: list[dict] = [{} for _ in range(k)]
    by_class: dict[int, list[str]] = {}
    for r, c in labels_of.items():
        by_class.setdefault(c, []).append(r)
    start = 0
    for rs in by_class.values():
        for j, r in enumerate(rng.permutation(rs)):
            out[(start + j) % k][r] = recs[r]
        start += len(rs)
    return [f for f in out if f]


def choose_threshold(test: str, calib, n_classes: int, cfg: DriftConfig, n_streams: int,
                     length: int, seed: int, splits: int = 3, input_folds: int = 2) -> dict:
    scores, labels, ids, X = calib
    recs = recordings(ids)
    summ = clip_summary(X)
    # halves dealt by each recording's majority edge class (no labels)
    labels_of = {r: int(np.bincount(labels[i]).argmax()) for r, i in recs.items()}
    rng = np.random.default_rng(seed)
    series = []
    for _ in range(splits):
        a, b = halves(recs, labels_of, rng)
        for ref_half, replay in ((a, b), (b, a)):
            idx = np.concatenate(list(ref_half.values()))
            ref = reference(scores[idx], labels[idx], n_classes, inputs=X[idx],
                            recordings=recordings_of(ids[idx]))
            for st in streams(replay, n_streams, length, rng):
                series.append(check_values(ref, cfg, scores[st], labels[st], summ[st]))
    clips = len(series) * length
    grid = GRIDS[test]
    rates = [sum(len(raises(v, t, cfg.clear_after)) for v in series) / clips for t in grid]
    ok = [t for t, r in zip(grid, rates, strict=True) if r <= TARGET]
    t = float(ok[0]) if ok else float(grid[-1])
    # the input part: the smallest threshold keeping both parts' alarms within the target; with
    # input_folds > 2 on streams of one part of the recordings replayed against a reference of
    # the others (a nearest-neighbour reference of half the recordings lacks half the poses)
    if input_folds == 0:  # leave one recording out: every clip's novelty without its own
        ref = reference(scores, labels, n_classes, inputs=X, recordings=recordings_of(ids))
        part = ref["inputs"]
        Z = (summ - np.asarray(part["mean"])) / np.asarray(part["std"])
        nov = loro_novelty(Z, recordings_of(ids))
        series = []
        for _ in range(splits * 2):
            for st in streams(recs, n_streams, length, rng):
                series.append(check_values(ref, cfg, scores[st], labels[st], None, nov[st]))
        clips = len(series) * length
    elif input_folds != 2:
        series = []
        for _ in range(splits):
            parts = folds(recs, labels_of, input_folds, rng)
            for j, replay in enumerate(parts):
                idx = np.concatenate([i for q, f in enumerate(parts) if q != j
                                      for i in f.values()])
                ref = reference(scores[idx], labels[idx], n_classes, inputs=X[idx],
                                recordings=recordings_of(ids[idx]))
                for st in streams(replay, n_streams * 2 // len(parts), length, rng):
                    series.append(check_values(ref, cfg, scores[st], labels[st], summ[st]))
        clips = len(series) * length
    igrid = GRIDS["input"]
    irates = [sum(len(raises(v, t, cfg.clear_after, u)) for v in series) / clips
              for u in igrid]
    iok = [u for u, r in zip(igrid, irates, strict=True) if r <= TARGET]
    u = float(iok[0]) if iok else float(igrid[-1])
    return {"threshold": t, "input_threshold": u, "input_folds": input_folds,
            "calib_streams": len(series), "calib_clips": clips,
            "calib_alarms_per_1000_scores_only": 1000 * rates[list(grid).index(t)],
            "calib_alarms_per_1000": 1000 * irates[list(igrid).index(u)],
            "target_per_clip": TARGET}


def evaluate(ref: dict, cfg: DriftConfig, test_sets: dict, shifted: dict, n_streams: int,
             length: int, onset: int, seed: int, use_inputs: bool = True) -> dict:
    """False alarms on unshifted streams; detection and delay with the shift from `onset`."""
    rng = np.random.default_rng(seed)
    threshold = cfg.ks_threshold if cfg.test == "ks" else cfg.psi_threshold
    u = cfg.input_threshold if use_inputs else np.inf
    plans = {}
    for subj, (_, _, ids, _) in test_sets.items():
        recs = recordings(ids)
        order = np.concatenate(list(recs.values()))   # the recorded order, once
        plans[subj] = [order] + streams(recs, n_streams, length, rng)
    fa_alarms = fa_clips = fa_streams = n_all = 0
    fa_parts: list[str] = []
    for subj, sts in plans.items():
        s, lab, _, sm = test_sets[subj]
        for st in sts:
            r = raises(check_values(ref, cfg, s[st], lab[st], sm[st]), threshold,
                       cfg.clear_after, u, fa_parts)
            fa_alarms += len(r)
            fa_clips += len(st)
            fa_streams += bool(r)
            n_all += 1
    out = {"no_shift": {"streams": n_all, "clips": fa_clips, "alarms": fa_alarms,
                        "alarms_per_1000": round(1000 * fa_alarms / fa_clips, 3),
                        "streams_with_alarm": round(fa_streams / n_all, 3),
                        "fired_by": {p: fa_parts.count(p) for p in sorted(set(fa_parts))}}}
    for name, per_subj in shifted.items():
        det, delays, early, n, fired = 0, [], 0, 0, []
        for subj, sts in plans.items():
            s, lab, _, sm = test_sets[subj]
            s2, lab2, sm2 = per_subj[subj]
            for st in sts[1:]:  # the drawn streams (length clips each)
                mix_s = np.concatenate([s[st[:onset]], s2[st[onset:]]])
                mix_l = np.concatenate([lab[st[:onset]], lab2[st[onset:]]])
                mix_m = np.concatenate([sm[st[:onset]], sm2[st[onset:]]])
                parts: list[str] = []
                r = raises(check_values(ref, cfg, mix_s, mix_l, mix_m), threshold,
                           cfg.clear_after, u, parts)
                early += any(i < onset for i in r)
                after = [(i, p) for i, p in zip(r, parts, strict=True) if i >= onset]
                n += 1
                if after:
                    det += 1
                    delays.append(after[0][0] - onset + 1)
                    fired.append(after[0][1])
        out[name] = {"streams": n, "detected": round(det / n, 3),
                     "delay_clips_median": float(np.median(delays)) if delays else None,
                     "delay_clips_p90": float(np.percentile(delays, 90)) if delays else None,
                     "delay_clips_max": int(max(delays)) if delays else None,
                     "alarm_before_onset": early,
                     "fired_by": {p: fired.count(p) for p in sorted(set(fired))}}
    return out


def load(seed: int = 0, overrides: dict | None = None):
    """The built watch pipeline (edge, switcher, splits, operating point; models from the
    cache): the default one, or with `overrides` (dotted config keys, as `load_config`)."""
    from edgeswitch.config import load_config
    from edgeswitch.models.cache import default_cache_dir
    from edgeswitch.pipeline.run import build

    cfg = load_config(dataset="watch", overrides=overrides)
    cfg.seed = seed
    a = build(cfg, None, default_cache_dir(), progress=False)
    return a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=40, help="streams per subject / halving")
    ap.add_argument("--length", type=int, default=1000, help="clips per stream")
    ap.add_argument("--onset", type=int, default=400, help="clip where the shift starts")
    ap.add_argument("--tests", nargs="+", default=["ks", "psi"])
    ap.add_argument("--window", type=int, default=DriftConfig().window)
    ap.add_argument("--input-folds", type=int, default=0,
                    help="parts of the calibration recordings for the input part's threshold "
                         "(2: the halving of the score part; 0: leave one recording out)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    a = load()
    edge, sw = a.edge, a.switcher

    def score(X):
        out = edge.outputs(X)
        return sw.trust(out).astype(float), out.label.astype(int), clip_summary(X)

    c = a.splits.calib
    cs, cl, _ = score(c.X)
    test_sets, shifted = {}, {name: {} for name in SHIFTS}
    t = a.splits.test
    for subj in dict.fromkeys(t.groups):
        m = t.groups == subj
        s, lab, sm = score(t.X[m])
        test_sets[subj] = (s, lab, t.ids[m], sm)
        for name, R in SHIFTS.items():
            shifted[name][subj] = score(turn(t.X[m], R))
    # another device: BasicMotions clips (also 100 samples x 6 IMU channels, but 10 Hz, other
    # units and activities), drawn at random in place of each subject's clips
    from edgeswitch.data import load_dataset

    bm = load_dataset("basicmotions")
    bs, bl, bsm = score(bm.X.astype(np.float32))
    rng = np.random.default_rng(3)
    shifted["basicmotions"] = {}
    for subj, (s, _, _, _) in test_sets.items():
        pick = rng.integers(len(bs), size=len(s))
        shifted["basicmotions"][subj] = (bs[pick], bl[pick], bsm[pick])
    # does the shift hurt? the edge's accuracy on the test clips (labels used for this only)
    acc = {"none": float(np.mean(edge.outputs(t.X).label == t.y))}
    for name, R in SHIFTS.items():
        acc[name] = float(np.mean(edge.outputs(turn(t.X, R)).label == t.y))
    ref = reference(cs, cl, len(edge.classes_), inputs=c.X, recordings=recordings_of(c.ids))
    results = {"edge_accuracy_on_test": {k: round(v, 4) for k, v in acc.items()},
               "calib_clips": len(c), "test_clips": len(t),
               "test_subjects": list(test_sets), "shifts": list(shifted),
               "calib_edge_mix": ref["class_mix"], "tests": {}}
    for name in shifted:  # how much each shift moves the edge's outputs
        s2 = np.concatenate([shifted[name][k][0] for k in test_sets])
        s1 = np.concatenate([test_sets[k][0] for k in test_sets])
        results.setdefault("mean_score", {"none": round(float(s1.mean()), 4)})[name] = \
            round(float(s2.mean()), 4)
    for test in args.tests:
        cfg = DriftConfig(test=test, window=args.window)
        chosen = choose_threshold(test, (cs, cl, c.ids, c.X), len(edge.classes_), cfg,
                                  args.streams, args.length, seed=1,
                                  input_folds=args.input_folds)
        cfg = replace(cfg, **{f"{test}_threshold": chosen["threshold"]},
                      input_threshold=chosen["input_threshold"])
        results["tests"][test] = {"config": {"window": cfg.window, "every": cfg.every,
                                             "input_threshold": cfg.input_threshold,
                                             "clear_after": cfg.clear_after},
                                  "chosen_on_calibration": chosen,
                                  **evaluate(ref, cfg, test_sets, shifted, args.streams,
                                             args.length, args.onset, seed=2)}
        print(json.dumps({test: results["tests"][test]}, indent=1), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
