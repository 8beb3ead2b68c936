"""CPU backends: openvino (fp32/bf16/fp16), int8 graphs on onnxruntime and openvino, the
quality guard at export, the precision each Engine reports, the default CPU backend and the
CPU rows of `s2i-fast bench`.

Tolerances against eager PyTorch fp32 (export/README.md, "Tolerances"):
    openvino fp32               <= 2 levels on <= 1% of values (as onnxruntime fp32)
    openvino bf16 / fp16        mean <= 1 level, max <= 12 (bf16 has an 8-bit mantissa)
    int8, either backend        the int8 quality guard's limits (engine/quality.py)
"""

from __future__ import annotations

import csv
import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="the CPU backend tests export and run ONNX graphs")

from s2i_fast import Engine  # noqa: E402
from s2i_fast.data.synth import class_names, synthesize  # noqa: E402
from s2i_fast.engine.cpu import native_bf16  # noqa: E402
from s2i_fast.engine.quality import (  # noqa: E402
    GUARD_LIMITS,
    QualityGuardError,
    check_and_write,
    compare,
    export_int8,
)
from s2i_fast.errors import EngineError  # noqa: E402
from s2i_fast.export.int8 import SketchSet, load_sketch_set, quantize_int8  # noqa: E402
from s2i_fast.export.onnx_export import export_generator  # noqa: E402
from s2i_fast.testing import STATS, make_generator  # noqa: E402

NAMES = class_names(3)
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(
    not HAVE_OPENVINO, reason="openvino is not installed (pip install 's2i-fast[openvino]')"
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small synthesized data set of the generator's three classes (6 test sketches)."""
    root = tmp_path_factory.mktemp("cpu") / "synth"
    return synthesize(root, classes=3, photos_per_class=4, sketches_per_photo=2, size=64,
                      progress=False)


@pytest.fixture(scope="module")
def gen():
    """The test generator with its last conv scaled up: images with full contrast (std ~100
    levels instead of ~8 at random init), so a quantization error shows in uint8."""
    g = make_generator(num_classes=3, seed=0)
    with torch.no_grad():
        g.out_conv.weight.mul_(20.0)
    return g


@pytest.fixture(scope="module")
def torch_ref(gen):
    return Engine.from_generator(gen, NAMES, STATS, "torch", "cpu")


@pytest.fixture(scope="module")
def test_set(data_root):
    return load_sketch_set(data_root, "test", NAMES, 64, 64, 8, seed=1)


@pytest.fixture(scope="module")
def fp32_onnx(gen, tmp_path_factory):
    path = tmp_path_factory.mktemp("cpu") / "g.onnx"
    export_generator(gen, NAMES, STATS, path, batch=None)
    return path


@pytest.fixture(scope="module")
def int8_onnx(gen, data_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("cpu") / "g-int8.onnx"
    _, reports = export_int8(gen, NAMES, STATS, path, data_root, calibration=16, test=8,
                             method="minmax")
    return path, reports


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def _run(engine, test: SketchSet) -> np.ndarray:
    return engine.run(test.sketch, test.label, test.noise)


# ---------------------------------------------------------------------- openvino
@needs_openvino
def test_openvino_fp32_matches_torch(fp32_onnx, torch_ref, test_set):
    eng = Engine.load(fp32_onnx, backend="openvino", precision="fp32")
    assert (eng.backend, eng.device, eng.precision) == ("openvino", "cpu", "fp32")
    diff = _diff(_run(eng, test_set), _run(torch_ref, test_set))
    assert diff.max() <= 2 and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())
    one = eng.run(test_set.sketch[:1], test_set.label[:1], test_set.noise[:1])  # other batch
    assert _diff(one, _run(torch_ref, test_set)[:1]).max() <= 2


@needs_openvino
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_openvino_low_precision_matches_torch(fp32_onnx, torch_ref, test_set, precision):
    if precision == "bf16" and not native_bf16():
        with pytest.raises(EngineError, match="not bf16"):
            Engine.load(fp32_onnx, backend="openvino", precision="bf16")
        return
    try:
        eng = Engine.load(fp32_onnx, backend="openvino", precision=precision)
    except EngineError as e:  # a CPU without native fp16 runs f32 and says so
        assert f"not {precision}" in str(e)
        return
    assert eng.precision == precision
    diff = _diff(_run(eng, test_set), _run(torch_ref, test_set))
    assert diff.mean() <= 1.0 and diff.max() <= 12, (diff.mean(), diff.max())
    assert diff.max() > 0  # it did not run fp32 (which matches exactly here)


@needs_openvino
def test_openvino_reports_the_precision_that_ran(fp32_onnx, tmp_path):
    """Compiles that share a cache root get one folder per configuration: OpenVINO's blob key
    leaves the precision hint out, so a shared folder made an fp32 request import an fp16
    blob. The reported precision and the images must be those of a fresh compile."""
    from s2i_fast.engine.ov import OvSession

    sketch = np.full((1, 64, 64), 255, np.uint8)
    sketch[:, 20:44, 30] = 0
    args = (sketch, np.zeros(1, np.int64), np.ones((1, 64), np.float32))
    from s2i_fast.errors import EngineError

    fresh = {}
    for p in ("fp32", "fp16"):
        try:  # a CPU without native fp16 refuses the request instead of running fp32 silently
            fresh[p] = OvSession(str(fp32_onnx), precision=p, cache=False)
        except EngineError as e:
            assert p != "fp32" and "not fp16" in str(e), e
    assert "fp32" in fresh
    for order in (("fp16", "fp32"), ("fp32", "fp16")):
        root = tmp_path / "-".join(order)
        for p in order:
            if p not in fresh:
                continue
            cached = OvSession(str(fp32_onnx), precision=p, cache=root)
            assert cached.precision == p
            np.testing.assert_array_equal(cached.run(*args), fresh[p].run(*args))
    from s2i_fast.engine.cpu import openvino_default_precision

    default = OvSession(str(fp32_onnx), cache=False)  # bf16 only where measured faster here
    assert default.precision == openvino_default_precision()
    assert default.precision == "fp32" or native_bf16()


@needs_openvino
def test_openvino_rejects_what_it_cannot_run(fp32_onnx, gen):
    with pytest.raises(EngineError, match="export it with --int8"):
        Engine.load(fp32_onnx, backend="openvino", precision="int8")
    with pytest.raises(EngineError, match="calibrated graph"):
        Engine.from_generator(gen, NAMES, STATS, "openvino", precision="int8")
    with pytest.raises(EngineError, match="runs on the CPU"):
        Engine.load(fp32_onnx, backend="openvino", device="cuda")


def test_onnxruntime_fp16_graph_on_the_cpu_runs_fp32(gen, tmp_path):
    """ONNX Runtime's x86 CPU provider has no fp16 convolutions: the fp16 graph's convs run
    in fp32 between Casts, and the Engine says so instead of claiming fp16."""
    path = tmp_path / "g16.onnx"
    export_generator(gen, NAMES, STATS, path, batch=None, precision="fp16")
    eng = Engine.load(path, backend="onnxruntime", device="cpu")
    from s2i_fast.engine.ort import OrtSession

    ran = OrtSession(path, device="cpu").precision
    assert eng.precision == ran
    if ran != "fp16":
        with pytest.raises(EngineError, match="not fp16"):
            Engine.load(path, backend="onnxruntime", device="cpu", precision="fp16")


# ---------------------------------------------------------------------- int8 and the guard
def test_int8_export_passes_the_guard_and_runs_int8(int8_onnx, torch_ref, test_set):
    path, reports = int8_onnx
    assert path.is_file() and reports and all(r.passed for r in reports)
    from s2i_fast.artefact import load_onnx

    model, meta = load_onnx(path)
    assert meta.precision == "int8" and meta.class_names == NAMES
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    want = _run(torch_ref, test_set)
    backends = ["onnxruntime"] + (["openvino"] if HAVE_OPENVINO else [])
    for backend in backends:
        eng = Engine.load(path, backend=backend)
        assert eng.precision.split("+")[0] == "int8", (backend, eng.precision)
        report = compare(backend, eng.precision, want, _run(eng, test_set), GUARD_LIMITS["int8"])
        assert report.passed, report.summary()
        assert report.max_levels > 0  # quantized: not bit-identical to fp32


def test_guard_refuses_a_broken_calibration_and_writes_nothing(gen, data_root, torch_ref,
                                                               test_set, tmp_path):
    """Calibrated on blank sketches with 50x noise, the activation ranges are wrong for real
    drawings: the guard must refuse it and leave neither the file nor a temp file."""
    good = load_sketch_set(data_root, "train", NAMES, 64, 64, 16)
    broken = SketchSet(np.full_like(good.sketch, 255), good.label, good.noise * 50)
    model = quantize_int8(export_generator(gen, NAMES, STATS, batch=None), broken)
    out = tmp_path / "bad-int8.onnx"
    with pytest.raises(QualityGuardError, match="not written") as info:
        check_and_write(model, out, torch_ref, test_set, precision="int8")
    assert "FAILED" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_export_cli_int8_and_its_errors(gen, data_root, tmp_path, capsys):
    from s2i_fast.checkpoint import make_payload, save_checkpoint
    from s2i_fast.cli import main

    ckpt = tmp_path / "g.pt"
    save_checkpoint(ckpt, make_payload(gen.cfg, NAMES, STATS, gen.state_dict()))
    out = tmp_path / "g-int8.onnx"

    def run(*argv):
        try:
            main(["export", str(ckpt), *map(str, argv)])
            code = 0
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr()

    code, res = run("--onnx", out, "--int8", "--data", data_root, "--calibration", 8,
                    "--guard-sketches", 4, "--calibration-method", "minmax", "--dynamic-batch")
    assert code == 0, res.err
    assert out.is_file() and "int8" in res.out and "quality guard: onnxruntime" in res.out
    code, res = run("--onnx", tmp_path / "x.onnx", "--int8")
    assert code == 2 and "--data" in res.err
    code, res = run("--onnx", tmp_path / "x.onnx", "--int8", "--data", data_root,
                    "--int8-keep", "nothing")
    assert code == 2 and "--int8-keep" in res.err
    assert not (tmp_path / "x.onnx").exists()
    code, res = run("--onnx", tmp_path / "g16.onnx", "--fp16", "--data", data_root,
                    "--guard-sketches", 4, "--dynamic-batch")  # fp16 is guarded too
    assert code == 0, res.err
    assert "quality guard: onnxruntime" in res.out and (tmp_path / "g16.onnx").is_file()


# ---------------------------------------------------------------------- defaults and bench
def test_default_cpu_backend_is_the_fastest_installed(tmp_path):
    from s2i_fast.engine import CPU_BACKEND_ORDER, default_cpu_backend
    from s2i_fast.engine.cpu import backend_installed
    from s2i_fast.testing import save_test_checkpoint

    expected = next(b for b in CPU_BACKEND_ORDER if backend_installed(b))
    assert default_cpu_backend() == expected
    if not torch.cuda.is_available():
        path, _ = save_test_checkpoint(tmp_path / "g.pt")
        assert Engine.load(path).backend == expected  # backend="auto"
        assert Engine.load(path, backend="torch").backend == "torch"  # a flag to choose


def test_bench_cpu_rows_with_ceilings(tmp_path, capsys):
    from s2i_fast.cli import main

    backends = "onnxruntime,onnxruntime:int8"
    if HAVE_OPENVINO:
        backends += ",openvino:fp32,openvino:int8"
    csv_path = tmp_path / "cpu.csv"
    main(["bench", "--preset", "tiny", "--num-classes", "2", "--backends", backends,
          "--batch", "1", "--warmup", "1", "--iters", "2", "--matmul-size", "256",
          "--csv", str(csv_path), "--no-progress"])
    out = capsys.readouterr().out
    assert "matmul ceilings" in out and "GFLOP per image" in out
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["backend"] for r in rows] == backends.split(",")
    for r in rows:
        want = r["backend"].partition(":")[2] or "fp32"
        assert r["precision"].split("+")[0] == want, r
        assert float(r["fraction_of_peak"]) > 0 and float(r["gflops"]) > 0
        assert float(r["ceiling_int8_gflops"]) > 0 and r["cpu_flags"] is not None
    assert float(rows[0]["speedup_vs_ort"]) == 1.0


def test_bench_fails_when_a_precision_did_not_run(gen, tmp_path, capsys):
    from s2i_fast.cli import main
    from s2i_fast.engine.ort import OrtSession

    path = tmp_path / "g16.onnx"
    export_generator(gen, NAMES, STATS, path, batch=None, precision="fp16")
    if OrtSession(path, device="cpu").precision == "fp16":
        pytest.skip("this CPU provider has fp16 convolutions")
    with pytest.raises(SystemExit) as info:  # the x86 CPU provider computes fp16 in fp32
        main(["bench", "--preset", "tiny", "--num-classes", "2", "--backends",
              "onnxruntime:fp16", "--iters", "1", "--warmup", "0", "--no-progress"])
    assert info.value.code == 1
    assert "ran" in capsys.readouterr().err
