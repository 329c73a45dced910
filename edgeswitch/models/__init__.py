"""Edge and cloud classifiers: torch training, ONNX export, ONNX Runtime inference."""

from edgeswitch.models.base import ClipClassifier, ModelOutput, check_same_classes
from edgeswitch.models.onnx_model import OnnxClassifier

__all__ = ["ClipClassifier", "ModelOutput", "OnnxClassifier", "check_same_classes"]
