"""Implicit-GEMM 3x3 convolution in Triton (NHWC) with the MRU's math in its epilogue.

Inference path of docs/kernels.md. One kernel, ``_conv_kernel``, computes

    acc[p, n] = sum_{tap, c} in1[p @ tap, c] * W[tap, c, n] + sum_{tap, c} in2[p @ tap, c] * W[...]

for output pixels p (rows, B*Ho*Wo of them) and output channels n, reading its input through
two pointers (x and the sketch/image: no concat in memory), fp16/bf16/fp32 operands and fp32
accumulation. Padding is 1 for 3x3 (0 for 1x1). The input address of a tap can be strided
(stride 2 down convs) or upsampled (nearest x2: read at (h//2, w//2); pixel shuffle x2: read
channel 4c + parity), so the upsampled tensor never exists in memory. Epilogues (EPI):

    0 plain: v = act(norm(acc + bias))                  norm = per-class folded affine
    1 gate:  g = sigmoid(acc + bias); channels < Cx write m*x, channels >= Cx write n
    2 z:     z = leaky(norm(acc)); s = x or norm_s(conv1x1(x)) (an extra accumulator);
             y = (1 - n) * s + n * z

Main loop: wide sources run one flat loop over (tap, channel chunk) with tl.dot on [BM, BK] x
[BK, BN] tiles (a single loop Triton can software-pipeline); narrow ones (< 16 channels: the
sketch, the stem) do rank-1 fp32 updates per tap instead of a zero-padded dot. Split-K (SPLIT
= 3 or 9 programs per output tile, each a share of the taps) is for the deep layers at small
batch, whose few output tiles would otherwise leave most SMs idle while streaming weights:
each program stores its fp32 partial tile in its own workspace slice, an arrival counter
elects the last program, which sums the SPLIT slices in the fixed order k = 0..SPLIT-1, resets
the counter and runs the epilogue. The sum does not depend on which program came last, so the
output is bit-identical run to run (no extra launch; safe to replay in a CUDA graph). Block
sizes and SPLIT come from the sm_90 tuning table or its heuristic on the GPU and from a fixed
table under the interpreter (``conv_tuning.select_config``).

"folded norm": conditional batch norm from running statistics, scale[k, c] = gamma[k, c] *
rsqrt(var[c] + eps), shift[k, c] = beta[k, c] - mean[c] * scale[k, c], gathered per sample
with its class label k. The plain-torch references at the bottom (``*_ref``, NCHW) are the
specification the tests hold the kernel to.

Tensors are NHWC views: a channel slice ``buf[..., a:b]`` of a wider buffer is allowed
(decoder skip concat without a copy), pixels must be dense rows of the buffer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from s2i_fast.kernels._triton_utils import interpreting
from s2i_fast.kernels.conv_tuning import (
    RANK1_BELOW,
    ConvConfig,
    SplitWorkspace,
    choose_config,
    interpreter_blocks,
    no_workspace,
    select_config,
    shared_workspace,
    split_need,
)

EPI_PLAIN, EPI_GATE, EPI_Z = 0, 1, 2
ACTS = {"none": 0, "leaky": 1, "tanh": 2}
UPS = {None: 0, "nearest": 1, "pixelshuffle": 2}


@triton.jit
def _cast_out(v, ptr, FIX_BF16: tl.constexpr):
    """v (fp32) in the element type of ptr. FIX_BF16: the interpreter truncates fp32 -> bf16
    (the GPU rounds to nearest even): round the fp32 bits to nearest even by hand first."""
    if FIX_BF16:
        if ptr.dtype.element_ty == tl.bfloat16:
            bits = v.to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            v = bits.to(tl.float32, bitcast=True)
    return v.to(ptr.dtype.element_ty)


@triton.jit
def _tap(tap, ho, wo, mask_m, zero_m, Hin, Win, Ho, Wo, KS: tl.constexpr, STRIDE: tl.constexpr,
         UP: tl.constexpr):
    """Source pixel (row-major index in the input), validity and pixel-shuffle channel parity
    of tap `tap` for output pixels (ho, wo): padding (KS - 1) // 2, stride, or x2 upsampling
    folded into the address (nearest: (h // 2, w // 2); shuffle: channel 4c + 2(h%2) + w%2)."""
    kh = tap // KS - (KS - 1) // 2
    kw = tap % KS - (KS - 1) // 2
    if UP > 0:
        hu = ho + kh
        wu = wo + kw
        valid = mask_m & (hu >= 0) & (hu < Ho) & (wu >= 0) & (wu < Wo)
        hu = tl.maximum(hu, 0)
        wu = tl.maximum(wu, 0)
        if UP == 2:
            par = (hu % 2) * 2 + (wu % 2)
        else:
            par = zero_m
        pix = (hu // 2) * Win + wu // 2
    else:
        hi = ho * STRIDE + kh
        wi = wo * STRIDE + kw
        valid = mask_m & (hi >= 0) & (hi < Hin) & (wi >= 0) & (wi < Win)
        par = zero_m
        pix = hi * Win + wi
    return pix, valid, par


@triton.jit
def _accum(
    acc,  # [BM, BN] fp32 accumulator
    src_ptr,  # NHWC source tensor (first element of its channel slice)
    w_ptr,  # weights [rows, N], row = tap * (C1 + C2) + channel
    row_off,  # [BM] element offset of each output row's source pixel
    valid,  # [BM] False where the tap falls in the zero padding or past the last row
    par,  # [BM] extra channel offset (pixel-shuffle parity), zeros otherwise
    w_row0,  # first weight row of this source at this tap
    offs_n,  # [BN] output channels
    mask_n,  # [BN]
    N: tl.constexpr,  # output channels (weight row length)
    C: tl.constexpr,  # channels of this source
    CH_MUL: tl.constexpr,  # channel c sits at c * CH_MUL + par (4 for pixel shuffle)
    BK: tl.constexpr,  # channel chunk for tl.dot
    RANK1: tl.constexpr,  # narrow source: rank-1 updates in fp32, no padded dot
    UPCAST: tl.constexpr,  # cast tiles to fp32 before tl.dot (bf16 under the interpreter)
    IEEE: tl.constexpr,  # fp32 operands: exact fp32 dot (no tf32)
):
    if RANK1:
        for c in tl.static_range(C):
            a = tl.load(src_ptr + row_off + c * CH_MUL + par, mask=valid, other=0.0)
            b = tl.load(w_ptr + (w_row0 + c) * N + offs_n, mask=mask_n, other=0.0)
            acc += a.to(tl.float32)[:, None] * b.to(tl.float32)[None, :]
    else:
        for c0 in range(0, C, BK):  # C is constexpr: fine for Triton 3.6's interpreter too
            offs_k = c0 + tl.arange(0, BK)
            mask_k = offs_k < C
            a = tl.load(
                src_ptr + row_off[:, None] + offs_k[None, :] * CH_MUL + par[:, None],
                mask=valid[:, None] & mask_k[None, :],
                other=0.0,
            )  # [BM, BK]
            b = tl.load(
                w_ptr + (w_row0 + offs_k)[:, None] * N + offs_n[None, :],
                mask=mask_k[:, None] & mask_n[None, :],
                other=0.0,
            )  # [BK, BN]
            if UPCAST:
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
    return acc


@triton.jit
def _conv_kernel(
    x_ptr,  # in1 NHWC [*, Hin, Win, C1] (gathered by label when GATHER_X)
    img_ptr,  # in2 NHWC [B, Hin, Win, C2] (the sketch at this resolution)
    w_ptr,  # [KS*KS*(C1+C2), N]
    bias_ptr,  # [N] fp32
    scale_ptr,  # [classes, N] fp32 folded norm scale (z norm in EPI_Z)
    shift_ptr,  # [classes, N] fp32
    label_ptr,  # [B] int64
    aux_ptr,  # EPI_Z: n = sigmoid(n_logits) NHWC [B, Ho, Wo, N]
    sc_ptr,  # EPI_Z: shortcut source x NHWC [*, Ho, Wo, C3 or N]
    ws_ptr,  # EPI_Z: 1x1 shortcut weights [C3, N]
    sscale_ptr,  # EPI_Z: [classes, N] shortcut norm scale
    sshift_ptr,  # EPI_Z: [classes, N]
    out_ptr,  # output (EPI_GATE: m*x [B, Ho, Wo, CX])
    out2_ptr,  # EPI_GATE: n [B, Ho, Wo, N - CX]
    split_ws_ptr,  # SPLIT > 1: fp32 partial tiles [SPLIT, tiles, BM * BN]
    split_cnt_ptr,  # SPLIT > 1: int32 arrival count per output tile (zero between launches)
    M,  # output rows B*Ho*Wo
    Hin, Win, Ho, Wo,  # noqa: E231  input and output spatial sizes
    slope,  # LeakyReLU slope
    x_bs, x_ps, img_bs, img_ps, aux_bs, aux_ps, sc_bs, sc_ps,  # batch / pixel strides
    out_bs, out_ps, out_cs, out2_bs, out2_ps,  # output strides (batch, pixel, channel)
    C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,  # channels of in1, in2, shortcut
    N: tl.constexpr,  # output channels of the GEMM
    CX: tl.constexpr,  # EPI_GATE: channels of the mask (= C1)
    KS: tl.constexpr, STRIDE: tl.constexpr, UP: tl.constexpr,  # 3|1, 1|2, 0|1 nearest|2 shuffle
    EPI: tl.constexpr, ACT: tl.constexpr,
    HAS_BIAS: tl.constexpr, HAS_NORM: tl.constexpr,
    GATHER_X: tl.constexpr,  # in1 batch index is label[b] (the label-embedding stem)
    GATHER_SC: tl.constexpr,  # shortcut source batch index is label[b]
    NEED_LABEL: tl.constexpr,  # GATHER_X or GATHER_SC or HAS_NORM
    IDENT_SC: tl.constexpr,  # EPI_Z: shortcut is the identity (Cx == Co)
    R1: tl.constexpr, R2: tl.constexpr, R3: tl.constexpr,  # rank-1 path per source
    UPCAST: tl.constexpr,  # interpreter + bf16: fp32 dots, bf16 stores rounded by hand
    IEEE: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    SPLIT: tl.constexpr,  # split-K over the taps: 1, 3 or 9 programs per output tile
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BM + tl.arange(0, BM)  # [BM] output rows
    offs_n = pid_n * BN + tl.arange(0, BN)  # [BN] output channels
    mask_m = offs_m < M
    mask_n = offs_n < N
    hw_o = Ho * Wo
    b = (offs_m // hw_o).to(tl.int64)
    hw = offs_m % hw_o
    ho = hw // Wo
    wo = hw % Wo
    if NEED_LABEL:
        lab = tl.load(label_ptr + b, mask=mask_m, other=0)
    else:
        lab = b
    if GATHER_X:
        bx = lab
    else:
        bx = b
    zero_m = tl.zeros([BM], dtype=tl.int32)
    CIN: tl.constexpr = C1 + C2
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    TPS: tl.constexpr = KS * KS // SPLIT  # taps per split (narrow sources)
    CHM: tl.constexpr = 4 if UP == 2 else 1  # channel stride in the source (pixel shuffle: 4)
    if R1:  # narrow x: rank-1 updates, taps unrolled
        for t in tl.static_range(TPS):
            if SPLIT == 1:
                tap = t
            else:  # split-K: program pid_k sums taps [pid_k * TPS, (pid_k + 1) * TPS)
                tap = tl.program_id(2) * TPS + t
            pix, valid, par = _tap(tap, ho, wo, mask_m, zero_m, Hin, Win, Ho, Wo, KS, STRIDE,
                                   UP)
            acc = _accum(acc, x_ptr, w_ptr, bx * x_bs + pix * x_ps, valid, par, tap * CIN,
                         offs_n, mask_n, N, C1, CHM, BK, True, UPCAST, IEEE)
    else:  # one flat, pipelinable loop over (tap, channel chunk); split-K splits its range
        CPT: tl.constexpr = (C1 + BK - 1) // BK  # channel chunks per tap
        IPS: tl.constexpr = KS * KS * CPT // SPLIT  # iterations per split
        offs_k = tl.arange(0, BK)
        for i in range(0, IPS):
            if SPLIT == 1:
                kk = i
            else:
                kk = tl.program_id(2) * IPS + i
            tap = kk // CPT
            c0 = (kk % CPT) * BK
            pix, valid, par = _tap(tap, ho, wo, mask_m, zero_m, Hin, Win, Ho, Wo, KS, STRIDE,
                                   UP)
            ch = c0 + offs_k
            mask_k = ch < C1
            a = tl.load(x_ptr + (bx * x_bs + pix * x_ps + par)[:, None] + ch[None, :] * CHM,
                        mask=valid[:, None] & mask_k[None, :], other=0.0)  # [BM, BK]
            bt = tl.load(w_ptr + (tap * CIN + ch)[:, None] * N + offs_n[None, :],
                         mask=mask_k[:, None] & mask_n[None, :], other=0.0)  # [BK, BN]
            if UPCAST:
                a = a.to(tl.float32)
                bt = bt.to(tl.float32)
            if IEEE:
                acc = tl.dot(a, bt, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, bt, acc)
    if C2 > 0:  # the image (sketch) input, second pointer, same taps
        for t in tl.static_range(TPS):
            if SPLIT == 1:
                tap = t
            else:
                tap = tl.program_id(2) * TPS + t
            pix, valid, par = _tap(tap, ho, wo, mask_m, zero_m, Hin, Win, Ho, Wo, KS, STRIDE,
                                   UP)
            acc = _accum(acc, img_ptr, w_ptr, b * img_bs + pix * img_ps, valid, zero_m,
                         tap * CIN + C1, offs_n, mask_n, N, C2, 1, BK, R2, UPCAST, IEEE)

    if SPLIT > 1:  # store the partial tile in this split's slice; the last one sums them all
        tile = pid_m * tl.num_programs(1) + pid_n
        n_tiles = tl.num_programs(0) * tl.num_programs(1)
        offs_t = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]  # [BM, BN]
        tl.store(split_ws_ptr + (tl.program_id(2) * n_tiles + tile) * (BM * BN) + offs_t, acc,
                 cache_modifier=".cg")
        tl.debug_barrier()  # every warp's stores precede the count (acq_rel below)
        done = tl.atomic_add(split_cnt_ptr + tile, 1, sem="acq_rel")
        tl.debug_barrier()  # every warp's loads below follow the count
        is_last = done == SPLIT - 1
    else:
        is_last = True
    if is_last:
        if SPLIT > 1:  # fixed order k = 0..SPLIT-1 (L2 reads): the same bits whoever is last
            acc = tl.zeros([BM, BN], dtype=tl.float32)
            for k in tl.static_range(SPLIT):
                acc += tl.load(split_ws_ptr + (k * n_tiles + tile) * (BM * BN) + offs_t,
                               cache_modifier=".cg")
            tl.store(split_cnt_ptr + tile, 0)
        _epilogue(acc, offs_n, mask_m, mask_n, b, hw, lab, bx, zero_m, x_ptr, bias_ptr,
                  scale_ptr, shift_ptr, aux_ptr, sc_ptr, ws_ptr, sscale_ptr, sshift_ptr,
                  out_ptr, out2_ptr, slope, x_bs, x_ps, aux_bs, aux_ps, sc_bs, sc_ps, out_bs,
                  out_ps, out_cs, out2_bs, out2_ps, C3, N, CX, EPI, ACT, HAS_BIAS, HAS_NORM,
                  GATHER_SC, IDENT_SC, R3, UPCAST, IEEE, BM, BN, BK)


@triton.jit
def _epilogue(acc, offs_n, mask_m, mask_n, b, hw, lab, bx, zero_m, x_ptr, bias_ptr, scale_ptr,
              shift_ptr, aux_ptr, sc_ptr, ws_ptr, sscale_ptr, sshift_ptr, out_ptr, out2_ptr,
              slope, x_bs, x_ps, aux_bs, aux_ps, sc_bs, sc_ps, out_bs, out_ps, out_cs, out2_bs,
              out2_ps, C3: tl.constexpr, N: tl.constexpr, CX: tl.constexpr, EPI: tl.constexpr,
              ACT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_NORM: tl.constexpr,
              GATHER_SC: tl.constexpr, IDENT_SC: tl.constexpr, R3: tl.constexpr,
              UPCAST: tl.constexpr, IEEE: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
              BK: tl.constexpr):
    """Bias, folded norm, activation / MRU math and the stores (see the module doc)."""
    mask_2d = mask_m[:, None] & mask_n[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)[None, :]
    if HAS_NORM:
        tab = lab[:, None] * N + offs_n[None, :]  # [BM, BN] per-sample class row
        acc = acc * tl.load(scale_ptr + tab, mask=mask_2d, other=0.0) + tl.load(
            shift_ptr + tab, mask=mask_2d, other=0.0)
    if EPI == 0:
        if ACT == 1:
            acc = tl.where(acc >= 0, acc, acc * slope)
        if ACT == 2:
            acc = 2.0 * tl.sigmoid(2.0 * acc) - 1.0  # tanh
        dst = out_ptr + (b * out_bs + hw * out_ps)[:, None] + offs_n[None, :] * out_cs
        tl.store(dst, _cast_out(acc, out_ptr, UPCAST), mask=mask_2d)
    if EPI == 1:
        g = tl.sigmoid(acc)  # m for channels < CX, n for the rest
        is_m = offs_n < CX
        mm = mask_m[:, None] & is_m[None, :]
        xv = tl.load(x_ptr + (bx * x_bs + hw * x_ps)[:, None] + offs_n[None, :], mask=mm,
                     other=0.0)
        dst = out_ptr + (b * out_bs + hw * out_ps)[:, None] + offs_n[None, :]
        tl.store(dst, _cast_out(g * xv.to(tl.float32), out_ptr, UPCAST), mask=mm)
        mn = mask_2d & (offs_n >= CX)[None, :]
        dst2 = out2_ptr + (b * out2_bs + hw * out2_ps)[:, None] + (offs_n - CX)[None, :]
        tl.store(dst2, _cast_out(g, out2_ptr, UPCAST), mask=mn)
    if EPI == 2:
        z = tl.where(acc >= 0, acc, acc * slope)  # acc is already normed
        if GATHER_SC:
            bs = lab
        else:
            bs = b
        sc_row = bs * sc_bs + hw * sc_ps  # [BM]
        if IDENT_SC:
            s = tl.load(sc_ptr + sc_row[:, None] + offs_n[None, :], mask=mask_2d, other=0.0)
            s = s.to(tl.float32)
        else:
            s = tl.zeros([BM, BN], dtype=tl.float32)
            s = _accum(s, sc_ptr, ws_ptr, sc_row, mask_m, zero_m, 0, offs_n, mask_n, N, C3,
                       1, BK, R3, UPCAST, IEEE)
            tab = lab[:, None] * N + offs_n[None, :]
            s = s * tl.load(sscale_ptr + tab, mask=mask_2d, other=0.0) + tl.load(
                sshift_ptr + tab, mask=mask_2d, other=0.0)
        nv = tl.load(aux_ptr + (b * aux_bs + hw * aux_ps)[:, None] + offs_n[None, :],
                     mask=mask_2d, other=0.0).to(tl.float32)
        y = s + nv * (z - s)  # (1 - n) * s + n * z
        dst = out_ptr + (b * out_bs + hw * out_ps)[:, None] + offs_n[None, :] * out_cs
        tl.store(dst, _cast_out(y, out_ptr, UPCAST), mask=mask_2d)


# ---------------------------------------------------------------------------------------------
# Launchers
RECORDER: list | None = None  # set to a list: launchers record (kind, args, meta, ...) instead


def _strides(t: torch.Tensor, name: str) -> tuple[int, int]:
    """(batch, pixel) strides of an NHWC view whose pixels are dense rows of a buffer."""
    dense = t.dim() == 4 and (t.stride(3) == 1 or t.shape[3] == 1)
    if not dense or t.stride(1) != t.shape[2] * t.stride(2):
        raise ValueError(f"{name}: expected an NHWC channel slice, got {tuple(t.shape)} "
                         f"strides {t.stride()}")
    return t.stride(0), t.stride(2)


def _check_operands(x, w, n_out, ksize, c1, c2, c3, image, bias, scale, ws, hin, win, ho, wo,
                    stride, upsample) -> None:  # noqa: ANN001
    """Shapes the kernel trusts (a mismatch would read out of bounds, not fail)."""
    rows = ksize * ksize * (c1 + c2)
    if tuple(w.shape) != (rows, n_out):
        raise ValueError(f"weights must be [{rows}, {n_out}] (k*k*(C1+C2), N), got "
                         f"{tuple(w.shape)}")
    if image is not None and (image.dtype != x.dtype or tuple(image.shape[1:3]) != (hin, win)):
        raise ValueError(f"image {tuple(image.shape)} {image.dtype} does not match x "
                         f"{tuple(x.shape)} {x.dtype}")
    if x.dtype != w.dtype:
        raise ValueError(f"x ({x.dtype}) and weights ({w.dtype}) must share a dtype")
    if bias is not None and bias.numel() != n_out:
        raise ValueError(f"bias must have {n_out} values, got {bias.numel()}")
    if scale is not None and (scale.dim() != 2 or scale.shape[1] != n_out):
        raise ValueError(f"norm tables must be [classes, {n_out}], got {tuple(scale.shape)}")
    if ws is not None and tuple(ws.shape) != (c3, n_out):
        raise ValueError(f"shortcut weights must be [{c3}, {n_out}], got {tuple(ws.shape)}")
    up = 2 if upsample else 1
    want = ((hin * up - 1) // stride + 1, (win * up - 1) // stride + 1) if ksize == 3 else (
        hin, win)
    if (ho, wo) != want:
        raise ValueError(f"output size {(ho, wo)} does not match input {(hin, win)} "
                         f"(stride {stride}, upsample {upsample}): expected {want}")


def _launch(*, x, w, n_out, out, out_strides, batch, ho, wo, image=None, bias=None, scale=None,
            shift=None, label=None, aux=None, sc=None, ws=None, sscale=None, sshift=None,
            out2=None, ksize=3, stride=1, upsample=None, epi=EPI_PLAIN, act="none",
            slope=0.2, gather_x=False, gather_sc=False, cx=0, split=None,
            workspace=None) -> None:
    c1 = x.shape[3] // 4 if upsample == "pixelshuffle" else x.shape[3]  # GEMM channels
    c2 = 0 if image is None else image.shape[3]
    c3 = 0 if (sc is None or ws is None) else sc.shape[3]
    hin, win = x.shape[1], x.shape[2]
    _check_operands(x, w, n_out, ksize, c1, c2, c3, image, bias, scale, ws, hin, win, ho, wo,
                    stride, upsample)
    if split is not None and (split not in (1, 3, 9) or (split > 1 and ksize != 3)):
        raise ValueError(f"split must be 1, 3 or 9 (3x3 convs only), got {split}")
    m = batch * ho * wo
    x_bs, x_ps = _strides(x, "x")
    img_bs, img_ps = _strides(image, "image") if image is not None else (0, 0)
    aux_bs, aux_ps = _strides(aux, "n") if aux is not None else (0, 0)
    sc_bs, sc_ps = _strides(sc, "shortcut") if sc is not None else (0, 0)
    out2_bs, out2_ps = _strides(out2, "n_out") if out2 is not None else (0, 0)
    meta = dict(
        C1=c1, C2=c2, C3=c3, N=n_out, CX=cx, KS=ksize, STRIDE=stride, UP=UPS[upsample],
        EPI=epi, ACT=ACTS[act], HAS_BIAS=bias is not None, HAS_NORM=scale is not None,
        GATHER_X=gather_x, GATHER_SC=gather_sc,
        NEED_LABEL=gather_x or gather_sc or scale is not None,
        IDENT_SC=(epi == EPI_Z and ws is None),
        R1=c1 < RANK1_BELOW, R2=c2 < RANK1_BELOW, R3=c3 < RANK1_BELOW,
        UPCAST=interpreting() and w.dtype == torch.bfloat16,
        IEEE=w.dtype == torch.float32,
    )
    if interpreting():
        bm, bn, bk = interpreter_blocks(m, n_out, max(c1, c3))
        cfg = ConvConfig(bm, bn, bk, 4, 1, split or 1)
    elif x.is_cuda:
        cfg = select_config(w.dtype, batch, meta, m, n_out, ho, wo, w.device, split)
    else:  # CPU tensors without the interpreter: only a trace (RECORDER) gets here; sm_90
        cfg = choose_config(w.dtype, batch, meta, m, n_out, ho, wo, split=split)
    need = split_need(m, n_out, cfg.BM, cfg.BN, cfg.SPLIT)
    if cfg.SPLIT == 1:
        split_bufs = no_workspace(w.device)
    else:
        if workspace is None:
            workspace = shared_workspace(w.device)
            if RECORDER is None:
                workspace.reserve(*need)
        split_bufs = workspace.buffers(*need) if RECORDER is None else no_workspace(w.device)
    dummy = w
    args = [
        x, image if image is not None else dummy, w,
        bias if bias is not None else dummy, scale if scale is not None else dummy,
        shift if shift is not None else dummy, label if label is not None else dummy,
        aux if aux is not None else dummy, sc if sc is not None else dummy,
        ws if ws is not None else dummy, sscale if sscale is not None else dummy,
        sshift if sshift is not None else dummy, out, out2 if out2 is not None else dummy,
        *split_bufs, m, hin, win, ho, wo, float(slope),
        x_bs, x_ps, img_bs, img_ps, aux_bs, aux_ps, sc_bs, sc_ps,
        *out_strides, out2_bs, out2_ps,
    ]
    if RECORDER is not None:  # plan sizing / compile check: record the launch, run nothing
        RECORDER.append(("conv", args, meta, m, n_out, max(c1, c3), cfg, need))
        return
    grid = (triton.cdiv(m, cfg.BM), triton.cdiv(n_out, cfg.BN), cfg.SPLIT)
    _conv_kernel[grid](*args, **meta, BM=cfg.BM, BN=cfg.BN, BK=cfg.BK, SPLIT=cfg.SPLIT,
                       num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def conv_nhwc(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, *,
              image: torch.Tensor | None = None, bias: torch.Tensor | None = None,
              scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
              label: torch.Tensor | None = None, ksize: int = 3, stride: int = 1,
              upsample: str | None = None, act: str = "none", slope: float = 0.2,
              gather_x: bool = False, out_nchw: bool = False,
              split: int | None = None,
              workspace: SplitWorkspace | None = None) -> torch.Tensor:
    """out = act(norm(conv([x, image], w) + bias)), written in place and returned.

    x [B|classes, Hin, Win, C1] NHWC (indexed by label[b] when gather_x), image [B, Hin, Win, C2],
    w [ksize*ksize*(C1+C2), N] (see ``weight_to_gemm``), bias [N], scale/shift [classes, N],
    label [B] int64. out: NHWC [B, Ho, Wo, N] (a channel slice is fine), or NCHW when out_nchw.
    split: force split-K over the taps (1, 3 or 9; on CUDA with the GPU's tile rule, under the
    interpreter with its table); None: the tuning table's config on CUDA (split-K included),
    1 under the interpreter. workspace: the split-K workspace to use (a plan's, sized before
    capture); None: the shared one of (device, current stream). Same for the MRU launchers.
    """
    if out_nchw:
        batch, n_out, ho, wo = out.shape
        if out.stride(3) != 1 or out.stride(2) != wo:
            raise ValueError("out: expected a contiguous NCHW tensor")
        strides = (out.stride(0), 1, out.stride(1))
    else:
        batch, ho, wo, n_out = out.shape
        bs, ps = _strides(out, "out")
        strides = (bs, ps, 1)
    _launch(x=x, w=w, n_out=n_out, out=out, out_strides=strides, batch=batch, ho=ho, wo=wo,
            image=image, bias=bias, scale=scale, shift=shift, label=label, ksize=ksize,
            stride=stride, upsample=upsample, act=act, slope=slope, gather_x=gather_x,
            split=split, workspace=workspace)
    return out


def conv_gate_nhwc(x: torch.Tensor, image: torch.Tensor, w: torch.Tensor, bias: torch.Tensor,
                   mx_out: torch.Tensor, n_out: torch.Tensor, *,
                   label: torch.Tensor | None = None, gather_x: bool = False,
                   split: int | None = None, workspace: SplitWorkspace | None = None) -> None:
    """MRU gate conv: g = sigmoid(conv3x3([x, image]) + bias) with Cx + Co channels;
    mx_out = g[..., :Cx] * x  [B, H, W, Cx],  n_out = g[..., Cx:]  [B, H, W, Co]."""
    batch, ho, wo, cx = mx_out.shape
    bs, ps = _strides(mx_out, "mx_out")
    _launch(x=x, w=w, n_out=cx + n_out.shape[3], out=mx_out, out_strides=(bs, ps, 1),
            batch=batch, ho=ho, wo=wo, image=image, bias=bias, label=label, out2=n_out,
            epi=EPI_GATE, gather_x=gather_x, cx=cx, split=split, workspace=workspace)


def conv_z_nhwc(mx: torch.Tensor, image: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
                shift: torch.Tensor, label: torch.Tensor, n: torch.Tensor, x: torch.Tensor,
                out: torch.Tensor, *, w_short: torch.Tensor | None = None,
                sscale: torch.Tensor | None = None, sshift: torch.Tensor | None = None,
                slope: float = 0.2, gather_sc: bool = False, split: int | None = None,
                workspace: SplitWorkspace | None = None) -> None:
    """MRU z conv: z = leaky(norm(conv3x3([mx, image]))), s = x (w_short None) or
    norm_s(conv1x1(x, w_short)), out = (1 - n) * s + n * z  [B, H, W, Co]."""
    batch, ho, wo, co = out.shape
    bs, ps = _strides(out, "out")
    _launch(x=mx, w=w, n_out=co, out=out, out_strides=(bs, ps, 1), batch=batch, ho=ho, wo=wo,
            image=image, scale=scale, shift=shift, label=label, aux=n, sc=x, ws=w_short,
            sscale=sscale, sshift=sshift, epi=EPI_Z, slope=slope, gather_sc=gather_sc,
            split=split, workspace=workspace)


def weight_to_gemm(w: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Conv weight [Co, Cin, k, k] -> GEMM operand [k*k*Cin, Co], row = (kh*k + kw)*Cin + c."""
    co = w.shape[0]
    return w.detach().permute(2, 3, 1, 0).reshape(-1, co).contiguous().to(dtype or w.dtype)


# ---------------------------------------------------------------------------------------------
# References (NCHW, plain torch): the specification of each epilogue.
def fold_norm_ref(gamma: torch.Tensor, beta: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                  eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class affine of conditional BN from running stats: ([K, C] scale, [K, C] shift)."""
    scale = gamma.float() * torch.rsqrt(var.float() + eps)[None]
    return scale, beta.float() - mean.float()[None] * scale


def _affine(v: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor,
            label: torch.Tensor) -> torch.Tensor:
    return v * scale[label][:, :, None, None] + shift[label][:, :, None, None]


def conv_plain_ref(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
                   scale: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                   label: torch.Tensor | None = None, stride: int = 1,
                   upsample: str | None = None, act: str = "none",
                   slope: float = 0.2) -> torch.Tensor:
    """act(norm(conv(up(x), w) + bias)); x [B, C, H, W], w [Co, C, k, k]."""
    if upsample == "nearest":
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    elif upsample == "pixelshuffle":
        x = F.pixel_shuffle(x, 2)
    v = F.conv2d(x, w, bias, stride=stride, padding=w.shape[-1] // 2)
    if scale is not None:
        v = _affine(v, scale.to(v.dtype), shift.to(v.dtype), label)
    if act == "leaky":
        v = F.leaky_relu(v, slope)
    elif act == "tanh":
        v = torch.tanh(v)
    return v


def conv_gate_ref(x: torch.Tensor, image: torch.Tensor, w: torch.Tensor,
                  bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m * x, n) with [m, n] = sigmoid(conv3x3([x, image], w) + bias)."""
    g = torch.sigmoid(F.conv2d(torch.cat([x, image], 1), w, bias, padding=1))
    cx = x.shape[1]
    return g[:, :cx] * x, g[:, cx:]


def conv_z_ref(mx: torch.Tensor, image: torch.Tensor, w: torch.Tensor, scale: torch.Tensor,
               shift: torch.Tensor, label: torch.Tensor, n: torch.Tensor, x: torch.Tensor,
               w_short: torch.Tensor | None = None, sscale: torch.Tensor | None = None,
               sshift: torch.Tensor | None = None, slope: float = 0.2) -> torch.Tensor:
    """(1 - n) * s + n * leaky(norm(conv3x3([mx, image], w))), s = x or norm_s(conv1x1(x))."""
    z = F.conv2d(torch.cat([mx, image], 1), w, padding=1)
    z = F.leaky_relu(_affine(z, scale.to(z.dtype), shift.to(z.dtype), label), slope)
    s = x if w_short is None else _affine(F.conv2d(x, w_short), sscale.to(x.dtype),
                                          sshift.to(x.dtype), label)
    return (1 - n) * s + n * z
