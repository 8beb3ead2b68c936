"""Which CPU backend runs by default, and what the CPU offers.

CPU_BACKEND_ORDER is fastest first, from `s2i-fast bench --backends cpu` on this project's
2-core Intel Xeon VM (README.md "Measured", bench/results/cpu_backends.csv): on the same fp32
graph OpenVINO runs 1.3-2.0x faster than ONNX Runtime (tiny and paper, batch 1 and 8), which
runs 2.5-18x faster than eager torch; on an int8 graph OpenVINO is 1.3-2.7x faster than ONNX
Runtime on the same graph. `default_cpu_backend()` returns the first one whose packages are
installed; Engine.load(..., backend="auto") uses it on a machine without a CUDA GPU, and so
does `s2i-fast serve`. The precision is the artefact's (int8 after `export --int8`) or, for an
fp32 graph on openvino, `openvino_default_precision()`.
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


BF16_MIN_GAIN = 1.3  # bf16 must beat fp32 by this much to be the default (it costs quality)


def openvino_default_precision() -> str:
    """The precision the openvino backend runs an fp32 graph in when none is asked: 'bf16'
    where the CPU has native bf16 and a bf16 matmul measured through OpenVINO here is at least
    BF16_MIN_GAIN times the fp32 one, else 'fp32'.

    Measured, not assumed from the flags: on this project's 2-core Intel Xeon VM (avx512_bf16,
    no AMX) OpenVINO's bf16 matmul runs at 0.6x fp32, on a Zen 4 EPYC torch's at 4x. The
    result is cached per CPU model, flags and openvino version in the user cache folder.
    """
    if not native_bf16():
        return "fp32"
    import json

    from s2i_fast.engine.ov import cache_dir, require_openvino

    ov = require_openvino()
    key = f"{_cpu_model()}|{' '.join(sorted(cpu_flags()))}|{ov.__version__}"
    path = cache_dir() / "default-precision.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return str(cached["precision"])
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    rates = {p: _openvino_matmul_gflops(ov, p) for p in ("fp32", "bf16")}
    choice = "bf16" if rates["bf16"] >= BF16_MIN_GAIN * rates["fp32"] else "fp32"
    try:
        from s2i_fast.fileio import write_json

        write_json(path, {"key": key, "precision": choice, "gflops": rates})
    except Exception:  # noqa: BLE001  a cache that cannot be written is only slower
        pass
    return choice


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _openvino_matmul_gflops(ov, precision: str, n: int = 1024) -> float:  # noqa: ANN001
    """GFLOP/s of an n^3 matmul compiled by OpenVINO's CPU plugin at `precision`, best of 5."""
    import time

    import numpy as np
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([n, n], np.float32, name="x")
    w = ops.constant(rng.standard_normal((n, n), dtype=np.float32))
    model = ov.Model([ops.matmul(x, w, False, False)], [x])
    hint = {"fp32": "f32", "bf16": "bf16"}[precision]
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                      "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    a = rng.standard_normal((n, n), dtype=np.float32)
    request.infer({0: a})
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        request.infer({0: a})
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9
