"""Timing Engines side by side: the rows of `s2i-fast bench`.

Each measurement times Engine.run on prepared uint8 sketches, labels and noise (the artefact's
whole function: preprocessing, generator, uint8 conversion), after warm-up calls that are
discarded; every backend synchronises its device before returning. Peak memory is the
harness's PeakMemory (on CUDA it covers the torch backends and TensorRT's I/O buffers, not
onnxruntime's own arena).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from s2i_fast.bench.harness import PeakMemory, percentile, time_calls

TABLE_COLUMNS = ("backend", "batch", "precision", "p50_ms", "p99_ms", "images_per_s",
                 "peak_mem_mb", "speedup_vs_torch", "speedup_vs_ort", "gflops",
                 "fraction_of_peak")


@dataclass
class BenchResult:
    backend: str
    batch: int
    precision: str
    p50_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float
    peak_mem_mb: float
    mem_kind: str
    provider: str = ""
    speedup_vs_torch: float | None = None
    speedup_vs_ort: float | None = None  # over onnxruntime fp32 in the same run
    gflops: float | None = None  # generator FLOPs x batch / p50
    fraction_of_peak: float | None = None  # gflops / the matmul ceiling of its precision
    times_ms: list[float] = field(default_factory=list, repr=False)

    def row(self) -> dict:
        """The CSV/table row (rounded; no per-call times)."""
        d = asdict(self)
        d.pop("times_ms")
        for k in ("p50_ms", "p99_ms", "mean_ms", "images_per_s", "peak_mem_mb"):
            d[k] = round(d[k], 3)
        for k in ("speedup_vs_torch", "speedup_vs_ort", "gflops", "fraction_of_peak"):
            d[k] = "" if d[k] is None else round(d[k], 4)
        return d


def time_engine(engine, batch: int, warmup: int, iters: int, progress=None) -> BenchResult:  # noqa: ANN001
    """Time engine.run at one batch size: warm-up discarded, then `iters` timed calls."""
    rng = np.random.default_rng(0)
    res = engine.resolution
    sketch = rng.integers(0, 256, (batch, res, res), dtype=np.uint8)
    label = (np.arange(batch) % len(engine.class_names)).astype(np.int64)
    noise = engine.make_noise(batch, seed=0)
    tick = (lambda: progress.update(1)) if progress is not None else None
    with PeakMemory(engine.device) as mem:
        # the runners synchronise the device before returning, so host timing is exact here
        times = time_calls(lambda: engine.run(sketch, label, noise), "cpu", warmup, iters, tick)
    provider = getattr(getattr(engine, "_runner", None), "provider", "")
    return BenchResult(
        backend=engine.backend,
        batch=batch,
        precision=engine.precision,
        p50_ms=percentile(times, 50),
        p99_ms=percentile(times, 99),
        mean_ms=float(np.mean(times)),
        images_per_s=float(batch * 1e3 / np.median(times)),
        peak_mem_mb=float(mem.peak_mb),
        mem_kind=mem.kind,
        provider=provider,
        times_ms=times,
    )


def add_speedups(results: list[BenchResult]) -> None:
    """speedup_vs_torch = torch eager p50 / this p50, per batch (None without a torch row);
    speedup_vs_ort the same over the onnxruntime fp32 row."""
    torch_base = {r.batch: r.p50_ms for r in results
                  if r.backend.split(":")[0] == "torch" and r.precision == "fp32"}
    ort_base = {r.batch: r.p50_ms for r in results
                if r.backend.split(":")[0] == "onnxruntime" and r.precision == "fp32"}
    for r in results:
        if r.batch in torch_base:
            r.speedup_vs_torch = torch_base[r.batch] / r.p50_ms
        if r.batch in ort_base:
            r.speedup_vs_ort = ort_base[r.batch] / r.p50_ms
