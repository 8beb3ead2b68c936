"""TensorRT: build an engine (.plan) from the exported ONNX graph (s2i_fast/engine/trt.py runs
one).

Built through TensorRT's Python API: Builder -> explicit-batch NetworkDefinition -> OnnxParser
-> BuilderConfig (FP16 or BF16 flag, OBEY_PRECISION_CONSTRAINTS with the fp32 pins of
export/trt_policy.py, one static optimisation profile per batch bucket, a timing cache file
loaded before and saved after the build). The plan is TensorRT's own format; the class names,
preprocessing stats, buckets and precision go into a JSON sidecar `<plan>.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from s2i_fast.artefact import OnnxMeta, plan_sidecar, sidecar_path
from s2i_fast.errors import BackendUnavailable, EngineError
from s2i_fast.export.trt_policy import (
    check_precision,
    parse_buckets,
    precision_plan,
    profile_shapes,
)

INSTALL_HINT = (
    "pip install tensorrt (NVIDIA's wheels; if pip cannot find them add "
    "--extra-index-url https://pypi.nvidia.com), on a machine with an NVIDIA GPU and driver"
)


def require_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailable(f"backend 'tensorrt' needs its package: {INSTALL_HINT}") from e
    return tensorrt


def _layer_type_name(trt, layer) -> str:
    name = layer.type.name  # e.g. "CONVOLUTION", "ACTIVATION"
    if layer.type == trt.LayerType.ACTIVATION:
        layer.__class__ = trt.IActivationLayer
        name = layer.type.name.title()  # "Sigmoid", "Tanh", "Leaky_Relu"
    return name


def pin_fp32_layers(trt, network) -> dict[str, str]:
    """Set precision and float output types to fp32 on the layers the policy names."""
    floats = tuple(getattr(trt, n) for n in ("float32", "float16", "bfloat16") if hasattr(trt, n))
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    typed = [(layer, _layer_type_name(trt, layer)) for layer in layers]
    plan = precision_plan((layer.name, t) for layer, t in typed)
    for layer, _ in typed:
        if layer.name not in plan:
            continue
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs:  # shape/int/uint8 layers keep their types
            plan.pop(layer.name)
            continue
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
    return plan


def build_engine(
    onnx_path: str | os.PathLike,
    plan_path: str | os.PathLike,
    meta: OnnxMeta,
    *,
    precision: str = "fp16",
    buckets=(1, 8, 64),
    timing_cache: str | os.PathLike | None = None,
    workspace_gib: float = 4.0,
    verbose: bool = False,
) -> dict:
    """Build and write plan_path (+ sidecar); returns the sidecar dict. Needs tensorrt + GPU."""
    trt = require_tensorrt()
    check_precision(precision)
    buckets = parse_buckets(buckets)
    if meta.batch is not None:
        raise EngineError("TensorRT buckets need a dynamic-batch ONNX graph (--dynamic-batch)")
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{onnx_path}: TensorRT's ONNX parser failed: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    pins: dict[str, str] = {}
    if precision != "fp32":
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        pins = pin_fp32_layers(trt, network)
    res, z = meta.resolution, meta.model_config.noise_dim
    for shapes in profile_shapes(buckets, res, z, meta.raw):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_bytes = b""
    if timing_cache and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path} (see log above)")
    from s2i_fast.fileio import write_bytes

    write_bytes(plan_path, bytes(serialized))
    if timing_cache:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    side = plan_sidecar(meta, precision, buckets, pins, trt.__version__)
    write_bytes(sidecar_path(plan_path), json.dumps(side, indent=1).encode())
    return side
