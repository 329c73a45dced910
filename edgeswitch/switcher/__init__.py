"""The switcher: learned (DMD) and baseline routers, and threshold calibration."""

from edgeswitch.switcher.calibrate import (
    MODES,
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
)
from edgeswitch.switcher.mlp import MLPSwitcher
from edgeswitch.switcher.routers import ROUTERS, Router, make_router

__all__ = ["MODES", "ROUTERS", "MLPSwitcher", "OperatingPoint", "Router", "calibrate_budget",
           "calibrate_disagreement", "calibrate_offload", "make_router"]
