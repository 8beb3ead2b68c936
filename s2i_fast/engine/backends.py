"""Backend runners behind s2i_fast.Engine: each maps (uint8 sketch [B,H,W], int64 label [B],
float32 noise [B,Z]) numpy arrays to uint8 RGB [B,H,W,3] and knows nothing about user input.

    torch          eager PyTorch (export.wrappers.UInt8Generator: the function ONNX traces)
    torch-compile  the same module through torch.compile (compiles per batch size, lazily)
    triton         s2i_fast.kernels.inference.TritonGenerator (fused kernels, CUDA graphs)
    onnxruntime    engine.ort.OrtSession on an exported graph (uint8 or raw; fp32, fp16, int8)
    openvino       engine.ov.OvSession on an exported graph, CPU plugin (fp32/bf16/fp16, int8)
    tensorrt       engine.trt.TrtRunner on a .plan
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from s2i_fast.config import PreprocessStats
from s2i_fast.data.preprocess import normalize_sketch_uint8, to_uint8_hwc
from s2i_fast.errors import BackendUnavailable, EngineError

BACKENDS: tuple[str, ...] = (
    "torch", "torch-compile", "triton", "onnxruntime", "openvino", "tensorrt",
)
CPU_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16", "int8")


def precision_matches(asked: str, ran: str) -> bool:
    """True when `ran` ('bf16', or 'int8+bf16' for mixed layers, most frequent first) is mostly
    the precision `asked`."""
    return ran.split("+")[0] == asked


def default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EngineError(f"unknown device {device!r}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r} requested but no CUDA GPU is visible")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TorchRunner:
    """Eager (or compiled) PyTorch on the UInt8Generator wrapper."""

    def __init__(
        self,
        gen: nn.Module,
        stats: PreprocessStats,
        device: torch.device,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        from s2i_fast.export.wrappers import prepare_generator, wrap

        prepared = prepare_generator(gen, precision).to(device)
        prepared.set_impl("ref")
        self.module = wrap(prepared, stats).to(device)
        self.device = device
        self.compiled = False
        if compile:
            try:
                self.module = torch.compile(self.module, dynamic=False)
            except Exception as e:  # missing compiler toolchain, unsupported platform
                raise BackendUnavailable(f"backend 'torch-compile' cannot compile here: {e}") from e
            self.compiled = True

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        dev = self.device
        with torch.inference_mode():
            args = (
                torch.from_numpy(sketch).to(dev),
                torch.from_numpy(label).to(dev),
                torch.from_numpy(noise).to(dev),
            )
            try:
                out = self.module(*args)  # [B, H, W, 3] uint8
            except Exception as e:
                if not self.compiled:
                    raise
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise BackendUnavailable(f"backend 'torch-compile' failed: {first}") from e
            _sync(dev)
            return out.cpu().numpy()


class TritonRunner:
    """The fused Triton generator (kernels/inference.py), pre/post-processing in torch."""

    def __init__(
        self, gen: nn.Module, stats: PreprocessStats, device: torch.device, precision: str
    ) -> None:
        try:
            from s2i_fast.kernels.inference import TritonGenerator
        except ImportError as e:
            raise BackendUnavailable(
                "backend 'triton' needs s2i_fast.kernels.inference and the triton package "
                f"(pip install 's2i-fast[triton]'); import failed: {e}"
            ) from e
        from s2i_fast.export.wrappers import DTYPES, prepare_generator

        self.stats = stats
        self.device = device
        self.tg = TritonGenerator.from_generator(
            prepare_generator(gen, "fp32").to(device), dtype=DTYPES[precision], device=str(device)
        )

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        dev = self.device
        with torch.inference_mode():
            x = normalize_sketch_uint8(torch.from_numpy(sketch).to(dev), self.stats)
            y = self.tg(x, torch.from_numpy(label).to(dev), torch.from_numpy(noise).to(dev))
            out = to_uint8_hwc(y.float(), self.stats)  # [B, H, W, 3]
            _sync(dev)
            return out.cpu().numpy()


class UInt8Runner:
    """Adapts a runner of a raw artefact (model-space float in and out) to the uint8 contract:
    the data set's preprocessing before it, the conversion to uint8 RGB after it."""

    def __init__(self, runner, stats: PreprocessStats) -> None:  # noqa: ANN001
        self.runner = runner
        self.stats = stats
        self.provider = getattr(runner, "provider", "")

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        x = normalize_sketch_uint8(torch.from_numpy(sketch), self.stats).numpy()  # [B,1,H,W]
        y = self.runner.run(x, label, noise)  # [B, 3, H, W] model space
        return to_uint8_hwc(torch.from_numpy(y), self.stats).numpy()


class OrtRunner:
    """onnxruntime or openvino on an exported graph (its own inputs: uint8, or model space when
    raw)."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self.session = session
        self.provider = session.provider

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.session.run(sketch, label, noise)
