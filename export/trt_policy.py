"""TensorRT build decisions as pure functions (tested without tensorrt installed).

- Batch buckets: one optimisation profile per bucket, static (min = opt = max = bucket), so
  each bucket gets its own tuned tactics; a request runs on the smallest bucket that holds it,
  padded up to the bucket size.
- Precision pins: layers whose values overflow or lose too much in fp16/bf16 stay fp32 with
  OBEY_PRECISION_CONSTRAINTS. Layer names come from the ONNX node names, which the TorchScript
  exporter scopes by module (`/g/enc_mru.0/conv_gate/Conv`, `/g/dec_up.1/block/norm/Mul`):
    * gate logits: the fused conv_m/conv_n convolution (`conv_gate`) and every Sigmoid;
    * norm statistics: everything inside a norm module (`norm`, `norm_z`, `norm_short`):
      the per-class gamma/beta lookups and the scale/shift that fold running statistics;
    * the output: `out_conv`, the final Tanh, and the pre/post-processing outside the
      generator (uint8 -> model space, model space -> uint8: rounding needs fp32).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from s2i_fast.errors import EngineError

DEFAULT_BUCKETS: tuple[int, ...] = (1, 8, 64)
PRECISIONS: tuple[str, ...] = ("fp16", "bf16", "fp32")

# (reason, regex on the layer name); matched with re.search
FP32_NAME_RULES: tuple[tuple[str, str], ...] = (
    ("gate logits", r"conv_gate"),
    ("gate sigmoid", r"(^|/)Sigmoid(_\d+)?($|[/_])"),
    ("norm statistics", r"/norm(_z|_short)?/"),
    ("output conv", r"/out_conv/"),
    ("output tanh", r"(^|/)Tanh(_\d+)?($|[/_])"),
    ("pre/post-processing", r"^/(?!g/)"),
)
# layer types pinned whatever their name (TensorRT LayerType names and ONNX op types)
FP32_TYPE_RULES: tuple[tuple[str, str], ...] = (
    ("sigmoid/tanh activation", r"^(Sigmoid|Tanh)$"),
    ("norm statistics", r"^(REDUCE|ReduceMean|NORMALIZATION|BatchNormalization)$"),
)


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


def fp32_reason(name: str, layer_type: str = "") -> str | None:
    """Why this layer stays fp32 (a short reason), or None if it may run in fp16/bf16."""
    for reason, pattern in FP32_TYPE_RULES:
        if layer_type and re.search(pattern, layer_type):
            return reason
    for reason, pattern in FP32_NAME_RULES:
        if re.search(pattern, name):
            return reason
    return None


def precision_plan(layers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """{layer name: reason} for the layers to pin to fp32, from (name, type) pairs."""
    plan = {}
    for name, layer_type in layers:
        reason = fp32_reason(name, layer_type)
        if reason is not None:
            plan[name] = reason
    return plan


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise EngineError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision
