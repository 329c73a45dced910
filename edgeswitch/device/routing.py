"""The router part of the device graph: trust, kept answer, the state after the clip, and the
answer to an offloaded clip that the cloud answered (with the fusion applied as
runtime.hybrid applies it), for every router that can be written as a graph.

It follows HybridClassifier's reference semantics for one clip of one stream: `step` on the
state before the clip, then `observe` with nothing asked (`cloud_mask` 0) or with the cloud's
answer (`cloud_mask` 1), and `answer(step, after, fused)` for an answered offload. Routers
that cannot be a graph are refused by name: `random` (its generator lives in Python), `abc`
(an ensemble of edges) and `oracle` (it knows the truth).
"""

from __future__ import annotations

import numpy as np

from edgeswitch.device import belief as bl
from edgeswitch.device.graph import Graph
from edgeswitch.device.spec import TIE
from edgeswitch.device.switchers import confidence_trust, features, switcher_trust
from edgeswitch.errors import ModelError
from edgeswitch.switcher.routers import Router
from edgeswitch.switcher.stream import ALARM, BeliefRouter

CONFIDENCE = ("max_prob", "margin", "entropy")


def router_kind(router: Router) -> tuple[str, str | None]:
    """(kind, switcher family): kind "confidence", "switcher", "belief" or "belief-switcher";
    ModelError for a router no graph can hold."""
    if isinstance(router, BeliefRouter):
        sw = getattr(router, "switcher", None)
        return ("belief", None) if sw is None else ("belief-switcher", sw.family)
    if router.name in CONFIDENCE:
        return "confidence", None
    sw = getattr(router, "switcher", None)
    if sw is not None and not router.stateful:
        return "switcher", sw.family
    raise ModelError(f"router '{router.name}' cannot be exported to a device graph (random, "
                     "abc and oracle have none; use a confidence router, a switcher or a "
                     "belief router)")


def regimes(router: Router) -> int:
    """The state's J: the belief's regimes, 1 (a dummy row) for a per-clip router."""
    return len(router.switch) if isinstance(router, BeliefRouter) else 1


def fused(g: Graph, proba: str, cloud: str, weight: float) -> str:
    """Fusion.combine: the cloud's own answer at weight 0, else the normalised
    p_cloud * p_edge ** weight (switcher.fusion.log_linear)."""
    if weight == 0.0:
        return cloud
    z = g.add(g.log(g.clip(cloud, bl.EPS, 1.0)),
              g.mul(g.scalar(weight), g.log(g.clip(proba, bl.EPS, 1.0))))
    q = g.exp(g.sub(z, g.reduce("ReduceMax", z, [1])))
    return g.div(q, g.reduce("ReduceSum", q, [1]))


def _alarm(g: Graph, router: BeliefRouter, proba: str) -> str | None:
    """bool `[n]`: the edge claims an alarm class (None: the router has none)."""
    if not router.alarm:
        return None
    label = g.argmax(proba)
    claims = [g.op("Equal", label, g.const(a, np.int64)) for a in router.alarm]
    out = claims[0]
    for c in claims[1:]:
        out = g.op("Or", out, c)
    return out


def build_router(g: Graph, router: Router, fusion_weight: float, k: int, x: dict[str, str],
                 out: dict[str, str]) -> None:
    """Append the router's ops to `g`. `x` names the graph values it reads (proba, embedding,
    belief, age, last, cloud_proba, cloud_mask, threshold); `out` the graph outputs it
    writes (trust, offload, answer, belief_next, age_next, last_next)."""
    kind, _ = router_kind(router)
    mask = g.op("Greater", x["cloud_mask"], g.scalar(0.5))
    answer_fused = fused(g, x["proba"], x["cloud_proba"], fusion_weight)
    if kind in ("confidence", "switcher"):
        if kind == "confidence":
            trust = confidence_trust(g, router.name, x["proba"], k)
        else:
            sw = router.switcher
            trust = switcher_trust(g, sw, features(g, sw, x["proba"], x["embedding"], k))
        kept, offloaded_answer = x["proba"], answer_fused
        g.op("Identity", x["belief"], out=out["belief_next"])
    else:
        lb = bl.edge_step(g, router, x["belief"], x["proba"], k)
        post = bl.posterior(g, lb)
        trust, kept = bl.margin(g, post), post
        sw = getattr(router, "switcher", None)
        if sw is not None:
            state = bl.state_features(g, x["age"], x["last"], lb, x["proba"])
            view = g.op("Concat", x["embedding"], state, axis=1)
            trust = switcher_trust(g, sw, features(g, sw, x["proba"], view, k))
        claim = _alarm(g, router, x["proba"])
        if claim is not None:
            trust = g.op("Where", claim, g.scalar(ALARM), trust)
            kept = g.op("Where", g.unsqueeze(claim, 1), x["proba"], post)
        after = bl.evidence(g, lb, x["cloud_proba"], router.cloud_weights().astype(np.float32),
                            router.regime_weight)
        mask3 = g.op("Unsqueeze", mask, g.const([1, 2], np.int64, "axes"))
        g.op("Where", mask3, after, lb, out=out["belief_next"])
        offloaded_answer = answer_fused if router.answers == "fusion" else \
            bl.posterior(g, after)
    g.op("Identity", trust, out=out["trust"])
    # trust < threshold, a trust within TIE of it counting as equal (kept): see spec.TIE
    g.op("Less", trust, g.sub(x["threshold"], g.scalar(TIE)), out=out["offload"])
    g.op("Where", g.unsqueeze(mask, 1), offloaded_answer, kept, out=out["answer"])
    g.op("Where", mask, g.scalar(0.0), g.add(x["age"], g.scalar(1.0)), out=out["age_next"])
    g.op("Where", mask, g.to_float(g.argmax(x["cloud_proba"])), x["last"], out=out["last_next"])
