"""The training-kernel benchmarks run in one command: --smoke on the CPU interpreter writes
rows; without CUDA and without --smoke they refuse with one clear line (exit 2)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="the benchmarks time Triton kernels")

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_kernel_bench_smoke_writes_rows(tmp_path):
    out = tmp_path / "k.csv"
    proc = _run("bench_kernels_train.py", "--smoke", "--ops", "gate_mask,norm_act_combine",
                "--dtype", "bf16", "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = _rows(out)
    # 2 ops x 1 level x 1 batch x 1 dtype x 2 impls x 3 modes
    assert len(rows) == 12, rows
    assert {r["impl"] for r in rows} == {"ref", "triton"}
    assert {r["mode"] for r in rows} == {"forward", "backward", "full"}
    assert all(float(r["ms_p50"]) > 0 and r["git_commit"] and r["torch"] for r in rows)


def test_train_step_bench_smoke_writes_rows(tmp_path):
    out = tmp_path / "t.csv"
    proc = _run("bench_train_step.py", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = _rows(out)
    assert [r["impl"] for r in rows] == ["ref", "triton"]
    assert all(float(r["ms_p50"]) > 0 for r in rows)


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
@pytest.mark.parametrize("script", ["bench_kernels_train.py", "bench_train_step.py"])
def test_benchmarks_refuse_without_cuda(script):
    proc = _run(script)
    assert proc.returncode == 2
    assert "needs a CUDA GPU" in proc.stderr and "--smoke" in proc.stderr
    assert "Traceback" not in proc.stderr
