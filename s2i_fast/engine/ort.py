"""ONNX Runtime session for an exported graph (uint8 or raw).

Tuning, measured on the 2-core CPU here (bench/results/cpu_bench.csv): graph optimisation
level ORT_ENABLE_ALL, sequential execution mode, intra-op threads = the physical cores
(ORT's default picks the same); the CUDA execution provider is put first when installed
and the requested device is not the CPU.

`OrtSession.precision` is the precision the convolutions ran in, read from the graph ONNX
Runtime optimised for the CPU provider (for fp16 and int8 graphs): an int8 (QDQ) graph whose
convolutions became QLinearConv ran int8; an fp16 graph on the x86 CPU provider, which has no
fp16 convolution kernels, gets Casts around fp32 convolutions, so it ran fp32.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from s2i_fast.artefact import INPUTS, OUTPUT, OnnxMeta, load_onnx
from s2i_fast.errors import BackendUnavailable, EngineError

INSTALL_HINT = ("pip install 's2i-fast[export]' (CPU) or 's2i-fast[gpu]' (onnxruntime-gpu, "
                "for the CUDA provider; install one of the two, not both)")


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(f"backend 'onnxruntime' needs its package: {INSTALL_HINT}") from e
    return onnxruntime


def choose_providers(device: str | None, available: list[str]) -> list[str]:
    """CUDA first when installed and the device allows it; the CPU provider always last."""
    providers = []
    if device is None or str(device).startswith("cuda"):
        if "CUDAExecutionProvider" in available:
            providers.append("CUDAExecutionProvider")
        elif device is not None:
            raise BackendUnavailable(
                f"onnxruntime has no CUDA provider for device {device!r}: "
                "pip install 's2i-fast[gpu]' (onnxruntime-gpu, instead of onnxruntime)"
            )
    providers.append("CPUExecutionProvider")
    return providers


INTEGER_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm",
               "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
FLOAT_OPS = ("Conv", "FusedConv", "NhwcFusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul")
_ONNX_FLOATS = {1: "fp32", 10: "fp16", 16: "bf16", 11: "fp64"}


def conv_precision(optimized, fallback: str) -> str:  # noqa: ANN001
    """The precision of the convolutions and matmuls of an optimised graph: 'int8', 'fp32',
    or e.g. 'int8+fp32' (most frequent first) when they differ; `fallback` if none is found."""
    weights = {t.name: t.data_type for t in optimized.graph.initializer}
    producer = {out: node for node in optimized.graph.node for out in node.output}
    counts: Counter[str] = Counter()
    for node in optimized.graph.node:
        if node.op_type in INTEGER_OPS:
            counts["int8"] += 1
        elif node.op_type in FLOAT_OPS and len(node.input) > 1:
            w = node.input[1]
            dtype = weights.get(w)
            src = producer.get(w)
            if dtype is None and src is not None and src.op_type == "Cast":
                dtype = next(a.i for a in src.attribute if a.name == "to")
            if dtype is None and src is not None and src.op_type == "DequantizeLinear":
                dtype = 1  # a QDQ pair ORT did not fuse: the conv computes in fp32
            if dtype is not None:
                counts[_ONNX_FLOATS.get(dtype, str(dtype))] += 1
    if not counts:
        return fallback
    return "+".join(name for name, _ in counts.most_common())


class OrtSession:
    """One InferenceSession plus the metadata of its graph. Not locked: the Engine locks."""

    def __init__(
        self,
        source: str | os.PathLike | bytes,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        ort = require_onnxruntime()
        self.model, self.meta = load_onnx(source)
        where = "graph" if isinstance(source, bytes) else str(source)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = int(threads)
        self.providers = choose_providers(device, ort.get_available_providers())
        inspect = self.meta.precision != "fp32" and self.providers == ["CPUExecutionProvider"]
        with tempfile.TemporaryDirectory(prefix="s2i-ort-") as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            if inspect:  # ORT writes the graph it will run while creating the session
                opts.optimized_model_filepath = str(optimized)
            try:
                self.session = ort.InferenceSession(
                    self.model.SerializeToString(), opts, providers=self.providers
                )
            except Exception as e:  # ORT raises its own Fail/InvalidGraph types
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise EngineError(f"{where}: onnxruntime cannot load this graph ({first})") from e
            self.precision = self.meta.precision
            if inspect and optimized.is_file():
                import onnx

                self.precision = conv_precision(onnx.load(str(optimized)), self.meta.precision)
        names = [i.name for i in self.session.get_inputs()]
        if names != list(INPUTS):
            raise EngineError(f"{where}: graph inputs are {names}, expected {list(INPUTS)}")
        self.provider = self.session.get_providers()[0]

    @property
    def metadata(self) -> OnnxMeta:
        return self.meta

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """sketch uint8 [B,H,W] (or f32 [B,1,H,W] raw), label i64 [B], noise f32 [B,Z]."""
        feed = {
            "sketch": np.ascontiguousarray(sketch),
            "label": np.ascontiguousarray(label, dtype=np.int64),
            "noise": np.ascontiguousarray(noise, dtype=np.float32),
        }
        try:
            return self.session.run([OUTPUT], feed)[0]
        except Exception as e:  # ORT's InvalidArgument/Fail on shapes or types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"onnxruntime rejected the inputs: {first}") from e
