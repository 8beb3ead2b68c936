"""The MRU's tail in training with the batch-norm backward fused (training path).

    y = (1 - n) * s + n * leaky(BN(z_pre)),   n = sigmoid(n_logits)
    s = shortcut, or BN_s(shortcut_pre)       BN(x) = gamma * (x - mean) * rstd + beta

with batch statistics (mean, biased var) of z_pre (and of shortcut_pre) and gamma/beta per
sample (CBN: [B, C]) or per channel (BN: [C]). Forward = batch_stats + norm_act_combine (the
kernels of batch_stats.py and norm_act_kernels.py). Backward is the whole batch norm in two
passes instead of norm_act_combine's backward + one stats backward per norm + autograd adding
the two gradients of z_pre (17 tensor passes -> 11 per element of y):

    pass 1 (_bn_tail_reduce_kernel) reads g, z_pre, n_logits, s and sums per (b, c) row
        Sz = sum g_zl,  Szx = sum g_zl * z_pre,  Ss = sum g_s,  Ssx = sum g_s * s_pre
        with g_zl = dL/d(BN(z_pre)) = g n leaky'(zl) and g_s = dL/ds = g (1 - n);
    [B, C] torch math: dgamma = rstd (Szx - mean Sz), dbeta = Sz, and with h = gamma g_zl
        (dL/dxhat), A = mean_N(h) = sum_b gamma Sz / N, Bc = mean_N(h xhat) = sum_b gamma
        dgamma / N, the classic dx = rstd (h - A - xhat Bc) becomes an affine map of g_zl and
        z_pre per row: dz_pre = scale g_zl + a + b z_pre, a = -rstd A + rstd^2 Bc mean,
        b = -rstd^2 Bc (the same for the shortcut, with g_s);
    pass 2 (_bn_tail_grad_kernel) writes dz_pre, ds_pre and dn_logits.

Double backward (create_graph=True) goes through the torch reference, as for the other ops.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.kernels.batch_stats import batch_stats_forward
from s2i_fast.kernels.norm_act_kernels import norm_act_forward
from s2i_fast.model.ops import bn_act_combine_ref

# rows of the per-(b, c) coefficient table [8, B, C] the two passes read
SCALE, SHIFT, S_SCALE, S_SHIFT, A_Z, B_Z, A_S, B_S = range(8)


@triton.jit
def _bn_tail_reduce_kernel(
    grad_ptr,  # dL/dy [B, C, H, W], batch stride stride_grad
    z_ptr,  # z_pre (saved input), batch stride stride_z
    logit_ptr,  # n_logits (saved input), batch stride stride_logit
    s_ptr,  # shortcut before its norm (or the shortcut itself), batch stride stride_s
    coef_ptr,  # per-row coefficients [8, B, C] (compute dtype), rows SCALE..S_SHIFT read
    sums_ptr,  # out: per-row sums [4, B, C]: Sz, Szx, Ss, Ssx
    stride_grad,  # batch stride of grad
    stride_z,  # batch stride of z_pre
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    C,  # channels
    HW,  # H * W
    n_rows,  # B * C
    slope,  # LeakyReLU negative slope
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # elements of a row per loop step
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    b = (rows // C).to(tl.int64)
    c = rows % C
    scale = tl.load(coef_ptr + 0 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    shift = tl.load(coef_ptr + 1 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    g_base = (b * stride_grad + c * HW)[:, None]
    z_base = (b * stride_z + c * HW)[:, None]
    l_base = (b * stride_logit + c * HW)[:, None]
    s_base = (b * stride_s + c * HW)[:, None]
    acc_z = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_zx = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_s = tl.zeros([ROWS, BLOCK], dtype=CDT)
    acc_sx = tl.zeros([ROWS, BLOCK], dtype=CDT)
    for start in range(0, HW, BLOCK):
        offs = (start + tl.arange(0, BLOCK))[None, :]
        valid = row_ok[:, None] & (offs < HW)
        g = tl.load(grad_ptr + g_base + offs, mask=valid, other=0.0).to(CDT)
        zp = tl.load(z_ptr + z_base + offs, mask=valid, other=0.0).to(CDT)
        logit = tl.load(logit_ptr + l_base + offs, mask=valid, other=0.0).to(CDT)
        sp = tl.load(s_ptr + s_base + offs, mask=valid, other=0.0).to(CDT)
        n = 1.0 / (1.0 + tl.exp(-logit))
        zl = zp * scale + shift
        # y = (1-n) s + n leaky(zl): dL/dzl = g n leaky'(zl), dL/ds = g (1 - n)
        g_zl = tl.where(zl > 0, g * n, g * n * slope)
        g_s = g * (1.0 - n)
        acc_z += g_zl
        acc_zx += g_zl * zp
        acc_s += g_s
        acc_sx += g_s * sp
    tl.store(sums_ptr + 0 * n_rows + rows, tl.sum(acc_z, axis=1), mask=row_ok)
    tl.store(sums_ptr + 1 * n_rows + rows, tl.sum(acc_zx, axis=1), mask=row_ok)
    tl.store(sums_ptr + 2 * n_rows + rows, tl.sum(acc_s, axis=1), mask=row_ok)
    tl.store(sums_ptr + 3 * n_rows + rows, tl.sum(acc_sx, axis=1), mask=row_ok)


@triton.jit
def _bn_tail_grad_kernel(
    grad_ptr,  # dL/dy, batch stride stride_grad
    z_ptr,  # z_pre (saved input), batch stride stride_z
    logit_ptr,  # n_logits (saved input), batch stride stride_logit
    s_ptr,  # shortcut before its norm (or the shortcut itself), batch stride stride_s
    coef_ptr,  # per-row coefficients [8, B, C]: SCALE, SHIFT, S_SCALE, S_SHIFT, A_Z..B_S
    dz_ptr,  # out: dL/dz_pre [B, C, H, W] contiguous
    dlogit_ptr,  # out: dL/dn_logits, contiguous
    ds_ptr,  # out: dL/dshortcut_pre (or dL/dshortcut), contiguous
    stride_grad,  # batch stride of grad
    stride_z,  # batch stride of z_pre
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    C,  # channels
    HW,  # H * W
    n_rows,  # B * C
    slope,  # LeakyReLU negative slope
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # elements of a row per loop step
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    b = (rows // C).to(tl.int64)
    c = rows % C
    scale = tl.load(coef_ptr + 0 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    shift = tl.load(coef_ptr + 1 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    s_scale = tl.load(coef_ptr + 2 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    s_shift = tl.load(coef_ptr + 3 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    a_z = tl.load(coef_ptr + 4 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    b_z = tl.load(coef_ptr + 5 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    a_s = tl.load(coef_ptr + 6 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    b_s = tl.load(coef_ptr + 7 * n_rows + rows, mask=row_ok, other=0.0)[:, None]
    g_base = (b * stride_grad + c * HW)[:, None]
    z_base = (b * stride_z + c * HW)[:, None]
    l_base = (b * stride_logit + c * HW)[:, None]
    s_base = (b * stride_s + c * HW)[:, None]
    out_base = (rows.to(tl.int64) * HW)[:, None]
    for start in range(0, HW, BLOCK):
        offs = (start + tl.arange(0, BLOCK))[None, :]
        valid = row_ok[:, None] & (offs < HW)
        g = tl.load(grad_ptr + g_base + offs, mask=valid, other=0.0).to(CDT)
        zp = tl.load(z_ptr + z_base + offs, mask=valid, other=0.0).to(CDT)
        logit = tl.load(logit_ptr + l_base + offs, mask=valid, other=0.0).to(CDT)
        sp = tl.load(s_ptr + s_base + offs, mask=valid, other=0.0).to(CDT)
        n = 1.0 / (1.0 + tl.exp(-logit))  # everything recomputed from the saved inputs
        zl = zp * scale + shift
        z = tl.where(zl > 0, zl, zl * slope)
        s = sp * s_scale + s_shift
        g_zl = tl.where(zl > 0, g * n, g * n * slope)
        g_s = g * (1.0 - n)
        # dy/dlogit = (z - s) n (1 - n); the batch-norm backward as a per-row affine map
        dlogit = g * (z - s) * n * (1.0 - n)
        dz = scale * g_zl + a_z + b_z * zp
        ds = s_scale * g_s + a_s + b_s * sp
        tl.store(dz_ptr + out_base + offs, dz.to(dz_ptr.dtype.element_ty), mask=valid)
        tl.store(dlogit_ptr + out_base + offs, dlogit.to(dlogit_ptr.dtype.element_ty),
                 mask=valid)  # fmt: skip
        tl.store(ds_ptr + out_base + offs, ds.to(ds_ptr.dtype.element_ty), mask=valid)


def _affine(gamma, beta, mean, rstd, b: int):
    """Per-row (scale, shift) [B, C] of gamma * (x - mean) * rstd + beta."""
    scale = (gamma if gamma.dim() == 2 else gamma[None]) * rstd[None]
    shift = (beta if beta.dim() == 2 else beta[None]) - mean[None] * scale
    return scale.expand(b, -1), shift.expand(b, -1)


def _bn_grads(gamma, mean, rstd, s_sum, sx_sum, n: int):
    """(dgamma, dbeta, a, b) of one batch norm from the per-row sums of pass 1 ([B, C])."""
    g_rows = gamma if gamma.dim() == 2 else gamma[None].expand_as(s_sum)
    dgamma_rows = rstd[None] * (sx_sum - mean[None] * s_sum)  # sum g_zl * xhat
    big_a = (g_rows * s_sum).sum(0) / n  # mean_N(dL/dxhat)            [C]
    big_b = (g_rows * dgamma_rows).sum(0) / n  # mean_N(dL/dxhat * xhat)  [C]
    a = -rstd * big_a + rstd * rstd * big_b * mean
    b = -rstd * rstd * big_b
    if gamma.dim() == 1:  # BN: the parameters are shared over the batch
        return dgamma_rows.sum(0), s_sum.sum(0), a, b
    return dgamma_rows, s_sum, a, b


class BNActCombineFunction(torch.autograd.Function):
    """Returns y and the batch statistics [4, C] (mean, var of z_pre, then of the shortcut;
    zeros without a shortcut norm) for the running averages; the statistics carry no
    gradient (the batch norm's backward is inside)."""

    @staticmethod
    def forward(ctx, z_pre, gamma, beta, n_logits, shortcut, s_gamma, s_beta, eps, slope):
        b = z_pre.shape[0]
        mean, var = batch_stats_forward(z_pre)  # [C] each
        rstd = torch.rsqrt(var + eps)
        scale, shift = _affine(gamma.to(var.dtype), beta.to(var.dtype), mean, rstd, b)
        stats = torch.zeros(4, var.shape[0], dtype=var.dtype, device=var.device)
        stats[0], stats[1] = mean, var
        short_norm = s_gamma is not None
        s_scale = s_shift = s_mean = s_rstd = None
        if short_norm:
            s_mean, s_var = batch_stats_forward(shortcut)
            s_rstd = torch.rsqrt(s_var + eps)
            s_scale, s_shift = _affine(
                s_gamma.to(var.dtype), s_beta.to(var.dtype), s_mean, s_rstd, b
            )
            stats[2], stats[3] = s_mean, s_var
        y = norm_act_forward(z_pre, scale, shift, slope, n_logits, shortcut, s_scale, s_shift)
        ctx.eps, ctx.slope, ctx.short_norm = eps, slope, short_norm
        inputs = (z_pre, gamma, beta, n_logits, shortcut)
        extra = (s_gamma, s_beta, s_mean, s_rstd) if short_norm else ()
        ctx.save_for_backward(*inputs, mean, rstd, scale, shift, *extra)
        ctx.mark_non_differentiable(stats)
        return y, stats

    @staticmethod
    def backward(ctx, grad, _grad_stats):
        saved = ctx.saved_tensors
        z_pre, gamma, beta, n_logits, shortcut, mean, rstd, scale, shift = saved[:9]
        s_gamma, s_beta, s_mean, s_rstd = saved[9:] if ctx.short_norm else (None,) * 4
        nd = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: the differentiable reference

            def ref(zp, ga, be, nl, sc, sg=None, sb=None):
                return bn_act_combine_ref(zp, ga, be, ctx.eps, ctx.slope, nl, sc, sg, sb)[0]

            ins = (z_pre, gamma, beta, n_logits, shortcut)
            ins += (s_gamma, s_beta) if ctx.short_norm else ()
            got = list(tu.ref_vjp(ref, ins, nd[: len(ins)], (grad,)))
            got += [None] * (7 - len(got))
            return (*got, None, None)
        b, c, h, w = z_pre.shape
        n_elem = b * h * w
        cdt = tu.compute_dtype(z_pre, grad, shortcut)
        coef = torch.zeros(8, b, c, dtype=scale.dtype, device=z_pre.device)
        coef[SCALE], coef[SHIFT] = scale, shift
        if ctx.short_norm:
            coef[S_SCALE], coef[S_SHIFT] = _affine(
                s_gamma.to(scale.dtype), s_beta.to(scale.dtype), s_mean, s_rstd, b
            )
        else:
            coef[S_SCALE] = 1.0  # s is the shortcut itself
        grad, s_g = tu.sample_view(grad)
        z_v, s_z = tu.sample_view(z_pre)
        l_v, s_l = tu.sample_view(n_logits)
        sc_v, s_s = tu.sample_view(shortcut)
        rows, block, warps = tu.row_block(h * w)
        grid = (triton.cdiv(b * c, rows),)
        sums = torch.empty(4, b, c, dtype=scale.dtype, device=z_pre.device)  # [4, B, C]
        _bn_tail_reduce_kernel[grid](
            grad, z_v, l_v, sc_v, coef, sums, s_g, s_z, s_l, s_s, c, h * w, b * c,
            float(ctx.slope), CDT=cdt, ROWS=rows, BLOCK=block, num_warps=warps,
        )  # fmt: skip
        tu.record_launch("bn_tail_reduce")
        dgamma, dbeta, a_z, b_z = _bn_grads(gamma.to(scale.dtype), mean, rstd, sums[0],
                                            sums[1], n_elem)  # fmt: skip
        coef[A_Z], coef[B_Z] = a_z[None], b_z[None]
        ds_gamma = ds_beta = None
        if ctx.short_norm:
            ds_gamma, ds_beta, a_s, b_s = _bn_grads(s_gamma.to(scale.dtype), s_mean, s_rstd,
                                                    sums[2], sums[3], n_elem)  # fmt: skip
            coef[A_S], coef[B_S] = a_s[None], b_s[None]
        dz = torch.empty(z_pre.shape, dtype=z_pre.dtype, device=z_pre.device)
        dlogit = torch.empty(z_pre.shape, dtype=n_logits.dtype, device=z_pre.device)
        ds = torch.empty(z_pre.shape, dtype=shortcut.dtype, device=z_pre.device)
        _bn_tail_grad_kernel[grid](
            grad, z_v, l_v, sc_v, coef, dz, dlogit, ds, s_g, s_z, s_l, s_s, c, h * w, b * c,
            float(ctx.slope), CDT=cdt, ROWS=rows, BLOCK=block, num_warps=warps,
        )  # fmt: skip
        tu.record_launch("bn_tail_grad")
        out = [dz, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), dlogit, ds]
        out += [ds_gamma.to(s_gamma.dtype), ds_beta.to(s_beta.dtype)] if ctx.short_norm else [
            None, None]  # fmt: skip
        return (*(g if n else None for g, n in zip(out, nd[:7], strict=True)), None, None)
