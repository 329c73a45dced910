"""The operating point of a config's [calibration] table: which calibration runs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeswitch.config import RunConfig
from edgeswitch.errors import EdgeSwitchError
from edgeswitch.pipeline.costs import Costs
from edgeswitch.runtime.drift import recordings_of, reference
from edgeswitch.switcher.calibrate import (
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
)


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
