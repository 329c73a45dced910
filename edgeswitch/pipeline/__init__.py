"""The whole method on one data set, as functions a user can call one by one.

steps.py        train the models, fit fusion and the switcher, load and split data
costs.py        each part's latency (the budget calibration and the report need it)
calibration.py  the operating point a config's [calibration] table asks for
evaluate.py     every router's curve and the hybrid at its operating point, on labelled clips
deploy.py       the bundle a device needs, and a replay of the test clips through it over HTTP
run.py          `run_method(cfg)`: all of it, what `edgeswitch demo` calls
logged.py       a decision log as weighted switcher data (the offload bias corrected)
refresh.py      `edgeswitch refresh`: a new switcher from the log, written only if better
"""

from edgeswitch.pipeline.calibration import calibrate, calibrate_router
from edgeswitch.pipeline.costs import Costs, measure_costs
from edgeswitch.pipeline.evaluate import evaluate_clips
from edgeswitch.pipeline.run import build, run_method
from edgeswitch.pipeline.steps import (
    Artifacts,
    check_clip_classes,
    estimator,
    fit_fusion,
    fit_router,
    load_data,
    run_data,
    split_data,
    train_models,
    train_switcher,
)

__all__ = ["Artifacts", "Costs", "build", "calibrate", "calibrate_router",
           "check_clip_classes", "estimator", "evaluate_clips", "fit_fusion", "fit_router",
           "load_data", "measure_costs", "run_data", "run_method", "split_data",
           "train_models", "train_switcher"]
