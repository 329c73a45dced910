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
clip is answered by the belief. An `alarm` class (a fall) the edge claims scores -1, below
every margin, so it is offloaded at any operating point that offloads at all, and, if the cloud
cannot answer, the edge's claim stands: a carried "adl" never holds it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.features import confidence
from edgeswitch.switcher.files import load_json
from edgeswitch.switcher.routers import Replay, Router, Step, StreamState, register

EPS = 1e-6
MAX_WEIGHT = 50.0   # a cloud answer's largest weight (a fusion that trusts the cloud alone)
ALARM = -1.0   # the trust of an alarm claim: below every margin, offloaded at any threshold > -1


def _log(p: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(p, dtype=np.float64), EPS, 1.0))


# From this many elements, a reduction over the short last axis (the classes) is done across
# rows instead: numpy reduces a short inner axis one row at a time, several times slower for
# a benchmark's replays (thousands of rows). The result is the same bit for bit: a max is
# exact in any order, and numpy adds fewer than 8 values one after another (from 8 on it adds
# pairwise, so `_sum_last` leaves those to numpy).
_ACROSS_ROWS = 1024


def _across_rows(a: np.ndarray) -> np.ndarray:
    """The last axis first, contiguous: a reduction over axis 0 then runs along the rows."""
    return np.ascontiguousarray(a.transpose(a.ndim - 1, *range(a.ndim - 1)))  # moveaxis, less
                                                                            # Python per call


def _max_last(a: np.ndarray) -> np.ndarray:
    """`a.max(axis=-1, keepdims=True)`, bit for bit."""
    if a.size < _ACROSS_ROWS:
        return a.max(axis=-1, keepdims=True)
    return _across_rows(a).max(axis=0)[..., None]


def _sum_last(a: np.ndarray) -> np.ndarray:
    """`a.sum(axis=-1, keepdims=True)`, bit for bit."""
    if a.size < _ACROSS_ROWS or a.shape[-1] >= 8:
        return a.sum(axis=-1, keepdims=True)
    return _across_rows(a).sum(axis=0)[..., None]


def _normalised(lb: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last two axes, normalised to sum to 1."""
    m = _max_last(lb.reshape(*lb.shape[:-2], -1))[..., None]
    return lb - (m + np.log(np.exp(lb - m).sum(axis=(-2, -1), keepdims=True)))


def margin(p: np.ndarray) -> np.ndarray:
    top = np.partition(p, p.shape[-1] - 2, axis=-1)[..., -2:]
    return top.max(axis=-1) - top.min(axis=-1)


def predict(belief: np.ndarray, switch: np.ndarray, regime_switch) -> np.ndarray:
    """One clip later: each regime's activity switches with its probability (`switch`,
    broadcast against `[n, J, 1]`), then mass moves between regimes (`regime_switch`)."""
    b = np.exp(belief)
    k = b.shape[-1]
    b = (1 - switch) * b + switch * _sum_last(b) / k
    if b.shape[1] > 1:
        # b.mean(axis=1, keepdims=True), bit for bit, without its Python wrapper
        mean = np.add.reduce(b, axis=1, keepdims=True) / b.shape[1]
        b = (1 - regime_switch) * b + regime_switch * mean
    return np.log(np.maximum(b, 1e-300))


def _lse(a: np.ndarray) -> np.ndarray:
    """log-sum-exp over the last axis, keepdims. Across rows, the classes are moved first once
    (the max and the sum of `_max_last` and `_sum_last` then read the same layout): the same
    bits, in fewer numpy calls per step of a replay."""
    if a.size < _ACROSS_ROWS or a.shape[-1] >= 8:
        m = _max_last(a)
        return m + np.log(_sum_last(np.exp(a - m)))
    t = _across_rows(a)
    m = t.max(axis=0)
    return (m + np.log(np.exp(t - m).sum(axis=0)))[..., None]


def evidence(belief: np.ndarray, proba: np.ndarray, weight, regime_weight=None) -> np.ndarray:
    """The belief after a posterior `proba [n, K]` as evidence: each regime's activity belief
    takes it tempered by `weight` (broadcast against `[n, J, 1]`); the regimes are weighed by
    how well each predicted it, tempered by `regime_weight` (None: `weight`, the plain joint
    update)."""
    return _update(belief, *_terms(proba, weight, regime_weight))


def _update(belief: np.ndarray, activity: np.ndarray, regime: np.ndarray) -> np.ndarray:
    """Each regime's activity belief times exp(`activity`), and each regime weighed by how
    well it predicted exp(`regime`) (both log-likelihoods broadcast against `[n, J, K]`)."""
    mass = _lse(belief)                                   # [n, J, 1] log regime weights
    cls = belief - mass                                   # each regime's activity belief
    fit = _lse(cls + regime)                              # how well each regime predicted it
    new = cls + activity
    return _normalised(mass + fit + new - _lse(new))


def _terms(proba: np.ndarray, weight, regime_weight) -> tuple[np.ndarray, np.ndarray]:
    """`evidence`'s two log-likelihoods for a posterior `proba [n, K]`: for the activity
    (tempered by `weight`) and for the regimes (by `regime_weight`; None: `weight`)."""
    col = lambda w: np.asarray(w, float).reshape(-1, 1, 1) if np.ndim(w) == 1 else w  # noqa: E731
    lp = _log(proba)[:, None, :]
    w = col(weight)
    g = w if regime_weight is None else col(regime_weight)
    return w * lp, g * lp


def edge_step(belief: np.ndarray, proba: np.ndarray, switch: np.ndarray, regime_switch,
              edge_weight, regime_weight) -> np.ndarray:
    """The belief one clip later, with that clip's edge posterior as evidence. `switch`
    broadcasts against `[n, J, 1]`, `edge_weight` against `[n, 1, 1]`. Consecutive clips
    overlap, so the edge's evidence is tempered where it accumulates; a regime that carries
    nothing (switch 1) cannot count it twice and takes it whole."""
    return evidence(predict(belief, switch, regime_switch), proba,
                    1 - (1 - edge_weight) * (1 - switch), regime_weight)


@register("belief")
@dataclass
class BeliefRouter(Router):
    switch: tuple[float, ...] = (0.03, 1.0)   # per-clip activity switch probability, per regime
    regime_switch: float = 0.01               # per clip, the chance of moving to another regime
    edge_weight: float = 0.5                  # the edge posterior's weight as evidence
    cloud_weight: float = 2.0                 # a cloud answer's weight as evidence
    fusion_weight: float | None = None        # the per-clip fusion's edge weight: where time
                                              # carries nothing an offload is answered by it
    regime_weight: float | None = 1.0         # evidence's weight in judging the regimes
                                              # (None: as for the activity)
    alarm: tuple[int, ...] = ()               # classes the edge claims that are always offloaded
    answers: str = "belief"                   # offloaded clips: "belief" (the belief with the
                                              # cloud's answer in it) or "fusion" (per clip)
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
        if self.fusion_weight is not None and self.fusion_weight < 0:
            raise DataError("belief router: fusion_weight must be >= 0")
        if self.answers not in ("belief", "fusion"):
            raise DataError(f"belief router: answers must be 'belief' or 'fusion', got "
                            f"{self.answers!r}")

    name = "belief"
    rowwise = True   # elementwise math and reductions within a row (switcher.sweep)

    @property
    def regimes(self) -> int:  # type: ignore[override]
        return len(self.switch)

    def step(self, state: StreamState, edge: ModelOutput) -> Step:
        return self._step(state, edge.proba, *self._edge_terms(edge.proba),
                          self._claims(edge.proba))

    def _edge_terms(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The log-likelihoods an edge posterior adds as evidence (`edge_step`): for the
        activity `[n, J, K]` and for the regimes (broadcast against it)."""
        switch = np.asarray(self.switch)[None, :, None]
        return _terms(proba, 1 - (1 - self.edge_weight) * (1 - switch), self.regime_weight)

    def _claims(self, proba: np.ndarray) -> np.ndarray | None:
        """`[n]`: the clips whose edge label is an alarm class (None: no alarm classes)."""
        return np.isin(proba.argmax(axis=1), self.alarm) if self.alarm else None

    def _step(self, state: StreamState, proba: np.ndarray, activity: np.ndarray,
              regime: np.ndarray, claim: np.ndarray | None) -> Step:
        """`step` from the clips' evidence terms (`_edge_terms`) and alarm claims."""
        lb = _update(predict(state.belief, np.asarray(self.switch)[None, :, None],
                             self.regime_switch), activity, regime)
        post = np.exp(lb).sum(axis=1)
        trust = margin(post)
        kept = post
        if claim is not None:
            trust = np.where(claim, ALARM, trust)
            kept = np.where(claim[:, None], proba, post)
        return Step(trust, kept, lb)

    def replay(self, edge: ModelOutput, cloud: np.ndarray) -> BeliefReplay:
        return BeliefReplay(self, edge, cloud)

    def cloud_weights(self) -> np.ndarray:
        """`[1, J, 1]`: a cloud answer's weight in each regime. In the memoryless one (switch
        1) the clip's edge evidence has weight 1, so a cloud weight of 1 / fusion_weight makes
        its answer the per-clip fusion's (p_cloud x p_edge ^ w, up to a power)."""
        w = np.full(len(self.switch), self.cloud_weight)
        if self.fusion_weight is not None:
            w[np.asarray(self.switch) >= 1] = 1 / max(self.fusion_weight, 1 / MAX_WEIGHT)
        return w[None, :, None]

    def answer(self, step: Step, after: StreamState, fused: np.ndarray) -> np.ndarray:
        if self.answers == "fusion":
            return fused
        return np.exp(after.belief).sum(axis=1)

    def observe(self, state: StreamState, step: Step, cloud: np.ndarray | None,
                asked: np.ndarray) -> StreamState:
        out = super().observe(state, step, cloud, asked)
        if cloud is not None and np.any(asked):
            a = np.asarray(asked)
            out.belief = _told(step.belief, a, *_terms(np.asarray(cloud)[a],
                                                       self.cloud_weights(),
                                                       self.regime_weight))
        return out

    def late(self, state: StreamState, cloud: np.ndarray, age: int) -> StreamState:
        """An answer about a clip `age` clips ago tells about now through the switch
        probability: within a regime of rate h the activity held with probability (1-h)^age,
        so the answer's evidence is mixed with no evidence in that proportion."""
        out = super().late(state, cloud, age)
        keep = (1 - np.asarray(self.switch))[None, :, None] ** age          # [1, J, 1]
        lp = _log(cloud)[:, None, :]

        def aged(weight) -> np.ndarray:
            lik = np.exp(weight * lp)
            return np.log(keep * lik + (1 - keep) * lik.mean(axis=-1, keepdims=True))

        g = self.cloud_weights() if self.regime_weight is None else self.regime_weight
        out.belief = _update(state.belief, aged(self.cloud_weights()), aged(g))
        return out

    # -- one file: router.json beside the bundle's switcher -------------------------------
    def to_dict(self, classes: tuple[str, ...]) -> dict:
        """JSON-ready; the alarm classes by name, so the file says what it guards."""
        return {"router": self.name, "classes": list(classes), "switch": list(self.switch),
                "regime_switch": self.regime_switch, "edge_weight": self.edge_weight,
                "cloud_weight": self.cloud_weight, "fusion_weight": self.fusion_weight,
                "regime_weight": self.regime_weight,
                "alarm": [classes[a] for a in self.alarm], "answers": self.answers,
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict, classes: tuple[str, ...]) -> BeliefRouter:
        """The router of `to_dict`, for an edge model with these classes (the file's must be
        the same, in the same order)."""
        if not isinstance(d, dict) or d.get("router") != "belief":
            raise DataError("not a belief router file (its 'router' is not 'belief')")
        if list(d.get("classes", classes)) != list(classes):
            raise DataError(f"the router was fitted for classes {d.get('classes')}, the edge "
                            f"model has {list(classes)}")
        unknown = [c for c in d.get("alarm", []) if c not in classes]
        if unknown:
            raise DataError(f"router alarm classes {unknown} are not among {list(classes)}")
        known = {"switch", "regime_switch", "edge_weight", "cloud_weight", "fusion_weight",
                 "regime_weight",
                 "answers", "meta"}
        try:
            return cls(**{k: (tuple(v) if k == "switch" else v) for k, v in d.items()
                          if k in known},
                       alarm=tuple(classes.index(c) for c in d.get("alarm", [])))
        except (TypeError, ValueError) as exc:
            raise DataError(f"belief router: not a router description ({exc})") from None

    def save(self, path: str | Path, classes: tuple[str, ...]) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(tuple(classes)), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, classes: tuple[str, ...]) -> BeliefRouter:
        return load_json(path, "router", lambda d: cls.from_dict(d, tuple(classes)))


def _told(belief: np.ndarray, asked: np.ndarray, activity: np.ndarray,
          regime: np.ndarray) -> np.ndarray:
    """The belief with the cloud's answers (their evidence terms, `_terms`) in the `asked`
    rows."""
    out = belief.copy()
    out[asked] = _update(belief[asked], activity, regime)
    return out


class BeliefReplay(Replay):
    """A belief router's replay (Router.replay): every clip's evidence terms, edge and cloud,
    and alarm claims computed once (elementwise, so a row's are the bits its step computes)
    and gathered by clip at each step."""

    def __init__(self, router: BeliefRouter, edge: ModelOutput, cloud: np.ndarray) -> None:
        super().__init__(router, edge, cloud)
        self.belief_router = router
        self.edge_terms = router._edge_terms(edge.proba)
        self.cloud_terms = _terms(cloud, router.cloud_weights(), router.regime_weight)
        self.claims = router._claims(edge.proba)
        # a stream switcher's confidence features are the edge's alone: once per clip
        self.conf = confidence(edge.proba) if getattr(router, "switcher", None) else None

    def step(self, state: StreamState, clips: np.ndarray,
             parts: list[slice] | None = None) -> Step:
        r = self.belief_router
        claim = None if self.claims is None else self.claims[clips]
        s = r._step(state, self.edge.proba[clips], self.edge_terms[0][clips],
                    self.edge_terms[1][clips], claim)
        if getattr(r, "switcher", None) is None:
            return s   # the belief's math is rowwise: `parts` need not be scored apart
        return r._switched(state, s, self.view(clips), claim,  # a stream switcher's trust
                           None if self.conf is None else self.conf[clips], parts)

    def observe(self, state: StreamState, step: Step, clips: np.ndarray,
                asked: np.ndarray) -> StreamState:
        out = Router.observe(self.router, state, step, self.cloud[clips], asked)
        if np.any(asked):
            c = clips[asked]
            out.belief = _told(step.belief, asked, self.cloud_terms[0][c],
                               self.cloud_terms[1][c])
        return out


def belief_router(sc, classes: tuple[str, ...], fusion_weight: float | None = None
                  ) -> BeliefRouter:
    """The belief router of a `[stream]` config table (edgeswitch.config.StreamConfig) for an
    edge model with these classes (alarm classes it does not have are left out), answering
    like the per-clip fusion of edge weight `fusion_weight` where time carries nothing (0: the
    cloud alone)."""
    return BeliefRouter(switch=(sc.switch, 1.0), edge_weight=sc.edge_weight,
                        cloud_weight=sc.cloud_weight, answers=sc.answers,
                        fusion_weight=fusion_weight,
                        alarm=tuple(classes.index(c) for c in sc.alarm if c in classes))


STATE_FEATURES = ("belief_margin", "belief_max", "log_cloud_age", "edge_is_belief",
                  "memoryless_weight", "edge_p_of_belief", "edge_is_last_cloud", "no_cloud_yet")


def state_features(state: StreamState, step: Step, edge: ModelOutput) -> np.ndarray:
    """`[n, 8]`: what a stream switcher reads of the state besides the edge's outputs
    (STATE_FEATURES): the belief's confidence, the age of the cloud's last answer, the edge's
    agreement with the belief and with that answer, and the memoryless regime's weight."""
    b = np.exp(step.belief)
    post = b.sum(axis=1)
    belief_label = post.argmax(axis=1)
    edge_label = edge.proba.argmax(axis=1)
    age = np.where(np.isfinite(state.age), state.age, 1e3)
    regimes = b.sum(axis=2)
    return np.column_stack([
        margin(post), post.max(axis=1), np.log1p(np.minimum(age, 1e3)),
        belief_label == edge_label, regimes[:, -1],
        edge.proba[np.arange(len(edge_label)), belief_label], state.last == edge_label,
        state.last < 0]).astype(np.float32)


@register("belief-switcher")
@dataclass
class BeliefSwitcherRouter(BeliefRouter):
    """The belief router with a DMD switcher for its trust: the switcher reads the edge's
    outputs and the state (`state_features`, appended to the embedding it sees) and predicts
    whether the belief's answer agrees with the cloud's (switcher.stream_fit)."""

    switcher: object = None   # a fitted switcher.base.Switcher

    name = "belief-switcher"

    @property
    def rowwise(self) -> bool:  # type: ignore[override]
        return self.switcher is None or self.switcher.rowwise

    def step(self, state: StreamState, edge: ModelOutput) -> Step:
        return self._switched(state, super().step(state, edge), edge,
                              self._claims(edge.proba))

    def _switched(self, state: StreamState, step: Step, edge: ModelOutput,
                  claim: np.ndarray | None, conf: np.ndarray | None = None,
                  parts: list[slice] | None = None) -> Step:
        """The belief's step with the switcher's trust (alarm claims `claim` kept at ALARM;
        `conf`: the clips' confidence features, where already computed; `parts`: rows of
        separate runs, scored apart as each run alone would score them, see Replay.step)."""
        if self.switcher is None:
            return step
        view = switcher_view(state, step, edge)
        if parts is None:
            trust = self.switcher.trust(view, conf)
        else:
            trust = np.concatenate([
                self.switcher.trust(ModelOutput(view.proba[p], view.embedding[p]),
                                    None if conf is None else conf[p]) for p in parts])
        if claim is not None:
            trust = np.where(claim, ALARM, trust)
        return Step(trust, step.kept, step.belief)


def switcher_view(state: StreamState, step: Step, edge: ModelOutput) -> ModelOutput:
    """What a stream switcher reads: the edge's outputs, the state's features appended to
    the embedding."""
    return ModelOutput(edge.proba, np.hstack([edge.embedding,
                                              state_features(state, step, edge)]))
