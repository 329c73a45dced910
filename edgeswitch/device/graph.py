"""A small builder for ONNX graphs written op by op with `onnx.helper`.

The device graph's router, state update and fusion are a few dozen plain ops. This builder
names every intermediate uniquely (under a prefix, so they never collide with the merged edge
model's names), keeps the constants as initializers, and hides the one opset difference that
matters here: the reductions other than ReduceSum take their axes as an attribute up to opset
17 and as an input from opset 18. Everything is float32: the graph must run where there is no
float64 kernel (a browser's WebAssembly or WebGPU backend).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F32 = np.float32
TINY = float(np.finfo(np.float32).tiny)   # the float32 stand-in for numpy's 1e-300 floors


class Graph:
    """Nodes and initializers under a name prefix; every method returns its output's name."""

    def __init__(self, opset: int, prefix: str = "router/") -> None:
        self.opset = opset
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    # -- constants and raw ops -------------------------------------------------------------
    def const(self, value, dtype=F32, hint: str = "const") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, out: str | None = None,
           **attrs) -> str:
        """One node with one output (`out` names it, e.g. a graph output)."""
        name = out or self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [name],
                                           name=self._name(op_type), **attrs))
        return name

    def ops(self, op_type: str, inputs: list[str], n_out: int, hint: str | None = None,
            **attrs) -> list[str]:
        """One node with `n_out` outputs."""
        names = [self._name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self._name(op_type),
                                           **attrs))
        return names

    # -- arithmetic ------------------------------------------------------------------------
    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def exp(self, a: str) -> str:
        return self.op("Exp", a)

    def log(self, a: str) -> str:
        return self.op("Log", a)

    def scalar(self, value: float) -> str:
        return self.const(value, hint="k")

    def clip(self, x: str, lo: float, hi: float | None = None) -> str:
        if hi is None:
            return self.op("Max", x, self.scalar(lo))
        return self.op("Clip", x, self.scalar(lo), self.scalar(hi))

    # -- reductions ------------------------------------------------------------------------
    def reduce(self, op_type: str, x: str, axes: list[int], keepdims: bool = True) -> str:
        """ReduceSum (axes an input since opset 13) or ReduceMax / ReduceMin / ReduceMean
        (an input since opset 18), written for this graph's opset."""
        as_input = self.opset >= (13 if op_type == "ReduceSum" else 18)
        if as_input:
            return self.op(op_type, x, self.const(axes, np.int64, "axes"),
                           keepdims=int(keepdims))
        return self.op(op_type, x, axes=list(axes), keepdims=int(keepdims))

    def lse(self, x: str, axes: list[int]) -> str:
        """log-sum-exp over `axes`, kept as size-1 axes, with the max taken out first (as
        numpy does in switcher.stream)."""
        m = self.reduce("ReduceMax", x, axes)
        s = self.reduce("ReduceSum", self.exp(self.sub(x, m)), axes)
        return self.add(m, self.log(s))

    def top2(self, p: str) -> tuple[str, str]:
        """(largest, second largest) of `[n, K]` along the classes, each `[n, 1]`."""
        values, _ = self.ops("TopK", [p, self.const([2], np.int64, "k")], 2, axis=1,
                             largest=1, sorted=1)
        first = self.op("Slice", values, self.const([0], np.int64), self.const([1], np.int64),
                        self.const([1], np.int64))
        second = self.op("Slice", values, self.const([1], np.int64), self.const([2], np.int64),
                         self.const([1], np.int64))
        return first, second

    def column(self, x: str, index: int) -> str:
        """`[n, 1]`: column `index` of `[n, F]`."""
        return self.op("Slice", x, self.const([index], np.int64),
                       self.const([index + 1], np.int64), self.const([1], np.int64))

    def squeeze_last(self, x: str) -> str:
        """`[n, 1]` -> `[n]`."""
        return self.op("Squeeze", x, self.const([-1], np.int64, "axes"))

    def unsqueeze(self, x: str, axis: int) -> str:
        return self.op("Unsqueeze", x, self.const([axis], np.int64, "axes"))

    def argmax(self, x: str, axis: int = 1) -> str:
        """int64 `[n]`: the first largest along `axis` (numpy's argmax tie rule)."""
        return self.op("ArgMax", x, axis=axis, keepdims=0, select_last_index=0)

    def to_float(self, x: str) -> str:
        return self.op("Cast", x, to=TensorProto.FLOAT)


def value_info(name: str, shape: list, dtype=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)
