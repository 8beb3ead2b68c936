"""Fused sigmoid gates of the MRU, forward and backward (training path).

    gate_mask:      out = sigmoid(m_logits) * x                 [B, Cx, H, W]
    gated_combine:  y   = (1 - n) * s + n * z, n = sigmoid(n_logits)   [B, Co, H, W]

Layers (docs/kernels.md): @triton.jit kernel -> launcher (shapes, strides, grid) -> Function.
The public, impl-switched functions are in mru_ops.py; the torch references in
s2i_fast/model/ops.py.

Inputs are read in place when each sample's [C, H, W] block is contiguous with any batch
stride, which is what m_logits = gate_logits[:, :Cx] and n_logits = gate_logits[:, Cx:] are:
no copy of the gate conv's output. Outputs and gradients are new contiguous tensors in the
input dtype; all math is fp32 (fp64 for fp64 inputs). Backward saves only the inputs (the
logits, not sigmoid's output) and recomputes the sigmoid.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model.ops import gate_mask_ref, gated_combine_ref

# ----------------------------------------------------------------------------- gate_mask


@triton.jit
def _gate_mask_fwd_kernel(
    logit_ptr,  # m_logits [B, C, H, W], sample-contiguous, batch stride stride_logit
    x_ptr,  # x [B, C, H, W], sample-contiguous, batch stride stride_x
    out_ptr,  # out [B, C, H, W], contiguous: sigmoid(m_logits) * x
    stride_logit,  # batch stride of m_logits (elements; C_gate*H*W for a channel slice)
    stride_x,  # batch stride of x (elements)
    chw,  # C * H * W: elements per sample
    CDT: tl.constexpr,  # compute dtype (fp32, or fp64 for gradcheck)
    BLOCK: tl.constexpr,  # elements per program
):
    b = tl.program_id(1).to(tl.int64)  # sample
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)  # flat index inside the sample
    mask = offs < chw
    logit = tl.load(logit_ptr + b * stride_logit + offs, mask=mask, other=0.0).to(CDT)
    x = tl.load(x_ptr + b * stride_x + offs, mask=mask, other=0.0).to(CDT)
    m = 1.0 / (1.0 + tl.exp(-logit))
    tl.store(out_ptr + b * chw + offs, (m * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gate_mask_bwd_kernel(
    grad_ptr,  # dL/dout [B, C, H, W], sample-contiguous, batch stride stride_grad
    logit_ptr,  # m_logits (saved input), batch stride stride_logit
    x_ptr,  # x (saved input), batch stride stride_x
    dlogit_ptr,  # out: dL/dm_logits [B, C, H, W] contiguous
    dx_ptr,  # out: dL/dx [B, C, H, W] contiguous
    stride_grad,  # batch stride of grad
    stride_logit,  # batch stride of m_logits
    stride_x,  # batch stride of x
    chw,  # C * H * W
    CDT: tl.constexpr,  # compute dtype
    BLOCK: tl.constexpr,  # elements per program
):
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < chw
    g = tl.load(grad_ptr + b * stride_grad + offs, mask=mask, other=0.0).to(CDT)
    logit = tl.load(logit_ptr + b * stride_logit + offs, mask=mask, other=0.0).to(CDT)
    x = tl.load(x_ptr + b * stride_x + offs, mask=mask, other=0.0).to(CDT)
    m = 1.0 / (1.0 + tl.exp(-logit))  # recomputed, not saved
    # d(m*x)/dx = m;  d(m*x)/dlogit = x * m * (1 - m)   (sigmoid' = m (1 - m))
    dx = g * m
    dlogit = g * x * m * (1.0 - m)
    tl.store(dx_ptr + b * chw + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dlogit_ptr + b * chw + offs, dlogit.to(dlogit_ptr.dtype.element_ty), mask=mask)


def _flat_grid(t: torch.Tensor) -> tuple[int, int]:
    b, c, h, w = t.shape
    return (triton.cdiv(c * h * w, tu.flat_block()), b)


def gate_mask_forward(m_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Launcher: sigmoid(m_logits) * x, both [B, C, H, W]; output in x's dtype."""
    tu.check_same_shape("gate_mask", m_logits, x)
    m_logits, s_logit = tu.sample_view(m_logits)
    x, s_x = tu.sample_view(x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # [B, C, H, W]
    if out.numel() == 0:
        return out
    _gate_mask_fwd_kernel[_flat_grid(x)](
        m_logits, x, out, s_logit, s_x, x[0].numel(),
        CDT=tu.compute_dtype(m_logits, x), BLOCK=tu.flat_block(), num_warps=tu.FLAT_WARPS,
    )  # fmt: skip
    tu.record_launch("gate_mask_fwd")
    return out


def gate_mask_backward(
    grad: torch.Tensor, m_logits: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher: (dL/dm_logits, dL/dx) from dL/dout, recomputing the sigmoid."""
    grad, s_g = tu.sample_view(grad)
    m_logits, s_logit = tu.sample_view(m_logits)
    x, s_x = tu.sample_view(x)
    dlogit = torch.empty(x.shape, dtype=m_logits.dtype, device=x.device)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return dlogit, dx
    _gate_mask_bwd_kernel[_flat_grid(x)](
        grad, m_logits, x, dlogit, dx, s_g, s_logit, s_x, x[0].numel(),
        CDT=tu.compute_dtype(grad, m_logits, x), BLOCK=tu.flat_block(), num_warps=tu.FLAT_WARPS,
    )  # fmt: skip
    tu.record_launch("gate_mask_bwd")
    return dlogit, dx


class GateMaskFunction(torch.autograd.Function):
    """sigmoid(m_logits) * x; double backward goes through the torch reference (ref_vjp)."""

    @staticmethod
    def forward(ctx, m_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(m_logits, x)
        return gate_mask_forward(m_logits, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        m_logits, x = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable reference route
            return tu.ref_vjp(gate_mask_ref, (m_logits, x), ctx.needs_input_grad, (grad,))
        dlogit, dx = gate_mask_backward(grad, m_logits, x)
        return (
            dlogit if ctx.needs_input_grad[0] else None,
            dx if ctx.needs_input_grad[1] else None,
        )


# ------------------------------------------------------------------------- gated_combine


@triton.jit
def _gated_combine_fwd_kernel(
    logit_ptr,  # n_logits [B, C, H, W], sample-contiguous, batch stride stride_logit
    s_ptr,  # shortcut s [B, C, H, W], batch stride stride_s
    z_ptr,  # new features z [B, C, H, W], batch stride stride_z
    out_ptr,  # out: y = (1 - n) * s + n * z, contiguous
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    stride_z,  # batch stride of z
    chw,  # C * H * W
    CDT: tl.constexpr,  # compute dtype
    BLOCK: tl.constexpr,  # elements per program
):
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < chw
    logit = tl.load(logit_ptr + b * stride_logit + offs, mask=mask, other=0.0).to(CDT)
    s = tl.load(s_ptr + b * stride_s + offs, mask=mask, other=0.0).to(CDT)
    z = tl.load(z_ptr + b * stride_z + offs, mask=mask, other=0.0).to(CDT)
    n = 1.0 / (1.0 + tl.exp(-logit))
    y = (1.0 - n) * s + n * z
    tl.store(out_ptr + b * chw + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_combine_bwd_kernel(
    grad_ptr,  # dL/dy, batch stride stride_grad
    logit_ptr,  # n_logits (saved input), batch stride stride_logit
    s_ptr,  # s (saved input), batch stride stride_s
    z_ptr,  # z (saved input), batch stride stride_z
    dlogit_ptr,  # out: dL/dn_logits, contiguous
    ds_ptr,  # out: dL/ds, contiguous
    dz_ptr,  # out: dL/dz, contiguous
    stride_grad,  # batch stride of grad
    stride_logit,  # batch stride of n_logits
    stride_s,  # batch stride of s
    stride_z,  # batch stride of z
    chw,  # C * H * W
    CDT: tl.constexpr,  # compute dtype
    BLOCK: tl.constexpr,  # elements per program
):
    b = tl.program_id(1).to(tl.int64)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < chw
    g = tl.load(grad_ptr + b * stride_grad + offs, mask=mask, other=0.0).to(CDT)
    logit = tl.load(logit_ptr + b * stride_logit + offs, mask=mask, other=0.0).to(CDT)
    s = tl.load(s_ptr + b * stride_s + offs, mask=mask, other=0.0).to(CDT)
    z = tl.load(z_ptr + b * stride_z + offs, mask=mask, other=0.0).to(CDT)
    n = 1.0 / (1.0 + tl.exp(-logit))  # recomputed
    # dy/ds = 1 - n;  dy/dz = n;  dy/dlogit = (z - s) * n * (1 - n)
    ds = g * (1.0 - n)
    dz = g * n
    dlogit = g * (z - s) * n * (1.0 - n)
    tl.store(ds_ptr + b * chw + offs, ds.to(ds_ptr.dtype.element_ty), mask=mask)
    tl.store(dz_ptr + b * chw + offs, dz.to(dz_ptr.dtype.element_ty), mask=mask)
    tl.store(dlogit_ptr + b * chw + offs, dlogit.to(dlogit_ptr.dtype.element_ty), mask=mask)


def gated_combine_forward(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """Launcher: (1 - n) * s + n * z, all [B, C, H, W]; output in z's dtype."""
    tu.check_same_shape("gated_combine", n_logits, shortcut, z)
    n_logits, s_logit = tu.sample_view(n_logits)
    shortcut, s_s = tu.sample_view(shortcut)
    z, s_z = tu.sample_view(z)
    out = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if out.numel() == 0:
        return out
    _gated_combine_fwd_kernel[_flat_grid(z)](
        n_logits, shortcut, z, out, s_logit, s_s, s_z, z[0].numel(),
        CDT=tu.compute_dtype(n_logits, shortcut, z), BLOCK=tu.flat_block(),
        num_warps=tu.FLAT_WARPS,
    )  # fmt: skip
    tu.record_launch("gated_combine_fwd")
    return out


def gated_combine_backward(
    grad: torch.Tensor, n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Launcher: (dL/dn_logits, dL/ds, dL/dz), recomputing n."""
    grad, s_g = tu.sample_view(grad)
    n_logits, s_logit = tu.sample_view(n_logits)
    shortcut, s_s = tu.sample_view(shortcut)
    z, s_z = tu.sample_view(z)
    dlogit = torch.empty(z.shape, dtype=n_logits.dtype, device=z.device)
    ds = torch.empty(z.shape, dtype=shortcut.dtype, device=z.device)
    dz = torch.empty(z.shape, dtype=z.dtype, device=z.device)
    if z.numel() == 0:
        return dlogit, ds, dz
    _gated_combine_bwd_kernel[_flat_grid(z)](
        grad, n_logits, shortcut, z, dlogit, ds, dz, s_g, s_logit, s_s, s_z, z[0].numel(),
        CDT=tu.compute_dtype(grad, n_logits, shortcut, z), BLOCK=tu.flat_block(),
        num_warps=tu.FLAT_WARPS,
    )  # fmt: skip
    tu.record_launch("gated_combine_bwd")
    return dlogit, ds, dz


class GatedCombineFunction(torch.autograd.Function):
    """(1 - n) * s + n * z; double backward goes through the torch reference (ref_vjp)."""

    @staticmethod
    def forward(ctx, n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor):
        ctx.save_for_backward(n_logits, shortcut, z)
        return gated_combine_forward(n_logits, shortcut, z)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():
            return tu.ref_vjp(gated_combine_ref, saved, needs, (grad,))
        grads = gated_combine_backward(grad, *saved)
        return tuple(g if n else None for g, n in zip(grads, needs, strict=True))
