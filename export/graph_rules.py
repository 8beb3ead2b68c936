"""The rules TensorRT imposes on an ONNX graph, checked on the graph alone (no TensorRT needed):
`s2i-fast export --trt` runs them before building and refuses a graph that breaks one.

1. uint8 only at the graph's edges: every uint8 tensor is a graph input read only by Cast
   nodes, or a graph output written by a Cast. TensorRT has no uint8 kernels; a network-level
   uint8 output must come from an ICastLayer/IIdentityLayer ("Network-level output tensor ...
   has datatype UInt8 but is not produced by an IIdentityLayer or ICastLayer", NVIDIA/TensorRT
   #4278), and a uint8 input must feed a Cast directly, not even a Transpose (#3985).
2. Every op is in onnx-tensorrt's operator support matrix (ONNX_TRT_OPS below), with tensor
   types the matrix lists for it, and the opset is in the parser's range.
3. Precision: an fp16/bf16 graph computes in one 16-bit type, and every node the policy of
   trt_policy.py keeps in fp32 (gate logits and sigmoids, norm statistics, output conv and
   tanh, pre/post-processing) has fp32 tensors; a strongly typed network builds each layer in
   the types the graph gives it. Every generator graph has those islands.
4. With a fixed batch (each optimisation profile is static), shape inference gives the output
   a fully known shape.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from s2i_fast.errors import EngineError
from s2i_fast.export.graph_index import (
    FLOAT_TYPES,
    GraphIndex,
    graph_opset,
    param_allows,
    type_name,
)
from s2i_fast.export.trt_policy import fp32_islands, missing_islands

# onnx/onnx-tensorrt docs/operators.md, revision for TensorRT 10.15 ("supports operators in the
# inclusive range of opset 9 to opset 24"): every operator marked Y, with its Supported Types.
# No revision for TensorRT 11.x was at hand; the same matrix is used for it.
ONNX_TRT_OPSETS = (9, 24)
_F = "FP32 FP16 BF16"
_FI = _F + " INT32 INT64"
_FIB = _FI + " BOOL"
_MATRIX = f"""
Abs {_FI}|Acos {_F}|Acosh {_F}|Add {_FI}|And BOOL|ArgMax {_FI}|ArgMin {_FI}|Asin {_F}|Asinh {_F}
Atan {_F}|Atanh {_F}|Attention {_F} INT8 FP8|AveragePool {_F}|BatchNormalization {_F}
BlackmanWindow FP32 FP16|Cast {_FIB} UINT8|CastLike {_FIB} UINT8|Ceil {_F}|Celu {_F}|Clip {_F}
Concat {_FIB}|Constant {_FIB} FP8 FP4 INT4|ConstantOfShape {_FIB} FP8 FP4 INT4|Conv {_F}
ConvTranspose {_F}|Cos {_F}|Cosh {_F}|CumSum {_F}|DeformConv FP32 FP16|DepthToSpace {_FI}
DequantizeLinear INT8 FP8 FP4 INT4|Div {_FI}|Dropout {_F}|Einsum {_F}|Elu {_F}|Equal {_FI}
Erf {_F}|Exp {_F}|Expand {_FIB}|EyeLike {_FIB}|Flatten {_FIB}|Floor {_F}|Gather {_FIB}
GatherElements {_FIB}|GatherND {_FIB}|Gelu {_FI} INT8|Gemm {_F}|GlobalAveragePool {_F}
GlobalLpPool {_F}|GlobalMaxPool {_F}|Greater {_FI}|GreaterOrEqual {_FI}|GridSample FP32 FP16
GroupNormalization {_F}|GRU {_F}|HammingWindow FP32 FP16|HannWindow FP32 FP16|HardSigmoid {_F}
HardSwish {_F}|Hardmax {_F}|Identity {_FIB}|If {_FIB}|ImageScaler {_F}
InstanceNormalization {_F}|IsInf {_F}|IsNaN {_FI}|LayerNormalization {_F}|LeakyRelu {_F}
Less {_FI}|LessOrEqual {_FI}|Log {_F}|LogSoftmax {_F}|Loop {_FIB}|LRN {_F}|LSTM {_F}
LpNormalization {_F}|LpPool {_F}|MatMul {_F}|Max {_FI}|MaxPool {_F}|Mean {_FI} FP8
MeanVarianceNormalization {_F}|Min {_FI}|Mish FP32 FP16|Mod {_FI}|Mul {_FI}|Neg {_FI}
NonMaxSuppression FP32 FP16|NonZero FP32 FP16|Not BOOL|OneHot {_FIB}|Or BOOL|Pad {_FI}
ParametricSoftplus {_F}|Pow {_FI}|PRelu {_F}|QuantizeLinear {_F}|RandomNormal {_F}
RandomNormalLike {_F}|RandomUniform {_F}|RandomUniformLike {_F}|Range {_FI}|Reciprocal {_F}
ReduceL1 {_FI}|ReduceL2 {_FI}|ReduceLogSum {_FI}|ReduceLogSumExp {_FI}|ReduceMax {_FI}
ReduceMean {_FI}|ReduceMin {_FI}|ReduceProd {_FI}|ReduceSum {_FI}|ReduceSumSquare {_FI}
Relu {_FI}|Reshape {_FIB}|Resize {_F}|ReverseSequence {_FIB}|RMSNormalization {_F}|RNN {_F}
RoiAlign FP32 FP16|RotaryEmbedding {_F}|Round {_F}|STFT FP32|ScaledTanh {_F}|Scan {_F}
Scatter {_FI}|ScatterElements {_FI}|ScatterND {_FI}|Selu {_F}|Shape {_FIB}|Shrink {_FI}
Sigmoid {_F}|Sign {_FI}|Sin {_F}|Sinh {_F}|Size {_FIB}|Slice {_FIB}|Softmax {_F}|Softplus {_F}
Softsign {_F}|SpaceToDepth {_FI}|Split {_FIB}|Sqrt {_F}|Squeeze {_FIB}|Sub {_FI}|Sum {_FI}
Tan {_F}|Tanh {_F}|TensorScatter {_F} INT32|ThresholdedRelu {_F}|Tile {_FIB}|TopK {_FI}
Transpose {_FIB}|Trilu {_FIB}|Unsqueeze {_FIB}|Upsample {_F}|Where {_FIB}|Xor BOOL
"""
ONNX_TRT_OPS: dict[str, frozenset[str]] = {
    entry.split()[0]: frozenset(entry.split()[1:])
    for line in _MATRIX.strip().splitlines() for entry in line.split("|") if entry.strip()
}
# ONNX element type -> the matrix's type name
MATRIX_TYPE: dict[int, str] = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL", TensorProto.INT8: "INT8", TensorProto.INT4: "INT4",
    TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.FLOAT4E2M1: "FP4",
}
PRECISION_OF_TYPE = {TensorProto.FLOAT16: "fp16", TensorProto.BFLOAT16: "bf16"}
TYPE_STR = {TensorProto.FLOAT: "tensor(float)", TensorProto.FLOAT16: "tensor(float16)",
            TensorProto.BFLOAT16: "tensor(bfloat16)"}


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose graph inputs and outputs have batch dimension `batch` (a static profile)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in (*out.graph.input, *out.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = batch
    del out.graph.value_info[:]
    return out


def check_graph(model: onnx.ModelProto, batch: int | None = None) -> list[str]:
    """Every TensorRT rule the graph breaks, one line each (an empty list: it may be built)."""
    if batch is not None:
        model = with_batch(model, batch)
    try:
        g = GraphIndex(model)
    except Exception as e:  # onnx's InferenceError and friends
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [f"shape inference fails{'' if batch is None else f' at batch {batch}'}: {first}"]
    problems: list[str] = []
    opset = graph_opset(model)
    lo, hi = ONNX_TRT_OPSETS
    if not lo <= opset <= hi:
        problems.append(f"opset {opset} is outside the ONNX parser's range {lo}..{hi}")
    problems += _uint8_rules(g)
    problems += _op_rules(g, opset)
    problems += _precision_rules(g, opset)
    if batch is not None:
        for out in model.graph.output:
            dims = [d.dim_value for d in _inferred(g, out.name)]
            if not dims or any(d <= 0 for d in dims):
                problems.append(f"output {out.name!r} has no static shape at batch {batch}")
    return problems


def require_trt_graph(model: onnx.ModelProto, where: str, batches=(None,)) -> None:
    """EngineError (one line) naming the first broken rule, at any of the given batches."""
    for batch in batches:
        problems = check_graph(model, batch)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise EngineError(f"{where}: TensorRT cannot build this graph: {problems[0]}{more}")


def _inferred(g: GraphIndex, name: str):
    for vi in (*g.model.graph.output, *g.model.graph.value_info):
        if vi.name == name:
            return list(vi.type.tensor_type.shape.dim)
    return []


def _uint8_rules(g: GraphIndex) -> list[str]:
    problems = []
    u8 = TensorProto.UINT8
    for name in g.outputs:
        j = g.producer.get(name)
        if g.elem_type(name) == u8 and (j is None or g.nodes[j].op_type != "Cast"):
            op = "nothing" if j is None else f"{g.nodes[j].op_type} {g.nodes[j].name!r}"
            problems.append(f"uint8 output {name!r} is produced by {op}; TensorRT needs a Cast "
                            "to produce it")
    for name in g.inputs:
        users = [g.nodes[j] for j in g.consumers.get(name, [])]
        bad = [f"{n.op_type} {n.name!r}" for n in users if n.op_type != "Cast"]
        if g.elem_type(name) == u8 and bad:
            problems.append(f"uint8 input {name!r} feeds {bad[0]}; TensorRT needs it to feed "
                            "Cast nodes only")
    edges = set(g.inputs) | set(g.outputs)
    for name, elem in g.types.items():
        if elem == u8 and name not in edges:
            j = g.producer.get(name)
            op = g.nodes[j].op_type if j is not None else "an initializer"
            problems.append(f"uint8 tensor {name!r} (from {op}) inside the graph; TensorRT "
                            "has uint8 only at network inputs and outputs")
    return problems


def _op_rules(g: GraphIndex, opset: int) -> list[str]:
    problems = []
    for i, node in enumerate(g.nodes):
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{node.op_type} {g.keys[i]!r} is from domain {node.domain!r}, "
                            "which TensorRT's ONNX parser does not import")
            continue
        types = ONNX_TRT_OPS.get(node.op_type)
        if types is None:
            problems.append(f"{node.op_type} {g.keys[i]!r} is not in onnx-tensorrt's "
                            "operator support matrix")
            continue
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        for is_input, names in ((True, node.input), (False, node.output)):
            for k, name in enumerate(names):
                elem = g.elem_type(name) if name else None
                if elem is None or not _carries_data(schema, k, is_input):
                    continue
                if MATRIX_TYPE.get(elem) not in types:
                    problems.append(f"{node.op_type} {g.keys[i]!r} has a {type_name(elem)} "
                                    f"tensor {name!r}; the matrix lists {sorted(types)}")
    return problems


def _carries_data(schema, index: int, is_input: bool) -> bool:
    """False for index/shape/axes parameters (no float type allowed), which the matrix's type
    column does not describe."""
    return any(param_allows(schema, index, is_input, t) for t in TYPE_STR.values())


def _precision_rules(g: GraphIndex, opset: int) -> list[str]:
    problems = []
    low_types = {g.elem_type(t) for t in g.types} & {TensorProto.FLOAT16, TensorProto.BFLOAT16}
    if len(low_types) > 1:
        return ["graph mixes fp16 and bf16 tensors; a strongly typed engine is one or the other"]
    if TensorProto.DOUBLE in set(g.types.values()):
        problems.append("graph has float64 tensors; TensorRT would cast them down silently")
    islands = fp32_islands(g)
    problems += [f"fp32 island missing: {m}" for m in missing_islands(islands)]
    low = next(iter(low_types), None)
    if low is None:
        return problems  # an fp32 graph: every float tensor is fp32
    for i, node in enumerate(g.nodes):
        if node.op_type in ("Cast", "Constant"):
            continue  # a Cast's output type is the conversion itself
        want = TensorProto.FLOAT if g.keys[i] in islands else low
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        for is_input, names in ((True, node.input), (False, node.output)):
            for k, name in enumerate(names):
                elem = g.elem_type(name) if name else None
                if elem not in FLOAT_TYPES or elem == want:
                    continue
                if elem == TensorProto.FLOAT and not param_allows(schema, k, is_input,
                                                                  TYPE_STR[want]):
                    continue  # a parameter ONNX fixes to float32 (Resize scales)
                where = islands.get(g.keys[i], f"{PRECISION_OF_TYPE[low]} compute")
                problems.append(f"{node.op_type} {g.keys[i]!r} ({where}) has a "
                                f"{type_name(elem)} tensor {name!r}, expected {type_name(want)}")
    return problems
