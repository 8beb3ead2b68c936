"""TensorRT: the build decisions (pure Python, always tested) and the engine (needs tensorrt)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from s2i_fast.errors import EngineError
from s2i_fast.export.trt_policy import (
    fp32_reason,
    parse_buckets,
    precision_plan,
    profile_shapes,
    select_profile,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


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


def test_fp32_pins_by_name_and_type():
    assert fp32_reason("/g/enc_mru.0/conv_gate/Conv", "CONVOLUTION") == "gate logits"
    assert fp32_reason("/g/dec_mru.1/Sigmoid_1", "Sigmoid") is not None
    assert fp32_reason("/g/enc_mru.2/norm_z/gamma/Gather", "GATHER") == "norm statistics"
    assert fp32_reason("/g/dec_up.0/block/norm/Mul_1", "ELEMENTWISE") == "norm statistics"
    assert fp32_reason("/g/Tanh", "Tanh") is not None
    assert fp32_reason("/g/out_conv/Conv", "CONVOLUTION") == "output conv"
    assert fp32_reason("/Floor", "UNARY") == "pre/post-processing"
    assert fp32_reason("anything", "REDUCE") == "norm statistics"
    # the bulk of the compute stays in low precision
    assert fp32_reason("/g/enc_mru.0/conv_z/Conv", "CONVOLUTION") is None
    assert fp32_reason("/g/enc_down.1/conv/Conv", "CONVOLUTION") is None
    assert fp32_reason("/g/dec_mru.0/LeakyRelu", "Leaky_Relu") is None
    assert fp32_reason("/g/enc_mru.1/Mul_2", "ELEMENTWISE") is None


def test_precision_plan_on_an_exported_graph():
    pytest.importorskip("onnx", reason="needs the onnx package to export a graph")
    from s2i_fast.export.onnx_export import export_generator
    from s2i_fast.testing import CLASS_NAMES, STATS, make_generator

    model = export_generator(make_generator(), CLASS_NAMES, STATS, batch=None)
    nodes = [(n.name, n.op_type) for n in model.graph.node]
    plan = precision_plan(nodes)
    sigmoids = [n for n, t in nodes if t == "Sigmoid"]
    convs = [n for n, t in nodes if t == "Conv"]
    gate_convs = [n for n in convs if "conv_gate" in n]
    assert sigmoids and all(n in plan for n in sigmoids)
    assert gate_convs and all(plan[n] == "gate logits" for n in gate_convs)
    assert any(t == "Tanh" and n in plan for n, t in nodes)
    assert any("norm" in n for n in plan)
    free_convs = [n for n in convs if n not in plan]
    assert len(free_convs) >= len(convs) // 2, "most convolutions must run in fp16/bf16"


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
    assert err.count("\n") == 0 and "pip install tensorrt" in err and err.startswith("Error:")
    assert not (tmp_path / "g.plan").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt is not installed (pip install tensorrt)")
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
    for precision in ("fp32", "fp16"):
        eng = Engine.load(ckpt, backend="tensorrt", precision=precision, batch_buckets=(1, 4))
        got = eng.generate(sketches, [0, 1, 2], seed=4)  # bucket 4, padded
        diff = np.abs(got.astype(int) - want)
        assert diff.max() <= (2 if precision == "fp32" else 8), (precision, diff.max())
        with pytest.raises(EngineError, match="larger than this"):
            eng.generate(drawn_batch(5), 0, seed=0)
