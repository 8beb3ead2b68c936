"""bench/gpu_check.py end to end: --smoke runs its whole flow on the CPU interpreter (tests in
a pytest subprocess, generator rows, training-step rows, the CSV and markdown summary); the
real run refuses without CUDA; `pytest --gpu` fails (not skips) GPU tests without a GPU."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_smoke_runs_the_whole_flow_and_writes_csv_and_summary(tmp_path: Path) -> None:
    res = _run("bench/gpu_check.py", "--smoke", "--out-dir", str(tmp_path))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    rows = list(csv.DictReader((tmp_path / "gpu_check.csv").open()))
    by = {}
    for r in rows:
        by.setdefault(r["section"], []).append(r)
    assert set(by) == {"tests", "generator", "train"}, set(by)
    assert by["tests"][0]["passed"] == "3" and by["tests"][0]["failed"] == "0"
    gen = {(r["backend"], r["mode"]): r for r in by["generator"]}
    assert set(gen) == {("torch", "baseline"), ("triton", "replay")}
    tri = gen[("triton", "replay")]
    assert tri["launches"] == "29" and float(tri["rel_err"]) < 1e-5 and float(tri["p50_ms"]) > 0
    assert [r["impl"] for r in by["train"]] == ["ref", "triton"]
    assert all(float(r["ms_p50"]) > 0 and r["git_commit"] for r in by["train"])
    md = (tmp_path / "gpu_check.md").read_text()
    assert "SMOKE RUN" in md and "| batch-1 graph replay latency |" in md
    assert "smoke run: no verdict" in md and "NOT met" not in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_real_run_refuses_without_cuda() -> None:
    res = _run("bench/gpu_check.py", timeout=300)
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure without a GPU")
def test_demanding_the_gpu_fails_gpu_tests_instead_of_skipping() -> None:
    test = "tests/test_kernels_infer_conv.py::test_split_k_stress_inside_a_cuda_graph"
    plain = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", test, timeout=300)
    assert plain.returncode == 0 and "2 skipped" in plain.stdout, plain.stdout[-2000:]
    demanded = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", "--gpu", test, timeout=300)
    assert demanded.returncode != 0, demanded.stdout[-2000:]
    assert "GPU demanded" in demanded.stdout and "2 error" in demanded.stdout, (
        demanded.stdout[-2000:])
    env_demand = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], cwd=ROOT,
        env={**os.environ, "S2I_REQUIRE_GPU": "1"}, capture_output=True, text=True, timeout=300)
    assert env_demand.returncode != 0 and "GPU demanded" in env_demand.stdout
