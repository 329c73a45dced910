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

An alarm is raised when the statistic exceeds the threshold and cleared after `clear_after`
consecutive checks below it. Clips of one stream are not independent (consecutive windows of
one recording overlap, one recording is one activity) and successive windows overlap, so a
test's nominal p-value is not a false-alarm rate (a chi-square test of the class mix of 200
clips from six recordings rejects almost always): distances are used, their thresholds are set
on held-out calibration data replayed as streams, and the false-alarm rate they give is
measured
(benchmarks/drift.py, docs/results.md "Drift"). It reads scores and edge labels, never labels.
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
_MIX_FLOOR = 0.5         # a class unseen in the reference counts as half a clip of it


def reference(scores: np.ndarray, edge_labels: np.ndarray, n_classes: int,
              disagree: np.ndarray | None = None, quantiles: int = QUANTILES) -> dict:
    """The drift reference of calibration clips (JSON-safe, stored in the operating point)."""
    s = np.asarray(scores, dtype=float).reshape(-1)
    lab = np.asarray(edge_labels, dtype=int).reshape(-1)
    if len(s) == 0 or len(s) != len(lab):
        raise DataError(f"drift reference needs one edge label per score, got {len(lab)} "
                        f"labels for {len(s)} scores")
    if not np.isfinite(s).all():
        raise DataError("drift reference: scores contain NaN or inf")
    mix = np.bincount(lab, minlength=n_classes)[:n_classes] / len(lab)
    agree = None if disagree is None else float(1 - np.mean(np.asarray(disagree, bool)))
    return {"n": int(len(s)),
            "score_quantiles": np.quantile(s, np.linspace(0, 1, quantiles + 1)).tolist(),
            "class_mix": mix.tolist(), "agreement": agree}


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
    return ref


@dataclass(frozen=True)
class DriftCheck:
    clips: int          # clips seen when the check ran
    value: float        # the statistic (higher = further from the reference)
    threshold: float
    alarm: bool         # the alarm state after this check
    changed: bool       # this check raised or cleared the alarm


class DriftDetector:
    """A sliding window of (score, edge class) tested against the reference."""

    def __init__(self, ref: dict, cfg: DriftConfig) -> None:
        ref = check_reference(ref)
        self.cfg = cfg
        self.knots, first = np.unique(np.asarray(ref["score_quantiles"], float),
                                      return_index=True)
        levels = np.linspace(0, 1, len(ref["score_quantiles"]))
        last = len(levels) - 1 - np.unique(np.asarray(ref["score_quantiles"], float)[::-1],
                                           return_index=True)[1]
        self.levels_lo, self.levels_hi = levels[first], levels[last]
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

    def value(self) -> float:
        """The drift statistic of the current window."""
        s = np.asarray(self.scores, float)
        counts = np.bincount(np.asarray(self.labels, int), minlength=len(self.mix))
        n = len(s)
        if self.cfg.test == "psi":
            expected = np.full(10, 0.1)
            got = np.bincount(np.searchsorted(self.bins, s, side="right"), minlength=10) / n
            return max(_psi(got, expected), _psi(counts / n, self.mix))
        x = np.sort(s)
        k = np.arange(1, n + 1)
        hi = np.interp(x, self.knots, self.levels_hi, left=0.0, right=1.0)
        lo = np.interp(x, self.knots, self.levels_lo, left=0.0, right=1.0)
        d = max(float(np.max(k / n - hi)), float(np.max(lo - (k - 1) / n)), 0.0)
        tv = 0.5 * float(np.abs(counts / n - self.mix).sum())
        return max(d, tv)

    def add(self, score: float, label: int) -> DriftCheck | None:
        """One clip; the check it ran, if this clip was due one."""
        self.scores.append(float(score))
        self.labels.append(int(label))
        self.seen += 1
        if len(self.scores) < self.cfg.window or \
                (self.seen - self.cfg.window) % self.cfg.every:
            return None
        v = self.value()
        changed = False
        if v > self.threshold:
            self.passed = 0
            changed, self.alarm = not self.alarm, True
        elif self.alarm:
            self.passed += 1
            if self.passed >= self.cfg.clear_after:
                self.alarm, self.passed, changed = False, 0, True
        self.last = DriftCheck(self.seen, v, self.threshold, self.alarm, changed)
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

    def observe(self, scores, edge_labels) -> None:
        for s, lab in zip(np.asarray(scores).reshape(-1), np.asarray(edge_labels).reshape(-1),
                          strict=True):
            check = self.detector.add(float(s), int(lab))
            if check is not None and check.changed:
                self._report(check)

    def _report(self, c: DriftCheck) -> None:
        d = self.detector
        state = "alarm" if c.alarm else "clear"
        self.changes.append(c)
        if self.log is not None:
            self.log.append_drift(time.time(), state, d.statistic, c.value, c.threshold,
                                  d.cfg.window)
        what = "raised" if c.alarm else f"cleared after {d.cfg.clear_after} passing checks"
        print(f"edgeswitch: drift alarm {what} at clip {c.clips}: {d.statistic} {c.value:.2f} "
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
