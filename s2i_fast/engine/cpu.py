"""Which CPU backend runs by default, and what the CPU offers.

CPU_BACKEND_ORDER is fastest first, from `s2i-fast bench` on this project's 2-core machines
(export/README.md, "CPU backends"): OpenVINO at its default precision (bf16 on a CPU with
native bf16) is 1.4-2.5x faster than ONNX Runtime fp32, which is 1.2-2.3x faster than eager
torch. `default_cpu_backend()` returns the first one whose package imports; Engine.load(...,
backend="auto") uses it on a machine without a CUDA GPU, and so does `s2i-fast serve`.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

CPU_BACKEND_ORDER: tuple[str, ...] = ("openvino", "onnxruntime", "torch")
# the packages each needs: graphs are read (and checkpoints exported) through the onnx package
_PACKAGES = {"openvino": ("openvino", "onnx"), "onnxruntime": ("onnxruntime", "onnx"),
             "torch": ("torch",)}


def backend_installed(backend: str) -> bool:
    """Whether a CPU backend's packages can be imported (found, not imported)."""
    packages = _PACKAGES.get(backend)
    return bool(packages) and all(importlib.util.find_spec(p) is not None for p in packages)


def default_cpu_backend(kind: str = "checkpoint") -> str:
    """The fastest CPU backend installed here (CPU_BACKEND_ORDER) for an artefact kind:
    'openvino', else 'onnxruntime', else 'torch' (an .onnx graph: 'onnxruntime', whose
    error then names the package to install)."""
    for name in CPU_BACKEND_ORDER:
        if name == "torch" and kind == "onnx":
            return "onnxruntime"
        if backend_installed(name):
            return name
    return "torch"


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The flags of /proc/cpuinfo's first processor (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16() -> bool:
    """The CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def native_int8() -> bool:
    """The CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())
