"""Run time: the hybrid classifier and the interface through which it reaches the cloud."""

from edgeswitch.cloud.client import CloudClient, InProcessCloud
from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult

__all__ = ["CloudClient", "HybridClassifier", "HybridResult", "InProcessCloud"]
