"""Shared benchmark harness: device checks, timing, copy-bandwidth ceiling, environment, CSV.

Scripts in bench/ import it as `from harness import ...` (they put their own folder first on
sys.path). Timing on CUDA is triton.testing.do_bench (warm-up and compilation discarded, the
device synchronised, median and p20/p80 of the repetitions); under --smoke on the CPU it is a
plain perf_counter loop, which only proves the script runs.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


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


def sync(device) -> None:  # noqa: ANN001
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def bench_ms(
    fn: Callable[[], object], device, *, warmup_ms: int = 25, rep_ms: int = 100
) -> tuple[float, float, float]:  # noqa: ANN001
    """(median, p20, p80) milliseconds per call."""
    import torch

    if torch.device(device).type == "cuda":
        from triton.testing import do_bench

        p50, p20, p80 = do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return float(p50), float(p20), float(p80)
    fn()  # warm-up (interpreter: first call parses the kernel)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
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


def peak_memory_bytes(fn: Callable[[], object], device) -> int:  # noqa: ANN001
    """Peak allocated bytes during one call of fn (CUDA only; 0 elsewhere)."""
    import torch

    dev = torch.device(device)
    if dev.type != "cuda":
        fn()
        return 0
    sync(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    sync(dev)
    return int(torch.cuda.max_memory_allocated(dev))


def environment(device) -> dict[str, str]:  # noqa: ANN001
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except Exception:  # noqa: BLE001
        triton_version = "missing"
    dev = torch.device(device)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = f"cpu ({platform.processor() or platform.machine()}), triton interpreter"
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "device": name,
        "torch": torch.__version__,
        "triton": triton_version,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        return (sha or "unknown") + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def append_csv(path: Path, rows: Iterable[dict]) -> Path:
    """Append rows; a file with other columns is rewritten with the union of the columns."""
    rows = list(rows)
    if not rows:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    old: list[dict] = []
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            old_fields = list(reader.fieldnames or [])
            if old_fields != fields:
                old = list(reader)
                fields = list(dict.fromkeys(old_fields + fields))
            else:
                with path.open("a", newline="") as out:
                    csv.DictWriter(out, fieldnames=fields).writerows(rows)
                return path
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(old + rows)
    return path


def print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in cols))


def _fmt(v) -> str:  # noqa: ANN001
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
