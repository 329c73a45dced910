"""Drift: does the live stream still look like the calibration data?

`calibrate` stores a **reference** in the operating point: quantiles of the calibration clips'
switcher scores, the edge's class mix on them, and (when the cloud answered them) the
edge/cloud agreement. At run time `DriftDetector` keeps the last `window` clips and, every
`every` clips once the window is full, compares it with the reference:

* `ks`: the Kolmogorov-Smirnov distance between the window's scores and the reference score
  distribution, and the total-variation distance between the window's edge class mix and the
  reference mix; the statistic is the larger of the two (both in [0, 1]).
* `psi`: the population stability index of the scores (10 bins at the reference deciles) and
  of the class mix; the statistic is the larger of the two.

* `input-ks` (both tests, when the reference has it): each clip is summarised by its
  per-channel mean and standard deviation over time (for an IMU the mean is gravity's
  direction in the sensor frame: a turned watch moves it although the edge stays confident),
  standardised, and scored by its **novelty**, the distance to the nearest calibration clip's
  summary. The reference keeps the calibration summaries (at most `INPUT_CLIPS`) and the
  quantiles of their own novelty counted leave-one-recording-out (a clip's nearest neighbour
  outside its recording: consecutive clips of one recording overlap and would look too
  familiar). The statistic is the one-sided KS distance (the window's novelty larger than the
  reference's), against its own threshold (`input_threshold`). The per-channel marginals alone
  do not do it: a rotation mixes channels and a window of six recordings moves each marginal
  more than a 60-degree turn does. A reference written without raw clips (`calibrate --dmd`) or
  before this part existed has none, and video clips give no summary: the part is then off.

An alarm is raised when a part exceeds its threshold and cleared after `clear_after`
consecutive checks below it. Clips of one stream are not independent (consecutive windows of
one recording overlap, one recording is one activity) and successive windows overlap, so a
test's nominal p-value is not a false-alarm rate (a chi-square test of the class mix of 200
clips from six recordings rejects almost always): distances are used. Their thresholds are
constants of the `[drift]` config table, not fitted per deployment: the defaults were tuned
once, on the watch data's one calibration subject replayed as streams, and the false-alarm rate
they give on other subjects is measured (benchmarks/drift.py, docs/results.md "Drift"); other
data or sensors need their own. It reads scores, edge labels and the clips, never labels.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import TextIO

import numpy as np

from edgeswitch.config import DriftConfig
from edgeswitch.errors import DataError

QUANTILES = 200          # reference score quantiles kept (201 knots)
INPUT_CLIPS = 2000       # calibration clip summaries kept for the input part (a random subset)
_MIX_FLOOR = 0.5         # a class unseen in the reference counts as half a clip of it


def clip_summary(X) -> np.ndarray | None:
    """Per clip, each channel's mean then each channel's std over time ([n, 2C]); None for
    inputs that are not an [n, T, C] array (video clips)."""
    if not isinstance(X, np.ndarray) or X.ndim != 3 or X.dtype.kind not in "fiu":
        return None
    X = X.astype(np.float64, copy=False)
    with np.errstate(all="ignore"):  # a wild clip gives inf or NaN: the detector sees it
        return np.concatenate([X.mean(axis=1), X.std(axis=1)], axis=1)


def recordings_of(ids) -> np.ndarray:
    """A recording key per clip: the id up to its last '/' (watch/rec000/000050 ->
    watch/rec000) when every id has one, else None (`_novelty` then leaves out neighbours in
    calibration order)."""
    ids = [str(i) for i in ids]
    if ids and all("/" in i for i in ids):
        return np.array([i.rsplit("/", 1)[0] for i in ids])
    return None


def _novelty(Q: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Each row of Q's distance to the nearest row of Z."""
    out = np.empty(len(Q))
    for a in range(0, len(Q), 256):
        d = ((Q[a:a + 256, None, :] - Z[None]) ** 2).sum(-1)
        out[a:a + 256] = np.sqrt(d.min(1))
    return out


def loro_novelty(Z: np.ndarray, recordings: np.ndarray | None) -> np.ndarray:
    """Each standardised summary's distance to the nearest one of another recording (without
    recordings: of a clip more than 5 places away in calibration order); inf when none."""
    d = np.sqrt(((Z[:, None, :] - Z[None]) ** 2).sum(-1))
    if recordings is not None and len(set(recordings)) > 1:
        rec = np.asarray(recordings)
        d[rec[:, None] == rec[None]] = np.inf
    else:
        i = np.arange(len(Z))
        d[np.abs(i[:, None] - i[None]) <= 5] = np.inf
    return d.min(1)


def input_reference(X: np.ndarray, recordings: np.ndarray | None = None,
                    quantiles: int = QUANTILES, seed: int = 0) -> dict | None:
    """The input part of the reference from the calibration clips [n, T, C] (None for inputs
    that give no summary)."""
    S = clip_summary(X)
    if S is None or len(S) < 2:
        return None
    if not np.isfinite(S).all():
        raise DataError("drift reference: the calibration clips contain NaN or inf")
    mean, std = S.mean(0), S.std(0)
    std = np.where(std > 1e-12, std, 1.0)
    Z = (S - mean) / std
    n = len(Z)
    if n > 4000:  # too many for one distance matrix: a subset stands for them
        keep = np.random.default_rng(seed).choice(n, 4000, replace=False)
        Z, n = Z[keep], 4000
        recordings = None if recordings is None else np.asarray(recordings)[keep]
    nov = loro_novelty(Z, recordings)
    nov = nov[np.isfinite(nov)]
    if len(nov) < 2:
        return None
    keep = np.random.default_rng(seed).permutation(n)[:INPUT_CLIPS]
    return {"mean": mean.tolist(), "std": std.tolist(),
            "clips": np.round(Z[np.sort(keep)], 5).tolist(),
            "novelty_quantiles": np.quantile(nov, np.linspace(0, 1, quantiles + 1)).tolist()}


def reference(scores: np.ndarray, edge_labels: np.ndarray, n_classes: int,
              disagree: np.ndarray | None = None, quantiles: int = QUANTILES,
              inputs: np.ndarray | None = None, recordings: np.ndarray | None = None) -> dict:
    """The drift reference of calibration clips (JSON-safe, stored in the operating point);
    `inputs` (the clips [n, T, C]) and their `recordings` (recordings_of) add the input part."""
    s = np.asarray(scores, dtype=float).reshape(-1)
    lab = np.asarray(edge_labels, dtype=int).reshape(-1)
    if len(s) == 0 or len(s) != len(lab):
        raise DataError(f"drift reference needs one edge label per score, got {len(lab)} "
                        f"labels for {len(s)} scores")
    if not np.isfinite(s).all():
        raise DataError("drift reference: scores contain NaN or inf")
    mix = np.bincount(lab, minlength=n_classes)[:n_classes] / len(lab)
    agree = None if disagree is None else float(1 - np.mean(np.asarray(disagree, bool)))
    ref = {"n": int(len(s)),
           "score_quantiles": np.quantile(s, np.linspace(0, 1, quantiles + 1)).tolist(),
           "class_mix": mix.tolist(), "agreement": agree}
    if inputs is not None:
        if len(inputs) != len(s):
            raise DataError(f"drift reference: {len(inputs)} clips for {len(s)} scores")
        part = input_reference(inputs, recordings, quantiles)
        if part is not None:
            ref["inputs"] = part
    return ref


def check_reference(ref: dict, n_classes: int | None = None) -> dict:
    """Refuse a reference the detector could not use, naming the field."""
    if not isinstance(ref, dict):
        raise DataError(f"drift reference must be an object, got {type(ref).__name__}")
    for key in ("n", "score_quantiles", "class_mix"):
        if key not in ref:
            raise DataError(f"drift reference lacks {key!r}")
    q = np.asarray(ref["score_quantiles"], dtype=float)
    if q.ndim != 1 or len(q) < 2 or not np.isfinite(q).all() or (np.diff(q) < 0).any():
        raise DataError("drift reference 'score_quantiles' must be at least two finite, "
                        "non-decreasing numbers")
    mix = np.asarray(ref["class_mix"], dtype=float)
    if mix.ndim != 1 or (mix < 0).any() or abs(mix.sum() - 1) > 1e-6:
        raise DataError("drift reference 'class_mix' must be shares that sum to 1")
    if n_classes is not None and len(mix) != n_classes:
        raise DataError(f"drift reference has a mix of {len(mix)} classes, the edge model "
                        f"has {n_classes}")
    part = ref.get("inputs")
    if part is not None:
        try:
            mean, std = np.asarray(part["mean"], float), np.asarray(part["std"], float)
            Z = np.asarray(part["clips"], float)
            nq = np.asarray(part["novelty_quantiles"], float)
        except (KeyError, TypeError, ValueError):
            raise DataError("drift reference 'inputs' must hold mean, std, clips and "
                            "novelty_quantiles") from None
        if mean.ndim != 1 or std.shape != mean.shape or (std <= 0).any() or Z.ndim != 2 or \
                Z.shape[1] != len(mean) or len(Z) == 0 or not np.isfinite(Z).all() or \
                nq.ndim != 1 or len(nq) < 2 or not np.isfinite(nq).all() or \
                (np.diff(nq) < 0).any():
            raise DataError("drift reference 'inputs': mean and std (positive) per summary, "
                            "clips of that width, non-decreasing finite novelty_quantiles")
    return ref


@dataclass(frozen=True)
class DriftCheck:
    clips: int          # clips seen when the check ran
    value: float        # the statistic of `part` (higher = further from the reference)
    threshold: float
    alarm: bool         # the alarm state after this check
    changed: bool       # this check raised or cleared the alarm
    part: str = ""      # the part nearest its threshold (the one that fired, in an alarm)
    values: dict | None = None   # every part's statistic at this check


class _KS:
    """The KS distance of a sample to a distribution given by its quantiles (ties kept)."""

    def __init__(self, quantiles) -> None:
        q = np.asarray(quantiles, float)
        levels = np.linspace(0, 1, len(q))
        self.knots, first = np.unique(q, return_index=True)
        last = len(levels) - 1 - np.unique(q[::-1], return_index=True)[1]
        self.lo, self.hi = levels[first], levels[last]

    def __call__(self, s: np.ndarray, greater: bool = False) -> float:
        """The distance; `greater`: only where the sample lies above the reference."""
        x = np.sort(s)
        n = len(x)
        k = np.arange(1, n + 1)
        lo = np.interp(x, self.knots, self.lo, left=0.0, right=1.0)
        above = max(float(np.max(lo - (k - 1) / n)), 0.0)
        if greater:
            return above
        hi = np.interp(x, self.knots, self.hi, left=0.0, right=1.0)
        return max(float(np.max(k / n - hi)), above)


class DriftDetector:
    """A sliding window of (score, edge class[, clip summary]) tested against the reference."""

    def __init__(self, ref: dict, cfg: DriftConfig) -> None:
        ref = check_reference(ref)
        self.cfg = cfg
        self.ks = _KS(ref["score_quantiles"])
        part = ref.get("inputs")
        # the input part: novelty of each clip's summary; off without it in the reference
        self.input_ks = None if part is None else _KS(part["novelty_quantiles"])
        if part is not None:
            self.in_mean = np.asarray(part["mean"], float)
            self.in_std = np.asarray(part["std"], float)
            self.in_clips = np.asarray(part["clips"], float)
        self.width = 0 if part is None else len(part["mean"])
        self.novelty: deque[float] = deque(maxlen=cfg.window)
        mix = np.asarray(ref["class_mix"], float)
        self.mix = np.maximum(mix, _MIX_FLOOR / max(int(ref["n"]), 1))
        self.mix /= self.mix.sum()
        self.bins = np.quantile(np.asarray(ref["score_quantiles"], float),
                                np.linspace(0, 1, 11)[1:-1])
        self.statistic = "ks+tv" if cfg.test == "ks" else "psi"
        self.threshold = cfg.ks_threshold if cfg.test == "ks" else cfg.psi_threshold
        self.scores: deque[float] = deque(maxlen=cfg.window)
        self.labels: deque[int] = deque(maxlen=cfg.window)
        self.seen = 0
        self.alarm = False
        self.passed = 0        # consecutive checks below the threshold while alarmed
        self.last: DriftCheck | None = None

    @property
    def parts(self) -> dict[str, float]:
        """Each part's threshold (the input part only when the reference has it)."""
        out = {self.statistic: self.threshold}
        if self.input_ks is not None:
            out["input-ks"] = self.cfg.input_threshold
        return out

    def input_value(self) -> float | None:
        """The one-sided KS distance of the window's novelty; None until the window holds
        `window` summaries (none come from video clips) or without the input part."""
        if self.input_ks is None or len(self.novelty) < self.cfg.window:
            return None
        return self.input_ks(np.asarray(self.novelty, float), greater=True)

    def value(self) -> float:
        """The score and class-mix statistic of the current window."""
        s = np.asarray(self.scores, float)
        counts = np.bincount(np.asarray(self.labels, int), minlength=len(self.mix))
        n = len(s)
        if self.cfg.test == "psi":
            expected = np.full(10, 0.1)
            got = np.bincount(np.searchsorted(self.bins, s, side="right"), minlength=10) / n
            return max(_psi(got, expected), _psi(counts / n, self.mix))
        d = self.ks(s)
        tv = 0.5 * float(np.abs(counts / n - self.mix).sum())
        return max(d, tv)

    def add(self, score: float, label: int, summary=None,
            novelty: float | None = None) -> DriftCheck | None:
        """One clip (with its `clip_summary` row when there is one); the check it ran, if this
        clip was due one. `novelty` instead of a summary: a replay that measured it itself
        (benchmarks/drift.py scores calibration clips leave-one-recording-out)."""
        self.scores.append(float(score))
        self.labels.append(int(label))
        if novelty is not None and self.input_ks is not None:
            self.novelty.append(float(novelty))
        elif summary is not None and self.input_ks is not None:
            summary = np.asarray(summary, float).reshape(-1)
            if len(summary) != self.width:
                raise DataError(f"drift: a clip summary of {len(summary)} numbers, the "
                                f"reference has {self.width}")
            with np.errstate(all="ignore"):
                nov = float(_novelty(((summary - self.in_mean) / self.in_std)[None],
                                     self.in_clips)[0])
            # a clip beyond float range (inf, NaN summary) is as novel as can be
            self.novelty.append(nov if np.isfinite(nov) else np.inf)
        self.seen += 1
        if len(self.scores) < self.cfg.window or \
                (self.seen - self.cfg.window) % self.cfg.every:
            return None
        values = {self.statistic: self.value()}
        iv = self.input_value()
        if iv is not None:
            values["input-ks"] = iv
        th = self.parts
        part = max(values, key=lambda p: values[p] / th[p])
        v = values[part]
        changed = False
        if v > th[part]:
            self.passed = 0
            changed, self.alarm = not self.alarm, True
        elif self.alarm:
            self.passed += 1
            if self.passed >= self.cfg.clear_after:
                self.alarm, self.passed, changed = False, 0, True
        self.last = DriftCheck(self.seen, v, th[part], self.alarm, changed, part, values)
        return self.last


def _psi(got: np.ndarray, expected: np.ndarray) -> float:
    eps = 1e-4
    g, e = np.maximum(got, eps), np.maximum(expected, eps)
    return float(np.sum((g - e) * np.log(g / e)))


class DriftMonitor:
    """A detector fed by the stream; each raise or clear goes to the decision log's `drift`
    table (when there is a log) and to stderr."""

    def __init__(self, detector: DriftDetector, log=None, err: TextIO | None = None) -> None:
        self.detector, self.log = detector, log
        self.err = sys.stderr if err is None else err
        self.changes: list[DriftCheck] = []

    @property
    def alarm(self) -> bool:
        return self.detector.alarm

    def state(self) -> tuple[bool, float]:
        """The alarm and the latest check's statistic (0 before the window first fills): what
        the edge metrics show (runtime.metrics EdgeMetrics.set_drift)."""
        last = self.detector.last
        return self.alarm, 0.0 if last is None else float(last.value)

    def observe(self, scores, edge_labels, inputs=None) -> None:
        """The clips' scores and edge classes; `inputs` the clips themselves (an [n, T, C]
        array feeds the input part; video clips and None do not)."""
        scores = np.asarray(scores).reshape(-1)
        summ = clip_summary(inputs) if inputs is not None else None
        if summ is not None and len(summ) != len(scores):
            summ = None
        if summ is not None and self.detector.input_ks is not None and \
                summ.shape[1] != self.detector.width:
            print(f"edgeswitch: drift: the clips have {summ.shape[1] // 2} channels, the "
                  f"reference {self.detector.width // 2}; input part off",
                  file=self.err, flush=True)
            self.detector.input_ks = None
        for i, (s, lab) in enumerate(zip(scores, np.asarray(edge_labels).reshape(-1),
                                         strict=True)):
            check = self.detector.add(float(s), int(lab), None if summ is None else summ[i])
            if check is not None and check.changed:
                self._report(check)

    def _report(self, c: DriftCheck) -> None:
        d = self.detector
        state = "alarm" if c.alarm else "clear"
        self.changes.append(c)
        part = c.part or d.statistic
        if self.log is not None:
            self.log.append_drift(time.time(), state, part, c.value, c.threshold,
                                  d.cfg.window)
        what = "raised" if c.alarm else f"cleared after {d.cfg.clear_after} passing checks"
        print(f"edgeswitch: drift alarm {what} at clip {c.clips}: {part} {c.value:.2f} "
              f"vs threshold {c.threshold:.2f} over the last {d.cfg.window} clips",
              file=self.err, flush=True)


def open_drift(operating_point, cfg: DriftConfig, n_classes: int, log=None,
               err: TextIO | None = None) -> DriftMonitor | None:
    """The run's drift monitor, or None (said on stderr) when drift is off or the operating
    point has no reference (one written before `calibrate` stored it)."""
    err = sys.stderr if err is None else err
    if not cfg.enabled:
        return None
    ref = getattr(operating_point, "reference", None)
    if ref is None:
        print("edgeswitch: drift detection off: the operating point has no calibration "
              "reference (re-run `edgeswitch calibrate` to add one)", file=err)
        return None
    check_reference(ref, n_classes)
    if ref.get("inputs") is None:
        print("edgeswitch: drift: the reference has no input statistics (written from DMD "
              "records or before they existed): scores and class mix only", file=err)
    return DriftMonitor(DriftDetector(ref, cfg), log, err)


def drift_state(history: list[dict]) -> dict:
    """`edgeswitch log --drift`: the current state (the last change) and every change."""
    last = history[-1] if history else None
    return {"state": last["state"] if last else "clear",
            "alarms": sum(h["state"] == "alarm" for h in history),
            "since": last["time"] if last else None, "history": history}


def drift_text(state: dict) -> str:
    """The drift state for a terminal."""
    if not state["history"]:
        return "drift: clear (no alarm logged; a log written without a reference has none)"
    lines = [f"drift: {state['state']} since {_when(state['since'])} "
             f"({state['alarms']} alarm(s) raised)"]
    lines += [f"  {_when(h['time'])}  {h['state']:5s}  {h['statistic']} {h['value']:.2f} "
              f"(threshold {h['threshold']:.2f}, window {h['window']})"
              for h in state["history"]]
    return "\n".join(lines)


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"
