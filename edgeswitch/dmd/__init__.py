"""Dual-Model Distillation: unsupervised switcher targets from edge/cloud agreement.

One runner (runner.py) takes a source (sources.py; videos: video.dmd), models and a sink
(sinks.py); `distill` is its in-memory form. Records: records.py; a sharded folder's format:
parts.py; a corpus cut into shards: corpus.py.
"""

from edgeswitch.dmd.generate import agreement_by_class, distill
from edgeswitch.dmd.records import DMDRecords

__all__ = ["DMDRecords", "agreement_by_class", "distill"]
