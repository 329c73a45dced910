"""Classification quality (accuracy, macro-F1), offload curves, latency and reports."""

from edgeswitch.evaluation.curves import RouterCurve, router_curve, trapezoid_auc
from edgeswitch.evaluation.quality import accuracy, macro_f1

__all__ = ["RouterCurve", "accuracy", "macro_f1", "router_curve", "trapezoid_auc"]
