"""The one benchmark harness: timing, device sync, peak memory, the context a number needs
(device, versions, commit, load), CSV rows and a printed table.

`s2i-fast bench` (s2i_fast/bench/cli.py) and every script in bench/ use it, so a row of any
benchmark carries the same context columns and the same commit string.

Timing: `time_calls` returns per-call latencies (CUDA events around each call on the GPU, a
perf_counter around each call elsewhere), warm-up calls discarded; `bench_ms` is
triton.testing.do_bench on CUDA (median and p20/p80 of many repetitions) and a short
perf_counter loop on the CPU (under --smoke it only proves a script runs).
Peak memory: on CUDA the allocator's peak above what was allocated before the block; on the
CPU the peak resident set during the block minus the resident set before it (Linux
/proc/self/clear_refs + VmHWM; ru_maxrss otherwise).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
VERSIONED_PACKAGES = ("torch", "triton", "onnxruntime", "onnx", "openvino", "tensorrt")


# ---------------------------------------------------------------------- devices
def is_cuda(device) -> bool:  # noqa: ANN001
    return str(device).startswith("cuda")


def sync(device) -> None:  # noqa: ANN001
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)


def smoke_requested(argv: list[str] | None = None) -> bool:
    """Call before importing triton: --smoke selects Triton's CPU interpreter."""
    argv = sys.argv[1:] if argv is None else argv
    if "--smoke" in argv:
        os.environ["TRITON_INTERPRET"] = "1"
        return True
    return False


def require_cuda(script: str) -> None:
    """Refuse (exit 2, one line) when there is no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        print(
            f"{script}: needs a CUDA GPU (none found; torch {torch.__version__}). "
            "Run with --smoke to check the script on the CPU through Triton's interpreter.",
            file=sys.stderr,
        )
        sys.exit(2)


def device_name(device) -> str:  # noqa: ANN001
    """'NVIDIA H200' or 'Intel(R) Xeon(R) Processor (2 cpus)'."""
    if is_cuda(device):
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


def cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                                       "avx_vnni", "amx_bf16", "amx_int8")) -> str:
    """The CPU's vector extensions that matter for fp32/bf16/int8 speed, space-separated."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return " ".join(f for f in wanted if f in have)
    except OSError:
        pass
    return ""


# ---------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], object], device, warmup: int, iters: int,
               progress: Callable[[], None] | None = None) -> list[float]:  # noqa: ANN001
    """Per-call latencies in ms after `warmup` discarded calls."""
    for _ in range(warmup):
        fn()
        if progress is not None:
            progress()
    times = []
    if is_cuda(device):
        import torch

        torch.cuda.synchronize(device)
        for _ in range(iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
            if progress is not None:
                progress()
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
            if progress is not None:
                progress()
    return times


def percentile(times_ms: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(times_ms, dtype=float), q))


def bench_ms(fn: Callable[[], object], device, *, warmup_ms: int = 25,
             rep_ms: int = 100) -> tuple[float, float, float]:  # noqa: ANN001
    """(median, p20, p80) milliseconds per call."""
    if is_cuda(device):
        from triton.testing import do_bench

        p50, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return float(p50), float(p20), float(p80)
    times = sorted(time_calls(fn, device, warmup=1, iters=3))
    return times[1], times[0], times[-1]


def copy_bandwidth_gbs(device, nbytes: int = 1 << 30) -> float:  # noqa: ANN001
    """Measured device copy ceiling in GB/s (read + write bytes of a large tensor copy)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        nbytes = 1 << 24
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).fill_(1.0)
    dst = torch.empty_like(src)
    ms, _, _ = bench_ms(lambda: dst.copy_(src), dev, warmup_ms=50, rep_ms=200)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def count_kernels(fn: Callable[[], object], device) -> int:  # noqa: ANN001
    """GPU kernels one call of fn launches, counted by torch.profiler (CUPTI sees the kernels
    inside a CUDA graph replay too); -1 off CUDA. Memcpy/memset activities are not counted."""
    if not is_cuda(device):
        return -1
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        sync(device)
    kinds = []
    for e in prof.events():
        dev_type = getattr(e, "device_type", None)
        if dev_type is not None and str(dev_type).endswith("CUDA"):
            name = e.name.lower()
            if not (name.startswith("memcpy") or name.startswith("memset")):
                kinds.append(e.name)
    return len(kinds)


# ---------------------------------------------------------------------- memory
def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory over a block in MB: CUDA allocator peak or CPU resident-set peak, each above
    what the process held when the block began. `kind` names which one."""

    def __init__(self, device) -> None:  # noqa: ANN001
        self.cuda = is_cuda(device)
        self.device = device
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_peak_delta"
        self.peak_mb = 0.0

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
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

            torch.cuda.synchronize(self.device)
            self.peak_mb = max(0.0, (torch.cuda.max_memory_allocated(self.device) - self.base)
                               / 2**20)
            return
        hwm = _proc_status_kb("VmHWM") if self.reset_ok else None
        if hwm is not None:
            self.peak_mb = max(0.0, (hwm * 1024 - self.base) / 2**20)
        else:  # only what exceeds the process's earlier peak is visible
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_mb = max(0.0, (peak - max(self.base_max, self.base)) / 2**20)
            self.kind = "cpu_maxrss_delta"


def peak_memory_bytes(fn: Callable[[], object], device) -> int:  # noqa: ANN001
    """Peak bytes allocated above the start during one call of fn (CUDA only; 0 elsewhere)."""
    if not is_cuda(device):
        fn()
        return 0
    with PeakMemory(device) as mem:
        fn()
    return int(mem.peak_mb * 2**20)


# ---------------------------------------------------------------------- context
def git_commit() -> str:
    """Short commit of the checkout the code runs from, '+dirty' with uncommitted changes to
    tracked files; 'unknown' outside a git checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if sha and dirty.strip() else "")


def versions() -> dict[str, str]:
    """python and each VERSIONED_PACKAGES version ('' where not installed)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = ""
    return out


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def context(device) -> dict[str, str]:  # noqa: ANN001
    """The columns every benchmark row starts with."""
    ctx = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "device": device_name(device),
        "load_avg_1m": f"{load_average():.2f}",
    }
    if not is_cuda(device):
        ctx["cpu_flags"] = cpu_flags()
    else:
        import torch

        ctx["cuda"] = str(torch.version.cuda)
    ctx.update(versions())
    return ctx


# ---------------------------------------------------------------------- output
def append_csv(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Append rows; a file with other columns is rewritten with the union of the columns."""
    path = Path(path)
    rows = list(rows)
    if not rows:
        return path
    fields = list(dict.fromkeys(k for r in rows for k in r))
    old: list[dict] = []
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            old_fields = list(reader.fieldnames or [])
            old = list(reader)
        fields = list(dict.fromkeys(old_fields + fields))
    from s2i_fast.fileio import write_text

    buf = _CsvBuffer()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(old + rows)
    write_text(path, buf.text())
    return path


class _CsvBuffer:
    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def text(self) -> str:
        return "".join(self.parts)


def _fmt(v) -> str:  # noqa: ANN001
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def format_table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    """A plain-text table: a header, a rule, one line per row (first column left-aligned)."""
    cells = [list(cols)] + [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(rows: Sequence[dict], cols: Sequence[str]) -> None:
    print(format_table(rows, cols))
