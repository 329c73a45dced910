"""Stream routers: a per-stream belief that carries the cloud's answers and the edge's recent
evidence from one clip to the next.

`BeliefRouter` is a forward filter (a hidden Markov model over the stream's activity): between
clips the activity switches with a small probability, each clip's edge posterior is evidence
(tempered by `edge_weight`), each cloud answer stronger evidence (`cloud_weight`). The state
runs several regimes at once, one per switch rate in `switch` (the last, 1.0, forgets
everything between clips), and moves between them with probability `regime_switch`: a stream
whose activity holds is read by the slow regimes, a stream where time carries nothing (clips
in random order) falls back to the memoryless one, i.e. to routing each clip alone.

A clip is kept when the belief is sure (`trust` = its margin, top-1 minus top-2), and a kept
clip is answered by the belief. An `alarm` class (a fall) the edge claims is always offloaded
and, if the cloud cannot answer, the edge's claim stands: a carried "adl" never holds it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.routers import Router, Step, StreamState, register

EPS = 1e-6


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0))


def _normalised(lb: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last two axes, normalised to sum to 1."""
    m = lb.max(axis=(-2, -1), keepdims=True)
    return lb - (m + np.log(np.exp(lb - m).sum(axis=(-2, -1), keepdims=True)))


def margin(p: np.ndarray) -> np.ndarray:
    top = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
    return top.max(axis=-1) - top.min(axis=-1)


def predict(belief: np.ndarray, switch: np.ndarray, regime_switch) -> np.ndarray:
    """One clip later: each regime's activity switches with its probability (`switch`,
    broadcast against `[n, J, 1]`), then mass moves between regimes (`regime_switch`)."""
    b = np.exp(belief)
    k = b.shape[-1]
    b = (1 - switch) * b + switch * b.sum(axis=-1, keepdims=True) / k
    if b.shape[1] > 1:
        b = (1 - regime_switch) * b + regime_switch * b.mean(axis=1, keepdims=True)
    return np.log(np.maximum(b, 1e-300))


def _lse(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=-1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(axis=-1, keepdims=True))


def evidence(belief: np.ndarray, proba: np.ndarray, weight, regime_weight=None) -> np.ndarray:
    """The belief after a posterior `proba [n, K]` as evidence: each regime's activity belief
    takes it tempered by `weight` (broadcast against `[n, J, 1]`); the regimes are weighed by
    how well each predicted it, tempered by `regime_weight` (None: `weight`, the plain joint
    update)."""
    col = lambda w: np.asarray(w, float).reshape(-1, 1, 1) if np.ndim(w) == 1 else w  # noqa: E731
    lp = _log(proba)[:, None, :]
    mass = _lse(belief)                                   # [n, J, 1] log regime weights
    cls = belief - mass                                   # each regime's activity belief
    w = col(weight)
    g = w if regime_weight is None else col(regime_weight)
    fit = _lse(cls + g * lp)                              # how well each regime predicted it
    new = cls + w * lp
    return _normalised(mass + fit + new - _lse(new))


@register("belief")
@dataclass
class BeliefRouter(Router):
    switch: tuple[float, ...] = (0.03, 1.0)   # per-clip activity switch probability, per regime
    regime_switch: float = 0.01               # per clip, the chance of moving to another regime
    edge_weight: float = 0.5                  # the edge posterior's weight as evidence
    cloud_weight: float = 2.0                 # a cloud answer's weight as evidence
    regime_weight: float | None = 1.0         # evidence's weight in judging the regimes
                                              # (None: as for the activity)
    alarm: tuple[int, ...] = ()               # classes the edge claims that are always offloaded
    answer_from_belief: bool = False          # offloaded clips: the belief after the cloud's
                                              # answer (else the per-clip fusion's answer)
    meta: dict = field(default_factory=dict)  # how it was fitted

    def __post_init__(self) -> None:
        self.switch = tuple(float(h) for h in self.switch)
        self.alarm = tuple(int(a) for a in self.alarm)
        if not self.switch or any(not 0 < h <= 1 for h in self.switch):
            raise DataError(f"belief router: switch rates must be in (0, 1], got {self.switch}")
        if not 0 <= self.regime_switch <= 1:
            raise DataError(f"belief router: regime_switch must be in [0, 1], got "
                            f"{self.regime_switch}")
        if self.edge_weight < 0 or self.cloud_weight < 0:
            raise DataError("belief router: edge_weight and cloud_weight must be >= 0")

    name = "belief"

    @property
    def regimes(self) -> int:  # type: ignore[override]
        return len(self.switch)

    def step(self, state: StreamState, edge: ModelOutput) -> Step:
        h = np.asarray(self.switch)[None, :, None]
        # consecutive clips overlap, so the edge's evidence is tempered where it accumulates;
        # a regime that carries nothing (switch 1) cannot count it twice and takes it whole
        lb = evidence(predict(state.belief, h, self.regime_switch), edge.proba,
                      1 - (1 - self.edge_weight) * (1 - h), self.regime_weight)
        post = np.exp(lb).sum(axis=1)
        trust = margin(post)
        kept = post
        if self.alarm:
            claim = np.isin(edge.proba.argmax(axis=1), self.alarm)
            trust = np.where(claim, 0.0, trust)
            kept = np.where(claim[:, None], edge.proba, post)
        return Step(trust, kept, lb)

    def answer(self, step: Step, after: StreamState, fused: np.ndarray) -> np.ndarray:
        if not self.answer_from_belief:
            return fused
        return np.exp(after.belief).sum(axis=1)

    def observe(self, state: StreamState, step: Step, cloud: np.ndarray | None,
                asked: np.ndarray) -> StreamState:
        out = super().observe(state, step, cloud, asked)
        if cloud is not None and np.any(asked):
            a = np.asarray(asked)
            out.belief = step.belief.copy()
            out.belief[a] = evidence(step.belief[a], np.asarray(cloud)[a], self.cloud_weight,
                                     self.regime_weight)
        return out

    def to_dict(self) -> dict:
        return {"router": self.name, "switch": list(self.switch),
                "regime_switch": self.regime_switch, "edge_weight": self.edge_weight,
                "cloud_weight": self.cloud_weight, "alarm": list(self.alarm),
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> BeliefRouter:
        known = {"switch", "regime_switch", "edge_weight", "cloud_weight", "alarm", "meta"}
        try:
            return cls(**{k: (tuple(v) if k in ("switch", "alarm") else v)
                          for k, v in d.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise DataError(f"belief router: not a router description ({exc})") from None
