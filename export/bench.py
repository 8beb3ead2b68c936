"""Timing harness behind `s2i-fast bench`: latency percentiles, throughput, peak memory, and the
context a number needs (device, versions, git commit, load average) for the CSV.

Each measurement times Engine.run on prepared uint8 sketches, labels and noise (the artefact's
whole function: preprocessing, generator, uint8 conversion), after warm-up calls that are
discarded; CUDA is synchronised inside every runner before the clock is read.
Peak memory: on CUDA torch's max_memory_allocated (covers the torch backends and TensorRT's
I/O buffers, not onnxruntime's own arena); on the CPU the peak resident set during the run
minus the resident set before it (Linux /proc/self/clear_refs + VmHWM; ru_maxrss otherwise).
"""

from __future__ import annotations

import csv
import os
import platform
import resource
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

CSV_FIELDS = (
    "timestamp", "git_commit", "device", "backend", "provider", "precision", "model",
    "resolution", "batch", "warmup", "iters", "p50_ms", "p99_ms", "mean_ms", "images_per_s",
    "peak_mem_mb", "mem_kind", "speedup_vs_torch", "threads", "load_avg_1m", "python", "torch",
    "onnxruntime", "onnx", "tensorrt", "triton",
)


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
    times_ms: list[float] = field(default_factory=list, repr=False)


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory over a block: CUDA allocator peak or CPU resident-set peak delta, in MB."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_peak_delta"
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.reset_ok = False
            try:  # reset VmHWM to the current RSS (Linux >= 4.0, own process)
                Path("/proc/self/clear_refs").write_text("5")
                self.reset_ok = True
            except OSError:
                pass
            self.base = (_proc_status_kb("VmRSS") or 0) * 1024
            self.base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
            return
        hwm = _proc_status_kb("VmHWM") if self.reset_ok else None
        if hwm is not None:
            self.peak_mb = max(0.0, (hwm * 1024 - self.base) / 2**20)
        else:  # only what exceeds the process's earlier peak is visible
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_mb = max(0.0, (peak - max(self.base_max, self.base)) / 2**20)
            self.kind = "cpu_maxrss_delta"


def time_engine(engine, batch: int, warmup: int, iters: int, progress=None) -> BenchResult:
    """Time engine.run at one batch size: warm-up discarded, then `iters` timed calls."""
    rng = np.random.default_rng(0)
    res = engine.resolution
    sketch = rng.integers(0, 256, (batch, res, res), dtype=np.uint8)
    label = (np.arange(batch) % len(engine.class_names)).astype(np.int64)
    noise = engine.make_noise(batch, seed=0)
    times = []
    with PeakMemory(engine.device) as mem:
        for _ in range(warmup):
            engine.run(sketch, label, noise)
            if progress is not None:
                progress.update(1)
        for _ in range(iters):
            t0 = time.perf_counter()
            engine.run(sketch, label, noise)  # runners synchronise the device before returning
            times.append((time.perf_counter() - t0) * 1e3)
            if progress is not None:
                progress.update(1)
    arr = np.asarray(times)
    provider = getattr(getattr(engine, "_runner", None), "provider", "")
    return BenchResult(
        backend=engine.backend,
        batch=batch,
        precision=engine.precision,
        p50_ms=float(np.percentile(arr, 50)),
        p99_ms=float(np.percentile(arr, 99)),
        mean_ms=float(arr.mean()),
        images_per_s=float(batch * 1e3 / np.median(arr)),
        peak_mem_mb=float(mem.peak_mb),
        mem_kind=mem.kind,
        provider=provider,
        times_ms=times,
    )


def add_speedups(results: list[BenchResult]) -> None:
    """speedup_vs_torch = torch eager p50 / this p50, per batch (None without a torch row)."""
    base = {r.batch: r.p50_ms for r in results if r.backend == "torch"}
    for r in results:
        if r.batch in base:
            r.speedup_vs_torch = base[r.batch] / r.p50_ms


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cpus)"


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("torch", "onnxruntime", "onnx", "tensorrt", "triton"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = ""
    return out


def git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return sha + ("-dirty" if sha and dirty else "")


def csv_rows(results: list[BenchResult], context: dict) -> list[dict]:
    rows = []
    for r in results:
        d = asdict(r)
        d.pop("times_ms")
        row = {**context, **d}
        for k in ("p50_ms", "p99_ms", "mean_ms", "images_per_s", "peak_mem_mb"):
            row[k] = f"{row[k]:.3f}"
        s = row["speedup_vs_torch"]
        row["speedup_vs_torch"] = "" if s is None else f"{s:.3f}"
        rows.append({k: row.get(k, "") for k in CSV_FIELDS})
    return rows


def append_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Append rows (header written when the file is new or empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_FIELDS))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def format_table(results: list[BenchResult]) -> str:
    head = ("backend", "batch", "prec", "p50 ms", "p99 ms", "img/s", "peak MB", "vs torch")
    lines = [head]
    for r in results:
        speed = "-" if r.speedup_vs_torch is None else f"{r.speedup_vs_torch:.2f}x"
        lines.append((r.backend, str(r.batch), r.precision, f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}",
                      f"{r.images_per_s:.1f}", f"{r.peak_mem_mb:.1f}", speed))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = []
    for n, row in enumerate(lines):
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                             enumerate(zip(row, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
