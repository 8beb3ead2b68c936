"""ONNX export: graph checks, metadata, and ONNX Runtime parity against PyTorch.

Tolerances (documented in export/README.md):
  uint8 graph (fp32): |ORT - torch| <= 2 levels, on at most 1% of the values (the two
      only disagree where a value lands next to a rounding boundary);
  raw graph (fp32): max abs error <= 1e-4 in model space ([-1, 1]);
  fp16 graph (ORT) and bf16 graph (onnx's reference evaluator: ORT's CPU provider has no bf16
      kernels): raw error against the fp32 reference at most twice PyTorch's own error in that
      precision (the same generator cast and run eagerly) plus 1e-3; uint8 within 4 levels on
      at most 5% (fp16) or 10% (bf16) of the values. bf16 keeps 8 significant bits, so a value
      is one level off about once in twenty (PyTorch's own bf16: 4.5% of values, 1 level).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx package")
ort = pytest.importorskip("onnxruntime", reason="parity tests need onnxruntime")

from s2i_fast.artefact import load_onnx  # noqa: E402
from s2i_fast.engine.ort import OrtSession  # noqa: E402
from s2i_fast.errors import EngineError  # noqa: E402
from s2i_fast.export.onnx_export import export_generator, lower_export  # noqa: E402
from s2i_fast.export.wrappers import bake_parametrizations, prepare_generator, wrap  # noqa: E402
from s2i_fast.testing import CLASS_NAMES, STATS, drawn_batch, make_generator  # noqa: E402

RES = 64


@pytest.fixture(scope="module")
def gen():
    return make_generator(num_classes=3, seed=0)


@pytest.fixture(scope="module")
def graphs(gen, tmp_path_factory):
    """name -> path of the exported variants used below."""
    d = tmp_path_factory.mktemp("onnx")
    variants = {
        "b1": dict(batch=1),
        "b3": dict(batch=3),
        "dyn": dict(batch=None),
        "raw_dyn": dict(batch=None, raw=True),
        "fp16_dyn": dict(batch=None, precision="fp16"),
    }
    out = {}
    for name, kw in variants.items():
        out[name] = d / f"{name}.onnx"
        export_generator(gen, CLASS_NAMES, STATS, out[name], **kw)
    # the other 16-bit variants from the fp32 graphs already traced (export_generator lowers
    # the same way: fp16_dyn above goes through it)
    for name, fp32, precision in (("fp16_raw", "raw_dyn", "fp16"), ("bf16_dyn", "dyn", "bf16"),
                                  ("bf16_raw", "raw_dyn", "bf16")):
        out[name] = d / f"{name}.onnx"
        onnx.save(lower_export(onnx.load(str(out[fp32])), precision), str(out[name]))
    return out


@pytest.fixture(scope="module")
def session(graphs):
    """name -> OrtSession (CPU), created once per graph."""
    cache: dict[str, OrtSession] = {}

    def get(name: str) -> OrtSession:
        if name not in cache:
            cache[name] = OrtSession(graphs[name], device="cpu")
        return cache[name]

    return get


def _inputs(batch: int, kind: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if kind == "random":
        sketch = rng.integers(0, 256, (batch, RES, RES), dtype=np.uint8)
    else:
        sketch = drawn_batch(batch, RES, start=seed)
    label = (np.arange(batch) % 3).astype(np.int64)
    noise = torch.randn(batch, 64, generator=torch.Generator().manual_seed(seed)).numpy()
    return sketch, label, noise


def _torch_ref(gen, sketch, label, noise, raw=False, precision="fp32"):
    module = wrap(prepare_generator(gen, precision), STATS, raw=raw)
    with torch.inference_mode():
        return module(torch.from_numpy(sketch), torch.from_numpy(label),
                      torch.from_numpy(noise)).numpy()


def _to_raw(sketch):
    from s2i_fast.data.preprocess import normalize_sketch_uint8

    return normalize_sketch_uint8(torch.from_numpy(sketch), STATS).numpy()


def _assert_uint8_close(got, want, max_levels=2, max_fraction=0.01):
    assert got.dtype == np.uint8 and got.shape == want.shape
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    frac = float((diff > 0).mean())
    assert diff.max() <= max_levels and frac <= max_fraction, (
        f"{int((diff > 0).sum())} of {diff.size} values differ ({frac:.2%}), worst "
        f"{int(diff.max())} levels at {np.unravel_index(diff.argmax(), diff.shape)}"
    )


def test_graph_is_clean_and_carries_metadata(graphs):
    model, meta = load_onnx(graphs["b1"])
    onnx.checker.check_model(model, full_check=True)
    ops = {n.op_type for n in model.graph.node}
    assert "ConvTranspose" not in ops and "Conv" in ops
    # preprocessing folded in: uint8 in, uint8 out, fixed shapes
    sketch, label, noise = model.graph.input
    assert sketch.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert label.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert noise.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    out = model.graph.output[0].type.tensor_type
    assert out.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in out.shape.dim] == [1, RES, RES, 3]
    assert meta.class_names == CLASS_NAMES and meta.batch == 1 and not meta.raw
    assert meta.stats.sketch_mean == pytest.approx(STATS.sketch_mean)
    assert meta.model_config.num_classes == 3 and meta.resolution == RES


def test_dynamic_and_raw_signatures(graphs):
    model, meta = load_onnx(graphs["dyn"])
    assert meta.batch is None
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    raw, raw_meta = load_onnx(graphs["raw_dyn"])
    assert raw_meta.raw
    assert raw.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert len(raw.graph.input[0].type.tensor_type.shape.dim) == 4  # [B, 1, H, W]
    assert raw.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("kind", ["random", "drawn"])
@pytest.mark.parametrize("name,batch", [("b1", 1), ("b3", 3), ("dyn", 1), ("dyn", 3)])
def test_ort_matches_torch_uint8(gen, session, name, batch, kind):
    sketch, label, noise = _inputs(batch, kind, seed=batch)
    got = session(name).run(sketch, label, noise)
    _assert_uint8_close(got, _torch_ref(gen, sketch, label, noise))


@pytest.mark.parametrize("batch", [1, 3])
def test_ort_matches_torch_raw(gen, session, batch):
    sketch, label, noise = _inputs(batch, "drawn", seed=7)
    x = _to_raw(sketch)
    got = session("raw_dyn").run(x, label, noise)
    want = _torch_ref(gen, x, label, noise, raw=True)
    assert got.shape == (batch, 3, RES, RES)
    assert np.abs(got - want).max() <= 1e-4
    assert want.std() > 0.01  # not two constant images (random init: std ~0.03)


def _reference_run(path, sketch, label, noise):
    """onnx's own reference implementation of every op, on the CPU (slow, exact semantics)."""
    from onnx.reference import ReferenceEvaluator

    feed = {"sketch": sketch, "label": label, "noise": noise}
    return ReferenceEvaluator(str(path)).run(None, feed)[0]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_16_bit_graph_is_close_to_torch_fp32(gen, graphs, session, precision):
    sketch, label, noise = _inputs(3, "drawn", seed=3)
    x = _to_raw(sketch)
    want = _torch_ref(gen, x, label, noise, raw=True)
    own = np.abs(_torch_ref(gen, x, label, noise, raw=True, precision=precision) - want).max()
    if precision == "fp16":
        got = session("fp16_raw").run(x, label, noise)
        img = session("fp16_dyn").run(sketch, label, noise)
    else:
        got = _reference_run(graphs["bf16_raw"], x, label, noise)
        img = _reference_run(graphs["bf16_dyn"], sketch, label, noise)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 2 * own + 1e-3, (np.abs(got - want).max(), own)
    _assert_uint8_close(img, _torch_ref(gen, sketch, label, noise), max_levels=4,
                        max_fraction=0.05 if precision == "fp16" else 0.10)
    model, meta = load_onnx(graphs[f"{precision}_dyn"])
    low = {"fp16": onnx.TensorProto.FLOAT16, "bf16": onnx.TensorProto.BFLOAT16}[precision]
    assert meta.precision == precision
    assert any(t.data_type == low for t in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_bf16_graph_is_not_for_onnxruntime_cpu(graphs):
    """ONNX Runtime's CPU provider has no bf16 kernels for Conv, AveragePool, Mul, Sigmoid...:
    the bf16 graph is for TensorRT. If this starts to pass, ORT gained them: serve bf16 too."""
    with pytest.raises(EngineError, match="onnxruntime cannot load this graph"):
        OrtSession(graphs["bf16_dyn"], device="cpu")


def test_uint8_conversion_is_bit_identical_to_cast_then_permute():
    """to_uint8_hwc now permutes before the cast (TensorRT needs the Cast last); every value
    must equal the previous cast-then-permute order, boundaries and out-of-range values too."""
    from s2i_fast.data.preprocess import denormalize_photo, to_uint8_hwc

    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(3, 3, 17, 9, generator=g) * 2,  # far outside [-1, 1] too
                   torch.linspace(-1.2, 1.2, 3 * 3 * 17 * 9).view(3, 3, 17, 9)])
    v = denormalize_photo(x.float(), STATS)
    before = (v * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    after = to_uint8_hwc(x, STATS)
    assert after.dtype == torch.uint8 and after.is_contiguous()
    assert torch.equal(after, before.contiguous())


def test_static_graph_rejects_other_batch(session):
    sketch, label, noise = _inputs(3, "random")
    with pytest.raises(EngineError, match="onnxruntime rejected"):  # Engine pads smaller ones
        session("b1").run(sketch, label, noise)


def test_spectral_norm_is_baked():
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(0)
    conv = spectral_norm(torch.nn.Conv2d(3, 4, 3)).eval()
    x = torch.randn(1, 3, 8, 8)
    want = conv(x)
    baked = bake_parametrizations(conv)
    assert not hasattr(baked, "parametrizations")
    assert isinstance(baked.weight, torch.nn.Parameter)
    torch.testing.assert_close(baked(x), want)


def test_corrupt_and_foreign_onnx_files(tmp_path, graphs):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(graphs["b1"].read_bytes()[:5000])  # truncated
    with pytest.raises(EngineError, match="not a readable ONNX file"):
        load_onnx(bad)
    foreign = tmp_path / "foreign.onnx"
    model = onnx.load(str(graphs["b1"]))
    del model.metadata_props[:]
    onnx.save(model, str(foreign))
    with pytest.raises(EngineError, match="not an s2i-fast ONNX export"):
        load_onnx(foreign)
    with pytest.raises(EngineError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing.onnx")


def test_bad_export_arguments(gen):
    with pytest.raises(EngineError, match="fp32, fp16, bf16"):
        export_generator(gen, CLASS_NAMES, STATS, precision="fp8")
    with pytest.raises(EngineError, match="batch"):
        export_generator(gen, CLASS_NAMES, STATS, batch=0)


@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime's CUDA provider is not installed (pip install onnxruntime-gpu)",
)
def test_ort_cuda_provider_matches_torch(gen, graphs):
    sketch, label, noise = _inputs(3, "drawn", seed=2)
    session = OrtSession(graphs["dyn"], device="cuda")
    assert session.provider == "CUDAExecutionProvider"
    _assert_uint8_close(session.run(sketch, label, noise), _torch_ref(gen, sketch, label, noise))
