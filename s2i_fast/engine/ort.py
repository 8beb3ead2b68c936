"""ONNX Runtime session for an exported graph (uint8 or raw).

Tuning, measured on the 2-core CPU here (bench/results/cpu_bench.csv): graph optimisation
level ORT_ENABLE_ALL, sequential execution mode, intra-op threads = the physical cores
(ORT's default picks the same); the CUDA execution provider is put first when installed
and the requested device is not the CPU.
"""

from __future__ import annotations

import os

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
        try:
            self.session = ort.InferenceSession(
                self.model.SerializeToString(), opts, providers=self.providers
            )
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EngineError(f"{where}: onnxruntime cannot load this graph ({first})") from e
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
