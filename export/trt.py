"""TensorRT: build an engine (.plan) from the exported ONNX graph, and run one.

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

import numpy as np

from s2i_fast.errors import BackendUnavailable, EngineError
from s2i_fast.export.onnx_export import OUTPUT, OnnxMeta
from s2i_fast.export.trt_policy import (
    check_precision,
    parse_buckets,
    precision_plan,
    profile_shapes,
    select_profile,
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


def sidecar_path(plan: str | os.PathLike) -> Path:
    return Path(str(plan) + ".json")


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
    from s2i_fast.checkpoint import atomic_write_bytes

    atomic_write_bytes(plan_path, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    side = {
        "props": meta.to_props(),
        "precision": precision,
        "buckets": buckets,
        "fp32_layers": pins,
        "tensorrt": trt.__version__,
    }
    atomic_write_bytes(sidecar_path(plan_path), json.dumps(side, indent=1).encode())
    return side


def read_sidecar(plan_path: str | os.PathLike) -> tuple[OnnxMeta, list[int], str]:
    side_path = sidecar_path(plan_path)
    if not Path(plan_path).is_file():
        raise EngineError(f"{plan_path}: no such TensorRT plan")
    try:
        side = json.loads(side_path.read_text())
        meta = OnnxMeta.from_props(side["props"], str(side_path))
        return meta, parse_buckets(side["buckets"]), str(side["precision"])
    except FileNotFoundError as e:
        raise EngineError(f"{plan_path}: its metadata file {side_path.name} is missing") from e
    except (ValueError, KeyError, TypeError) as e:
        raise EngineError(f"{side_path}: unreadable plan metadata ({type(e).__name__})") from e


class TrtRunner:
    """Runs a .plan on one CUDA device with torch-allocated buffers. Not locked: Engine locks."""

    def __init__(self, plan_path: str | os.PathLike, device: str | None = None) -> None:
        import torch

        self.meta, self.buckets, self.precision = read_sidecar(plan_path)
        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("backend 'tensorrt' needs a CUDA GPU; none is visible")
        self.device = torch.device(device or "cuda")
        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
            if self.engine is None:
                raise EngineError(f"{plan_path}: corrupt TensorRT plan or built by another version")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        self.profile = -1

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        torch = self.torch
        b = sketch.shape[0]
        index, padded = select_profile(self.buckets, b)
        inputs = {"sketch": sketch, "label": label.astype(np.int64), "noise": noise}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if index != self.profile:
                self.context.set_optimization_profile_async(index, self.stream.cuda_stream)
                self.profile = index
            keep = []
            for name, arr in inputs.items():
                t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device, non_blocking=True)
                if padded > b:  # repeat the last sample up to the bucket size
                    t = torch.cat([t, t[-1:].expand(padded - b, *t.shape[1:])]).contiguous()
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                keep.append(t)
            shape = tuple(self.context.get_tensor_shape(OUTPUT))
            dtype = torch.float32 if self.meta.raw else torch.uint8
            out = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(OUTPUT, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execution failed")
            self.stream.synchronize()
        return out[:b].cpu().numpy()
