"""OpenVINO runtime for an exported graph (fp32, fp16 or int8 .onnx) on the CPU plugin.

The .onnx is read by OpenVINO's ONNX frontend and compiled once per batch size, with static
shapes (measured here: about 30% faster than one dynamic-shape compile at batch 1 and 8), lazily
on first use. Compiled blobs are cached on disk (CACHE_DIR, see `cache_dir`), so a second
process compiles a known (graph, batch, precision) in about 0.3 s instead of 1-3 s.

Precision: an fp32 graph runs in fp32, or in bf16 where the CPU has native bf16 and a bf16
matmul measured here is clearly faster (engine/cpu.py: openvino_default_precision; OpenVINO's
own default would be bf16 on any CPU with the flag, slower than fp32 on this project's Xeon
VM); `precision` asks for fp32, bf16 or fp16 explicitly. An int8 graph (QDQ, `s2i-fast export
--int8`) runs its quantized convolutions in int8 and the rest at that same default precision.
What is reported is read back from the compiled model's execution graph (each convolution's
runtime precision), never assumed, and a request the CPU did not honour raises EngineError.
"""

from __future__ import annotations

import os
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from s2i_fast.artefact import INPUTS, load_onnx
from s2i_fast.engine.backends import precision_matches
from s2i_fast.errors import BackendUnavailable, EngineError

INSTALL_HINT = "pip install 's2i-fast[openvino]'"
HINTS = ("latency", "throughput")
# Engine precision name -> OpenVINO INFERENCE_PRECISION_HINT
INFERENCE_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# an execution-graph runtimePrecision -> the Engine's precision name
RUNTIME_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "u8": "int8", "i8": "int8"}
COMPUTE_LAYERS = ("Convolution", "FullyConnected", "MatMul", "Deconvolution")
MAX_COMPILED = 16  # batch sizes kept compiled at once (least recently used dropped)


def require_openvino():
    try:
        import openvino
    except ImportError as e:
        raise BackendUnavailable(f"backend 'openvino' needs its package: {INSTALL_HINT}") from e
    return openvino


def cache_dir() -> Path:
    """Where compiled blobs are cached: $S2I_FAST_CACHE/openvino, else
    $XDG_CACHE_HOME/s2i-fast/openvino, else ~/.cache/s2i-fast/openvino."""
    base = os.environ.get("S2I_FAST_CACHE")
    if base:
        return Path(base).expanduser() / "openvino"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "s2i-fast" / "openvino"


def ran_precision(compiled) -> str:  # noqa: ANN001
    """The precision the compute layers of a compiled model run in: 'bf16', 'int8', or
    'int8+bf16' (most frequent first) when they differ."""
    counts: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in COMPUTE_LAYERS:
            rt = info["runtimePrecision"].astype(str)
            counts[RUNTIME_NAMES.get(rt, rt)] += 1
    if not counts:
        return "unknown"
    return "+".join(name for name, _ in counts.most_common())


class OvSession:
    """One OpenVINO model, compiled per batch size. Not locked: the Engine locks."""

    def __init__(
        self,
        source: str | os.PathLike | bytes,
        *,
        precision: str | None = None,
        hint: str = "latency",
        threads: int | None = None,
        cache: str | os.PathLike | None | bool = None,
    ) -> None:
        ov = require_openvino()
        _, self.meta = load_onnx(source)  # the metadata (the graph itself OpenVINO reads)
        where = "graph" if isinstance(source, bytes) else str(source)
        if hint not in HINTS:
            raise EngineError(f"openvino hint must be one of {', '.join(HINTS)}, got {hint!r}")
        self._check_request(precision, where)
        self.asked = precision
        self.hint = hint
        self.provider = "openvino:CPU"
        self.core = ov.Core()
        self.config: dict[str, str | int] = {"PERFORMANCE_HINT": hint.upper()}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if precision in INFERENCE_PRECISIONS:
            inference = precision
        else:  # the int8 graph's other layers too: bf16 only where measured faster
            from s2i_fast.engine.cpu import openvino_default_precision

            inference = openvino_default_precision()
        self.config["INFERENCE_PRECISION_HINT"] = INFERENCE_PRECISIONS[inference]
        if cache is not False:
            folder = Path(cache) if cache not in (None, True) else cache_dir()
            # one folder per compile configuration: OpenVINO 2026.4's blob key leaves out
            # INFERENCE_PRECISION_HINT (an f32 compile imported an f16 blob from a shared folder)
            folder = folder / "-".join(f"{v}" for _, v in sorted(self.config.items())).lower()
            try:
                folder.mkdir(parents=True, exist_ok=True)
                self.config["CACHE_DIR"] = str(folder)
            except OSError:
                pass  # no cache: compiles every time, still correct
        self._compiled: OrderedDict[int, tuple[object, object]] = OrderedDict()
        try:
            self._model = self.core.read_model(source if isinstance(source, bytes)
                                               else str(source))
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long messages
            raise EngineError(f"{where}: openvino cannot read this graph ({_first(e)})") from e
        names = [p.get_any_name() for p in self._model.inputs]
        if names != list(INPUTS):
            raise EngineError(f"{where}: graph inputs are {names}, expected {list(INPUTS)}")
        # compile the batch the graph fixes (or batch 1) now: errors and precision up front
        first = self.meta.batch or 1
        self.precision = ran_precision(self._compile(first)[0])
        if precision is not None and not precision_matches(precision, self.precision):
            raise EngineError(
                f"openvino ran this {self.meta.precision} graph in {self.precision}, not "
                f"{precision} (this CPU: {self.core.get_property('CPU', 'FULL_DEVICE_NAME')}, "
                f"capabilities {' '.join(self.capabilities())})"
            )

    def _check_request(self, precision: str | None, where: str) -> None:
        graph = self.meta.precision
        if precision is None:
            return
        allowed = ("int8",) if graph == "int8" else tuple(INFERENCE_PRECISIONS)
        if precision not in allowed:
            hint = "export it with --int8" if precision == "int8" else "use the fp32 graph"
            raise EngineError(f"{where}: a {graph} graph cannot run in {precision} on openvino; "
                              f"{hint}")

    def capabilities(self) -> list[str]:
        return list(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))

    def _compile(self, batch: int):
        if batch in self._compiled:
            self._compiled.move_to_end(batch)
            return self._compiled[batch]
        model = self._model.clone()
        res, z = self.meta.resolution, self.meta.model_config.noise_dim
        sketch = [batch, 1, res, res] if self.meta.raw else [batch, res, res]
        try:
            model.reshape({"sketch": sketch, "label": [batch], "noise": [batch, z]})
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as e:
            raise EngineError(f"openvino cannot compile this graph for batch {batch} "
                              f"({_first(e)})") from e
        entry = (compiled, compiled.create_infer_request())
        self._compiled[batch] = entry
        while len(self._compiled) > MAX_COMPILED:
            self._compiled.popitem(last=False)
        return entry

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """sketch uint8 [B,H,W] (or f32 [B,1,H,W] raw), label i64 [B], noise f32 [B,Z]."""
        _, request = self._compile(int(sketch.shape[0]))
        feed = {
            "sketch": np.ascontiguousarray(sketch),
            "label": np.ascontiguousarray(label, dtype=np.int64),
            "noise": np.ascontiguousarray(noise, dtype=np.float32),
        }
        try:
            out = request.infer(feed)
        except Exception as e:
            raise EngineError(f"openvino rejected the inputs: {_first(e)}") from e
        return np.array(out[request.model_outputs[0]], copy=True)  # [B, H, W, 3]; own the data


def _first(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
