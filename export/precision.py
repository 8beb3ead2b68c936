"""fp16 and bf16 ONNX graphs from the fp32 export, with the fp32 islands of trt_policy.py
written in as Cast nodes, so that a strongly typed TensorRT network (the only kind TensorRT 11
builds) and ONNX Runtime run the same mixed-precision function.

    model16 = lower_precision(model32, "fp16")       # or "bf16"

Every node with float tensors computes either in the target type or, where the policy says, in
fp32; a Cast is inserted wherever a value crosses between the two (one per value and type,
shared by its consumers). Float weights and constants are converted offline (rounded to
nearest even), and kept in fp32 as well where an fp32 node reads them. Inputs whose ONNX type
is fixed stay as they are (Resize's `scales` is always float32); graph inputs and outputs keep
their types (uint8/int64/float32).

bf16 Conv and AveragePool exist in ONNX from opset 22 on, so a bf16 graph is converted to
opset 22 first (onnx.version_converter). ONNX Runtime's CPU provider has no bf16 kernels for
Conv, Mul, Sigmoid and most other ops (1.32), so the bf16 graph is for TensorRT (and checked on
the CPU with onnx's reference evaluator); the fp16 graph runs in ONNX Runtime as well.

Written over onnx's helper API rather than onnxconverter-common's float16 converter, which
converts to float16 only (no bfloat16) and clamps weights to +-1e4 by default: one pass for both
types keeps the fp32 islands identical in the fp16 and bf16 graphs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from s2i_fast.errors import EngineError
from s2i_fast.export.graph_index import GraphIndex, graph_opset, param_allows
from s2i_fast.export.trt_policy import fp32_islands, missing_islands

LOW_TYPES: dict[str, int] = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
SUFFIX = {TensorProto.FLOAT: "fp32", TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
BF16_MIN_OPSET = 22  # first opset whose Conv / AveragePool accept tensor(bfloat16)
FP16_MAX = float(np.finfo(np.float16).max)


def _convert_array(arr: np.ndarray, low: int, name: str) -> TensorProto:
    if low == TensorProto.FLOAT16:
        big = float(np.abs(arr).max()) if arr.size else 0.0
        if big > FP16_MAX:
            raise EngineError(f"constant {name} holds {big:.3g}, beyond fp16's range; its "
                              "consumer must stay fp32 (export/trt_policy.py)")
        return numpy_helper.from_array(arr.astype(np.float16), name)
    import ml_dtypes  # onnx's own dependency for bfloat16 arrays

    return numpy_helper.from_array(arr.astype(ml_dtypes.bfloat16), name)


def _lift_float_constants(model: onnx.ModelProto) -> None:
    """Float Constant nodes -> initializers, so that every float constant is converted the
    same way (the TorchScript exporter writes Constant nodes, dynamo initializers)."""
    graph = model.graph
    keep = []
    for node in graph.node:
        value = None
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                value = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                value = np.array(attr.f, dtype=np.float32)
            elif attr.name == "value_floats":
                value = np.array(list(attr.floats), dtype=np.float32)
        if value is None:
            keep.append(node)
        else:
            graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    del graph.node[:]
    graph.node.extend(keep)


def _name_nodes(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def lower_precision(
    model: onnx.ModelProto, precision: str, islands: dict[str, str] | None = None
) -> onnx.ModelProto:
    """A copy of an fp32 graph computing in fp16/bf16 outside the fp32 islands (export/
    trt_policy.py fp32_islands, or `islands` {node name: reason}). Checked with onnx's full
    checker; EngineError if the graph is not fp32 or lacks the islands every generator has."""
    if precision not in LOW_TYPES:
        raise EngineError(f"lower_precision makes fp16 or bf16 graphs, not {precision!r}")
    low = LOW_TYPES[precision]
    low_str = "tensor(float16)" if low == TensorProto.FLOAT16 else "tensor(bfloat16)"
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if low == TensorProto.BFLOAT16 and graph_opset(out) < BF16_MIN_OPSET:
        from onnx import version_converter

        converted = version_converter.convert_version(out, BF16_MIN_OPSET)
        out = onnx.ModelProto()
        out.CopyFrom(converted)
    _lift_float_constants(out)
    _name_nodes(out)
    g = GraphIndex(out)
    if any(g.elem_type(t) in (TensorProto.FLOAT16, TensorProto.BFLOAT16) for t in g.types):
        raise EngineError("lower_precision needs an fp32 graph; this one has 16-bit tensors")
    if islands is None:
        islands = fp32_islands(g)
        missing = missing_islands(islands)
        if missing:
            raise EngineError(f"graph lacks the fp32 islands of a generator: {missing[0]}")
    opset = graph_opset(out)
    graph = out.graph

    dtype: dict[str, int] = {name: g.elem_type(name) or 0 for name in g.inputs}
    for name in g.initializers:
        dtype[name] = g.elem_type(name) or 0
    converted: dict[str, str] = {}  # fp32 initializer -> its low-precision copy
    casts: dict[tuple[str, int], str] = {}  # (value, type) -> name of the cast value
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[TensorProto] = []

    def as_type(value: str, want: int) -> str:
        if dtype.get(value) == want:
            return value
        if value in g.initializers and g.initializers[value].data_type == TensorProto.FLOAT:
            if want == TensorProto.FLOAT:
                return value
            if value not in converted:
                arr = numpy_helper.to_array(g.initializers[value])
                converted[value] = f"{value}_{SUFFIX[want]}"
                new_inits.append(_convert_array(arr, want, converted[value]))
                dtype[converted[value]] = want
            return converted[value]
        key = (value, want)
        if key not in casts:
            casts[key] = f"{value}_to_{SUFFIX[want]}"
            new_nodes.append(helper.make_node("Cast", [value], [casts[key]], to=want,
                                              name=casts[key]))
            dtype[casts[key]] = want
        return casts[key]

    for i, node in enumerate(g.nodes):
        node = graph.node[i]
        floats = [t for t in (*node.input, *node.output) if t and g.is_float(t)]
        if not floats:
            new_nodes.append(node)
            for name in node.output:
                dtype[name] = g.elem_type(name) or 0
            continue
        target = TensorProto.FLOAT if g.keys[i] in islands else low
        target_str = "tensor(float)" if target == TensorProto.FLOAT else low_str
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        if node.op_type == "Cast":  # reads any type; a cast to float casts to the target
            to = next(a for a in node.attribute if a.name == "to")
            if to.i == TensorProto.FLOAT and node.output[0] not in g.outputs:
                to.i = target
        else:
            for k, name in enumerate(node.input):
                if name and g.is_float(name):
                    allowed = param_allows(schema, k, True, target_str)
                    node.input[k] = as_type(name, target if allowed else TensorProto.FLOAT)
        new_nodes.append(node)
        for k, name in enumerate(node.output):
            if node.op_type == "Cast":
                dtype[name] = next(a for a in node.attribute if a.name == "to").i
            elif name:
                float_out = g.is_float(name) and param_allows(schema, k, False, target_str)
                dtype[name] = target if float_out else (g.elem_type(name) or 0)

    for output in graph.output:  # outputs keep their declared types
        want = output.type.tensor_type.elem_type
        if dtype.get(output.name) != want and want in SUFFIX:
            inner = f"{output.name}_{SUFFIX[dtype[output.name]]}"
            for node in new_nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if x == output.name else x for x in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [output.name], to=want,
                                              name=f"{output.name}_cast"))

    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, {*g.inputs, *g.initializers, *converted.values()}))
    graph.initializer.extend(new_inits)
    used = {x for n in graph.node for x in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]
    out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    onnx.checker.check_model(out, full_check=True)
    return out


def _toposort(nodes: list[onnx.NodeProto], ready: set[str]) -> list[onnx.NodeProto]:
    """Nodes in an order where every input is produced before it is read (inserted Casts sit
    right before their first consumer)."""
    available = set(ready) | {""}
    pending = list(nodes)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(x in available for x in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise EngineError(f"graph has a cycle or a missing input at {rest[0].name!r}")
        pending = rest
    return ordered
