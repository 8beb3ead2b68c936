"""TensorRT: build an engine (.plan) from an exported ONNX graph; s2i_fast/engine/trt.py runs it.

One builder for TensorRT 10.x and 11.x. Low precision is in the graph itself (export/
precision.py: an fp16 or bf16 graph whose fp32 islands are Cast nodes), built as a strongly
typed network: the STRONGLY_TYPED creation flag on 10.x, where weak typing is still the default;
on 11.x every network is strongly typed and BuilderFlag.FP16/BF16/OBEY_PRECISION_CONSTRAINTS
and ILayer.precision/set_output_type are gone. Every version-dependent call is chosen by
feature detection (hasattr on the enum or class), never by comparing version strings; the API
table with sources is in export/README.md.

Steps: graph rules (export/graph_rules.py) -> Builder -> network -> OnnxParser -> BuilderConfig
(workspace limit, TF32 off for fp32 builds, one static optimisation profile per batch bucket,
a timing cache loaded and saved) -> build_serialized_network -> plan and JSON sidecar written
with s2i_fast.fileio. Every False/None result from TensorRT is one EngineError line that
carries TensorRT's own last error message.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from s2i_fast.artefact import OnnxMeta, plan_sidecar, sidecar_path
from s2i_fast.errors import BackendUnavailable, EngineError
from s2i_fast.export.trt_policy import check_precision, parse_buckets, profile_shapes

INSTALL_HINT = (
    "pip install 's2i-fast[tensorrt]' or pip install tensorrt, TensorRT 10.x or 11.x (if pip "
    "cannot find NVIDIA's wheels add --extra-index-url https://pypi.nvidia.com), on a machine "
    "with an NVIDIA GPU and driver"
)
# (object path, attribute) that the builder and the runtime call on every supported version
REQUIRED_API: tuple[tuple[str, str], ...] = (
    ("Builder", "create_network"), ("Builder", "create_builder_config"),
    ("Builder", "create_optimization_profile"), ("Builder", "build_serialized_network"),
    ("IBuilderConfig", "set_memory_pool_limit"), ("IBuilderConfig", "add_optimization_profile"),
    ("IBuilderConfig", "create_timing_cache"), ("IBuilderConfig", "set_timing_cache"),
    ("IBuilderConfig", "get_timing_cache"), ("OnnxParser", "parse"),
    ("OnnxParser", "num_errors"), ("OnnxParser", "get_error"),
    ("Runtime", "deserialize_cuda_engine"),
    ("ICudaEngine", "num_io_tensors"), ("ICudaEngine", "get_tensor_name"),
    ("ICudaEngine", "get_tensor_mode"), ("ICudaEngine", "get_tensor_dtype"),
    ("ICudaEngine", "get_tensor_shape"), ("ICudaEngine", "num_optimization_profiles"),
    ("IExecutionContext", "set_optimization_profile_async"),
    ("IExecutionContext", "set_input_shape"), ("IExecutionContext", "set_tensor_address"),
    ("IExecutionContext", "get_tensor_shape"), ("IExecutionContext", "execute_async_v3"),
    ("NetworkDefinitionCreationFlag", "STRONGLY_TYPED"), ("MemoryPoolType", "WORKSPACE"),
    ("TensorIOMode", "INPUT"), ("ILogger", "Severity"),
)
Notice = Callable[[str], None]


def _stderr_notice(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def require_tensorrt():
    """The tensorrt module, if it is installed and has every API this project calls."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailable(f"backend 'tensorrt' needs its package: {INSTALL_HINT}") from e
    missing = [f"{owner}.{attr}" for owner, attr in REQUIRED_API
               if not hasattr(getattr(tensorrt, owner, None), attr)]
    if missing:
        version = getattr(tensorrt, "__version__", "?")
        raise BackendUnavailable(f"TensorRT {version} lacks {', '.join(missing[:3])}, which "
                                 f"s2i-fast calls: {INSTALL_HINT}")
    return tensorrt


def has_weak_typing(trt) -> bool:
    """True on TensorRT 10.x (precision builder flags exist, networks are weakly typed unless
    created STRONGLY_TYPED); False on 11.x, where every network is strongly typed."""
    return hasattr(trt.BuilderFlag, "FP16") or hasattr(trt.BuilderFlag, "BF16")


def network_flags(trt) -> int:
    """create_network flags for a strongly typed network on this TensorRT."""
    if has_weak_typing(trt):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # 11.x: always strongly typed (the flag is kept only as a deprecated no-op)


def make_logger(trt, verbose: bool = False):
    """A TensorRT logger that prints warnings (all messages if verbose) and keeps the errors, so
    a failed call can be reported in one line with TensorRT's own reason."""
    severity = trt.ILogger.Severity
    shown = int(severity.VERBOSE if verbose else severity.WARNING)

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, sev, msg) -> None:  # noqa: ANN001 (TensorRT's signature)
            if int(sev) <= int(severity.ERROR):
                self.errors.append(str(msg).strip())
            if int(sev) <= shown:
                print(f"[TensorRT] {msg}", file=sys.stderr)

        def last_error(self) -> str:
            return self.errors[-1].splitlines()[0] if self.errors else "no message from TensorRT"

    return CapturingLogger()


def _parser_errors(parser) -> str:
    errs = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        desc = err.desc() if hasattr(err, "desc") else str(err)
        node = err.node_name() if hasattr(err, "node_name") else ""
        errs.append(f"{desc} (node {node})" if node else desc)
    return "; ".join(errs) or "no message from the parser"


def load_timing_cache(trt, config, path: Path | None, notice: Notice):
    """Attach the timing cache at path (or a fresh one) to config; a corrupt or mismatched
    file (another GPU, another TensorRT) is replaced by a fresh cache with one notice."""
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    cache = None
    if data:
        try:
            cache = config.create_timing_cache(data)
        except (TypeError, ValueError, RuntimeError):
            cache = None
        if cache is None:
            notice(f"timing cache {path} is unreadable (corrupt, or from another TensorRT); "
                   "starting a fresh one")
        elif not config.set_timing_cache(cache, False):
            notice(f"timing cache {path} was made on another GPU or TensorRT version; "
                   "starting a fresh one")
            cache = None
        else:
            return cache
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, False):
        raise EngineError("TensorRT could not create an empty timing cache")
    return cache


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
    notice: Notice = _stderr_notice,
) -> dict:
    """Build plan_path (+ sidecar) from a dynamic-batch graph; returns the sidecar dict.

    The graph may be fp32 (lowered to `precision` here, export/precision.py) or already in
    `precision`. The graph rules run first; nothing is written unless the build succeeds.
    Needs tensorrt and a GPU.
    """
    from s2i_fast.artefact import load_onnx
    from s2i_fast.export.graph_rules import require_trt_graph
    from s2i_fast.export.precision import lower_precision
    from s2i_fast.export.trt_policy import fp32_islands
    from s2i_fast.fileio import write_bytes

    check_precision(precision)
    buckets = parse_buckets(buckets)
    if meta.batch is not None:
        raise EngineError("TensorRT buckets need a dynamic-batch ONNX graph (--dynamic-batch)")
    model, _ = load_onnx(onnx_path)
    if meta.precision != precision:
        if meta.precision != "fp32":
            raise EngineError(f"{onnx_path} is a {meta.precision} graph; build it with "
                              f"--precision {meta.precision}, or export fp32")
        if precision != "fp32":
            model = lower_precision(model, precision)
    require_trt_graph(model, str(onnx_path), batches=buckets)
    islands = fp32_islands(model) if precision != "fp32" else {}

    trt = require_tensorrt()
    logger = make_logger(trt, verbose)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as e:  # pybind: "factory function returned nullptr"
        raise EngineError(f"TensorRT could not create a builder (is a CUDA GPU visible?): "
                          f"{logger.last_error() if logger.errors else e}") from e
    network = builder.create_network(network_flags(trt))
    if network is None:
        raise EngineError(f"TensorRT could not create a network: {logger.last_error()}")
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        raise EngineError(f"{onnx_path}: TensorRT's ONNX parser failed: {_parser_errors(parser)}")
    config = builder.create_builder_config()
    if config is None:
        raise EngineError(f"TensorRT could not create a builder config: {logger.last_error()}")
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (TF32 is on by default)
    res, z = meta.resolution, meta.model_config.noise_dim
    for shapes in profile_shapes(buckets, res, z, meta.raw):
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise EngineError(f"TensorRT rejected the optimisation profile {shapes}: "
                              f"{logger.last_error()}")
    cache_path = Path(timing_cache) if timing_cache else None
    load_timing_cache(trt, config, cache_path, notice)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT could not build an engine from {onnx_path}: "
                          f"{logger.last_error()}")
    plan = bytes(serialized)
    if not plan:
        raise EngineError(f"TensorRT built an empty engine from {onnx_path}")
    cache_bytes = b""
    if cache_path is not None:
        cache = config.get_timing_cache()
        serialized_cache = cache.serialize() if cache is not None else None
        if serialized_cache is None:
            raise EngineError(f"TensorRT could not serialise the timing cache for {cache_path}")
        cache_bytes = bytes(serialized_cache)
    side = plan_sidecar(replace(meta, precision=precision), precision, buckets, islands,
                        trt.__version__)
    write_bytes(plan_path, plan)
    write_bytes(sidecar_path(plan_path), json.dumps(side, indent=1).encode())
    if cache_path is not None:
        write_bytes(cache_path, cache_bytes)
    return side
