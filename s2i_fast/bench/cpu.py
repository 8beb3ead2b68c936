"""CPU side of `s2i-fast bench`: backend specs with a precision, the CPU suite, the machine's
measured matmul ceilings and the generator's arithmetic per image.

    --backends torch,onnxruntime,onnxruntime:int8,openvino:bf16     backend[:precision]
    --backends cpu    every CPU backend: torch, torch-compile, onnxruntime fp32 and int8,
                      openvino fp32, bf16 (where the CPU has native bf16) and int8

Ceilings: one large square matmul (2048^3 by default) timed through torch on the bench's
threads: fp32 and bf16 with torch.mm (oneDNN), int8 with torch._int_mm (int8 x int8 -> int32,
oneDNN VNNI kernels), best of a few calls. A row's fraction of the ceiling is its arithmetic
rate (the generator's FLOPs per image x batch / p50) over the ceiling of the precision its
convolutions ran in; int8 rows count multiply-adds as 2 ops, like FLOPs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from s2i_fast.errors import EngineError

CPU_SUITE: tuple[str, ...] = (
    "torch", "torch-compile", "onnxruntime", "onnxruntime:int8",
    "openvino:fp32", "openvino:bf16", "openvino:int8",
)
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


@dataclass(frozen=True)
class BackendSpec:
    backend: str
    precision: str | None  # None: the backend's (or artefact's) default

    @property
    def label(self) -> str:
        return self.backend if self.precision is None else f"{self.backend}:{self.precision}"


def parse_backend_specs(text: str, backends: tuple[str, ...]) -> list[BackendSpec]:
    """'torch,openvino:bf16,cpu' -> specs (duplicates dropped, order kept). EngineError names
    what is wrong."""
    from s2i_fast.engine.cpu import native_bf16

    items: list[str] = []
    for raw in (v.strip() for v in text.split(",")):
        if raw == "cpu":
            items += [s for s in CPU_SUITE if s != "openvino:bf16" or native_bf16()]
        elif raw:
            items.append(raw)
    specs = []
    for item in dict.fromkeys(items):
        name, _, precision = item.partition(":")
        if name not in backends:
            raise EngineError(f"unknown backend {name!r}; choose from {', '.join(backends)}")
        if precision and precision not in PRECISIONS:
            raise EngineError(f"{item}: precision must be one of {', '.join(PRECISIONS)}")
        specs.append(BackendSpec(name, precision or None))
    if not specs:
        raise EngineError("no backend given")
    return specs


def generator_flops(gen, batch: int = 1) -> float:  # noqa: ANN001
    """FLOPs of one generator forward per image (convolutions and matmuls, 2 per
    multiply-add; torch.utils.flop_counter on an eval copy)."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    g = copy.deepcopy(gen).float().eval().cpu()
    cfg = g.cfg
    res = cfg.resolution
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        g(torch.zeros(batch, 1, res, res), torch.zeros(batch, dtype=torch.long),
          torch.zeros(batch, cfg.noise_dim))
    return counter.get_total_flops() / batch


def matmul_ceiling(precision: str, n: int = 2048, repeats: int = 3) -> float:
    """Measured GFLOP/s (int8: GOP/s) of an n x n x n matmul through torch on its current
    threads, best of `repeats` calls after one warm-up."""
    import torch

    if precision == "int8":
        a = torch.randint(-128, 128, (n, n), dtype=torch.int8)
        b = torch.randint(-128, 128, (n, n), dtype=torch.int8)

        def fn():
            return torch._int_mm(a, b)
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        a = torch.randn(n, n).to(dtype)
        b = torch.randn(n, n).to(dtype)

        def fn():
            return a @ b
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def main_precision(ran: str) -> str:
    """'int8+bf16' -> 'int8' (the precision most compute layers ran in)."""
    return ran.split("+")[0]
