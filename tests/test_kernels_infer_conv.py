"""Implicit-GEMM conv kernel (plain epilogue) vs F.conv2d: under TRITON_INTERPRET=1 on the CPU,
or compiled on the GPU when there is one (tests/conftest.py; inputs made on the CPU, moved).

Tolerances (documented once, used by every inference-kernel test):
- fp32: |kernel - torch| <= 1e-4 + 1e-4 * max|ref| (summation order only).
- fp16 / bf16: inputs are rounded to the dtype once; the reference is torch in fp32 on those
  rounded inputs. The kernel's max error against it may be at most 2x torch's own max error in
  that dtype (torch run in fp16/bf16 on the same inputs) + atol, atol = 1e-3 (fp16) or 8e-3
  (bf16) times max(1, max|ref|). bf16 runs with the UPCAST flag (tiles cast to fp32 before
  tl.dot: the interpreter's bf16 dot is broken, see docs/kernels.md).
Every kernel call stays under ~1e6 multiply-adds (the interpreter runs ~3e6 MAC/s).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from _kernel_device import DEVICE  # noqa: E402
from _kernels_infer_check import DTYPES, assert_close, nchw, nhwc  # noqa: E402

from s2i_fast.kernels import conv_igemm as K  # noqa: E402

# (B, Cin, H, W, Cout, stride, upsample, image channels, norm, act)
CASES = [
    (1, 3, 7, 5, 5, 1, None, 0, False, "leaky"),  # batch 1, rank-1 path, odd H/W
    (3, 19, 9, 6, 10, 1, None, 1, True, "leaky"),  # dot path + second pointer + class norm
    (2, 5, 7, 7, 6, 2, None, 0, True, "leaky"),  # stride 2 on an odd size
    (2, 20, 5, 3, 7, 1, "nearest", 0, True, "leaky"),  # nearest x2 folded into addressing
    (1, 12, 3, 5, 3, 1, "pixelshuffle", 0, True, "none"),  # pixel shuffle x2 (12 -> 3 ch)
    (2, 68, 3, 2, 5, 1, "pixelshuffle", 0, True, "leaky"),  # shuffle on the dot path (17 ch)
    (3, 17, 5, 7, 3, 1, None, 0, False, "tanh"),  # final conv: tanh
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"B{c[0]}C{c[1]}_{c[2]}x{c[3]}_{c[6]}"
                         f"_s{c[5]}_img{c[7]}")
def test_conv_plain_matches_torch(case: tuple, dtype: torch.dtype) -> None:
    b, cin, h, w, cout, stride, up, cimg, norm, act = case
    g = torch.Generator().manual_seed(CASES.index(case))
    x = torch.randn(b, cin, h, w, generator=g).to(DEVICE, dtype)
    img = torch.randn(b, cimg, h, w, generator=g).to(DEVICE, dtype)
    conv_in = cin // 4 if up == "pixelshuffle" else cin
    wt = (torch.randn(cout, conv_in + cimg, 3, 3, generator=g) * 0.3).to(DEVICE, dtype)
    bias = torch.randn(cout, generator=g).to(DEVICE) if not norm else None
    label = torch.randint(0, 3, (b,), generator=g).to(DEVICE)
    scale = (torch.rand(3, cout, generator=g) + 0.5).to(DEVICE) if norm else None
    shift = (torch.randn(3, cout, generator=g) * 0.2).to(DEVICE) if norm else None

    def ref(dt: torch.dtype) -> torch.Tensor:
        xi = torch.cat([x, img], 1) if cimg else x
        return K.conv_plain_ref(xi.to(dt), wt.to(dt), None if bias is None else bias.to(dt),
                                scale, shift, label, stride, up, act)

    ref32 = ref(torch.float32)
    ho, wo = ref32.shape[2:]
    if act == "tanh":  # NCHW fp32 output, as the generator's last layer writes it
        out = torch.empty(b, cout, ho, wo, device=DEVICE)
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, bias=bias, act=act, out_nchw=True)
        got = out
    else:
        out = torch.empty(b, ho, wo, cout, dtype=dtype, device=DEVICE)
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, image=nhwc(img) if cimg else None,
                    bias=bias, scale=scale, shift=shift, label=label, stride=stride,
                    upsample=up, act=act)
        got = nchw(out)
    assert got.shape == ref32.shape
    assert_close(got, ref32, None if dtype == torch.float32 else ref(dtype), dtype, "conv")


def test_conv_reads_and_writes_channel_slices_and_gathers_by_label() -> None:
    """Input x is a channel slice read through the label (the label-embedding stem); the
    output goes into a channel slice of a wider buffer and leaves the other channels alone."""
    g = torch.Generator().manual_seed(1)
    table = torch.randn(4, 6, 5, 9, generator=g).to(DEVICE)  # [classes, H, W, 9]
    label = torch.tensor([3, 0, 3], device=DEVICE)  # x = table[label][..., 2:7]
    wt = torch.randn(4, 5, 3, 3, generator=g).to(DEVICE)
    wide = torch.full((3, 6, 5, 11), 7.0, device=DEVICE)
    K.conv_nhwc(table[..., 2:7], K.weight_to_gemm(wt), wide[..., 3:7], label=label,
                gather_x=True)
    x = table[label][..., 2:7].permute(0, 3, 1, 2)  # [3, 5, 6, 5]
    ref = K.conv_plain_ref(x, wt)
    assert_close(nchw(wide[..., 3:7]), ref, None, torch.float32, "sliced conv")
    assert (wide[..., :3] == 7.0).all() and (wide[..., 7:] == 7.0).all()


def test_weight_to_gemm_layout() -> None:
    w = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    g = K.weight_to_gemm(w)
    assert g.shape == (27, 2)
    # row (kh*3 + kw)*Cin + c, column co
    assert g[(1 * 3 + 2) * 3 + 1, 1] == w[1, 1, 1, 2]


def test_non_nhwc_input_is_rejected() -> None:
    x = torch.randn(1, 4, 5, 6, device=DEVICE).permute(0, 2, 1, 3)  # pixels not dense rows
    with pytest.raises(ValueError, match="NHWC"):
        K.conv_nhwc(x, torch.randn(54, 2, device=DEVICE), torch.empty(1, 5, 4, 2, device=DEVICE))


def _split_case(seed: int, b: int = 3, c: int = 19, h: int = 5, w: int = 7, co: int = 10):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g).to(DEVICE)
    img = torch.randn(b, 1, h, w, generator=g).to(DEVICE)
    wt = (torch.randn(co, c + 1, 3, 3, generator=g) * 0.3).to(DEVICE)
    label = torch.randint(0, 3, (b,), generator=g).to(DEVICE)
    scale = (torch.rand(3, co, generator=g) + 0.5).to(DEVICE)
    shift = torch.randn(3, co, generator=g).to(DEVICE)
    return x, img, wt, label, scale, shift


def _conv_split(case, split: int | None, workspace=None) -> torch.Tensor:  # noqa: ANN001
    x, img, wt, label, scale, shift = case
    b, _, h, w = x.shape
    out = torch.full((b, h, w, wt.shape[0]), float("nan"), device=DEVICE)
    K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, image=nhwc(img), scale=scale, shift=shift,
                label=label, act="leaky", split=split, workspace=workspace)
    return out


@pytest.mark.parametrize("split", [3, 9])
def test_split_k_is_deterministic_and_matches_split_1(split: int) -> None:
    """Split-K over the taps (the small-batch path for weight-streaming layers): each split
    stores its partial tile in its own workspace slice and the last program sums the slices in
    a fixed order, so repeated runs are bit-identical and equal SPLIT=1 within fp32 rounding
    (another summation order); the counters are back at zero after every launch."""
    case = _split_case(split)
    x, img, wt, label, scale, shift = case
    ref = K.conv_plain_ref(torch.cat([x, img], 1), wt, None, scale, shift, label, act="leaky")
    one = _conv_split(case, 1)
    ws = K.SplitWorkspace(DEVICE)
    ws.reserve(1 << 16, 1 << 10)
    runs = [_conv_split(case, split, ws) for _ in range(3)]
    assert_close(nchw(runs[0]), ref, None, torch.float32, f"split {split}")
    for r in runs[1:]:
        assert torch.equal(r, runs[0]), f"split {split}: two runs differ (not deterministic)"
    scale_ = max(1.0, one.abs().max().item())
    assert (runs[0] - one).abs().max().item() <= 1e-5 * scale_, "split-K != SPLIT=1"
    assert ws.counters.abs().max().item() == 0, "arrival counters not reset"
    assert ws.allocations == 1, "the reserved workspace grew"
    with pytest.raises(ValueError, match="split"):
        _conv_split(case, 4)


def test_split_1_needs_no_workspace_and_a_small_one_is_refused() -> None:
    case = _split_case(5)
    ws = K.SplitWorkspace(DEVICE)  # empty: enough for SPLIT=1
    _conv_split(case, 1, ws)
    assert ws.nbytes == 0 and ws.allocations == 0
    with pytest.raises(RuntimeError, match="workspace holds 0 floats"):
        _conv_split(case, 9, ws)  # a plan's workspace is never grown by a launch


def test_forced_split_on_cuda_uses_the_gpu_tile_rule() -> None:
    """split= on CUDA picks GPU tiles (BM <= 64 for split-K), never the interpreter's table
    (BM up to 1024: out of shared memory at real shapes)."""
    from s2i_fast.kernels.conv_tuning import choose_config

    meta = dict(C1=768, C2=1, C3=0, N=256, KS=3, EPI=1, STRIDE=1, UP=0)
    for b in (1, 8, 64):
        cfg = choose_config(torch.float16, b, meta, b * 64, 256, 8, 8, split=9)
        assert cfg.SPLIT == 9 and cfg.BM * cfg.BN <= 64 * 64, cfg
        assert K.interpreter_blocks(b * 64, 256, 768)[0] >= cfg.BM


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("b,r,cx,co,split", [(1, 4, 576, 512, None), (8, 8, 768, 256, None),
                                             (1, 8, 768, 256, 9), (64, 64, 96, 64, None)])
def test_mru_kernels_at_paper_shapes_on_gpu(b: int, r: int, cx: int, co: int,
                                            split: int | None, dtype: torch.dtype) -> None:
    """Gate + z kernels (the tuning table's config, or a forced split-K) at the paper
    generator's shapes."""
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(b, cx, r, r, device=dev, generator=g).to(dtype)
    img = torch.randn(b, 1, r, r, device=dev, generator=g).to(dtype)
    wg = (torch.randn(cx + co, cx + 1, 3, 3, device=dev, generator=g) / (3 * cx**0.5)).to(dtype)
    bg = torch.randn(cx + co, device=dev, generator=g) * 0.1
    wz = (torch.randn(co, cx + 1, 3, 3, device=dev, generator=g) / (3 * cx**0.5)).to(dtype)
    ws = (torch.randn(co, cx, 1, 1, device=dev, generator=g) / cx**0.5).to(dtype)
    label = torch.randint(0, 10, (b,), device=dev, generator=g)
    sc, sh = torch.rand(10, co, device=dev) + 0.5, torch.randn(10, co, device=dev) * 0.1
    mx = torch.empty(b, r, r, cx, device=dev, dtype=dtype)
    n = torch.empty(b, r, r, co, device=dev, dtype=dtype)
    y = torch.empty(b, r, r, co, device=dev, dtype=dtype)
    K.conv_gate_nhwc(nhwc(x), nhwc(img), K.weight_to_gemm(wg), bg, mx, n, split=split)
    K.conv_z_nhwc(mx, nhwc(img), K.weight_to_gemm(wz), sc, sh, label, n, nhwc(x), y,
                  w_short=K.weight_to_gemm(ws), sscale=sc, sshift=sh, split=split)

    def ref(dt: torch.dtype) -> torch.Tensor:
        m32, n32 = K.conv_gate_ref(x.to(dt), img.to(dt), wg.to(dt), bg.to(dt))
        return K.conv_z_ref(m32, img.to(dt), wz.to(dt), sc, sh, label, n32, x.to(dt),
                            ws.to(dt), sc, sh)

    assert_close(nchw(y), ref(torch.float32), ref(dtype), dtype, "MRU on GPU")


def test_mismatched_operands_are_rejected_before_launch() -> None:
    """The kernel trusts shapes (a mismatch would read out of bounds): the launcher checks."""
    d = DEVICE
    x, out = torch.randn(1, 5, 4, 6, device=d), torch.empty(1, 5, 4, 2, device=d)
    with pytest.raises(ValueError, match="weights must be"):
        K.conv_nhwc(x, torch.randn(53, 2, device=d), out)
    with pytest.raises(ValueError, match="share a dtype"):
        K.conv_nhwc(x, torch.randn(54, 2, dtype=torch.float16, device=d), out)
    with pytest.raises(ValueError, match="output size"):
        K.conv_nhwc(x, torch.randn(54, 2, device=d), out, stride=2)
    with pytest.raises(ValueError, match="norm tables"):
        K.conv_nhwc(x, torch.randn(54, 2, device=d), out, scale=torch.ones(3, 5, device=d),
                    shift=torch.ones(3, 5, device=d),
                    label=torch.zeros(1, dtype=torch.int64, device=d))


@pytest.mark.gpu
@pytest.mark.parametrize("split", [3, 9])
def test_split_k_stress_inside_a_cuda_graph(split: int) -> None:
    """Many split-K launches sharing one workspace, captured in one CUDA graph and replayed
    many times (concurrent programs on 132 SMs: the ordering the interpreter never exercises):
    every replay bit-identical to the eager launch, equal to SPLIT=1 within fp32 rounding, the
    counters back at zero, nothing allocated by capture or replay."""
    g = torch.Generator(device="cuda").manual_seed(split)
    layers = []
    for b, r, c, co in [(1, 8, 768, 256), (1, 4, 576, 512), (2, 16, 384, 128), (8, 8, 256, 512)]:
        x = torch.randn(b, r, r, c, device="cuda", generator=g, dtype=torch.float16)
        w = (torch.randn(9 * c, co, device="cuda", generator=g) / (3 * c**0.5)).half()
        label = torch.randint(0, 10, (b,), device="cuda", generator=g)
        sc = torch.rand(10, co, device="cuda", generator=g) + 0.5
        sh = torch.randn(10, co, device="cuda", generator=g) * 0.1
        layers.append((x, w, label, sc, sh, torch.empty(b, r, r, co, device="cuda",
                                                        dtype=torch.float16)))

    def run_all(sp: int | None, ws) -> list[torch.Tensor]:  # noqa: ANN001
        for x, w, label, sc, sh, out in layers * 4:  # 16 launches, one workspace
            K.conv_nhwc(x, w, out, scale=sc, shift=sh, label=label, act="leaky", split=sp,
                        workspace=ws)
        return [layer[-1] for layer in layers]

    ref = [o.clone() for o in run_all(1, None)]
    ws = K.SplitWorkspace("cuda")
    ws.reserve(1 << 22, 1 << 14)
    eager = [o.clone() for o in run_all(split, ws)]
    for e, r in zip(eager, ref, strict=True):
        assert (e.float() - r.float()).abs().max().item() <= 2e-3 * max(1.0, r.abs().max().item())
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run_all(split, ws)  # warm-up off the default stream, as torch.cuda.graph wants
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_all(split, ws)
    torch.cuda.synchronize()
    allocated = torch.cuda.memory_allocated()
    for i in range(200):
        graph.replay()
        if i % 50 == 49:
            torch.cuda.synchronize()
            for e, (*_, out) in zip(eager, layers, strict=True):
                assert torch.equal(out, e), f"replay {i}: split-K result changed"
    assert torch.cuda.memory_allocated() == allocated
    assert ws.counters.abs().max().item() == 0 and ws.allocations == 1


@pytest.mark.gpu
def test_parallel_precompile_fills_the_cache_the_launch_reads() -> None:
    """kernels/precompile.py: a launch under collect_specializations runs nothing and records
    its specialisation; worker processes compile it; the real launch then loads the cubin from
    Triton's cache (well under the 1.5-3 s a compile takes) and computes the right answer."""
    import time

    from s2i_fast.kernels.precompile import collect_specializations, compile_parallel

    g = torch.Generator().manual_seed(11)
    c, co = 37, 23  # channel counts no other test uses: not in this process's kernel cache
    x = torch.randn(2, c, 5, 6, generator=g).to("cuda", torch.float16)
    wt = (torch.randn(co, c, 3, 3, generator=g) * 0.2).to("cuda", torch.float16)
    out = torch.full((2, 5, 6, co), float("nan"), device="cuda", dtype=torch.float16)
    with collect_specializations() as specs:
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out)
    torch.cuda.synchronize()
    assert len(specs) == 1 and out.isnan().all(), "the recorded launch ran"
    report = compile_parallel(specs, workers=1)
    assert report.kernels == 1 and not report.failed, report
    t0 = time.perf_counter()
    K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out)
    torch.cuda.synchronize()
    first_launch_s = time.perf_counter() - t0
    assert first_launch_s < 1.0, f"first launch took {first_launch_s:.2f} s: compiled again?"
    assert_close(nchw(out), K.conv_plain_ref(x.float(), wt.float()), K.conv_plain_ref(x, wt),
                 torch.float16, "precompiled conv")
