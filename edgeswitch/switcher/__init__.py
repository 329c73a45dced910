"""The switcher: learned (DMD) and baseline routers, fusion, and threshold calibration.

Importing this package registers every switcher family, so `load_switcher` reads any file.
"""

from edgeswitch.switcher.base import Switcher, load_switcher
from edgeswitch.switcher.calibrate import (
    MODES,
    OperatingPoint,
    calibrate_budget,
    calibrate_disagreement,
    calibrate_offload,
)
from edgeswitch.switcher.fusion import Fusion
from edgeswitch.switcher.linear import LinearSwitcher
from edgeswitch.switcher.mlp import MLPSwitcher
from edgeswitch.switcher.routers import ROUTERS, Router, make_router
from edgeswitch.switcher.trees import TreeSwitcher

__all__ = ["MODES", "ROUTERS", "Fusion", "LinearSwitcher", "MLPSwitcher", "OperatingPoint",
           "Router", "Switcher", "TreeSwitcher", "calibrate_budget", "calibrate_disagreement",
           "calibrate_offload", "load_switcher", "make_router"]
