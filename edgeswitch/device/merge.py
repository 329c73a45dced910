"""One ONNX model from the edge model's graph and the router's ops (device.routing).

The edge graph is taken whole, its names prefixed with `edge/` (onnx.compose.add_prefix), fed
by the device's `clip` input; its first two outputs (`proba`, `embedding`) feed the router.
The merged model keeps the edge's opset (converted up to 13 where it is older, the first
with the Squeeze / Unsqueeze / ReduceSum forms the router uses) and its other domains (an
int8 edge's quantized ops).
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, compose, helper, version_converter

from edgeswitch.device.graph import Graph
from edgeswitch.device.routing import build_router
from edgeswitch.device.spec import INPUTS, OUTPUTS
from edgeswitch.errors import ModelError
from edgeswitch.switcher.routers import Router

MIN_OPSET = 13
DTYPES = {"float32": TensorProto.FLOAT, "bool": TensorProto.BOOL}


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("the edge model imports no default ONNX opset")


def device_model(edge: onnx.ModelProto, router: Router, fusion_weight: float,
                 clip_shape: tuple[int, int], k: int, j: int) -> onnx.ModelProto:
    """The device graph (inputs and outputs as device.spec names them) around `edge`."""
    if default_opset(edge) < MIN_OPSET:
        edge = version_converter.convert_version(edge, MIN_OPSET)
    opset = default_opset(edge)
    edge = compose.add_prefix(edge, "edge/")
    if len(edge.graph.output) < 2:
        raise ModelError("the edge model must output proba and embedding")
    edge_in = edge.graph.input[0].name
    proba, embedding = edge.graph.output[0].name, edge.graph.output[1].name
    dims = {"n": "n", "T": clip_shape[0], "C": clip_shape[1], "J": j, "K": k}
    inputs = [helper.make_tensor_value_info(name, DTYPES[dtype], [dims.get(d, d) for d in shape])
              for name, dtype, shape in INPUTS]
    outputs = [helper.make_tensor_value_info(name, DTYPES[dtype], [dims.get(d, d) for d in shape])
               for name, dtype, shape in OUTPUTS]
    g = Graph(opset)
    g.op("Identity", "clip", out=edge_in)
    head = list(g.nodes)
    g.nodes.clear()
    g.op("Identity", proba, out="edge_proba")
    x = {name: name for name, _, _ in INPUTS} | {"proba": proba, "embedding": embedding}
    build_router(g, router, fusion_weight, k, x, {name: name for name, _, _ in OUTPUTS})
    graph = helper.make_graph(head + list(edge.graph.node) + g.nodes, "edgeswitch-device",
                              inputs, outputs,
                              initializer=list(edge.graph.initializer) + g.initializers)
    graph.sparse_initializer.extend(edge.graph.sparse_initializer)
    model = helper.make_model(graph, opset_imports=list(edge.opset_import),
                              ir_version=edge.ir_version, producer_name="edgeswitch")
    model.functions.extend(edge.functions)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelError(f"the device graph does not check: {str(exc).splitlines()[0]}") \
            from None
    return model
