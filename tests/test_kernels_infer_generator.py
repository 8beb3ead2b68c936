"""TritonGenerator (the whole generator on the inference kernels) vs the reference Generator in
eval mode, at a micro configuration (under TRITON_INTERPRET=1 on the CPU, or compiled on the GPU
when there is one: tests/conftest.py), its error paths, and (marked gpu) the paper preset on
CUDA.

Micro configuration: resolution 64, base 2, 3 classes, 8 noise channels: about 3.5 M
multiply-adds per image (the largest kernel call ~0.7 M), ~29 launches, a few seconds per
forward under the interpreter. Tolerances: fp32 1e-4; fp16/bf16 against the fp32 reference at
most 2x the error of the torch Generator run in that dtype + 2e-3 (fp16) / 1.6e-2 (bf16).

GPU tests run wherever torch sees a CUDA device; `pytest --gpu` fails them without one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("triton")
from _kernel_device import DEVICE, ON_GPU  # noqa: E402

from s2i_fast.config import ModelConfig  # noqa: E402
from s2i_fast.errors import BackendUnavailable, EngineError  # noqa: E402
from s2i_fast.kernels.inference import TritonGenerator  # noqa: E402
from s2i_fast.model.networks import Generator  # noqa: E402

ATOL = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def make_generator(seed: int = 0, **overrides) -> Generator:
    """A generator with random weights and random (non-trivial) CBN statistics and affines."""
    torch.manual_seed(seed)
    kw = dict(resolution=64, base=2, num_classes=3, noise_channels=8)
    kw.update(overrides)
    gen = Generator(ModelConfig(**kw)).eval()
    with torch.no_grad():
        for m in gen.modules():
            if hasattr(m, "running_var"):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.gamma.weight.normal_(1, 0.2)
                m.beta.weight.normal_(0, 0.2)
    return gen


def inputs(gen: Generator, b: int, device: str | torch.device = DEVICE, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    r = gen.cfg.resolution
    sketch = (torch.rand(b, 1, r, r, generator=g) * 2 - 1).to(device)
    label = torch.randint(0, gen.cfg.num_classes, (b,), generator=g).to(device)
    noise = torch.randn(b, gen.cfg.noise_dim, generator=g).to(device)
    return sketch, label, noise


def check(out: torch.Tensor, ref32: torch.Tensor, ref_lp: torch.Tensor | None,
          dtype: torch.dtype) -> None:
    assert out.dtype == torch.float32 and out.shape == ref32.shape
    err = (out - ref32).abs().max().item()
    if dtype == torch.float32:
        tol = 1e-4
    else:
        tol = 2 * (ref_lp.float() - ref32).abs().max().item() + ATOL[dtype]
    assert err <= tol, f"TritonGenerator {dtype}: max error {err:.3e} > tol {tol:.3e}"


@pytest.mark.parametrize("dtype,b", [(torch.float32, 2), (torch.float16, 2),
                                     (torch.bfloat16, 1)], ids=str)
def test_micro_generator_matches_reference(dtype: torch.dtype, b: int) -> None:
    gen = make_generator().to(DEVICE)
    sketch, label, noise = inputs(gen, b)
    with torch.no_grad():
        ref32 = gen(sketch, label, noise)
        ref_lp = None
        if dtype != torch.float32:
            gen_lp = make_generator().to(DEVICE, dtype)
            ref_lp = gen_lp(sketch.to(dtype), label, noise.to(dtype))
    tg = TritonGenerator.from_generator(gen, dtype=dtype, device=DEVICE)
    check(tg(sketch, label, noise), ref32, ref_lp, dtype)


def test_sketch_stem_and_pixel_shuffle() -> None:
    gen = make_generator(seed=3, base=4, stem="sketch", upsample="pixelshuffle").to(DEVICE)
    sketch, label, noise = inputs(gen, 1, seed=4)
    with torch.no_grad():
        ref = gen(sketch, label, noise)
    tg = TritonGenerator.from_generator(gen, dtype=torch.float32, device=DEVICE)
    assert tg.launches_per_forward == 30  # + the stem conv
    check(tg(sketch, label, noise), ref, None, torch.float32)


def test_launch_count_plan_reuse_and_default_noise() -> None:
    gen = make_generator()
    tg = TritonGenerator.from_generator(gen, dtype=torch.float32, device=DEVICE)
    # pyramid 1 + 4 encoder levels x 3 + noise 1 + 4 decoder levels x 3 + out MRU 2 + final 1
    assert tg.launches_per_forward == 29
    sketch, label, _ = inputs(gen, 1)
    a = tg(sketch, label)  # noise None: drawn from N(0, 1)
    assert a.shape == (1, 3, 64, 64) and torch.isfinite(a).all() and a.abs().max() <= 1
    plan = tg.plans[1]
    assert len(plan.ops) == 29 and (plan.graph is not None) == ON_GPU  # graphs on CUDA only
    assert {op.func.__name__ for op in plan.ops} == {
        "sketch_pyramid", "conv_gate_nhwc", "conv_z_nhwc", "conv_nhwc", "noise_fc"}
    assert a.data_ptr() != plan.out.data_ptr()  # the caller owns its result
    sk, lab, nz, out = tg.static_io(1)  # zero-copy path (replay(1)): same plan, same buffers
    assert out.data_ptr() == plan.out.data_ptr() and sk.data_ptr() == plan.sketch.data_ptr()


def test_same_inputs_give_the_same_bytes() -> None:
    """Same seed, same image: a second engine built from the same generator returns the bytes
    of the first (no arrival-order sums anywhere; split-K sums its slices in a fixed order)."""
    gen = make_generator(seed=5)
    sketch, label, _ = inputs(gen, 1, seed=6)
    noise = torch.randn(1, gen.cfg.noise_dim, generator=torch.Generator().manual_seed(7))
    first = TritonGenerator.from_generator(gen, dtype=torch.float16, device=DEVICE)(
        sketch, label, noise.to(DEVICE))
    again = TritonGenerator.from_generator(gen, dtype=torch.float16, device=DEVICE)(
        sketch, label, noise.to(DEVICE))
    assert torch.equal(again, first)


def test_plan_workspace_is_sized_once_from_its_launches() -> None:
    """Each plan owns a split-K workspace sized before its first launch: exactly what its
    largest split launch needs (nothing when no launch splits: always under the interpreter),
    allocated at most once, never grown by a replay."""
    gen = make_generator()
    tg = TritonGenerator.from_generator(gen, dtype=torch.float16, device=DEVICE)
    tg.prepare([2])
    plan = tg.plans[2]
    need = tg.workspace_need(plan)
    assert plan.workspace.partials.numel() == need[0]
    assert plan.workspace.counters.numel() == need[1]
    assert plan.workspace.allocations == (1 if need[0] else 0)
    if ON_GPU:
        tg.replay(2)
        torch.cuda.synchronize()
        assert plan.workspace.allocations == (1 if need[0] else 0)
        if need[1]:
            assert plan.workspace.counters.abs().max().item() == 0


def test_bad_inputs_raise_engine_error() -> None:
    gen = make_generator()
    tg = TritonGenerator.from_generator(gen, dtype=torch.float32, device=DEVICE)
    sketch, label, noise = inputs(gen, 2)
    with pytest.raises(EngineError, match="labels must be in"):
        tg(sketch, torch.tensor([0, 3]), noise)
    with pytest.raises(EngineError, match="sketch must be"):
        tg(sketch[:, :, :32, :32], label, noise)
    with pytest.raises(EngineError, match="noise must be"):
        tg(sketch, label, noise[:, :10])
    with pytest.raises(EngineError, match="dtype"):
        TritonGenerator.from_generator(gen, dtype=torch.float64, device=DEVICE)


def test_unsupported_devices_raise_backend_unavailable() -> None:
    gen = make_generator()
    with pytest.raises(BackendUnavailable, match="meta"):
        TritonGenerator.from_generator(gen, dtype=torch.float16, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="no CUDA device"):
            TritonGenerator.from_generator(gen, dtype=torch.float16, device="cuda")


def test_missing_triton_and_cpu_without_interpreter_are_clear_errors() -> None:
    """Real fresh interpreters: one where triton cannot be imported, one without
    TRITON_INTERPRET asking for the CPU."""
    code = (
        "import sys\n"
        "{block}"
        "from s2i_fast.config import ModelConfig\n"
        "from s2i_fast.model.networks import Generator\n"
        "from s2i_fast.kernels.inference import TritonGenerator\n"
        "from s2i_fast.errors import BackendUnavailable\n"
        "g = Generator(ModelConfig(base=2, num_classes=2)).eval()\n"
        "try:\n"
        "    TritonGenerator.from_generator(g, device='cpu')\n"
        "except BackendUnavailable as e:\n"
        "    print('BU:', e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    for block, want in [("sys.modules['triton'] = None\n", "pip install 's2i-fast[triton]'"),
                        ("", "TRITON_INTERPRET=1")]:
        res = subprocess.run([sys.executable, "-c", code.format(block=block)], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "BU:" in res.stdout and want in res.stdout, res.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("b", [1, 8])
def test_paper_generator_on_gpu(dtype: torch.dtype, b: int) -> None:
    """Paper preset at 64x64 in the CUDA graph vs eager fp32; torch eager in the same dtype
    sets the tolerance; the graph replay equals the un-captured launches bit for bit, replays
    repeat bit for bit, and replays allocate nothing (the split-K workspace was sized)."""
    torch.manual_seed(0)
    gen = make_generator(base=64, num_classes=10, noise_channels=64).cuda()
    sketch, label, noise = inputs(gen, b, device="cuda")
    with torch.no_grad():
        ref32 = gen(sketch, label, noise)
        gen_lp = make_generator(base=64, num_classes=10, noise_channels=64).cuda().to(dtype)
        ref_lp = gen_lp(sketch.to(dtype), label, noise.to(dtype))
    tg = TritonGenerator.from_generator(gen, dtype=dtype, device="cuda")
    out = tg(sketch, label, noise)
    check(out, ref32, ref_lp, dtype)
    plan = tg.plans[b]
    assert plan.graph is not None and tg.launches_per_forward == 29
    if b == 1:  # the deep layers at batch 1 run split-K (the tuning table's choice)
        assert plan.workspace.partials.numel() > 0
    eager = TritonGenerator.from_generator(gen, dtype=dtype, device="cuda", cuda_graph=False)
    torch.testing.assert_close(eager(sketch, label, noise), out, atol=0, rtol=0)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    replays = [tg.replay(b).clone() for _ in range(20)]
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == allocated + sum(r.numel() * 4 for r in replays)
    assert all(torch.equal(r, out) for r in replays), "replays differ: not deterministic"
    assert plan.workspace.allocations <= 1
    if plan.workspace.counters.numel():
        assert plan.workspace.counters.abs().max().item() == 0


@pytest.mark.gpu
def test_engine_triton_backend_same_seed_same_bytes(tmp_path) -> None:  # noqa: ANN001
    """The public API on the GPU: Engine.load(..., backend="triton") gives the same uint8 bytes
    for the same seed, call after call and engine after engine (split-K at batch 1 included),
    and agrees with the torch backend (fp32) within a few levels."""
    import numpy as np

    from s2i_fast import Engine
    from s2i_fast.testing import drawn_batch, save_test_checkpoint

    path, _ = save_test_checkpoint(tmp_path / "g.pt")
    sketches = drawn_batch(3)
    first = Engine.load(path, backend="triton", device="cuda", precision="fp16")
    a = first.generate(sketches, [0, 1, 2], seed=3)
    np.testing.assert_array_equal(first.generate(sketches, [0, 1, 2], seed=3), a)
    np.testing.assert_array_equal(
        Engine.load(path, backend="triton", device="cuda", precision="fp16").generate(
            sketches, [0, 1, 2], seed=3), a)
    b = Engine.load(path, backend="torch", device="cuda").generate(sketches, [0, 1, 2], seed=3)
    assert np.abs(a.astype(int) - b).max() <= 6  # fp16 vs fp32 through 29 layers


def test_gpu_lowering_compiles_for_sm90_without_a_gpu() -> None:
    """Triton's real compiler (not the interpreter) lowers the configs the paper generator runs
    on sm_90 to cubins that fit in shared memory: a split-K (SPLIT 9) MRU conv of batch 1, a
    128x128 tile of batch 64 and the pyramid kernel: what the interpreter cannot check. Fresh
    process, no TRITON_INTERPRET (the configs come from the tuning table's rule)."""
    code = (
        "import torch\n"
        "from s2i_fast.config import ModelConfig\n"
        "from s2i_fast.model.networks import Generator\n"
        "from s2i_fast.kernels.compile_check import trace_launches, compile_all\n"
        "g = Generator(ModelConfig.from_preset('paper'))\n"
        "b1, b64 = trace_launches(g, torch.float16, 1), trace_launches(g, torch.float16, 64)\n"
        "assert len(b1) == len(b64) == 29, (len(b1), len(b64))\n"
        "split = [r for r in b1 if r[0] == 'conv' and r[6].SPLIT == 9 and r[2]['EPI'] == 2]\n"
        "big = [r for r in b64 if r[0] == 'conv' and (r[6].BM, r[6].BN) == (128, 128)]\n"
        "assert split and big, 'no split-K or no 128x128 launch traced'\n"
        "rows = compile_all([b1[0], split[0], big[0]], arch=90, progress=False, jobs=3)\n"
        "assert {r['consts'].get('SPLIT', 1) for r in rows} == {1, 9}, rows\n"
        "assert any(r['consts'].get('BM') == 128 for r in rows), rows\n"
        "bad = [r for r in rows if r['error']]\n"
        "print('compiled', len(rows), 'failed', bad)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "failed []" in res.stdout, res.stdout[-3000:]
