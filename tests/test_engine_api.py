"""s2i_fast.Engine: one API over checkpoints and ONNX graphs, input handling, errors, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnxruntime", reason="engine parity tests need onnxruntime")

from s2i_fast import Engine  # noqa: E402
from s2i_fast.errors import BackendUnavailable, EngineError  # noqa: E402
from s2i_fast.export.onnx_export import export_generator  # noqa: E402
from s2i_fast.testing import (  # noqa: E402
    CLASS_NAMES,
    STATS,
    draw_sketch,
    drawn_batch,
    save_test_checkpoint,
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path, gen = save_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "g.pt")
    return path, gen


@pytest.fixture(scope="module")
def eng_torch(ckpt):
    return Engine.load(ckpt[0], backend="torch")


@pytest.fixture(scope="module")
def eng_ort(ckpt):
    return Engine.load(ckpt[0], backend="onnxruntime", device="cpu")


@pytest.fixture(scope="module")
def static_onnx(ckpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "b2.onnx"
    export_generator(ckpt[1], CLASS_NAMES, STATS, path, batch=2)
    return path


def _close(a: np.ndarray, b: np.ndarray, max_levels: int = 2) -> None:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.max() <= max_levels and (diff > 0).mean() <= 0.01, (diff.max(), (diff > 0).mean())


def test_properties(eng_torch, eng_ort):
    for eng in (eng_torch, eng_ort):
        assert eng.class_names == CLASS_NAMES
        assert eng.resolution == 64
    assert eng_torch.backend == "torch" and eng_ort.backend == "onnxruntime"
    assert eng_ort.device == "cpu" and eng_torch.precision == "fp32"


def test_same_seed_same_image_on_every_backend(eng_torch, eng_ort):
    sketches = drawn_batch(3)
    a = eng_torch.generate(sketches, ["cat", 1, "jack-o-lantern"], seed=11)
    b = eng_ort.generate(sketches, [0, 1, 2], seed=11)
    assert a.shape == (3, 64, 64, 3) and a.dtype == np.uint8
    _close(a, b)
    np.testing.assert_array_equal(a, eng_torch.generate(sketches, [0, 1, 2], seed=11))
    relabel = eng_torch.generate(sketches, [1, 1, 1], seed=11)
    assert np.abs(relabel[0].astype(int) - a[0]).mean() > 0.5  # the class matters


def test_seed_reaches_the_output_through_the_noise(ckpt, eng_torch):
    """generate(seed=s) is run() on make_noise(s); different seeds give different noise, and the
    generator's float output moves with it (a random-init generator's uint8 images move by only
    a few values, so the float output is where the dependence is measured)."""
    sketches = drawn_batch(3)
    labels = np.array([0, 1, 2])
    n11, n12 = eng_torch.make_noise(3, 11), eng_torch.make_noise(3, 12)
    assert n11.shape == (3, 64) and np.abs(n11 - n12).mean() > 0.5
    np.testing.assert_array_equal(eng_torch.generate(sketches, labels, seed=12),
                                  eng_torch.run(sketches, labels, n12))
    from s2i_fast.data.preprocess import normalize_sketch_uint8

    gen = ckpt[1]
    x = normalize_sketch_uint8(torch.from_numpy(sketches), STATS)
    with torch.no_grad():
        y11 = gen(x, torch.from_numpy(labels), torch.from_numpy(n11))
        y12 = gen(x, torch.from_numpy(labels), torch.from_numpy(n12))
    rel = ((y11 - y12).norm() / y11.norm()).item()
    # noise cut off anywhere -> bit-identical outputs (rel == 0); random init gives ~4e-5
    assert rel > 1e-6, rel


def test_input_forms(eng_torch):
    drawn = draw_sketch(3, size=200)  # PIL, other size
    ref = eng_torch.generate(drawn, "cat", seed=0)
    assert ref.shape == (1, 64, 64, 3)
    from s2i_fast.data.preprocess import sketch_to_uint8

    arr = sketch_to_uint8(drawn, 64)  # [H, W]
    np.testing.assert_array_equal(eng_torch.generate(arr, 0, seed=0), ref)
    np.testing.assert_array_equal(eng_torch.generate(torch.tensor(arr), 0, seed=0), ref)
    rgba = drawn.convert("RGBA")
    np.testing.assert_array_equal(eng_torch.generate([rgba], ["cat"], seed=0), ref)
    both = eng_torch.generate([drawn, arr], np.array([0, 0]), seed=0)
    assert both.shape == (2, 64, 64, 3)
    label_tensor = eng_torch.generate(arr[None, None], torch.tensor([0]), seed=0)  # [B,1,H,W]
    np.testing.assert_array_equal(label_tensor, ref)


@pytest.mark.parametrize(
    "sketches,labels,match",
    [
        (np.zeros((1, 64, 64), np.float32), 0, "must be uint8"),
        (np.zeros((1, 32, 32), np.uint8), 0, "must be 64x64"),
        (np.zeros((2, 3, 64, 64), np.uint8), 0, r"\[B, H, W\]"),
        (np.zeros((0, 64, 64), np.uint8), 0, "no sketches"),
        ([], 0, "no sketches"),
        ("sketch.png", 0, "expected a PIL image"),
        (np.zeros((1, 64, 64), np.uint8), "dog", "unknown class 'dog'"),
        (np.zeros((1, 64, 64), np.uint8), 3, "out of range"),
        (np.zeros((1, 64, 64), np.uint8), -1, "out of range"),
        (np.zeros((1, 64, 64), np.uint8), 1.5, r"name \(str\) or an id \(int\)"),
        (np.zeros((1, 64, 64), np.uint8), True, r"name \(str\) or an id \(int\)"),
        (np.zeros((3, 64, 64), np.uint8), [0, 1], "2 labels for 3 sketches"),
        (np.zeros((1, 64, 64), np.uint8), np.zeros((1, 1), np.int64), "one-dimensional"),
    ],
)
def test_bad_inputs_raise_engine_error(eng_torch, sketches, labels, match):
    with pytest.raises(EngineError, match=match):
        eng_torch.generate(sketches, labels, seed=0)


def test_bad_seed(eng_torch):
    with pytest.raises(EngineError, match="seed"):
        eng_torch.generate(np.zeros((1, 64, 64), np.uint8), 0, seed="1")


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_static_batch_graph_pads_and_limits(eng_torch, static_onnx, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="openvino is not installed")
    eng = Engine.load(static_onnx, backend=backend, precision="fp32")
    assert eng.backend == backend and eng.static_batch == 2 and eng.max_batch == 2
    one = eng.generate(drawn_batch(1), 0, seed=5)  # padded to 2, then cut back
    assert one.shape == (1, 64, 64, 3)
    _close(one, eng_torch.generate(drawn_batch(1), 0, seed=5))
    with pytest.raises(EngineError, match=f"batch 3 is larger than this {backend} engine"):
        eng.generate(drawn_batch(3), 0, seed=5)


def test_corrupt_artefacts(tmp_path, ckpt, static_onnx):
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(ckpt[0].read_bytes()[:4096])
    with pytest.raises(EngineError, match="truncated or foreign"):
        Engine.load(trunc)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(static_onnx.read_bytes()[:3000])
    with pytest.raises(EngineError, match="not a readable ONNX file"):
        Engine.load(bad_onnx)
    with pytest.raises(EngineError, match="no such file"):
        Engine.load(tmp_path / "missing.pt")
    with pytest.raises(EngineError, match="unknown backend"):
        Engine.load(ckpt[0], backend="tflite")
    with pytest.raises(EngineError, match="runs on onnxruntime, openvino or tensorrt"):
        Engine.load(static_onnx, backend="torch")
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not a plan")
    with pytest.raises(EngineError):  # missing sidecar or missing tensorrt: both one line
        Engine.load(plan)


def test_missing_backends_say_what_to_install(ckpt):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailable, match="pip install tensorrt"):
            Engine.load(ckpt[0], backend="tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA GPU"):
            Engine.load(ckpt[0], backend="torch", device="cuda")


def test_concurrent_callers_get_their_own_results(eng_ort):
    sketches = drawn_batch(4)
    expected = [eng_ort.generate(sketches[i], i % 3, seed=i) for i in range(4)]
    results: dict[tuple[int, int], np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for k in range(3):
                i = (t + k) % 4
                results[(t, k)] = eng_ort.generate(sketches[i], i % 3, seed=i)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert len(results) == 12
    for (t, k), img in results.items():
        np.testing.assert_array_equal(img, expected[(t + k) % 4])


def test_pil_image_any_mode(eng_torch):
    im = Image.new("P", (100, 80), 0)  # palette image, not square
    im.putpalette([255, 255, 255] * 256)
    out = eng_torch.generate(im, "car_(sedan)", seed=1)
    assert out.shape == (1, 64, 64, 3)
