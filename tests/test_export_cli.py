"""`s2i-fast export` and `s2i-fast bench` end to end (in process, through s2i_fast.cli.main)."""

from __future__ import annotations

import csv
import importlib.util

import pytest

pytest.importorskip("onnxruntime", reason="the export/bench CLI tests run onnxruntime")

from s2i_fast.cli import main  # noqa: E402
from s2i_fast.testing import CLASS_NAMES, save_test_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_test_checkpoint(tmp_path_factory.mktemp("cli") / "g.pt")[0]


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_export_onnx_cli(ckpt, tmp_path, capsys):
    out = tmp_path / "g.onnx"
    code, stdout, err = _run(["export", str(ckpt), "--onnx", str(out), "--dynamic-batch"], capsys)
    assert code == 0, err
    assert out.is_file() and "wrote" in stdout and "batch dynamic" in stdout
    assert "max diff 0 levels" in stdout or "max diff 1 levels" in stdout  # verified in ORT
    from s2i_fast.artefact import load_onnx

    _, meta = load_onnx(out)
    assert meta.class_names == CLASS_NAMES and meta.batch is None


def test_export_cli_errors(ckpt, tmp_path, capsys):
    code, _, err = _run(["export", str(ckpt)], capsys)
    assert code == 2 and "--onnx" in err
    code, _, err = _run(["export", str(ckpt), "--onnx", str(tmp_path / "x.onnx"),
                         "--batch", "4", "--dynamic-batch"], capsys)
    assert code == 2 and "exclude" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    code, _, err = _run(["export", str(bad), "--onnx", str(tmp_path / "y.onnx")], capsys)
    assert code == 1 and err.startswith("Error:") and "bad.pt" in err and "Traceback" not in err
    assert not (tmp_path / "y.onnx").exists()


def test_bench_cli_writes_table_and_csv(ckpt, tmp_path, capsys):
    csv_path = tmp_path / "bench.csv"
    argv = ["bench", str(ckpt), "--backends", "torch,onnxruntime", "--batch", "1",
            "--warmup", "1", "--iters", "3", "--csv", str(csv_path), "--no-progress"]
    code, stdout, err = _run(argv, capsys)
    assert code == 0, err
    assert "onnxruntime" in stdout and "p50 ms" in stdout and "1.00x" in stdout
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["backend"] for r in rows] == ["torch", "onnxruntime"]
    for r in rows:
        assert float(r["p50_ms"]) > 0 and float(r["images_per_s"]) > 0
        assert r["batch"] == "1" and r["torch"] and r["onnxruntime"] and r["device"]
        assert r["git_commit"] != "" and r["precision"] == "fp32"
    assert float(rows[0]["speedup_vs_torch"]) == pytest.approx(1.0)
    # a second run appends, header once
    code, _, _ = _run(argv, capsys)
    assert code == 0 and len(list(csv.DictReader(csv_path.open()))) == 4


def test_bench_preset_random_weights(capsys):
    code, stdout, err = _run(["bench", "--preset", "tiny", "--num-classes", "2", "--backends",
                              "onnxruntime", "--batch", "2", "--warmup", "0", "--iters", "2",
                              "--no-progress"], capsys)
    assert code == 0, err
    assert "tiny@64 (random)" in stdout and "onnxruntime" in stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="tensorrt is installed: its missing-package error cannot happen here")
def test_bench_unavailable_backend_is_an_error(ckpt, tmp_path, capsys):
    csv_path = tmp_path / "b.csv"
    code, stdout, err = _run(["bench", str(ckpt), "--backends", "torch,tensorrt", "--iters", "1",
                              "--csv", str(csv_path), "--no-progress"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "pip install tensorrt" in err
    assert not csv_path.exists()  # nothing timed, nothing silently skipped


def test_bench_rejects_unknown_backend(capsys):
    code, _, err = _run(["bench", "--backends", "torch,tflite"], capsys)
    assert code == 2 and "tflite" in err
