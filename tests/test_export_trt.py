"""TensorRT: the build decisions and graph rules (pure Python, always tested), the builder and
runtime against stand-in `tensorrt` modules shaped like 10.x and 11.x (tests/_fake_tensorrt.py:
the real builder cannot be installed here, so the version-adaptive code runs against fakes whose
API surface is copied from the real bindings), and the real engine where TensorRT and a GPU are
present (skipped otherwise, with the reason)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the TensorRT path builds from ONNX graphs")

from _fake_tensorrt import API, defined_api, fake_tensorrt  # noqa: E402

from s2i_fast.artefact import load_onnx, read_sidecar, sidecar_path  # noqa: E402
from s2i_fast.errors import BackendUnavailable, EngineError  # noqa: E402
from s2i_fast.export import trt_policy as policy  # noqa: E402
from s2i_fast.export.graph_rules import ONNX_TRT_OPS, check_graph  # noqa: E402
from s2i_fast.export.onnx_export import export_generator, lower_export  # noqa: E402
from s2i_fast.export.precision import lower_precision  # noqa: E402
from s2i_fast.export.trt import (  # noqa: E402
    REQUIRED_API,
    build_engine,
    has_weak_typing,
    make_logger,
)
from s2i_fast.export.trt_policy import (  # noqa: E402
    DEFAULT_BUCKETS,
    fp32_islands,
    island_counts,
    missing_islands,
    parse_buckets,
    profile_shapes,
    select_profile,
)
from s2i_fast.testing import CLASS_NAMES, STATS, make_generator  # noqa: E402

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
VERSIONS = sorted(API)  # the real bindings whose API the fakes copy: 10.0, 10.16, 11.0, 11.4
RES = 64


# ------------------------------------------------------------------ buckets and profiles
def test_parse_buckets():
    assert parse_buckets("64, 1,8,8") == [1, 8, 64]
    assert parse_buckets([256, 1]) == [1, 256]
    for bad in ("", "1,x", "0,8", [-1]):
        with pytest.raises(EngineError, match="batch buckets"):
            parse_buckets(bad)


def test_one_static_profile_per_bucket():
    profiles = profile_shapes([8, 1, 64], resolution=64, noise_dim=64)
    assert len(profiles) == 3
    assert profiles[0]["sketch"] == ((1, 64, 64),) * 3
    assert profiles[1]["label"] == ((8,),) * 3
    assert profiles[2]["noise"] == ((64, 64),) * 3
    raw = profile_shapes([2], resolution=128, noise_dim=32, raw=True)
    assert raw[0]["sketch"][0] == (2, 1, 128, 128) and raw[0]["noise"][2] == (2, 32)


def test_select_profile_picks_smallest_bucket_that_fits():
    buckets = [1, 8, 64]
    assert select_profile(buckets, 1) == (0, 1)
    assert select_profile(buckets, 2) == (1, 8)
    assert select_profile(buckets, 8) == (1, 8)
    assert select_profile(buckets, 9) == (2, 64)
    with pytest.raises(EngineError, match="batch 65 is larger than this engine allows"):
        select_profile(buckets, 65)
    with pytest.raises(EngineError):
        select_profile(buckets, 0)


# ------------------------------------------------------------------ graphs
@pytest.fixture(scope="module")
def gen():
    return make_generator(num_classes=3, seed=0)


@pytest.fixture(scope="module")
def graphs(gen):
    """(raw, precision) -> dynamic-batch ModelProto: traced once per raw in fp32 and lowered
    (what export_generator(precision=...) does, without tracing three times)."""
    out = {}
    for raw in (False, True):
        fp32 = export_generator(gen, CLASS_NAMES, STATS, batch=None, raw=raw)
        for precision in ("fp32", "fp16", "bf16"):
            out[raw, precision] = lower_export(fp32, precision)
    return out


@pytest.fixture(scope="module")
def onnx_files(graphs, tmp_path_factory):
    d = tmp_path_factory.mktemp("trt")
    paths = {}
    for (raw, precision), model in graphs.items():
        paths[raw, precision] = d / f"{'raw_' if raw else ''}{precision}.onnx"
        onnx.save(model, str(paths[raw, precision]))
    return paths


def _old_to_uint8_hwc(x, stats):
    """The post-processing before the fix: Cast to uint8, then the NHWC Transpose."""
    from s2i_fast.data.preprocess import denormalize_photo

    v = denormalize_photo(x.float(), stats)
    import torch

    return (v * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@pytest.fixture(scope="module")
def transpose_after_cast_graph(gen):
    """A graph with the old post-processing: TensorRT refuses its uint8 output."""
    import s2i_fast.export.wrappers as wrappers

    saved = wrappers.to_uint8_hwc
    wrappers.to_uint8_hwc = _old_to_uint8_hwc
    try:
        return export_generator(gen, CLASS_NAMES, STATS, batch=None)
    finally:
        wrappers.to_uint8_hwc = saved


# ------------------------------------------------------------------ precision policy
def test_fp32_islands_agree_with_module_names(graphs):
    """The structural rules find exactly what the tracer's module-scoped names say."""
    model = graphs[False, "fp32"]
    islands = fp32_islands(model)
    nodes = [(n.name, n.op_type) for n in model.graph.node]
    convs = [name for name, op in nodes if op == "Conv"]
    gate_convs = [name for name in convs if "conv_gate" in name]
    assert gate_convs and {islands.get(n) for n in gate_convs} == {policy.GATE_LOGITS}
    assert [n for n in convs if islands.get(n) == policy.GATE_LOGITS] == gate_convs
    assert [n for n in convs if islands.get(n) == policy.OUTPUT_CONV] == ["/g/out_conv/Conv"]
    assert all(islands[n] == policy.GATE_SIGMOID for n, op in nodes if op == "Sigmoid")
    assert islands["/g/Tanh"] == policy.OUTPUT_TANH
    lookups = [n for n, op in nodes if op == "Gather" and ("gamma" in n or "beta" in n)]
    assert lookups and all(islands[n] == policy.NORM_STATISTICS for n in lookups)
    outside = [n for n, op in nodes if not n.startswith("/g/") and op != "Constant"]
    assert outside and all(n in islands for n in outside), "pre/post-processing stays fp32"
    free = [n for n in convs if n not in islands]
    assert len(free) >= 2 * len(convs) // 3, "the bulk of the convolutions runs in 16 bits"
    assert not [n for n in free if "conv_gate" in n or "out_conv" in n]
    assert missing_islands(islands) == []


def test_missing_islands_are_named():
    assert missing_islands({"a": policy.GATE_SIGMOID}) != []
    assert any("output tanh" in m for m in missing_islands({}))


@pytest.mark.slow
def test_dynamo_graph_gets_the_same_islands(gen, graphs):
    """dynamo names nodes `node_conv2d_3` (no module scope): the structural policy still pins
    the same compute nodes, and its fp16 graph passes the rules and runs close to PyTorch."""
    ort = pytest.importorskip("onnxruntime")
    dyn = export_generator(gen, CLASS_NAMES, STATS, batch=None, exporter="dynamo")
    assert not any(n.name.startswith("/g/") for n in dyn.graph.node)
    ts = graphs[False, "fp32"]

    def compute_counts(model):
        from s2i_fast.export.graph_index import GraphIndex

        g = GraphIndex(model)
        islands = fp32_islands(g)
        counts = {}
        for i, n in enumerate(g.nodes):
            if n.op_type in ("Conv", "Sigmoid", "Tanh", "Gather", "Gemm") and g.has_float(i):
                key = (n.op_type, islands.get(g.keys[i], "16-bit"))
                counts[key] = counts.get(key, 0) + 1
        return counts

    assert compute_counts(dyn) == compute_counts(ts)
    low = lower_precision(dyn, "fp16")
    for b in DEFAULT_BUCKETS:
        assert check_graph(low, b) == []
    from s2i_fast.testing import drawn_batch

    sketch = drawn_batch(2, RES)
    feed = {"sketch": sketch, "label": np.array([0, 2]),
            "noise": np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)}
    run = {name: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, feed)[0] for name, m in (("low", low), ("ts", ts))}
    diff = np.abs(run["low"].astype(np.int16) - run["ts"])
    assert diff.max() <= 4 and (diff > 0).mean() <= 0.05


# ------------------------------------------------------------------ graph rules
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("raw", [False, True], ids=["uint8", "raw"])
def test_graph_rules_hold_at_every_bucket(graphs, raw, precision):
    model = graphs[raw, precision]
    for batch in DEFAULT_BUCKETS:
        assert check_graph(model, batch) == [], (precision, batch)
    if not raw:
        out = model.graph.output[0]
        producer = next(n for n in model.graph.node if out.name in n.output)
        assert out.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        assert producer.op_type == "Cast"
        sketch_users = [n.op_type for n in model.graph.node if "sketch" in n.input]
        assert sketch_users == ["Cast"]


def test_low_precision_graphs_carry_their_islands(graphs):
    counts = {}
    for precision, low in (("fp16", onnx.TensorProto.FLOAT16), ("bf16", onnx.TensorProto.BFLOAT16)):
        model = graphs[False, precision]
        types = {t.data_type for t in model.graph.initializer}
        assert low in types and onnx.TensorProto.FLOAT in types  # 16-bit weights, fp32 islands
        islands = fp32_islands(model)
        counts[precision] = {r: c for r, c in island_counts(islands).items()
                             if r != policy.FEEDS_FP32}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert sum(n.name not in islands for n in convs) == 26  # tiny: 26 of 36 convs in 16 bits
    assert model.opset_import[0].version == 22  # bf16 Conv exists from opset 22
    assert graphs[False, "fp16"].opset_import[0].version == 17
    assert counts["fp16"].keys() == counts["bf16"].keys()


def test_rules_refuse_a_uint8_output_behind_a_transpose(transpose_after_cast_graph):
    problems = check_graph(transpose_after_cast_graph, 1)
    assert any("uint8 output 'image' is produced by Transpose" in p for p in problems)
    assert any("inside the graph" in p for p in problems)


def test_rules_refuse_each_broken_rule(graphs):
    base = graphs[False, "fp32"]

    def edited(fn):
        model = onnx.ModelProto()
        model.CopyFrom(base)
        fn(model)
        return check_graph(model)

    def transpose_the_input(model):
        cast = next(n for n in model.graph.node if "sketch" in n.input)
        cast.input[0] = "sketch_t"
        model.graph.node.insert(0, onnx.helper.make_node(
            "Transpose", ["sketch"], ["sketch_t"], perm=[0, 1, 2], name="t"))

    problems = edited(transpose_the_input)
    assert any("uint8 input 'sketch' feeds Transpose 't'" in p for p in problems)

    def add_unsupported_op(model):
        tanh = next(n for n in model.graph.node if n.op_type == "Tanh")
        model.graph.node.append(onnx.helper.make_node("Det", [tanh.output[0]], ["d"], name="det"))

    assert any("Det 'det' is not in onnx-tensorrt's operator support matrix" in p
               for p in edited(add_unsupported_op))

    def new_opset(model):
        model.opset_import[0].version = 25

    assert any("opset 25 is outside" in p for p in edited(new_opset))
    no_islands = lower_precision(base, "fp16", islands={})  # everything in fp16
    problems = check_graph(no_islands)
    assert any("Sigmoid" in p and "(gate sigmoid)" in p and "expected FLOAT" in p
               for p in problems)
    assert any("(output conv)" in p for p in problems)


def test_support_matrix_covers_the_exported_ops(graphs):
    ops = {n.op_type for model in graphs.values() for n in model.graph.node}
    assert ops <= set(ONNX_TRT_OPS)
    assert "UINT8" in ONNX_TRT_OPS["Cast"] and "UINT8" not in ONNX_TRT_OPS["Transpose"]
    assert "Det" not in ONNX_TRT_OPS and "BF16" in ONNX_TRT_OPS["Conv"]


# ------------------------------------------------------------------ the fakes are real-shaped
@pytest.mark.parametrize("version", VERSIONS)
def test_fake_defines_only_real_api(version):
    real = API[version]["classes"]
    for cls, attrs in defined_api(fake_tensorrt(version)).items():
        extra = sorted(set(attrs) - set(real[cls]))
        assert not extra, f"the fake's {cls} has {extra}, the real {version} one does not"


@pytest.mark.parametrize("version", VERSIONS)
def test_required_api_exists_in_every_supported_version(version):
    real = API[version]
    for owner, attr in REQUIRED_API:
        names = real["classes"].get(owner) or list(real["enums"].get(owner, {}))
        assert attr in names, f"{owner}.{attr} missing in TensorRT {version}"
    weak = "FP16" in real["enums"]["BuilderFlag"]
    assert weak == version.startswith("10.")
    assert has_weak_typing(fake_tensorrt(version)) == weak


# ------------------------------------------------------------------ builder (fake tensorrt)
def _install(monkeypatch, **kwargs):
    trt = fake_tensorrt(**kwargs)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def _notices():
    seen: list[str] = []
    return seen, seen.append


@pytest.mark.parametrize("version", VERSIONS)
def test_build_is_strongly_typed_without_precision_flags(monkeypatch, tmp_path, onnx_files,
                                                         version):
    trt = _install(monkeypatch, version=version)
    src = onnx_files[False, "fp32"]
    _, meta = load_onnx(src)
    plan = tmp_path / "g.plan"
    seen, notice = _notices()
    side = build_engine(src, plan, meta, precision="fp16", buckets=(1, 4), notice=notice)
    (flags,) = [v for k, v in trt.calls if k == "create_network"]
    if version.startswith("10."):
        assert flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:
        assert flags == 0  # 11.x: always strongly typed; the flag is a deprecated no-op
    assert not [v for k, v in trt.calls if k == "set_flag"]  # no FP16/BF16/OBEY_* anywhere
    (parsed,) = [v for k, v in trt.calls if k == "parse"]
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in parsed.graph.initializer)
    assert check_graph(parsed, 4) == []  # the builder parsed the lowered, rule-abiding graph
    meta2, buckets, precision = read_sidecar(plan)
    assert (buckets, precision, meta2.precision) == ([1, 4], "fp16", "fp16")
    assert side["tensorrt"] == version and side["fp32_layers"]
    assert set(side["fp32_layers"].values()) >= {policy.GATE_LOGITS, policy.OUTPUT_TANH}
    assert seen == []


def test_fp32_build_turns_tf32_off(monkeypatch, tmp_path, onnx_files):
    trt = _install(monkeypatch, version="11.4.0.106")
    src = onnx_files[True, "fp32"]
    build_engine(src, tmp_path / "g.plan", load_onnx(src)[1], precision="fp32", buckets=[2])
    assert ("clear_flag", "TF32") in trt.calls
    (flags_at_build,) = [v for k, v in trt.calls if k == "build"]
    assert "TF32" not in flags_at_build


def test_timing_cache_mismatch_and_corruption_start_fresh(monkeypatch, tmp_path, onnx_files):
    src = onnx_files[False, "fp16"]
    meta = load_onnx(src)[1]
    cache = tmp_path / "g.plan.cache"
    cache.write_bytes(b"FAKECACHE:gpu-B:5")  # made on another GPU
    _install(monkeypatch, gpu="gpu-A")
    seen, notice = _notices()
    build_engine(src, tmp_path / "g.plan", meta, precision="fp16", buckets=[1],
                 timing_cache=cache, notice=notice)
    assert len(seen) == 1 and "another GPU" in seen[0] and "\n" not in seen[0]
    assert cache.read_bytes() == b"FAKECACHE:gpu-A:1"
    seen.clear()
    build_engine(src, tmp_path / "g.plan", meta, precision="fp16", buckets=[1],
                 timing_cache=cache, notice=notice)
    assert seen == [] and cache.read_bytes() == b"FAKECACHE:gpu-A:2"  # reused, no notice
    cache.write_bytes(b"\x00garbage")
    build_engine(src, tmp_path / "g.plan", meta, precision="fp16", buckets=[1],
                 timing_cache=cache, notice=notice)
    assert len(seen) == 1 and "unreadable" in seen[0]
    assert cache.read_bytes() == b"FAKECACHE:gpu-A:1"


@pytest.mark.parametrize("failure", ["parse_error", "build_error"])
def test_tensorrt_failures_are_one_line_and_write_nothing(monkeypatch, tmp_path, onnx_files,
                                                          failure):
    _install(monkeypatch, **{failure: "Assertion failed: kernel weights are not initializers"})
    src = onnx_files[False, "fp32"]
    plan = tmp_path / "g.plan"
    with pytest.raises(EngineError) as info:
        build_engine(src, plan, load_onnx(src)[1], precision="bf16", buckets=[1],
                     timing_cache=tmp_path / "c")
    msg = str(info.value)
    assert "\n" not in msg and "kernel weights are not initializers" in msg
    assert not plan.exists() and not sidecar_path(plan).exists() and not (tmp_path / "c").exists()


def test_bad_graph_is_refused_before_tensorrt_is_called(monkeypatch, tmp_path,
                                                        transpose_after_cast_graph):
    trt = _install(monkeypatch)
    src = tmp_path / "old.onnx"
    onnx.save(transpose_after_cast_graph, str(src))
    with pytest.raises(EngineError, match="TensorRT cannot build this graph: uint8 output"):
        build_engine(src, tmp_path / "g.plan", load_onnx(src)[1], precision="fp32")
    assert trt.calls == [] and not (tmp_path / "g.plan").exists()


def test_mismatched_graph_precision_is_refused(monkeypatch, tmp_path, onnx_files):
    _install(monkeypatch)
    src = onnx_files[False, "fp16"]
    with pytest.raises(EngineError, match="is a fp16 graph"):
        build_engine(src, tmp_path / "g.plan", load_onnx(src)[1], precision="bf16")


def test_tensorrt_without_a_needed_api_is_refused(monkeypatch):
    from s2i_fast.export.trt import require_tensorrt

    trt = _install(monkeypatch, version="10.0.1")
    del trt.ICudaEngine.get_tensor_dtype
    with pytest.raises(BackendUnavailable, match="lacks ICudaEngine.get_tensor_dtype"):
        require_tensorrt()


# ------------------------------------------------------------------ runtime (fake tensorrt)
def _runner(monkeypatch, tmp_path, onnx_files, buckets=(1, 4), **kwargs):
    import torch

    from s2i_fast.engine.trt import TrtRunner, deserialize

    trt = _install(monkeypatch, **kwargs)
    src = onnx_files[False, "fp32"]
    plan = tmp_path / "g.plan"
    build_engine(src, plan, load_onnx(src)[1], precision="fp16", buckets=buckets)
    meta, buckets, precision = read_sidecar(plan)
    logger = make_logger(trt)
    engine = deserialize(trt, trt.Runtime(logger), plan.read_bytes(), logger, str(plan))
    return trt, TrtRunner.from_engine(trt, engine, meta, buckets, precision, torch.device("cpu"))


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_runner_pads_to_the_bucket_and_returns_the_request(monkeypatch, tmp_path, onnx_files,
                                                            version):
    import torch

    trt, runner = _runner(monkeypatch, tmp_path, onnx_files, version=version)
    assert runner.io["label"].dtype == torch.int64 and runner.io["image"].dtype == torch.uint8
    rng = np.random.default_rng(0)
    sketch = rng.integers(0, 256, (3, RES, RES), dtype=np.uint8)
    label = np.array([0, 2, 1], dtype=np.int64)
    noise = rng.standard_normal((3, 64)).astype(np.float32)
    out = runner.run(sketch, label, noise)
    assert out.shape == (3, RES, RES, 3) and out.dtype == np.uint8
    want = (7 * label + sketch[:, 0, 0].astype(np.int64)) % 256
    assert (out == want[:, None, None, None]).all()
    (shapes,) = [v for k, v in trt.calls if k == "execute_async_v3"]
    assert shapes["sketch"] == (4, RES, RES) and shapes["label"] == (4,)  # padded to bucket 4
    runner.run(sketch[:1], label[:1], noise[:1])
    assert [v for k, v in trt.calls if k == "set_optimization_profile_async"] == [1, 0]


def test_runner_checks_engine_dtypes(monkeypatch, tmp_path, onnx_files):
    with pytest.raises(EngineError, match="'label' is torch.int32, expected torch.int64"):
        _runner(monkeypatch, tmp_path, onnx_files, bad_dtype="label:INT32")


def test_runner_checks_every_set_result(monkeypatch, tmp_path, onnx_files):
    _, runner = _runner(monkeypatch, tmp_path, onnx_files)
    runner.context.set_input_shape = lambda name, shape: False
    with pytest.raises(EngineError, match=r"set_input_shape\('sketch', \(1, 64, 64\)\) failed"):
        runner.run(np.zeros((1, RES, RES), np.uint8), np.zeros(1, np.int64),
                   np.zeros((1, 64), np.float32))
    _, runner = _runner(monkeypatch, tmp_path, onnx_files)
    runner.context.execute_async_v3 = lambda stream: False
    with pytest.raises(EngineError, match="execute_async_v3 failed"):
        runner.run(np.zeros((1, RES, RES), np.uint8), np.zeros(1, np.int64),
                   np.zeros((1, 64), np.float32))


def test_corrupt_plan_is_one_line(monkeypatch):
    from s2i_fast.engine.trt import deserialize

    trt = _install(monkeypatch, version="11.4.0.106")
    logger = make_logger(trt)
    with pytest.raises(EngineError) as info:
        deserialize(trt, trt.Runtime(logger), b"\x00not a plan", logger, "g.plan")
    assert "\n" not in str(info.value) and "rebuild it" in str(info.value)


# ------------------------------------------------------------------ command line
def test_export_trt_command_with_fake_tensorrt(monkeypatch, tmp_path, capsys):
    from s2i_fast.cli import main
    from s2i_fast.testing import save_test_checkpoint

    _install(monkeypatch, version="11.4.0.106")
    ckpt, _ = save_test_checkpoint(tmp_path / "g.pt")
    plan = tmp_path / "g.plan"
    code = 0
    try:
        main(["export", str(ckpt), "--trt", str(plan), "--precision", "bf16",
              "--batch-buckets", "1,8"])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    assert code in (0, None), out.err
    assert "TensorRT 11.4.0.106" in out.out and "fp32 islands" in out.out
    assert read_sidecar(plan)[1:] == ([1, 8], "bf16")
    assert (tmp_path / "g.plan.cache").is_file()


def test_export_trt_command_refuses_a_bad_graph(monkeypatch, tmp_path, capsys):
    import s2i_fast.export.wrappers as wrappers
    from s2i_fast.cli import main
    from s2i_fast.testing import save_test_checkpoint

    _install(monkeypatch)
    monkeypatch.setattr(wrappers, "to_uint8_hwc", _old_to_uint8_hwc)
    ckpt, _ = save_test_checkpoint(tmp_path / "g.pt")
    with pytest.raises(SystemExit) as info:
        main(["export", str(ckpt), "--trt", str(tmp_path / "g.plan")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 1 and err.count("\n") == 0 and err.startswith("Error:")
    assert "TensorRT cannot build this graph: uint8 output 'image'" in err
    assert not (tmp_path / "g.plan").exists()


def test_missing_tensorrt_is_one_clear_line(tmp_path, capsys):
    if HAVE_TRT:
        pytest.skip("tensorrt is installed here: the missing-package path cannot be exercised")
    from s2i_fast.cli import main
    from s2i_fast.testing import save_test_checkpoint

    ckpt, _ = save_test_checkpoint(tmp_path / "g.pt")
    with pytest.raises(SystemExit) as info:
        main(["export", str(ckpt), "--trt", str(tmp_path / "g.plan")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s2i-fast[tensorrt]" in err and err.startswith("Error:")
    assert "10.x or 11.x" in err
    assert not (tmp_path / "g.plan").exists()


# ------------------------------------------------------------------ the real engine (GPU)
@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not installed (pip install "
                    "'s2i-fast[tensorrt]' on a machine with an NVIDIA GPU)")
def test_trt_engine_matches_torch(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("TensorRT engines need a CUDA GPU; none is visible")
    from s2i_fast import Engine
    from s2i_fast.testing import drawn_batch, save_test_checkpoint

    ckpt, _ = save_test_checkpoint(tmp_path / "g.pt")
    ref = Engine.load(ckpt, backend="torch", device="cuda")
    sketches = drawn_batch(3)
    want = ref.generate(sketches, [0, 1, 2], seed=4)
    for precision, levels in (("fp32", 2), ("fp16", 8), ("bf16", 8)):
        eng = Engine.load(ckpt, backend="tensorrt", precision=precision, batch_buckets=(1, 4))
        assert eng.precision == precision
        got = eng.generate(sketches, [0, 1, 2], seed=4)  # bucket 4, padded
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= levels, (precision, diff.max())
        with pytest.raises(EngineError, match="larger than this"):
            eng.generate(drawn_batch(5), 0, seed=0)
