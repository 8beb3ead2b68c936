"""TensorRT build decisions as pure functions (tested without tensorrt installed).

- Batch buckets: one optimisation profile per bucket, static (min = opt = max = bucket), so
  each bucket gets its own tuned tactics; a request runs on the smallest bucket that holds it,
  padded up to the bucket size.
- fp32 islands: the parts of an fp16/bf16 graph that stay fp32 because their values overflow
  or lose too much in 16 bits. They are found from the graph's structure, not from node names,
  so the policy holds for graphs from either torch.onnx exporter (the TorchScript tracer scopes
  names by module, `/g/enc_mru.0/conv_gate/Conv`; dynamo names nodes `node_conv2d_3`):
    * gate logits: each Conv whose output reaches a Sigmoid through Slice/Split/Cast only (the
      fused conv_m/conv_n convolution of every MRU), and every Sigmoid;
    * norm statistics: the lookups by class label (Gather) and the elementwise arithmetic on
      them alone: the per-class gamma/beta and the scale/shift that fold in the running
      statistics (the label stem's embedding lookup is one too);
    * the output: the Conv that feeds the final Tanh, the Tanh, and everything after it (model
      space -> uint8: rounding needs fp32);
    * pre-processing: the elementwise chain from the sketch (and noise) inputs into the
      generator (uint8 -> model space);
    * data movement (Slice, Concat, Reshape, Cast, ...) whose every consumer is fp32, so a value
      passed between two fp32 islands is never rounded to 16 bits on the way.
  export/precision.py writes these islands into the graph as Cast nodes; export/graph_rules.py
  checks that a graph has them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from s2i_fast.errors import EngineError

DEFAULT_BUCKETS: tuple[int, ...] = (1, 8, 64)
PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "fp32")

GATE_LOGITS = "gate logits"
GATE_SIGMOID = "gate sigmoid"
NORM_STATISTICS = "norm statistics"
OUTPUT_CONV = "output conv"
OUTPUT_TANH = "output tanh"
PRE_PROCESSING = "pre-processing"
POST_PROCESSING = "post-processing"
FEEDS_FP32 = "feeds an fp32 island"
# what every exported generator must have (one entry per reason: the least count)
REQUIRED_ISLANDS: dict[str, int] = {
    GATE_LOGITS: 1, GATE_SIGMOID: 2, NORM_STATISTICS: 1, OUTPUT_CONV: 1, OUTPUT_TANH: 1,
}


def parse_buckets(spec: str | Iterable[int]) -> list[int]:
    """'1,8,64' or [64, 1, 8] -> sorted unique positive batch sizes."""
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError as e:
            raise EngineError(f"batch buckets must be integers like '1,8,64', got {spec!r}") from e
    else:
        values = [int(v) for v in spec]
    if not values or any(v < 1 for v in values):
        raise EngineError(f"batch buckets must be positive integers, got {spec!r}")
    return sorted(set(values))


def profile_shapes(
    buckets: Sequence[int], resolution: int, noise_dim: int, raw: bool = False
) -> list[dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]]:
    """One profile per bucket: {input name: (min, opt, max) shape}, all three the bucket."""
    profiles = []
    for b in parse_buckets(buckets):
        sketch = (b, 1, resolution, resolution) if raw else (b, resolution, resolution)
        shapes = {"sketch": sketch, "label": (b,), "noise": (b, noise_dim)}
        profiles.append({name: (s, s, s) for name, s in shapes.items()})
    return profiles


def select_profile(buckets: Sequence[int], batch: int) -> tuple[int, int]:
    """(profile index, padded batch) for a request: the smallest bucket >= batch."""
    buckets = parse_buckets(buckets)
    if batch < 1:
        raise EngineError(f"batch must be >= 1, got {batch}")
    for i, b in enumerate(buckets):
        if batch <= b:
            return i, b
    raise EngineError(
        f"batch {batch} is larger than this engine allows (largest bucket {buckets[-1]}); "
        f"rebuild with --batch-buckets including {batch} or split the request"
    )


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def fp32_islands(graph) -> dict[str, str]:  # noqa: ANN001 (a ModelProto or a GraphIndex)
    """{node key: reason} for every node of the graph that must compute in fp32.

    Cast nodes are classified like any movement op; the graph rules skip them, since a Cast's
    own output type is the conversion it performs.
    """
    from s2i_fast.export.graph_index import MOVEMENT_OPS, POINTWISE_OPS, GraphIndex

    g = graph if isinstance(graph, GraphIndex) else GraphIndex(graph)
    sources = g.sources()
    reasons: dict[int, str] = {}
    for i, node in enumerate(g.nodes):
        op = node.op_type
        if op == "Constant" or not g.has_float(i):
            continue
        if op == "Sigmoid":
            reasons[i] = GATE_SIGMOID
        elif op == "Tanh":
            reasons[i] = OUTPUT_TANH
        elif op == "Conv" and g.reaches(i, {"Sigmoid"}, ("Slice", "Split", "Cast", "Identity")):
            reasons[i] = GATE_LOGITS
        elif op == "Conv" and g.reaches(i, {"Tanh"}, ("Cast", "Identity")):
            reasons[i] = OUTPUT_CONV
        elif (sources[i] == {"label"} and op in POINTWISE_OPS | {"Gather"}
              and all(reasons.get(j) == NORM_STATISTICS for j in g.float_producers(i))):
            reasons[i] = NORM_STATISTICS  # a lookup by label, or arithmetic on lookups
    for i, node in enumerate(g.nodes):
        if node.op_type == "Tanh":
            for j in g.descendants(i):
                reasons.setdefault(j, POST_PROCESSING)
    pre: set[int] = set()
    for i, node in enumerate(g.nodes):
        src = sources[i]
        if (node.op_type in POINTWISE_OPS and len(src) == 1 and src <= {"sketch", "noise"}
                and g.has_float(i) and all(j in pre for j in g.float_producers(i))):
            pre.add(i)
            reasons.setdefault(i, PRE_PROCESSING)
    changed = True
    while changed:  # movement ops between fp32 islands stay fp32
        changed = False
        for i in reversed(range(len(g.nodes))):
            if i in reasons or g.nodes[i].op_type not in MOVEMENT_OPS or not g.has_float(i):
                continue
            users = g.successors(i)
            if users and all(j in reasons for j in users):
                reasons[i] = FEEDS_FP32
                changed = True
    return {g.keys[i]: reason for i, reason in sorted(reasons.items())}


def island_counts(islands: dict[str, str]) -> dict[str, int]:
    """{reason: number of nodes}, for reports and for REQUIRED_ISLANDS."""
    counts: dict[str, int] = {}
    for reason in islands.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def missing_islands(islands: dict[str, str]) -> list[str]:
    """The REQUIRED_ISLANDS the graph lacks (an empty list for a generator graph)."""
    counts = island_counts(islands)
    return [f"{reason} (found {counts.get(reason, 0)}, need >= {least})"
            for reason, least in REQUIRED_ISLANDS.items() if counts.get(reason, 0) < least]
