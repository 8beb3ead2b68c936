"""Small inference kernels around the convolutions: the sketch pyramid and the noise linear.

    sketch_pyramid: the sketch [B, 1, R, R] (fp32) -> every level r = R, R/2, ..., 4 of its area
        resize (F.avg_pool2d by R/r), in one launch, into one flat buffer (level after level,
        each [B, r, r] in the compute dtype). Each program averages one T x T tile (T = R/4)
        by repeated 2x2 means, so every level of the tile comes from one load.
    noise_fc: z = noise @ W^T + b reshaped [B, NC, 4, 4] (the generator's noise_fc), written
        NHWC into a channel slice of the bottleneck buffer [B, 4, 4, C + NC] (no concat).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from s2i_fast.kernels import conv_igemm
from s2i_fast.kernels._triton_utils import interpreting
from s2i_fast.kernels.conv_igemm import _cast_out


@triton.jit
def _pyramid_level(tile, dst_ptr, off, b, ty, tx, r: tl.constexpr, s: tl.constexpr,
                   POOL: tl.constexpr, FIX_BF16: tl.constexpr):
    """Store one level's [s, s] part of a tile (2x2-pooling the previous level's first when
    POOL) into the [B, r, r] level at dst_ptr + off; return it."""
    if POOL:  # [2s, 2s] -> [s, s]
        tile = tl.sum(tl.sum(tl.reshape(tile, [s, 2, s, 2]), 3), 1) * 0.25
    yl = tl.arange(0, s)
    xl = tl.arange(0, s)
    dst = dst_ptr + off + b * r * r + (ty * s + yl)[:, None] * r + (tx * s + xl)[None, :]
    tl.store(dst, _cast_out(tile, dst_ptr, FIX_BF16))
    return tile


@triton.jit
def _pyramid_kernel(
    src_ptr,  # sketch [B, R, R] fp32 (one channel)
    dst_ptr,  # flat pyramid buffer: level l holds [B, R>>l, R>>l] at offset B * sum_{j<l} r_j^2
    B,  # batch
    R: tl.constexpr,  # full resolution
    T: tl.constexpr,  # tile side (R // 4): the 4x4 level has one pixel per tile
    LEVELS: tl.constexpr,  # number of levels, R down to 4
    FIX_BF16: tl.constexpr,  # interpreter: round bf16 stores to nearest even by hand
):
    b = tl.program_id(0)
    t = tl.program_id(1)
    ty = t // (R // T)
    tx = t % (R // T)
    ys = tl.arange(0, T)
    xs = tl.arange(0, T)
    tile = tl.load(src_ptr + b * R * R + (ty * T + ys)[:, None] * R + (tx * T + xs)[None, :])
    tile = tile.to(tl.float32)  # [T, T]
    off = 0
    for lvl in tl.static_range(LEVELS):
        tile = _pyramid_level(tile, dst_ptr, off, b, ty, tx, R >> lvl, T >> lvl, lvl > 0,
                              FIX_BF16)
        off += B * (R >> lvl) * (R >> lvl)


@triton.jit
def _noise_fc_kernel(
    noise_ptr,  # [B, ND] fp32
    w_ptr,  # [ND, 16 * NC], column j = p * NC + c (p = 4x4 pixel)
    b_ptr,  # [16 * NC] fp32, same column order
    out_ptr,  # NHWC slice [B, 4, 4, NC] of the bottleneck buffer
    out_bs,  # batch stride of out
    out_ps,  # pixel stride of out
    ND: tl.constexpr,  # noise dim
    NC: tl.constexpr,  # noise channels
    BKD: tl.constexpr,  # next power of two >= ND
    BN: tl.constexpr,  # columns per program
    FIX_BF16: tl.constexpr,  # interpreter: round bf16 stores to nearest even by hand
):
    bi = tl.program_id(0)
    j = tl.program_id(1) * BN + tl.arange(0, BN)  # [BN]
    mask_j = j < 16 * NC
    k = tl.arange(0, BKD)
    mask_k = k < ND
    nz = tl.load(noise_ptr + bi * ND + k, mask=mask_k, other=0.0).to(tl.float32)  # [BKD]
    w = tl.load(w_ptr + k[:, None] * (16 * NC) + j[None, :],
                mask=mask_k[:, None] & mask_j[None, :], other=0.0).to(tl.float32)  # [BKD, BN]
    v = tl.sum(nz[:, None] * w, 0) + tl.load(b_ptr + j, mask=mask_j, other=0.0)  # [BN]
    p = j // NC
    c = j % NC
    tl.store(out_ptr + bi * out_bs + p * out_ps + c, _cast_out(v, out_ptr, FIX_BF16), mask=mask_j)


def pyramid_levels(resolution: int) -> list[int]:
    """[R, R/2, ..., 4]."""
    out, r = [], resolution
    while r >= 4:
        out.append(r)
        r //= 2
    return out


def sketch_pyramid(sketch: torch.Tensor, flat: torch.Tensor) -> dict[int, torch.Tensor]:
    """Fill ``flat`` (1-D, B * sum r^2 elements) from sketch [B, 1, R, R]; return the NHWC
    views {r: [B, r, r, 1]} into it."""
    b, _, res, _ = sketch.shape
    levels = pyramid_levels(res)
    t = res // 4
    args = [sketch, flat, b]
    meta = dict(R=res, T=t, LEVELS=len(levels), FIX_BF16=interpreting())
    if conv_igemm.RECORDER is not None:
        conv_igemm.RECORDER.append(("pyramid", args, meta))
    else:
        _pyramid_kernel[(b, 16)](*args, **meta, num_warps=4)
    return pyramid_views(flat, b, res)


def pyramid_views(flat: torch.Tensor, batch: int, resolution: int) -> dict[int, torch.Tensor]:
    views, off = {}, 0
    for r in pyramid_levels(resolution):
        views[r] = flat[off: off + batch * r * r].view(batch, r, r, 1)
        off += batch * r * r
    return views


def pyramid_size(batch: int, resolution: int) -> int:
    return batch * sum(r * r for r in pyramid_levels(resolution))


def noise_fc_weight(weight: torch.Tensor, bias: torch.Tensor, channels: int,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear(ND, NC*16) params -> ([ND, 16*NC] columns p*NC + c, fp32 bias same order)."""
    nd = weight.shape[1]
    w = weight.detach().view(channels, 16, nd).permute(2, 1, 0).reshape(nd, 16 * channels)
    b = bias.detach().view(channels, 16).t().reshape(-1)
    return w.contiguous().to(dtype), b.contiguous().float()


def noise_fc(noise: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> None:
    """out [B, 4, 4, NC] (NHWC channel slice) = (noise @ W^T + b) as [B, NC, 4, 4]."""
    batch, nd = noise.shape
    nc = out.shape[3]
    bn = 64
    args = [noise, w, b, out, out.stride(0), out.stride(2)]
    meta = dict(ND=nd, NC=nc, BKD=max(16, 1 << (nd - 1).bit_length()), BN=bn,
                FIX_BF16=interpreting())
    if conv_igemm.RECORDER is not None:
        conv_igemm.RECORDER.append(("noise_fc", args, meta))
    else:
        _noise_fc_kernel[(batch, triton.cdiv(16 * nc, bn))](*args, **meta, num_warps=4)


def noise_fc_ref(noise: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                 channels: int) -> torch.Tensor:
    """[B, NC, 4, 4]: the generator's noise_fc(noise).view(B, NC, 4, 4)."""
    return F.linear(noise, weight, bias).view(noise.shape[0], channels, 4, 4)


def sketch_pyramid_ref(sketch: torch.Tensor) -> dict[int, torch.Tensor]:
    """{r: [B, 1, r, r]}: area resize by average pooling (networks.image_pyramid)."""
    res = sketch.shape[-1]
    return {r: sketch if r == res else F.avg_pool2d(sketch, res // r)
            for r in pyramid_levels(res)}
