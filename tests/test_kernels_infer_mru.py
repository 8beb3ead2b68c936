"""MRU epilogues (gate, z + shortcut + combine), sketch pyramid, noise linear and norm folding
vs their torch references, and one whole MRU block vs s2i_fast.model.mru.MRU in eval mode.
Interpreter on the CPU, or compiled on the GPU when there is one (tests/conftest.py);
tolerances as documented in test_kernels_infer_conv.py (fp32 1e-4; fp16/bf16: at most 2x
torch's own error in that dtype + atol, against an fp32 reference)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")
from _kernel_device import DEVICE  # noqa: E402
from _kernels_infer_check import DTYPES, assert_close, nchw, nhwc  # noqa: E402

from s2i_fast.kernels import conv_igemm as K  # noqa: E402
from s2i_fast.kernels import infer_aux as A  # noqa: E402
from s2i_fast.model.mru import MRU  # noqa: E402
from s2i_fast.model.norm import ConditionalBatchNorm2d  # noqa: E402


def _tables(g: torch.Generator, classes: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    return ((torch.rand(classes, c, generator=g) + 0.5).to(DEVICE),
            (torch.randn(classes, c, generator=g) * 0.3).to(DEVICE))


def _on(*ts: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(DEVICE) for t in ts]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("b,cx,co,h,w,split", [(1, 3, 5, 7, 5, None), (3, 18, 7, 5, 6, None),
                                               (2, 17, 6, 3, 5, 9)])
def test_gate_epilogue(b: int, cx: int, co: int, h: int, w: int, split: int | None,
                       dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(cx)
    x = torch.randn(b, cx, h, w, generator=g).to(dtype)
    img = torch.randn(b, 1, h, w, generator=g).to(dtype)
    wt = (torch.randn(cx + co, cx + 1, 3, 3, generator=g) * 0.3).to(dtype)
    bias = torch.randn(cx + co, generator=g)
    x, img, wt, bias = _on(x, img, wt, bias)
    mx = torch.empty(b, h, w, cx, dtype=dtype, device=DEVICE)
    n = torch.empty(b, h, w, co, dtype=dtype, device=DEVICE)
    K.conv_gate_nhwc(nhwc(x), nhwc(img), K.weight_to_gemm(wt), bias, mx, n, split=split)
    mx32, n32 = K.conv_gate_ref(x.float(), img.float(), wt.float(), bias)
    lp = None if dtype == torch.float32 else K.conv_gate_ref(x, img, wt, bias.to(dtype))
    assert_close(nchw(mx), mx32, None if lp is None else lp[0], dtype, "m*x")
    assert_close(nchw(n), n32, None if lp is None else lp[1], dtype, "n")


# (B, Cx, Co, H, W, shortcut: "identity" | "conv" | "conv_gather", split-K)
Z_CASES = [(1, 5, 5, 7, 5, "identity", None), (3, 6, 18, 5, 3, "conv", None),
           (2, 1, 4, 5, 7, "conv_gather", None), (2, 20, 6, 3, 5, "conv", None),
           (1, 17, 9, 3, 3, "conv", 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", Z_CASES,
                         ids=lambda c: f"B{c[0]}_{c[1]}to{c[2]}_{c[5]}_split{c[6]}")
def test_z_epilogue(case: tuple, dtype: torch.dtype) -> None:
    b, cx, co, h, w, short, split = case
    g = torch.Generator().manual_seed(Z_CASES.index(case))
    label = torch.randint(0, 3, (b,), generator=g).to(DEVICE)
    mx = torch.randn(b, cx, h, w, generator=g).to(DEVICE, dtype)
    img = torch.randn(b, 1, h, w, generator=g).to(DEVICE, dtype)
    n = torch.rand(b, co, h, w, generator=g).to(DEVICE, dtype)
    x_table = torch.randn(3, cx, h, w, generator=g).to(DEVICE, dtype)  # gathered by label
    x = x_table[label] if short == "conv_gather" else torch.randn(b, cx, h, w, generator=g).to(
        DEVICE, dtype)
    wt = (torch.randn(co, cx + 1, 3, 3, generator=g) * 0.3).to(DEVICE, dtype)
    scale, shift = _tables(g, 3, co)
    ws, ss, sh = None, None, None
    if short != "identity":
        ws = (torch.randn(co, cx, 1, 1, generator=g) * 0.5).to(DEVICE, dtype)
        ss, sh = _tables(g, 3, co)
    out = torch.empty(b, h, w, co, dtype=dtype, device=DEVICE)
    x_in = nhwc(x_table) if short == "conv_gather" else nhwc(x)
    K.conv_z_nhwc(nhwc(mx), nhwc(img), K.weight_to_gemm(wt), scale, shift, label, nhwc(n), x_in,
                  out, w_short=None if ws is None else K.weight_to_gemm(ws), sscale=ss,
                  sshift=sh, slope=0.2, gather_sc=short == "conv_gather", split=split)

    def ref(dt: torch.dtype) -> torch.Tensor:
        return K.conv_z_ref(mx.to(dt), img.to(dt), wt.to(dt), scale, shift, label, n.to(dt),
                            x.to(dt), None if ws is None else ws.to(dt), ss, sh, 0.2)

    assert_close(nchw(out), ref(torch.float32), None if dtype == torch.float32 else ref(dtype),
                 dtype, "y")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mru_block_matches_module(dtype: torch.dtype) -> None:
    """gate + z kernels with folded CBN tables == the MRU module in eval mode."""
    torch.manual_seed(0)
    cx, co, classes = 6, 9, 4
    mru = MRU(cx, 1, co, lambda c: ConditionalBatchNorm2d(c, classes)).eval().to(DEVICE)
    with torch.no_grad():
        for m in (mru.norm_z, mru.norm_short):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
            m.gamma.weight.normal_(1, 0.2)
            m.beta.weight.normal_(0, 0.2)
    b, h, w = 2, 7, 5
    x, img = _on(torch.randn(b, cx, h, w), torch.randn(b, 1, h, w))
    label = torch.tensor([3, 1], device=DEVICE)
    with torch.no_grad():
        ref32 = mru(x.to(dtype).float(), img.to(dtype).float(), label)
        ref_lp = None if dtype == torch.float32 else mru.to(dtype)(x.to(dtype), img.to(dtype),
                                                                     label)
        mru.float()

    def fold(norm: ConditionalBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        return K.fold_norm_ref(norm.gamma.weight, norm.beta.weight, norm.running_mean,
                               norm.running_var, norm.eps)

    mx = torch.empty(b, h, w, cx, dtype=dtype, device=DEVICE)
    n = torch.empty(b, h, w, co, dtype=dtype, device=DEVICE)
    out = torch.empty(b, h, w, co, dtype=dtype, device=DEVICE)
    xh, ih = nhwc(x.to(dtype)), nhwc(img.to(dtype))
    K.conv_gate_nhwc(xh, ih, K.weight_to_gemm(mru.conv_gate.weight, dtype),
                     mru.conv_gate.bias.detach(), mx, n)
    (zs, zh), (ss, sh) = fold(mru.norm_z), fold(mru.norm_short)
    K.conv_z_nhwc(mx, ih, K.weight_to_gemm(mru.conv_z.weight, dtype), zs, zh, label, n, xh, out,
                  w_short=K.weight_to_gemm(mru.conv_short.weight, dtype), sscale=ss, sshift=sh)
    assert_close(nchw(out), ref32, ref_lp, dtype, "MRU block")


def test_fold_norm_matches_cbn_eval() -> None:
    torch.manual_seed(1)
    cbn = ConditionalBatchNorm2d(5, 3).eval()
    with torch.no_grad():
        cbn.running_mean.normal_()
        cbn.running_var.uniform_(0.2, 3)
        cbn.gamma.weight.normal_()
        cbn.beta.weight.normal_()
    x, label = torch.randn(4, 5, 3, 3), torch.tensor([0, 2, 1, 2])
    scale, shift = K.fold_norm_ref(cbn.gamma.weight, cbn.beta.weight, cbn.running_mean,
                                   cbn.running_var, cbn.eps)
    with torch.no_grad():
        want = cbn(x, label)
    got = x * scale[label][:, :, None, None] + shift[label][:, :, None, None]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("res,b", [(16, 3), (64, 1)])
def test_sketch_pyramid(res: int, b: int, dtype: torch.dtype) -> None:
    sketch = torch.randn(b, 1, res, res, generator=torch.Generator().manual_seed(res)).to(DEVICE)
    flat = torch.full((A.pyramid_size(b, res),), float("nan"), dtype=dtype, device=DEVICE)
    views = A.sketch_pyramid(sketch, flat)
    assert not flat.isnan().any(), "pyramid left part of its buffer unwritten"
    ref = A.sketch_pyramid_ref(sketch)
    assert sorted(views) == sorted(ref) == sorted(A.pyramid_levels(res))
    for r, v in views.items():
        ref_lp = None if dtype == torch.float32 else A.sketch_pyramid_ref(sketch.to(dtype))[r]
        assert_close(nchw(v), ref[r], ref_lp, dtype, f"pyramid level {r}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_noise_fc_writes_its_channel_slice(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    nd, nc, b, c0 = 20, 6, 3, 5
    weight, bias = torch.randn(nc * 16, nd, generator=g) * 0.3, torch.randn(nc * 16, generator=g)
    noise = torch.randn(b, nd, generator=g)
    weight, bias, noise = _on(weight, bias, noise)
    bott = torch.full((b, 4, 4, c0 + nc), 9.0, dtype=dtype, device=DEVICE)
    w2, b2 = A.noise_fc_weight(weight, bias, nc, dtype)
    A.noise_fc(noise, w2, b2, bott[..., c0:])
    ref32 = A.noise_fc_ref(noise, weight.to(dtype).float(), bias, nc)
    ref_lp = None if dtype == torch.float32 else A.noise_fc_ref(
        noise.to(dtype), weight.to(dtype), bias.to(dtype), nc)
    assert_close(nchw(bott[..., c0:]), ref32, ref_lp, dtype, "noise fc")
    assert (bott[..., :c0] == 9.0).all()
