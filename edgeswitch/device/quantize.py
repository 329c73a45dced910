"""The int8 variant's edge: onnxruntime's dynamic quantization of the edge graph alone.

Only the edge is quantized, before it is merged with the router (device.merge), so the state
math, the switcher and the fusion stay float32 and the router's answers move only as far as
the edge's probabilities move. Weights are unsigned 8-bit (QUInt8): ConvInteger has a uint8 x
uint8 kernel in every onnxruntime build, the browser's WebAssembly one included; activations
are quantized per call (DynamicQuantizeLinear), so no calibration clips are needed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

from edgeswitch.errors import ModelError

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]


def quantize_edge(edge: onnx.ModelProto) -> onnx.ModelProto:
    """`edge` with its Conv / MatMul / Gemm weights in 8 bits."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "edge.onnx", Path(tmp) / "edge.int8.onnx"
        onnx.save(edge, src)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)   # its advice to pre-process is for image models
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QUInt8,
                             op_types_to_quantize=QUANTIZED_OPS)
        except Exception as exc:  # noqa: BLE001 - the quantizer raises many unrelated types
            raise ModelError(f"the edge model cannot be quantized: {exc}") from None
        finally:
            root.setLevel(level)
        quantized = onnx.load(dst)
    if not any(n.op_type in ("ConvInteger", "MatMulInteger") for n in quantized.graph.node):
        raise ModelError("int8: the edge model has no Conv, MatMul or Gemm weights to quantize")
    return quantized
