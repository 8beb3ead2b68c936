"""The benchmark scripts run end to end: --smoke (Triton interpreter, micro config, CPU) writes
its CSV rows with a correctness check, and without CUDA the real run exits 2 with a message."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
BENCH = Path(__file__).resolve().parent.parent / "bench"


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, str(BENCH / script), *args], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit; a GPU is here")
@pytest.mark.parametrize("script", ["bench_generator.py", "bench_conv.py"])
def test_without_cuda_exits_2_with_a_message(script: str) -> None:
    res = run(script)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "no CUDA device" in res.stderr and "--smoke" in res.stderr


def test_generator_bench_smoke_writes_checked_rows(tmp_path: Path) -> None:
    out = tmp_path / "generator.csv"
    res = run("bench_generator.py", "--smoke", "--csv", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(out.open()))
    assert [r["backend"] for r in rows] == ["eager-fp32", "triton"]
    tri = rows[1]
    assert tri["launches"] == "29" and float(tri["rel_err"]) < 1e-5
    assert float(tri["p50_ms"]) > 0 and tri["git_commit"] and tri["triton"]
    assert "backend" in res.stdout.splitlines()[-4]  # the table is printed last


def test_unknown_backend_is_an_error_not_a_skip() -> None:
    res = run("bench_generator.py", "--backends", "triton,tensorrt")
    assert res.returncode == 1 and "unknown backend(s) ['tensorrt']" in res.stderr
