"""Compile a workload's Triton kernels in parallel over the CPU cores before its first launch.

    with collect_specializations() as specs:   # launches are recorded, not compiled or run
        run_workload_once()
    report = compile_parallel(specs)            # a process pool fills Triton's on-disk cache
    run_workload_once()                         # every JIT launch now loads its cubin

Triton compiles a kernel the first time a launch meets a new specialisation (dtypes,
constexprs, alignment of each pointer, divisibility of each integer), one after another, 1.5-3
seconds each on an H100 machine. Here a ``jit_cache_hook`` (``triton.knobs.runtime``) sees each
new specialisation before it compiles, keeps Triton's own serialised description of it and
tells Triton to skip the launch; worker processes then rebuild each one with
``JITFunction.preload`` (the same ``compile`` call the launch would make, so the same cache
key) and Triton's file cache hands the results to the main process. The workload's outputs in
the recording pass are garbage (nothing ran): run it on scratch data, or run it again after.

CUDA only (the workers need the GPU's target; they hold a small CUDA context each). Where the
hook is missing or a worker fails, the kernels still compile on first launch, one at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field


@dataclass
class Specialization:
    module: str  # the kernel's module, e.g. s2i_fast.kernels.conv_igemm
    name: str  # its qualified name, e.g. _conv_kernel
    data: str  # Triton's serialised specialisation (JSON)


@dataclass
class CompileReport:
    kernels: int = 0  # distinct specialisations
    failed: list[str] = field(default_factory=list)  # "name: error"
    seconds: float = 0.0  # wall time of the parallel compile
    workers: int = 0
    serial_seconds: float = 0.0  # sum of the workers' compile times

    def line(self) -> str:
        return (f"{self.kernels} kernel specialisations compiled in {self.seconds:.1f} s on "
                f"{self.workers} processes ({self.serial_seconds:.1f} s of compile work)"
                + (f", {len(self.failed)} failed" if self.failed else ""))


def hook_available() -> bool:
    try:
        from triton import knobs
    except ImportError:
        return False
    return hasattr(knobs, "runtime") and hasattr(knobs.runtime, "jit_cache_hook")


@contextlib.contextmanager
def collect_specializations() -> Iterator[list[Specialization]]:
    """Within the block, Triton launches record their specialisation and do nothing else
    (kernels already in memory run as usual)."""
    specs: list[Specialization] = []
    if not hook_available():
        yield specs
        return
    from triton import knobs

    seen: set[str] = set()

    def hook(*, fn=None, compile=None, **_kw) -> bool:  # noqa: A002, ANN001
        try:
            data = compile["specialization_data"]
            module = fn.module if isinstance(fn.module, str) else fn.module.__name__
            name = fn.name
        except Exception:  # noqa: BLE001  (another Triton's hook protocol: compile as usual)
            return False
        if data not in seen:
            seen.add(data)
            specs.append(Specialization(module, name, data))
        return True  # skip compile and launch

    saved = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        yield specs
    finally:
        knobs.runtime.jit_cache_hook = saved


def _worker_init() -> None:
    # the environment is the parent's (spawn copies it): Triton's cache key includes some
    # environment variables, so the workers must see the same ones
    import torch

    torch.cuda.init()


def _compile_one(spec: Specialization) -> tuple[str, float, str | None]:
    t0 = time.perf_counter()
    try:
        fn = importlib.import_module(spec.module)
        for part in spec.name.split("."):
            fn = getattr(fn, part)
        fn.preload(spec.data)
        err = None
    except Exception as e:  # noqa: BLE001  (reported; the launch compiles it instead)
        err = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    return spec.name, time.perf_counter() - t0, err


def default_workers() -> int:
    return max(1, min(16, (os.cpu_count() or 2) - 1))


def compile_parallel(specs: list[Specialization], workers: int | None = None,
                     progress: bool = False) -> CompileReport:
    """Compile every specialisation in a pool of spawned processes (Triton's file cache keeps
    the results). Failures are listed, not raised: those kernels compile at launch."""
    report = CompileReport(kernels=len(specs))
    if not specs:
        return report
    import multiprocessing as mp

    report.workers = min(workers or default_workers(), len(specs))
    t0 = time.perf_counter()
    with ProcessPoolExecutor(report.workers, mp_context=mp.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = [pool.submit(_compile_one, s) for s in specs]
        for i, fut in enumerate(as_completed(futures)):
            name, secs, err = fut.result()
            report.serial_seconds += secs
            if err:
                report.failed.append(f"{name}: {err}")
            if progress:
                print(f"\r  compiled {i + 1}/{len(specs)}", end="", flush=True)
    if progress:
        print()
    report.seconds = time.perf_counter() - t0
    return report


def precompile(workload, workers: int | None = None, progress: bool = False) -> CompileReport:  # noqa: ANN001
    """Record ``workload()``'s launches, then compile them in parallel (module doc). If the
    recording pass itself fails (another Triton's hook protocol), what was recorded is still
    compiled and the rest compiles at launch; the report says so."""
    failed = []
    with collect_specializations() as specs:
        try:
            workload()
        except Exception as e:  # noqa: BLE001  (precompiling is an optimisation)
            failed.append(f"recording pass: {type(e).__name__}: {str(e)[:200]}")
    report = compile_parallel(specs, workers, progress)
    report.failed = failed + report.failed
    return report
