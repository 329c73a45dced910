"""The per-clip switchers and confidence baselines as graph ops: the same arithmetic as their
numpy scoring (switcher.features, linear, mlp, trees, routers), op for op.

Each function takes the edge's `proba [n, K]` (and the embedding the switcher reads) as graph
names and returns the name of `trust [n]`. The trees are unrolled exactly as
`TreeSwitcher._trust` walks them: the flat node arrays become initializers and every clip
takes depth + 1 steps of Gather / GatherElements / Where from each tree's root (a leaf points
at itself).
"""

from __future__ import annotations

import numpy as np

from edgeswitch.device.graph import Graph
from edgeswitch.errors import ModelError
from edgeswitch.switcher.base import Switcher


def confidence(g: Graph, proba: str, k: int) -> tuple[str, str, str]:
    """(max probability, margin, normalised entropy), each `[n, 1]` (features.confidence)."""
    first, second = g.top2(proba)
    margin = g.sub(first, second)
    plogp = g.mul(proba, g.log(g.clip(proba, 1e-12)))
    ent = g.div(g.op("Neg", g.reduce("ReduceSum", plogp, [1])), g.scalar(float(np.log(k))))
    return first, margin, ent


def confidence_trust(g: Graph, name: str, proba: str, k: int) -> str:
    """`[n]` trust of a confidence baseline (switcher.routers: max_prob, margin, entropy)."""
    p_max, margin, ent = confidence(g, proba, k)
    if name == "max_prob":
        return g.squeeze_last(p_max)
    if name == "margin":
        return g.squeeze_last(margin)
    if name == "entropy":
        return g.squeeze_last(g.sub(g.scalar(1.0), ent))
    raise ModelError(f"no graph for confidence router {name!r}")


def features(g: Graph, sw: Switcher, proba: str, embedding: str, k: int) -> str:
    """`[n, F]`: switcher_features(edge, sw.features), with `embedding` what it reads as the
    embedding (a stream switcher's has the state's features appended)."""
    parts = []
    for group in sw.features:
        if group == "proba":
            parts.append(proba)
        elif group == "confidence":
            parts.append(g.op("Concat", *confidence(g, proba, k), axis=1))
        elif group == "embedding":
            parts.append(embedding)
        else:
            raise ModelError(f"switcher '{sw.name}': no graph for feature group {group!r}")
    return parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)


def switcher_trust(g: Graph, sw: Switcher, F: str) -> str:
    """`[n]` trust of a fitted switcher of any family on features `F [n, F]`."""
    family = getattr(sw, "family", None)
    if family == "linear":
        z = g.add(g.op("MatMul", F, g.const(np.asarray(sw.w_).reshape(-1, 1), hint="w")),
                  g.scalar(float(sw.b_)))
        return g.squeeze_last(g.op("Sigmoid", z))
    if family == "mlp":
        h = g.op("Relu", g.add(g.op("MatMul", F, g.const(sw.W1_, hint="W1")),
                               g.const(sw.b1_, hint="b1")))
        z = g.add(g.op("MatMul", h, g.const(np.asarray(sw.w2_).reshape(-1, 1), hint="w2")),
                  g.scalar(float(sw.b2_)))
        return g.squeeze_last(g.op("Sigmoid", z))
    if family == "gbt":
        return _trees(g, sw, F)
    raise ModelError(f"switcher '{sw.name}': no device graph for family {family!r} "
                     "(linear, mlp and gbt have one)")


def float32_at_most(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 threshold: for a float32 feature x,
    `x <= t` (in float64, as numpy compares) holds exactly when `x <= float32_at_most(t)`."""
    t = np.asarray(t, np.float64)
    t32 = t.astype(np.float32)
    up = t32.astype(np.float64) > t
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    return t32


def _trees(g: Graph, sw, F: str) -> str:
    roots = np.asarray(sw.roots_, np.int64)[None, :]
    shape = g.op("Concat", g.op("Slice", g.op("Shape", F), g.const([0], np.int64),
                                g.const([1], np.int64)),
                 g.const([roots.shape[1]], np.int64), axis=0)
    node = g.op("Expand", g.const(roots, np.int64, "roots"), shape)
    feature = g.const(np.asarray(sw.feature_, np.int64), np.int64, "feature")
    threshold = g.const(float32_at_most(sw.threshold_), hint="threshold")
    left = g.const(np.asarray(sw.left_, np.int64), np.int64, "left")
    right = g.const(np.asarray(sw.right_, np.int64), np.int64, "right")
    for _ in range(int(sw.depth) + 1):
        x = g.op("GatherElements", F, g.op("Gather", feature, node), axis=1)
        go_left = g.op("LessOrEqual", x, g.op("Gather", threshold, node))
        node = g.op("Where", go_left, g.op("Gather", left, node), g.op("Gather", right, node))
    leaves = g.op("Gather", g.const(np.asarray(sw.value_, np.float32), hint="value"), node)
    total = g.add(g.reduce("ReduceSum", leaves, [1], keepdims=False),
                  g.scalar(float(sw.base_)))
    return g.clip(total, 0.0, 1.0)
