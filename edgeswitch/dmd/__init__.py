"""Dual-Model Distillation: unsupervised switcher targets from edge/cloud agreement."""

from edgeswitch.dmd.generate import agreement_by_class, distill
from edgeswitch.dmd.records import DMDRecords

__all__ = ["DMDRecords", "agreement_by_class", "distill"]
