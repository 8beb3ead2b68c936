"""Implicit-GEMM conv kernel (plain epilogue) vs F.conv2d, under TRITON_INTERPRET=1 on the CPU.

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

import os

import pytest
import torch

pytest.importorskip("triton")
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
    x = torch.randn(b, cin, h, w, generator=g).to(dtype)
    img = torch.randn(b, cimg, h, w, generator=g).to(dtype)
    conv_in = cin // 4 if up == "pixelshuffle" else cin
    wt = (torch.randn(cout, conv_in + cimg, 3, 3, generator=g) * 0.3).to(dtype)
    bias = torch.randn(cout, generator=g) if not norm else None
    label = torch.randint(0, 3, (b,), generator=g)
    scale = torch.rand(3, cout, generator=g) + 0.5 if norm else None
    shift = torch.randn(3, cout, generator=g) * 0.2 if norm else None

    def ref(dt: torch.dtype) -> torch.Tensor:
        xi = torch.cat([x, img], 1) if cimg else x
        return K.conv_plain_ref(xi.to(dt), wt.to(dt), None if bias is None else bias.to(dt),
                                scale, shift, label, stride, up, act)

    ref32 = ref(torch.float32)
    ho, wo = ref32.shape[2:]
    if act == "tanh":  # NCHW fp32 output, as the generator's last layer writes it
        out = torch.empty(b, cout, ho, wo)
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, bias=bias, act=act, out_nchw=True)
        got = out
    else:
        out = torch.empty(b, ho, wo, cout, dtype=dtype)
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
    table = torch.randn(4, 6, 5, 9, generator=g)  # [classes, H, W, 9]: x = table[label][..., 2:7]
    label = torch.tensor([3, 0, 3])
    wt = torch.randn(4, 5, 3, 3, generator=g)
    wide = torch.full((3, 6, 5, 11), 7.0)
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
    x = torch.randn(1, 4, 5, 6).permute(0, 2, 1, 3)  # pixels not dense rows
    with pytest.raises(ValueError, match="NHWC"):
        K.conv_nhwc(x, torch.randn(54, 2), torch.empty(1, 5, 4, 2))


@pytest.mark.parametrize("split", [3, 9])
def test_split_k_matches_and_leaves_workspace_zeroed(split: int) -> None:
    """Split-K over the taps (the batch-1 path for weight-streaming layers): partial tiles are
    atomically summed in a workspace and the last program runs the epilogue; two calls in a row
    give the same answer (the workspace and counters are reset by the kernel itself)."""
    g = torch.Generator().manual_seed(split)
    x, img = torch.randn(3, 19, 5, 7, generator=g), torch.randn(3, 1, 5, 7, generator=g)
    wt = torch.randn(10, 20, 3, 3, generator=g) * 0.3
    label = torch.tensor([0, 2, 1])
    scale, shift = torch.rand(3, 10, generator=g) + 0.5, torch.randn(3, 10, generator=g)
    ref = K.conv_plain_ref(torch.cat([x, img], 1), wt, None, scale, shift, label, act="leaky")
    for _ in range(2):
        out = torch.empty(3, 5, 7, 10)
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, image=nhwc(img), scale=scale,
                    shift=shift, label=label, act="leaky", split=split)
        assert_close(nchw(out), ref, None, torch.float32, f"split {split}")
    ws, cnt = K.split_workspace(torch.device("cpu"), 1, 1)
    assert ws.abs().max() == 0 and cnt.abs().max() == 0
    with pytest.raises(ValueError, match="split"):
        K.conv_nhwc(nhwc(x), K.weight_to_gemm(wt), out, image=nhwc(img), split=4)


CUDA_COMPILED = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") in ("", "0")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA_COMPILED, reason="needs a CUDA device and TRITON_INTERPRET=0")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("b,r,cx,co,split", [(1, 4, 576, 512, None), (8, 8, 768, 256, None),
                                             (1, 8, 768, 256, 9), (64, 64, 96, 64, None)])
def test_mru_kernels_at_paper_shapes_on_gpu(b: int, r: int, cx: int, co: int,
                                            split: int | None, dtype: torch.dtype) -> None:
    """Gate + z kernels (autotuned, or a forced split-K) at the paper generator's shapes."""
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
    x, out = torch.randn(1, 5, 4, 6), torch.empty(1, 5, 4, 2)
    with pytest.raises(ValueError, match="weights must be"):
        K.conv_nhwc(x, torch.randn(53, 2), out)
    with pytest.raises(ValueError, match="share a dtype"):
        K.conv_nhwc(x, torch.randn(54, 2, dtype=torch.float16), out)
    with pytest.raises(ValueError, match="output size"):
        K.conv_nhwc(x, torch.randn(54, 2), out, stride=2)
    with pytest.raises(ValueError, match="norm tables"):
        K.conv_nhwc(x, torch.randn(54, 2), out, scale=torch.ones(3, 5), shift=torch.ones(3, 5),
                    label=torch.zeros(1, dtype=torch.int64))
