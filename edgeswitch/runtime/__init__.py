"""Run time: the hybrid classifier, the stream runner of `classify` and `watch`, the decision
log and replay. The cloud clients it talks to are edgeswitch.cloud's."""

from edgeswitch.runtime.hybrid import HybridClassifier, HybridResult

__all__ = ["HybridClassifier", "HybridResult"]
