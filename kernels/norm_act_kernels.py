"""Fused norm apply + LeakyReLU (+ gated combine) (training path).

    norm_act:          z = leaky(z_pre * scale + shift)
    norm_act_combine:  y = (1 - n) * s + n * leaky(z_pre * scale + shift), n = sigmoid(n_logits)

scale/shift are [B, C] (conditional BN: per sample and channel) or [C] (BN). They come from
the norm module (gamma * rstd, beta - mean * scale) as small torch ops, so the gradient through
the batch statistics is autograd's chain: dL/dscale, dL/dshift from these kernels -> the [C]
torch ops -> BatchStatsFunction's backward (batch_stats.py).

Row kernels: each program owns ROWS whole (b, c) planes of H*W elements (a [ROWS, BLOCK]
tile, looping over H*W), so per-row parameters are loaded once and per-row gradient sums need
no atomics (deterministic); small planes (4x4 .. 16x16) pack many rows into one program.

Why norm_act_combine (bytes per element of the [B, Co, H, W] output, e = element size):
separately, norm_act reads z_pre and writes z (2e), gated_combine reads n_logits, s, z and
writes y (4e): 6e forward. Fused: reads z_pre, n_logits, s, writes y: 4e, and z is never
materialised or saved for backward. Backward: separate = combine bwd (read g, n_logits, s, z;
write dn, ds, dz: 7e) + norm_act bwd (read dz, z_pre; write dz_pre: 3e) = 10e; fused = read
g, z_pre, n_logits, s; write dz_pre, dn, ds: 7e. About a third of the traffic saved both ways.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model.ops import norm_act_combine_ref, norm_act_ref


@triton.jit
def _norm_act_fwd_kernel(
    z_ptr,  # z_pre [B, C, H, W], sample-contiguous, batch stride stride_z
    scale_ptr,  # scale [B, C] or [C], contiguous
    shift_ptr,  # shift, same shape as scale
    logit_ptr,  # n_logits (COMBINE only), batch stride stride_logit
    s_ptr,  # shortcut s, or its pre-norm input with SHORT_NORM (COMBINE only)
    sscale_ptr,  # shortcut norm scale [B, C] or [C] (SHORT_NORM only)
    sshift_ptr,  # shortcut norm shift, as sscale (SHORT_NORM only)
    out_ptr,  # out [B, C, H, W] contiguous: leaky(z_pre*scale+shift), or the combine y
    stride_z,  # batch stride of z_pre
    stride_param,  # batch stride of scale/shift: C for [B, C], 0 for [C]
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    stride_sparam,  # batch stride of sscale/sshift (C or 0)
    C,  # channels
    HW,  # H * W
    n_rows,  # B * C
    slope,  # LeakyReLU negative slope
    COMBINE: tl.constexpr,  # also apply y = (1 - n) * s + n * z
    SHORT_NORM: tl.constexpr,  # s = s_pre * sscale + sshift (the shortcut's norm, no act)
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # elements of a row per loop step
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS] flat (b, c) index
    row_ok = rows < n_rows
    b = (rows // C).to(tl.int64)
    c = rows % C
    scale = tl.load(scale_ptr + b * stride_param + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    shift = tl.load(shift_ptr + b * stride_param + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    if SHORT_NORM:
        sp = b * stride_sparam + c
        sscale = tl.load(sscale_ptr + sp, mask=row_ok, other=0.0).to(CDT)[:, None]
        sshift = tl.load(sshift_ptr + sp, mask=row_ok, other=0.0).to(CDT)[:, None]
    z_base = (b * stride_z + c * HW)[:, None]  # [ROWS, 1]
    l_base = (b * stride_logit + c * HW)[:, None]
    s_base = (b * stride_s + c * HW)[:, None]
    out_base = (rows.to(tl.int64) * HW)[:, None]
    for start in range(0, HW, BLOCK):
        offs = (start + tl.arange(0, BLOCK))[None, :]  # [1, BLOCK]
        valid = row_ok[:, None] & (offs < HW)
        zp = tl.load(z_ptr + z_base + offs, mask=valid, other=0.0).to(CDT)
        zl = zp * scale + shift
        z = tl.where(zl > 0, zl, zl * slope)
        if COMBINE:
            logit = tl.load(logit_ptr + l_base + offs, mask=valid, other=0.0).to(CDT)
            s = tl.load(s_ptr + s_base + offs, mask=valid, other=0.0).to(CDT)
            if SHORT_NORM:
                s = s * sscale + sshift
            n = 1.0 / (1.0 + tl.exp(-logit))
            z = (1.0 - n) * s + n * z
        tl.store(out_ptr + out_base + offs, z.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _norm_act_bwd_kernel(
    grad_ptr,  # dL/dout, batch stride stride_grad
    z_ptr,  # z_pre (saved input), batch stride stride_z
    scale_ptr,  # scale [B, C] or [C]
    shift_ptr,  # shift, as scale
    logit_ptr,  # n_logits (COMBINE only), batch stride stride_logit
    s_ptr,  # shortcut s, or its pre-norm input with SHORT_NORM (COMBINE only)
    sscale_ptr,  # shortcut norm scale (SHORT_NORM only)
    sshift_ptr,  # shortcut norm shift (SHORT_NORM only)
    dz_ptr,  # out: dL/dz_pre [B, C, H, W] contiguous
    dlogit_ptr,  # out: dL/dn_logits, contiguous (COMBINE only)
    ds_ptr,  # out: dL/ds (dL/ds_pre with SHORT_NORM), contiguous (COMBINE only)
    dscale_ptr,  # out: per-row dL/dscale [B, C] (compute dtype)
    dshift_ptr,  # out: per-row dL/dshift [B, C] (compute dtype)
    dsscale_ptr,  # out: per-row dL/dsscale [B, C] (SHORT_NORM only)
    dsshift_ptr,  # out: per-row dL/dsshift [B, C] (SHORT_NORM only)
    stride_grad,  # batch stride of grad
    stride_z,  # batch stride of z_pre
    stride_param,  # batch stride of scale/shift (C or 0)
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    stride_sparam,  # batch stride of sscale/sshift (C or 0)
    C,  # channels
    HW,  # H * W
    n_rows,  # B * C
    slope,  # LeakyReLU negative slope
    COMBINE: tl.constexpr,  # the output was the gated combine
    SHORT_NORM: tl.constexpr,  # the shortcut was normalised in the kernel
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # elements of a row per loop step
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    b = (rows // C).to(tl.int64)
    c = rows % C
    scale = tl.load(scale_ptr + b * stride_param + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    shift = tl.load(shift_ptr + b * stride_param + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    if SHORT_NORM:
        sp = b * stride_sparam + c
        sscale = tl.load(sscale_ptr + sp, mask=row_ok, other=0.0).to(CDT)[:, None]
        sshift = tl.load(sshift_ptr + sp, mask=row_ok, other=0.0).to(CDT)[:, None]
    g_base = (b * stride_grad + c * HW)[:, None]
    z_base = (b * stride_z + c * HW)[:, None]
    l_base = (b * stride_logit + c * HW)[:, None]
    s_base = (b * stride_s + c * HW)[:, None]
    out_base = (rows.to(tl.int64) * HW)[:, None]
    acc_scale = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_shift = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_sscale = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_sshift = tl.zeros([ROWS, BLOCK], dtype=CDT)
    for start in range(0, HW, BLOCK):
        offs = (start + tl.arange(0, BLOCK))[None, :]
        valid = row_ok[:, None] & (offs < HW)
        g = tl.load(grad_ptr + g_base + offs, mask=valid, other=0.0).to(CDT)
        zp = tl.load(z_ptr + z_base + offs, mask=valid, other=0.0).to(CDT)
        zl = zp * scale + shift  # recomputed
        if COMBINE:
            logit = tl.load(logit_ptr + l_base + offs, mask=valid, other=0.0).to(CDT)
            s_in = tl.load(s_ptr + s_base + offs, mask=valid, other=0.0).to(CDT)
            s = s_in
            if SHORT_NORM:
                s = s_in * sscale + sshift  # recomputed
            n = 1.0 / (1.0 + tl.exp(-logit))
            z = tl.where(zl > 0, zl, zl * slope)
            # y = (1-n) s + n z:  dy/ds = 1 - n;  dy/dz = n;  dy/dlogit = (z - s) n (1 - n)
            ds = g * (1.0 - n)
            dlogit = g * (z - s) * n * (1.0 - n)
            if SHORT_NORM:
                # s = s_in * sscale + sshift: ds/ds_in = sscale, ds/dsscale = s_in, ds/dsshift = 1
                acc_sscale += ds * s_in
                acc_sshift += ds
                ds = ds * sscale
            tl.store(ds_ptr + out_base + offs, ds.to(ds_ptr.dtype.element_ty), mask=valid)
            tl.store(dlogit_ptr + out_base + offs, dlogit.to(dlogit_ptr.dtype.element_ty),
                     mask=valid)  # fmt: skip
            g = g * n
        # z = leaky(zl): dz/dzl = 1 if zl > 0 else slope (torch's convention at 0)
        gl = tl.where(zl > 0, g, g * slope)
        # zl = zp * scale + shift: dzl/dzp = scale, dzl/dscale = zp, dzl/dshift = 1
        tl.store(dz_ptr + out_base + offs, (gl * scale).to(dz_ptr.dtype.element_ty), mask=valid)
        acc_scale += gl * zp
        acc_shift += gl
    tl.store(dscale_ptr + rows, tl.sum(acc_scale, axis=1), mask=row_ok)
    tl.store(dshift_ptr + rows, tl.sum(acc_shift, axis=1), mask=row_ok)
    if SHORT_NORM:
        tl.store(dsscale_ptr + rows, tl.sum(acc_sscale, axis=1), mask=row_ok)
        tl.store(dsshift_ptr + rows, tl.sum(acc_sshift, axis=1), mask=row_ok)


def _params(z_pre: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor):
    b, c = z_pre.shape[:2]
    if scale.shape != shift.shape or scale.shape not in ((c,), (b, c)):
        raise ValueError(
            f"scale/shift must be [C] or [B, C] for z_pre {tuple(z_pre.shape)}, "
            f"got {tuple(scale.shape)} and {tuple(shift.shape)}"
        )
    return scale.contiguous(), shift.contiguous(), (c if scale.dim() == 2 else 0)


def _prepare(z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift):
    """Views, batch strides and placeholders shared by the forward and backward launchers."""
    combine, short_norm = n_logits is not None, s_scale is not None
    scale, shift, s_param = _params(z_pre, scale, shift)
    z_pre, s_z = tu.sample_view(z_pre)
    if combine:
        tu.check_same_shape("norm_act_combine", z_pre, n_logits, shortcut)
        n_logits, s_logit = tu.sample_view(n_logits)
        shortcut, s_s = tu.sample_view(shortcut)
    else:
        n_logits, shortcut, s_logit, s_s = z_pre, z_pre, 0, 0  # unused (COMBINE=False)
    if short_norm:
        s_scale, s_shift, s_sparam = _params(z_pre, s_scale, s_shift)
    else:
        s_scale, s_shift, s_sparam = scale, shift, 0  # unused (SHORT_NORM=False)
    cdt = tu.compute_dtype(z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift)
    return (z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift,
            (s_z, s_param, s_logit, s_s, s_sparam), combine, short_norm, cdt)  # fmt: skip


def norm_act_forward(
    z_pre, scale, shift, slope, n_logits=None, shortcut=None, s_scale=None, s_shift=None
) -> torch.Tensor:
    """Launcher: leaky(z_pre*scale+shift) [B, C, H, W], or the gated combine with it when
    n_logits and shortcut are given (shortcut*s_scale+s_shift when those are given too).
    Output in z_pre's dtype."""
    (z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift, strides, combine, short_norm,
     cdt) = _prepare(z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift)  # fmt: skip
    b, c, h, w = z_pre.shape
    out = torch.empty(z_pre.shape, dtype=z_pre.dtype, device=z_pre.device)
    if out.numel() == 0:
        return out
    rows, block, warps = tu.row_block(h * w)
    _norm_act_fwd_kernel[(triton.cdiv(b * c, rows),)](
        z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift, out, *strides, c, h * w,
        b * c, float(slope), COMBINE=combine, SHORT_NORM=short_norm, CDT=cdt, ROWS=rows,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    tu.record_launch("norm_act_combine_fwd" if combine else "norm_act_fwd")
    return out


def _reduce_params(rows_grad: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-row [B, C] parameter gradients -> the parameter's shape ([C] for BN) and dtype."""
    return (rows_grad.sum(0) if like.dim() == 1 else rows_grad).to(like.dtype)


def norm_act_backward(
    grad, z_pre, scale, shift, slope, n_logits=None, shortcut=None, s_scale=None, s_shift=None
):
    """Launcher: (dz_pre, dscale, dshift, dn_logits, dshortcut, ds_scale, ds_shift), None for
    the parts the forward did not have."""
    scale_in, s_scale_in = scale, s_scale
    (z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift, strides, combine, short_norm,
     cdt) = _prepare(z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift)  # fmt: skip
    grad, s_g = tu.sample_view(grad)
    b, c, h, w = z_pre.shape
    dev = z_pre.device
    dz = torch.empty(z_pre.shape, dtype=z_pre.dtype, device=dev)
    dlogit = torch.empty(z_pre.shape, dtype=n_logits.dtype, device=dev) if combine else dz
    ds = torch.empty(z_pre.shape, dtype=shortcut.dtype, device=dev) if combine else dz
    tdt = torch.float64 if cdt == tl.float64 else torch.float32
    alloc = torch.empty if z_pre.numel() > 0 else torch.zeros  # the kernel writes every row
    param_rows = alloc(4 if short_norm else 2, b, c, dtype=tdt, device=dev)  # [k, B, C]
    srows = param_rows[2:] if short_norm else param_rows
    if z_pre.numel() > 0:
        rows, block, warps = tu.row_block(h * w)
        _norm_act_bwd_kernel[(triton.cdiv(b * c, rows),)](
            grad, z_pre, scale, shift, n_logits, shortcut, s_scale, s_shift, dz, dlogit, ds,
            param_rows[0], param_rows[1], srows[0], srows[1], s_g, *strides, c, h * w, b * c,
            float(slope), COMBINE=combine, SHORT_NORM=short_norm, CDT=cdt, ROWS=rows,
            BLOCK=block, num_warps=warps,
        )  # fmt: skip
        tu.record_launch("norm_act_combine_bwd" if combine else "norm_act_bwd")
    dscale = _reduce_params(param_rows[0], scale_in)
    dshift = _reduce_params(param_rows[1], scale_in)
    if not combine:
        return dz, dscale, dshift, None, None, None, None
    if not short_norm:
        return dz, dscale, dshift, dlogit, ds, None, None
    dsscale = _reduce_params(param_rows[2], s_scale_in)
    dsshift = _reduce_params(param_rows[3], s_scale_in)
    return dz, dscale, dshift, dlogit, ds, dsscale, dsshift


class NormActFunction(torch.autograd.Function):
    """leaky(z_pre * scale + shift); double backward through the reference (ref_vjp)."""

    @staticmethod
    def forward(ctx, z_pre, scale, shift, slope: float):
        ctx.slope = slope
        ctx.save_for_backward(z_pre, scale, shift)
        return norm_act_forward(z_pre, scale, shift, slope)

    @staticmethod
    def backward(ctx, grad):
        z_pre, scale, shift = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():

            def ref(zp, sc, sh):
                return norm_act_ref(zp, sc, sh, ctx.slope)

            return (*tu.ref_vjp(ref, (z_pre, scale, shift), needs, (grad,)), None)
        grads = norm_act_backward(grad, z_pre, scale, shift, ctx.slope)[:3]
        return (*(g if n else None for g, n in zip(grads, needs, strict=True)), None)


class NormActCombineFunction(torch.autograd.Function):
    """(1 - n) * s + n * leaky(z_pre * scale + shift), with s = shortcut, or
    shortcut * s_scale + s_shift when those are given (the shortcut's norm, fused).
    Double backward goes through the reference (ref_vjp)."""

    @staticmethod
    def forward(ctx, z_pre, scale, shift, slope: float, n_logits, shortcut, s_scale, s_shift):
        ctx.slope = slope
        ctx.short_norm = s_scale is not None
        saved = (z_pre, scale, shift, n_logits, shortcut)
        ctx.save_for_backward(*saved, *((s_scale, s_shift) if ctx.short_norm else ()))
        return norm_act_forward(z_pre, scale, shift, slope, n_logits, shortcut, s_scale, s_shift)

    @staticmethod
    def backward(ctx, grad):
        saved = ctx.saved_tensors
        nd = ctx.needs_input_grad
        needs = (nd[0], nd[1], nd[2], nd[4], nd[5], nd[6], nd[7])[: len(saved)]
        if torch.is_grad_enabled():

            def ref(zp, sc, sh, nl, s, ssc=None, ssh=None):
                return norm_act_combine_ref(zp, sc, sh, ctx.slope, nl, s, ssc, ssh)

            grads = tu.ref_vjp(ref, saved, needs, (grad,))
        else:
            grads = norm_act_backward(grad, *saved[:3], ctx.slope, *saved[3:])
        g = [x if n else None for x, n in zip(grads, needs, strict=False)]
        g += [None] * (7 - len(g))
        return g[0], g[1], g[2], None, g[3], g[4], g[5], g[6]
