"""Routers: what decides, clip by clip, whether the edge answer stands. A registry by name.

Every router runs over **streams**: `start(n, k)` gives the state of n fresh streams, `step(state,
edge)` scores each stream's next clip (`Step.trust`: low = offload first; `Step.kept`: the
posterior answered when the clip stays on the device), and `observe(state, step, cloud, asked)`
returns the state after the cloud's answers. The hybrid (runtime.hybrid) offloads a clip whose
trust falls below the operating point's threshold; the benchmark runs the same objects over
recorded streams at many thresholds at once (switcher.sweep).

Per-clip routers (`ClipRouter`) carry nothing from clip to clip and implement one method,
`trust(edge_output)`: the confidence baselines (Sedna / BranchyNet), `random`, a fitted DMD
switcher (`switcher`), and `oracle`, which knows the truth and marks the physical limit of
routing for a model pair. Stream routers (switcher.stream) carry the cloud's answers and the
edge's recent evidence in their state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from edgeswitch.errors import DataError
from edgeswitch.models.base import ModelOutput
from edgeswitch.switcher.base import Switcher, registrar
from edgeswitch.switcher.features import confidence

ROUTERS: dict[str, Callable[..., Router]] = {}
register = registrar(ROUTERS, "name")


def make_router(name: str, **kwargs) -> Router:
    if name not in ROUTERS:
        raise DataError(f"unknown router '{name}'; known: {sorted(ROUTERS)}")
    try:
        return ROUTERS[name](**kwargs)
    except TypeError as exc:  # e.g. "switcher" needs a fitted switcher, "oracle" the truth
        raise DataError(f"router '{name}' cannot be built from {sorted(kwargs)}: {exc}") from None


@dataclass
class StreamState:
    """What a router carries from one clip of a stream to the next, for n streams (rows).

    `belief` is a stream router's log-probability over (regime, activity) `[n, J, K]` (J = 0
    for per-clip routers); `age` counts the stream's clips since the cloud last answered (inf:
    never), `last` is the class of that answer (-1: none), `seen` the clips routed so far.
    """

    belief: np.ndarray
    age: np.ndarray
    last: np.ndarray
    seen: np.ndarray

    @classmethod
    def fresh(cls, n: int, k: int, regimes: int = 0) -> StreamState:
        belief = np.full((n, regimes, k), -np.log(max(regimes * k, 1)))
        return cls(belief, np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros(n, np.int64))

    def __len__(self) -> int:
        return len(self.age)

    def rows(self, index) -> StreamState:
        """The states of the streams at `index` (a copy)."""
        return StreamState(*(getattr(self, f.name)[index].copy() for f in fields(self)))

    def put(self, index, other: StreamState) -> None:
        """Write `other`'s rows into the rows at `index`."""
        for f in fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    @classmethod
    def concat(cls, states: list[StreamState]) -> StreamState:
        return cls(*(np.concatenate([getattr(s, f.name) for s in states]) for f in fields(cls)))


@dataclass(frozen=True)
class Step:
    """A router's view of each stream's next clip (rows as in the state)."""

    trust: np.ndarray      # [n] trust in the kept answer; lower is offloaded first
    kept: np.ndarray       # [n, K] the posterior answered when the clip stays on the device
    belief: np.ndarray     # [n, J, K] the state after the edge's evidence, before the cloud's

    @property
    def kept_label(self) -> np.ndarray:
        return self.kept.argmax(axis=1)


class Router(ABC):
    """One scoring method, `step`; per-clip routers subclass `ClipRouter` instead."""

    name: str = "router"
    stateful: bool = True      # False: `step` reads nothing from the state (per-clip routers)
    regimes: int = 0           # the state's J (stream routers)
    rowwise: bool = False      # a row's step does not depend on the rows stepped with it, bit
                               # for bit (no BLAS product): separate runs sharing a step need
                               # not score their rows apart (switcher.sweep.run_rows)

    def start(self, n: int, k: int) -> StreamState:
        """The state of `n` fresh streams over `k` classes."""
        return StreamState.fresh(n, k, self.regimes)

    @abstractmethod
    def step(self, state: StreamState, edge: ModelOutput) -> Step:
        """Each stream's next clip (row i of `edge` is the next clip of stream i)."""

    def answer(self, step: Step, after: StreamState, fused: np.ndarray) -> np.ndarray:
        """`[n, K]`: the answer to an offloaded clip that the cloud answered, given the
        per-clip fusion's `fused` posterior and the state after the cloud's answer (`after`).
        Default: the fusion's (the same answers as every per-clip router)."""
        return fused

    def observe(self, state: StreamState, step: Step, cloud: np.ndarray | None,
                asked: np.ndarray) -> StreamState:
        """The state after this clip: `cloud [n, K]` holds the cloud's answers where `asked`
        (rows elsewhere are ignored; None when nothing was asked)."""
        answered = np.asarray(asked, bool)
        last = state.last.copy()
        if cloud is not None and answered.any():
            last[answered] = np.asarray(cloud)[answered].argmax(axis=1)
        return StreamState(step.belief, np.where(answered, 0.0, state.age + 1), last,
                           state.seen + 1)


    def late(self, state: StreamState, cloud: np.ndarray, age: int) -> StreamState:
        """The state after a cloud answer `cloud [n, K]` for a clip `age` clips ago (an
        asynchronous cloud answers after later clips were routed)."""
        return StreamState(state.belief, np.minimum(state.age, float(age)),
                           np.asarray(cloud).argmax(axis=1), state.seen)

    def replay(self, edge: ModelOutput, cloud: np.ndarray) -> Replay:
        """The router stepped over recorded outputs by clip index (switcher.sweep.run_rows).
        A router may return its own, with what its steps read of each clip computed once for
        the whole replay (a replay's cost is mostly numpy's fixed cost per call)."""
        return Replay(self, edge, cloud)


class Replay:
    """A router over recorded outputs (`edge`, the cloud's posteriors `cloud`), its rows'
    clips given by index: the router's own `step` and `observe` on those clips."""

    def __init__(self, router: Router, edge: ModelOutput, cloud: np.ndarray) -> None:
        self.router, self.edge, self.cloud = router, edge, cloud

    def view(self, clips: np.ndarray) -> ModelOutput:
        """The edge's outputs of these clips."""
        return ModelOutput(self.edge.proba[clips], self.edge.embedding[clips])

    def step(self, state: StreamState, clips: np.ndarray,
             parts: list[slice] | None = None) -> Step:
        """The router's step on these clips; `parts`: the runs the rows belong to, each scored
        apart (switcher.sweep.run_rows; None for a `rowwise` router)."""
        if parts is None:
            return self.router.step(state, self.view(clips))
        steps = [self.router.step(state.rows(p), self.view(clips[p])) for p in parts]
        return Step(*(np.concatenate([getattr(s, f.name) for s in steps])
                      for f in fields(Step)))

    def observe(self, state: StreamState, step: Step, clips: np.ndarray,
                asked: np.ndarray) -> StreamState:
        return self.router.observe(state, step, self.cloud[clips], asked)


class ClipRouter(Router):
    """A router that judges each clip alone: `trust(edge_output) -> [n]`, and the edge's own
    answer stands when a clip is kept."""

    stateful = False
    rowwise = False   # a clip's trust does not depend on the clips scored with it, bit for bit

    @abstractmethod
    def trust(self, edge: ModelOutput) -> np.ndarray:
        """Trust in the edge answer per clip; lower scores are offloaded first."""

    def step(self, state: StreamState, edge: ModelOutput) -> Step:
        return Step(self.trust(edge), edge.proba, state.belief)


@register("max_prob")
class MaxProbRouter(ClipRouter):
    rowwise = True

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return confidence(edge.proba)[:, 0]


@register("margin")
class MarginRouter(ClipRouter):
    rowwise = True

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return confidence(edge.proba)[:, 1]


@register("entropy")
class EntropyRouter(ClipRouter):
    rowwise = True

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return 1.0 - confidence(edge.proba)[:, 2]


@register("random")
class RandomRouter(ClipRouter):
    rowwise = True   # n draws at once are the n draws one at a time

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)  # one stream: successive batches differ

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return self.rng.random(len(edge))


def ensemble_view(members: np.ndarray) -> ModelOutput:
    """What a device running k edge models (`members [k, n, K]`, the deployed edge first)
    computes: their mean probabilities, and as the 'embedding' the members' vote share for
    that answer and each member's top probability."""
    mean = members.mean(axis=0)
    votes = (members.argmax(axis=2) == mean.argmax(axis=1)[None, :]).mean(axis=0)
    return ModelOutput(mean, np.column_stack([votes, members.max(axis=2).T]))


@register("abc")
class AbcRouter(ClipRouter):
    """Agreement-Based Cascading (Kolawole et al. 2024), over an ensemble's `ensemble_view`:
    trust = share of the edge members voting for the ensemble's answer, ties broken by the
    ensemble's mean top probability; a kept clip gets the ensemble's answer."""

    rowwise = True

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return edge.embedding[:, 0] + 1e-3 * edge.proba.max(axis=1)


@register("switcher")
class SwitcherRouter(ClipRouter):
    """A fitted `Switcher` (DMD-trained, or the supervised ablation)."""

    def __init__(self, switcher: Switcher) -> None:
        self.switcher = switcher
        self.name = switcher.name

    @property
    def rowwise(self) -> bool:  # type: ignore[override]
        return self.switcher.rowwise

    def trust(self, edge: ModelOutput) -> np.ndarray:
        return self.switcher.trust(edge)


@register("oracle")
class OracleRouter(ClipRouter):
    """Knows, for a fixed set of clips, whether each model is right.

    Offloads first where the edge is wrong and the cloud right (score 0), then where it makes
    no difference (0.5), last where offloading would break a right edge answer (1).
    """

    def __init__(self, cloud_label: np.ndarray, y_true: np.ndarray) -> None:
        self.cloud_label = np.asarray(cloud_label)
        self.y_true = np.asarray(y_true)

    def trust(self, edge: ModelOutput) -> np.ndarray:
        if len(edge) != len(self.y_true):
            raise DataError(f"oracle built for {len(self.y_true)} clips, got {len(edge)}")
        return oracle_scores(edge.label, self.cloud_label, self.y_true)


def oracle_scores(edge_label: np.ndarray, cloud_label: np.ndarray, y: np.ndarray) -> np.ndarray:
    edge_ok, cloud_ok = edge_label == y, cloud_label == y
    return np.where(~edge_ok & cloud_ok, 0.0, np.where(edge_ok & ~cloud_ok, 1.0, 0.5))
