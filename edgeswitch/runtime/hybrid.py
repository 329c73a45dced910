"""Hybrid inference: edge -> router -> (cloud when the router doubts the edge), per stream.

Every clip belongs to a stream (a device, a camera, a recording; `streams=None`: one stream).
The router keeps a state per stream (runtime.states) and reads it with each clip: a stream
router carries the cloud's last answers and the edge's recent evidence, a per-clip router
nothing. Clips of one call are routed in order; the cloud is asked once per call for the clips
the router offloads, and its answers enter their streams' states when they come back: with one
clip per call (the default) a clip's decision sees every earlier answer of its stream, as the
benchmark's evaluation does (switcher.sweep). `classify(..., defer=True)` routes without asking:
the offloaded clips come back pending and `settle` takes each answer when it arrives (`watch`'s
asynchronous cloud; an answer that arrives after later clips of its stream were routed enters
the state aged by them).

Every clip gets an answer. When the cloud was asked and did not answer by the deadline (down,
slow, erroring, circuit open), the edge answer stands, flagged `verified=False` with the reason.
A clip the edge model cannot digest raises for its call (runtime.stream then retries the
call's clips one by one, so that only that clip fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edgeswitch.cloud.client import CloudClient, CloudReply, InProcessCloud
from edgeswitch.cloud.client import ask as ask_cloud
from edgeswitch.data.clips import model_input
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.models.base import ClipClassifier, ModelOutput, check_same_classes
from edgeswitch.runtime.decision_log import Decision, DecisionLog
from edgeswitch.runtime.states import DEFAULT_STREAM, StreamStates
from edgeswitch.switcher.calibrate import OperatingPoint
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import Router, Step, StreamState


@dataclass
class Pending:
    """An offloaded clip routed with `defer=True`, waiting for its cloud answer."""

    stream: str
    index: int               # its position in its call's result
    step: Step               # the router's view of it (one row)
    before: StreamState      # its stream's state before it (one row)
    seen: int                # its stream's clip count once it was routed


@dataclass(frozen=True)
class HybridResult:
    """Per clip: the answer, who gave it, and everything the decision was based on."""

    label: np.ndarray        # [n] class index of the answer
    proba: np.ndarray        # [n, K]
    answered_by: np.ndarray  # [n] "edge" | "cloud"
    score: np.ndarray        # [n] the router's trust in the kept answer
    edge: ModelOutput
    offloaded: np.ndarray    # [n] the router sent the clip to the cloud
    verified: np.ndarray     # [n] False where the cloud was asked and did not answer
    reason: np.ndarray       # [n] why not: a cloud.reasons.FallbackReason ("" where verified)
    cloud_proba: np.ndarray  # [n, K], NaN rows where the cloud gave nothing
    edge_ms: float           # this call's edge + router time
    cloud_ms: float          # this call's cloud time (0 when not asked)
    total_ms: float          # from the call to its answers
    stream: np.ndarray = field(default_factory=lambda: np.zeros(0, str))  # [n] stream ids
    cloud_age: np.ndarray = field(default_factory=lambda: np.zeros(0))    # [n] clips since
    # the stream's cloud last answered, before this clip (inf: never): the state it was read in
    pending: list[Pending] = field(default_factory=list)  # defer=True: the offloaded clips

    def records(self, classes: tuple[str, ...], ids: np.ndarray | None = None) -> list[dict]:
        """JSON-ready rows, one per clip."""
        ids = np.arange(len(self.label)).astype(str) if ids is None else ids
        # the call's latencies (every clip of a call shares them)
        latency = {"edge": round(self.edge_ms, 3), "cloud": round(self.cloud_ms, 3),
                   "total": round(self.total_ms, 3)}
        rows = [{"clip_id": str(i), "label": classes[int(lab)], "answered_by": str(who),
                 "verified": bool(ok), "fallback_reason": str(why) or None,
                 "switcher_score": float(s), "latency_ms": latency,
                 "proba": {c: round(float(p), 6) for c, p in zip(classes, row, strict=True)}}
                for i, lab, who, ok, why, s, row in zip(ids, self.label, self.answered_by,
                                                        self.verified, self.reason, self.score,
                                                        self.proba, strict=True)]
        for row, s, age in zip(rows, self.stream, self.cloud_age, strict=False):
            row["stream"] = str(s)
            row["cloud_age"] = None if not np.isfinite(age) else int(age)
        return rows


class HybridClassifier:
    """Edge model + router + threshold + cloud client. The router's answer stands unless it
    scores the clip below the operating point's threshold and the cloud answers in time.

    `log` appends every decision to a `DecisionLog`. `shadow_rate` also sends that share of the
    clips the router kept to the cloud, for the log only (unbiased DMD data; costs cloud calls;
    a shadow answer does not enter the stream's state). `fusion` answers an offloaded clip with
    the fused edge and cloud posteriors (the log keeps the cloud's own beside the answer); a
    stream router may answer from its state instead. At most `max_streams` streams' states are
    kept (the least recently seen is forgotten; a stream seen again starts fresh).
    """

    def __init__(self, edge: ClipClassifier, router: Router,
                 cloud: CloudClient | ClipClassifier, operating_point: OperatingPoint,
                 log: DecisionLog | None = None, shadow_rate: float = 0.0, seed: int = 0,
                 fusion: Fusion | None = None, max_streams: int = 10_000) -> None:
        self.edge = edge
        self.fusion = fusion
        self.router = router
        # a client that can fail (remote, none) says why; a model in this process is wrapped
        # so that what it returns is checked like any cloud's answer
        self.cloud = cloud if hasattr(cloud, "request") or isinstance(cloud, InProcessCloud) \
            else InProcessCloud(cloud)
        check_same_classes(edge, self.cloud)
        self.operating_point = operating_point
        self.classes_ = tuple(edge.classes_)
        self.log = log
        if not 0 <= shadow_rate <= 1:
            raise EdgeSwitchError(f"shadow_rate must be within [0, 1], got {shadow_rate}")
        self.shadow_rate = shadow_rate
        self.rng = np.random.default_rng(seed)
        self.states = StreamStates(router, len(self.classes_), max_streams)
        # an adaptive operating point keeps its offload share on the clips this object sees
        self.controller = operating_point.controller() if operating_point.adaptive else None

    # -- routing ---------------------------------------------------------------------------
    def _route(self, edge_out: ModelOutput, streams: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, list, list, list, np.ndarray]:
        """Trust, offload decisions, per clip (step, state before, the stream's clip count
        after it) and the cloud age, each clip read in its stream's state; the states move on
        with the edge's evidence (a cloud answer enters later, in `_answer`)."""
        n = len(edge_out)
        steps: list = [None] * n
        before: list = [None] * n
        seen = [0] * n
        age = np.full(n, np.inf)
        if not self.router.stateful:  # nothing carried: one vectorised call
            score = np.asarray(self.router.step(self.router.start(n, edge_out.proba.shape[1]),
                                                edge_out).trust, dtype=float)
        else:
            score = np.zeros(n)
            for i in range(n):
                st = self.states.get(streams[i])
                step = self.router.step(st, ModelOutput(edge_out.proba[i:i + 1],
                                                        edge_out.embedding[i:i + 1]))
                steps[i], before[i], age[i] = step, st, st.age[0]
                score[i] = step.trust[0]
                after = self.router.observe(st, step, None, np.zeros(1, bool))
                self.states.set(streams[i], after)
                seen[i] = int(after.seen[0])
        off = self.controller.decide(score) if self.controller is not None \
            else self.operating_point.offload(score)
        return score, np.asarray(off, bool), steps, before, seen, age

    def _answer(self, stream: str, step: Step | None, before: StreamState | None,
                edge_p: np.ndarray, cloud_p: np.ndarray, seen: int) -> np.ndarray:
        """An offloaded clip's answer from the cloud's `cloud_p`, entering its stream's state:
        exactly when nothing of the stream was routed since (`seen` is its count then), else
        aged by the clips routed since."""
        fused = cloud_p[None] if self.fusion is None else \
            self.fusion.combine(edge_p[None], cloud_p[None])
        if step is None:  # a per-clip router
            return fused[0]
        asked = np.ones(1, bool)
        after = self.router.observe(before, step, cloud_p[None], asked)
        now = self.states.get(stream)
        if int(now.seen[0]) == seen:
            self.states.set(stream, after)
        else:
            self.states.set(stream, self.router.late(now, cloud_p[None],
                                                     int(now.seen[0]) - seen))
        return self.router.answer(step, after, fused)[0]

    # -- the calls -------------------------------------------------------------------------
    def classify(self, X: np.ndarray, ids=None, groups=None,
                 on_answer: Callable[[HybridResult], None] | None = None,
                 streams=None, defer: bool = False) -> HybridResult:
        """The call's answers. `streams` names each clip's stream (None: all in one).
        `on_answer(result)` runs before the decisions are committed to the log (inside its
        transaction): what it writes and the log agree even after a kill, up to this one call
        (see runtime.stream). With `defer`, offloaded clips are not sent: they come back with
        the edge's answer, unverified, reason `pending`, in `result.pending`, for `settle`;
        nothing of theirs is logged until then."""
        t0 = time.monotonic()
        deadline = t0 + getattr(self.cloud, "deadline_s", float("inf"))
        X = model_input(X)
        n, k = len(X), len(self.classes_)
        streams = np.full(n, DEFAULT_STREAM) if streams is None else \
            np.asarray(streams).astype(str)
        if streams.shape != (n,):
            raise EdgeSwitchError(f"streams names {streams.shape} clips, the call has {n}")
        edge_out = self.edge.outputs(X)
        score, off, steps, before, seen, age = self._route(edge_out, streams)
        shadow = ~off & (self.rng.random(n) < self.shadow_rate) if self.shadow_rate and \
            not defer else np.zeros(n, bool)
        t_edge = time.monotonic()
        kept = np.stack([s.kept[0] for s in steps]) if self.router.stateful else \
            edge_out.proba
        proba = np.asarray(kept, dtype=np.float64).copy()
        cloud_proba = np.full((n, k), np.nan)
        verified = np.ones(n, bool)
        reason = np.full(n, "", dtype=object)
        pending: list[Pending] = []
        reply = CloudReply(None, None, 0, 0.0)
        if defer:
            verified[off] = False   # for now: `settle` gives the answer
            pending = [Pending(streams[i], i, steps[i], before[i], seen[i])
                       for i in np.nonzero(off)[0]]
        elif (off | shadow).any():
            ask = off | shadow
            reply = ask_cloud(self.cloud, X[ask], deadline)
            if reply.ok:
                cloud_proba[ask] = reply.proba
                for i in np.nonzero(off)[0]:
                    proba[i] = self._answer(streams[i], steps[i], before[i],
                                            edge_out.proba[i], cloud_proba[i], seen[i])
            else:
                verified[off] = False
                reason[off] = reply.reason
        answered = off & verified & ~np.asarray(defer)
        result = HybridResult(
            label=proba.argmax(axis=1), proba=proba,
            answered_by=np.where(answered, "cloud", "edge"), score=score, edge=edge_out,
            offloaded=off, verified=verified, reason=reason, cloud_proba=cloud_proba,
            edge_ms=(t_edge - t0) * 1000, cloud_ms=reply.latency_ms,
            total_ms=(time.monotonic() - t0) * 1000, stream=streams, cloud_age=age,
            pending=pending)
        settled = ~off if defer else np.ones(n, bool)
        if self.log is not None and settled.any():
            self._log(result, shadow, reply, ids, groups, settled,
                      None if on_answer is None else lambda: on_answer(result))
        elif on_answer is not None:
            on_answer(result)
        return result

    def settle(self, result: HybridResult, p: Pending, reply: CloudReply | None,
               reason: str | None = None, ids=None, groups=None,
               on_answer: Callable[[np.ndarray, bool], None] | None = None) -> np.ndarray:
        """A deferred clip's answer once its cloud request settled: `reply` (None: never sent,
        or no answer) and, without an answer, the fallback `reason`; the edge's answer then
        stands. Returns its posterior; logs it, `on_answer(proba, answered)` running inside
        the log's transaction."""
        i = p.index
        answered = reply is not None and reply.ok
        if answered:
            cloud_p = np.asarray(reply.proba[0], np.float64)
            proba = self._answer(p.stream, p.step, p.before, result.edge.proba[i], cloud_p,
                                 p.seen)
        else:
            cloud_p, proba = None, result.proba[i]
        if self.log is not None:
            why = None if answered else (reason or (reply.reason if reply is not None
                                                    else None))
            self.log.append([self._decision(
                result, i, ids, groups, label=int(np.argmax(proba)),
                answered_by="cloud" if answered else "edge", verified=answered,
                reason=why, cloud_p=cloud_p, shadow=False, reply=reply)],
                before_commit=None if on_answer is None else
                lambda: on_answer(proba, answered))
        elif on_answer is not None:
            on_answer(proba, answered)
        return proba

    # -- the log ---------------------------------------------------------------------------
    def _decision(self, r: HybridResult, i: int, ids, groups, *, label: int, answered_by: str,
                  verified: bool, reason, cloud_p, shadow: bool,
                  reply: CloudReply | None) -> Decision:
        asked = reply is not None and (r.offloaded[i] or shadow)
        return Decision(
            clip_id=str(ids[i]) if ids is not None else str(i),
            group=str(groups[i]) if groups is not None else "live",
            label=self.classes_[label], answered_by=answered_by, verified=verified,
            fallback_reason=reason or None, offloaded=bool(r.offloaded[i]), shadow=shadow,
            score=float(r.score[i]), edge_proba=r.edge.proba[i],
            edge_embedding=r.edge.embedding[i], cloud_proba=cloud_p, edge_ms=r.edge_ms,
            cloud_ms=reply.latency_ms if asked else None, total_ms=r.total_ms,
            attempts=reply.attempts if asked else 0, device=reply.device if asked else None,
            stream=str(r.stream[i]),
            cloud_age=None if not np.isfinite(r.cloud_age[i]) else float(r.cloud_age[i]))

    def _log(self, r: HybridResult, shadow: np.ndarray, reply: CloudReply, ids, groups,
             which: np.ndarray, before_commit: Callable[[], None] | None = None) -> None:
        self.log.append([self._decision(
            r, i, ids, groups, label=int(r.label[i]), answered_by=str(r.answered_by[i]),
            verified=bool(r.verified[i]), reason=r.reason[i] or None,
            cloud_p=None if np.isnan(r.cloud_proba[i, 0]) else r.cloud_proba[i],
            shadow=bool(shadow[i]),
            reply=reply if (r.offloaded[i] or shadow[i]) else None)
            for i in np.nonzero(which)[0]], before_commit=before_commit)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).label

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.classify(X).proba
