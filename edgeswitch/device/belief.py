"""The belief router's filter as graph ops: switcher.stream's `predict`, `evidence`, `_update`,
`margin` and `state_features`, op for op, on `belief [n, J, K]` log-probabilities.

numpy runs these in float64 and floors probabilities at 1e-300 before their log; the graph
runs in float32 and floors at float32's smallest normal number. The two differ only for
classes whose probability is below 1e-38, i.e. in log-beliefs that no answer or trust reads
(the parity tests compare probabilities, not such logs).
"""

from __future__ import annotations

import numpy as np

from edgeswitch.device.graph import TINY, Graph
from edgeswitch.switcher.stream import EPS, BeliefRouter


def column_weights(values) -> np.ndarray:
    """`[1, J, 1]` float32 per-regime weights (a scalar broadcasts)."""
    return np.asarray(values, np.float32).reshape(1, -1, 1)


def predict(g: Graph, belief: str, switch: np.ndarray, regime_switch: float, k: int,
            j: int) -> str:
    """One clip later: each regime's activity switches, then mass moves between regimes."""
    b = g.exp(belief)
    s = g.const(column_weights(switch), hint="switch")
    stay = g.const(column_weights(1 - switch), hint="stay")
    b = g.add(g.mul(stay, b), g.mul(s, g.div(g.reduce("ReduceSum", b, [2]), g.scalar(k))))
    if j > 1:
        mean = g.div(g.reduce("ReduceSum", b, [1]), g.scalar(j))
        b = g.add(g.mul(g.scalar(1 - regime_switch), b), g.mul(g.scalar(regime_switch), mean))
    return g.log(g.clip(b, TINY))


def log_evidence(g: Graph, proba: str) -> str:
    """`[n, 1, K]`: log of a posterior floored at EPS (switcher.stream._log)."""
    return g.unsqueeze(g.log(g.clip(proba, EPS, 1.0)), 1)


def update(g: Graph, belief: str, activity: str, regime: str) -> str:
    """switcher.stream._update: each regime's activity belief times exp(activity), each
    regime weighed by how well it predicted exp(regime), normalised over (J, K)."""
    mass = g.lse(belief, [2])
    cls = g.sub(belief, mass)
    fit = g.lse(g.add(cls, regime), [2])
    new = g.add(cls, activity)
    out = g.sub(g.add(g.add(mass, fit), new), g.lse(new, [2]))
    return g.sub(out, g.lse(out, [1, 2]))


def evidence(g: Graph, belief: str, proba: str, weight: np.ndarray,
             regime_weight: float | None) -> str:
    """switcher.stream.evidence with per-regime `weight` `[1, J, 1]`."""
    lp = log_evidence(g, proba)
    act = g.mul(g.const(weight, hint="weight"), lp)
    reg = act if regime_weight is None else g.mul(g.scalar(regime_weight), lp)
    return update(g, belief, act, reg)


def edge_step(g: Graph, r: BeliefRouter, belief: str, proba: str, k: int) -> str:
    """The belief one clip later, with the clip's edge posterior as evidence."""
    switch = np.asarray(r.switch, np.float64)
    predicted = predict(g, belief, switch, r.regime_switch, k, len(switch))
    weight = column_weights(1 - (1 - r.edge_weight) * (1 - switch))
    return evidence(g, predicted, proba, weight, r.regime_weight)


def posterior(g: Graph, belief: str) -> str:
    """`[n, K]`: the belief summed over regimes."""
    return g.reduce("ReduceSum", g.exp(belief), [1], keepdims=False)


def margin(g: Graph, p: str) -> str:
    """`[n]`: top-1 minus top-2."""
    first, second = g.top2(p)
    return g.squeeze_last(g.sub(first, second))


def state_features(g: Graph, age: str, last: str, belief: str, proba: str) -> str:
    """`[n, 8]`: switcher.stream.state_features (STATE_FEATURES order) from the state before
    the clip (`age [n]`, `last [n]`), the belief after its edge evidence and its edge
    posterior. An age of 1e9 ("never") reads as numpy's inf: both are capped at 1e3."""
    post = posterior(g, belief)
    first, second = g.top2(post)
    belief_label = g.argmax(post)
    edge_label = g.argmax(proba)
    capped = g.op("Min", age, g.scalar(1e3))
    regimes = g.reduce("ReduceSum", g.exp(belief), [2], keepdims=False)      # [n, J]
    last_regime = g.op("Gather", regimes, g.const(-1, np.int64), axis=1)     # [n]
    p_of_belief = g.op("GatherElements", proba, g.unsqueeze(belief_label, 1), axis=1)
    column = [
        g.sub(first, second),
        first,
        g.unsqueeze(g.log(g.add(capped, g.scalar(1.0))), 1),
        g.unsqueeze(g.to_float(g.op("Equal", belief_label, edge_label)), 1),
        g.unsqueeze(last_regime, 1),
        p_of_belief,
        g.unsqueeze(g.to_float(g.op("Equal", last, g.to_float(edge_label))), 1),
        g.unsqueeze(g.to_float(g.op("Less", last, g.scalar(0.0))), 1),
    ]
    return g.op("Concat", *column, axis=1)
