"""The operating point of a config's [calibration] table: which calibration runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.data.clips import ClipBatch, stream_lists
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.pipeline.costs import Costs
from edgeswitch.runtime.drift import recordings_of, reference
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
    calibrate_stream,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.routers import Router


def calibrate(cfg: RunConfig, calib_scores: np.ndarray, calib_disagree: np.ndarray | None,
              pool_scores: np.ndarray, costs: Costs, calib_edge_labels: np.ndarray | None = None,
              n_classes: int | None = None, calib_inputs: np.ndarray | None = None,
              calib_ids=None) -> OperatingPoint:
    """The operating point; with the calibration clips' edge labels it also carries their
    drift reference (score quantiles, edge class mix, agreement when the cloud answered), and
    with the clips themselves (`calib_inputs`, their `calib_ids` naming the recordings) the
    input statistics a turned sensor moves (runtime.drift)."""
    op = _calibrate(cfg, calib_scores, calib_disagree, pool_scores, costs)
    if calib_edge_labels is None or n_classes is None:
        return op
    recs = None if calib_ids is None else recordings_of(calib_ids)
    return replace(op, reference=reference(calib_scores, calib_edge_labels, n_classes,
                                           calib_disagree, inputs=calib_inputs,
                                           recordings=recs))


def calibrate_router(cfg: RunConfig, router: Router, edge, cloud, fusion: Fusion | None,
                     calib: ClipBatch, costs: Costs, pool_scores: np.ndarray) -> OperatingPoint:
    """The operating point of `router` on the unlabelled calibration clips, with their drift
    reference. A per-clip router is calibrated on its scores; a stream router is run over the
    calibration streams with the cloud answering what it offloads (no human label: the cloud
    answers as it would on the device), since a decision changes the scores after it."""
    calib_edge = edge.outputs(calib.X)
    k = len(edge.classes_)
    c = cfg.calibration
    if not router.stateful:
        scores = router.trust(calib_edge)
        dis = calib_edge.label != cloud.predict(calib.X) if c.mode == "disagreement" else None
        return calibrate(cfg, scores, dis, pool_scores, costs, calib_edge.label, k, calib.X,
                         calib.ids)
    if c.mode == "disagreement":
        raise EdgeSwitchError("disagreement calibration's guarantee needs independent clips, and "
                              "a stream router's clips are not: use [calibration] mode offload "
                              "or budget, or [stream] router = \"switcher\"")
    cloud_p = cloud.predict_proba(calib.X)
    answer = cloud_p if fusion is None else fusion.combine(calib_edge.proba, cloud_p)
    streams = stream_lists(calib.streams, calib.t)
    if c.mode == "budget":
        fixed = (costs.edge_ms + costs.switcher_ms) / costs.cloud_ms
        if c.budget < fixed:
            raise EdgeSwitchError(f"budget {c.budget:.3f} x cloud is below the edge + router "
                                  f"cost alone ({fixed:.3f} x cloud)")
        op, scores = calibrate_stream(router, calib_edge, cloud_p, answer, streams,
                                      min(c.budget - fixed, 1.0), c.adaptive, c.step,
                                      round_down=True)
        op = replace(op, mode="budget", params=op.params | {
            "budget": c.budget, "edge_cost": costs.edge_ms, "switcher_cost": costs.switcher_ms,
            "cloud_cost": costs.cloud_ms})
    else:
        op, scores = calibrate_stream(router, calib_edge, cloud_p, answer, streams, c.rate,
                                      c.adaptive, c.step)
    return replace(op, reference=reference(scores, calib_edge.label, k, None, inputs=calib.X,
                                           recordings=recordings_of(calib.ids)))


def _calibrate(cfg: RunConfig, calib_scores: np.ndarray, calib_disagree: np.ndarray | None,
               pool_scores: np.ndarray, costs: Costs) -> OperatingPoint:
    c = cfg.calibration
    if c.mode == "offload":
        return calibrate_offload(calib_scores, c.rate, c.adaptive, c.step)
    if c.mode == "budget":
        return calibrate_budget(calib_scores, c.budget, costs.edge_ms, costs.switcher_ms,
                                costs.cloud_ms, c.adaptive, c.step)
    if c.mode == "disagreement":
        if calib_disagree is None:
            raise EdgeSwitchError("disagreement calibration needs the cloud's calib answers")
        # the candidate thresholds come from the pool, so they are fixed before calib is seen
        grid = np.quantile(pool_scores, np.linspace(0, 1, c.grid + 1)[1:])
        return calibrate_disagreement(calib_scores, calib_disagree, c.epsilon, c.delta, grid)
    raise EdgeSwitchError(f"unknown calibration mode '{c.mode}'; use offload, budget or "
                          "disagreement")
