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
    assert [(r["backend"], r["mode"]) for r in rows] == [
        ("torch", "baseline"), ("triton", "call"), ("triton", "replay")]
    assert rows[0]["precision"] == "fp32"
    tri = rows[1]
    assert tri["launches"] == "29" and float(tri["rel_err"]) < 1e-5
    assert float(tri["p50_ms"]) > 0 and tri["git_commit"] and tri["triton"]
    assert res.stdout.splitlines()[-(len(rows) + 2)].startswith("backend")  # the table is last


def test_unknown_backend_is_an_error_not_a_skip() -> None:
    res = run("bench_generator.py", "--backends", "triton,tensorrt")
    assert res.returncode == 1 and "unknown backend(s) ['tensorrt']" in res.stderr


def test_conv_bench_counts_the_generators_multiply_adds() -> None:
    """bench_conv's per-launch MAC count (its TFLOP/s numerator), summed over a traced forward,
    equals the multiply-adds of every nn.Conv2d in the reference Generator."""
    sys.path.insert(0, str(BENCH))
    from bench_conv import describe

    from s2i_fast.config import ModelConfig
    from s2i_fast.kernels.compile_check import trace_launches
    from s2i_fast.model.networks import Generator

    gen = Generator(ModelConfig(base=2, num_classes=3, noise_channels=8)).eval()
    recs = trace_launches(gen, torch.float16, 2)  # records launches, runs nothing
    ours = sum(describe(r)[2] for r in recs if r[0] == "conv")
    total = []

    def hook(mod, inp, out):  # noqa: ANN001, ANN202
        total.append(out.numel() * mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1])

    for m in gen.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        gen(torch.zeros(2, 1, 64, 64), torch.zeros(2, dtype=torch.int64), torch.zeros(2, 64))
    assert ours == sum(total)
