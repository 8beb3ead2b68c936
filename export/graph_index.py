"""Read-only index of an ONNX graph: who produces and consumes each tensor, which tensors are
constants, the element type of every tensor (from ONNX shape inference), and which graph inputs
each node's data depends on. Shared by the precision policy (trt_policy.py), the fp16/bf16 pass
(precision.py) and the TensorRT graph rules (graph_rules.py).
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx
from onnx import TensorProto

FLOAT_TYPES: frozenset[int] = frozenset(
    {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
)
# ops that only move, reshape or convert values: they take the precision of what they feed
MOVEMENT_OPS: frozenset[str] = frozenset(
    {"Cast", "Concat", "Slice", "Split", "Reshape", "Unsqueeze", "Squeeze", "Transpose",
     "Identity", "Flatten", "Expand", "Tile"}
)
# ops that compute elementwise from their data inputs (no neighbourhood, no reduction)
POINTWISE_OPS: frozenset[str] = MOVEMENT_OPS | frozenset(
    {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Clip", "Floor", "Ceil", "Round", "Min", "Max"}
)


def graph_opset(model: onnx.ModelProto) -> int:
    """The graph's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def param_allows(schema: onnx.defs.OpSchema, index: int, is_input: bool, type_str: str) -> bool:
    """Whether input/output `index` of an op schema accepts the tensor type `type_str`, e.g.
    "tensor(float16)" (False for Resize's scales, which ONNX fixes to float32)."""
    params = schema.inputs if is_input else schema.outputs
    if not params:
        return False
    param = params[min(index, len(params) - 1)]  # a variadic last parameter repeats
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    return type_str in constraints.get(param.type_str, [param.type_str])


def type_name(elem_type: int) -> str:
    return TensorProto.DataType.Name(elem_type)


def node_key(node: onnx.NodeProto, index: int) -> str:
    """A node's name, or a stable stand-in for an unnamed one."""
    return node.name or f"#{index}:{node.op_type}"


class GraphIndex:
    """Producers, consumers, constants, element types and data sources of one graph."""

    def __init__(self, model: onnx.ModelProto, infer: bool = True) -> None:
        if infer:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        self.model = model
        graph = model.graph
        self.nodes = list(graph.node)
        self.keys = [node_key(n, i) for i, n in enumerate(self.nodes)]
        self.inputs = [i.name for i in graph.input]
        self.outputs = [o.name for o in graph.output]
        self.initializers = {t.name: t for t in graph.initializer}
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = i
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(i)
        self.types: dict[str, int] = {t.name: t.data_type for t in graph.initializer}
        for vi in (*graph.input, *graph.value_info, *graph.output):
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types[vi.name] = vi.type.tensor_type.elem_type
        self.constants = set(self.initializers)
        for node in self.nodes:
            if node.op_type == "Constant":
                self.constants.update(node.output)
        self._sources: list[frozenset[str]] | None = None

    # ---------------------------------------------------------------- tensors
    def elem_type(self, name: str) -> int | None:
        return self.types.get(name)

    def is_float(self, name: str) -> bool:
        return self.types.get(name) in FLOAT_TYPES

    def float_tensors(self, i: int) -> list[str]:
        node = self.nodes[i]
        return [t for t in (*node.input, *node.output) if t and self.is_float(t)]

    def has_float(self, i: int) -> bool:
        return bool(self.float_tensors(i))

    # ---------------------------------------------------------------- structure
    def successors(self, i: int) -> list[int]:
        return [j for name in self.nodes[i].output for j in self.consumers.get(name, [])]

    def float_producers(self, i: int) -> list[int]:
        """Producers of node i's non-constant float inputs (not shapes, indices, axes)."""
        return [self.producer[n] for n in self.nodes[i].input
                if n in self.producer and n not in self.constants and self.is_float(n)]

    def reaches(self, i: int, targets: set[str], through: Iterable[str]) -> bool:
        """True if some path from node i's outputs meets an op in targets, passing only ops in
        through (e.g. a Conv that feeds a Sigmoid through Slices and Casts)."""
        through = set(through)
        stack, seen = list(self.successors(i)), set()
        while stack:
            j = stack.pop()
            if j in seen:
                continue
            seen.add(j)
            op = self.nodes[j].op_type
            if op in targets:
                return True
            if op in through:
                stack.extend(self.successors(j))
        return False

    def descendants(self, i: int) -> set[int]:
        stack, seen = list(self.successors(i)), set()
        while stack:
            j = stack.pop()
            if j not in seen:
                seen.add(j)
                stack.extend(self.successors(j))
        return seen

    def sources(self) -> list[frozenset[str]]:
        """For each node, the graph inputs its data depends on. A Shape node reads only a
        tensor's shape, so its output carries no data dependency."""
        if self._sources is None:
            out: list[frozenset[str]] = []
            by_tensor: dict[str, frozenset[str]] = {n: frozenset({n}) for n in self.inputs}
            for node in self.nodes:  # ONNX graphs are topologically sorted
                if node.op_type in ("Shape", "Size", "Constant"):
                    src: frozenset[str] = frozenset()
                else:
                    src = frozenset().union(*(by_tensor.get(n, frozenset()) for n in node.input))
                out.append(src)
                for name in node.output:
                    by_tensor[name] = src
            self._sources = out
        return self._sources
