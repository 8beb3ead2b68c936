"""Batch statistics of BN / CBN in one pass (training path).

    batch_stats: mean[c], var[c] (biased) over (B, H, W) of x [B, C, H, W]

Forward: one read of x; each program owns ROWS whole (b, c) planes and runs Welford per lane
(lane j takes elements j, j+BLOCK, ...), merging lanes with Chan et al.'s formula; a second,
tiny launch merges the B rows of each channel. Backward: dmean/dx = 1/N, dvar/dx =
2 (x - mean) / N, one elementwise pass. The norm module turns (mean, var) into scale/shift with
small torch ops, so autograd chains the kernels' dL/dscale, dL/dshift into dL/dmean, dL/dvar
and then into this backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model.ops import batch_stats_ref


@triton.jit
def _row_stats_kernel(
    x_ptr,  # x [B, C, H, W], sample-contiguous, batch stride stride_x
    mean_ptr,  # out: per-row mean [B, C] (compute dtype)
    m2_ptr,  # out: per-row sum of squared deviations from the row mean [B, C]
    stride_x,  # batch stride of x
    C,  # channels
    HW,  # H * W: elements per row
    n_rows,  # B * C
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # lanes per row; lane j runs Welford over elements j, j+BLOCK, ...
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)  # [ROWS] flat (b, c) index
    row_ok = rows < n_rows
    row_base = (rows // C).to(tl.int64) * stride_x + (rows % C) * HW  # [ROWS]
    lanes = tl.arange(0, BLOCK)
    cnt = tl.zeros([ROWS, BLOCK], dtype=CDT)
    mean = tl.zeros([ROWS, BLOCK], dtype=CDT)
    m2 = tl.zeros([ROWS, BLOCK], dtype=CDT)
    for start in range(0, HW, BLOCK):  # one pass over the rows
        offs = start + lanes
        valid = row_ok[:, None] & (offs < HW)[None, :]  # [ROWS, BLOCK]
        v = tl.load(x_ptr + row_base[:, None] + offs[None, :], mask=valid, other=0.0).to(CDT)
        cnt += valid.to(CDT)
        delta = tl.where(valid, v - mean, 0.0)
        mean += delta / tl.maximum(cnt, 1.0)
        m2 += delta * tl.where(valid, v - mean, 0.0)
    # Chan et al.: merge the lanes' (count, mean, M2) of each row
    total = tl.maximum(tl.sum(cnt, axis=1), 1.0)  # [ROWS]
    row_mean = tl.sum(cnt * mean, axis=1) / total
    dev = mean - row_mean[:, None]
    row_m2 = tl.sum(m2, axis=1) + tl.sum(cnt * dev * dev, axis=1)
    tl.store(mean_ptr + rows, row_mean, mask=row_ok)
    tl.store(m2_ptr + rows, row_m2, mask=row_ok)


@triton.jit
def _stats_merge_kernel(
    row_mean_ptr,  # per-row means [B, C] (compute dtype)
    row_m2_ptr,  # per-row sums of squared deviations [B, C]
    mean_ptr,  # out: batch mean [C]
    var_ptr,  # out: biased batch variance [C]
    B,  # batch size
    C,  # channels
    hw,  # H * W as a float: the count of every row
    CDT: tl.constexpr,  # compute dtype
    BLOCK_C: tl.constexpr,  # channels per program
):
    cs = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = cs < C
    total = tl.zeros([BLOCK_C], dtype=CDT)
    for b in range(0, B):  # rows of equal count: mean of means
        total += tl.load(row_mean_ptr + b * C + cs, mask=ok, other=0.0).to(CDT)
    mean = total / B
    m2 = tl.zeros([BLOCK_C], dtype=CDT)
    for b in range(0, B):  # Chan et al.: M2 = sum M2_b + n_b * (mean_b - mean)^2
        dev = tl.load(row_mean_ptr + b * C + cs, mask=ok, other=0.0).to(CDT) - mean
        m2 += tl.load(row_m2_ptr + b * C + cs, mask=ok, other=0.0).to(CDT) + hw * dev * dev
    tl.store(mean_ptr + cs, mean, mask=ok)
    tl.store(var_ptr + cs, m2 / (hw * B), mask=ok)


@triton.jit
def _stats_bwd_kernel(
    x_ptr,  # x (saved input), batch stride stride_x
    mean_ptr,  # batch mean [C] (compute dtype)
    gmean_ptr,  # dL/dmean [C] (compute dtype)
    gvar_ptr,  # dL/dvar [C] (compute dtype)
    dx_ptr,  # out: dL/dx [B, C, H, W], contiguous
    stride_x,  # batch stride of x
    C,  # channels
    HW,  # H * W
    n_rows,  # B * C
    inv_n,  # 1 / (B * H * W)
    CDT: tl.constexpr,  # compute dtype
    ROWS: tl.constexpr,  # rows (b, c) per program
    BLOCK: tl.constexpr,  # elements of a row per loop step
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < n_rows
    c = rows % C
    x_base = (rows // C).to(tl.int64) * stride_x + c * HW  # [ROWS]
    out_base = rows.to(tl.int64) * HW
    mean = tl.load(mean_ptr + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    gmean = tl.load(gmean_ptr + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    gvar = tl.load(gvar_ptr + c, mask=row_ok, other=0.0).to(CDT)[:, None]
    for start in range(0, HW, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = row_ok[:, None] & (offs < HW)[None, :]
        x = tl.load(x_ptr + x_base[:, None] + offs[None, :], mask=valid, other=0.0).to(CDT)
        # dmean/dx = 1/N;  dvar/dx = 2 (x - mean) / N   (biased var, the mean term cancels)
        dx = (gmean + 2.0 * gvar * (x - mean)) * inv_n
        tl.store(dx_ptr + out_base[:, None] + offs[None, :], dx.to(dx_ptr.dtype.element_ty),
                 mask=valid)  # fmt: skip


def batch_stats_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Launcher: (mean [C], biased var [C]) of x [B, C, H, W] in fp32 (fp64 for fp64 x)."""
    x, s_x = tu.sample_view(x)
    b, c, h, w = x.shape
    cdt = tu.compute_dtype(x)
    tdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    row_mean = torch.empty(b, c, dtype=tdt, device=x.device)  # [B, C]
    row_m2 = torch.empty(b, c, dtype=tdt, device=x.device)  # [B, C]
    rows, block, warps = tu.row_block(h * w)
    _row_stats_kernel[(triton.cdiv(b * c, rows),)](
        x, row_mean, row_m2, s_x, c, h * w, b * c, CDT=cdt, ROWS=rows, BLOCK=block,
        num_warps=warps,
    )  # fmt: skip
    tu.record_launch("batch_stats_fwd")
    # merge the B rows of each channel: one small launch instead of ~6 torch ops on [B, C]
    mean = torch.empty(c, dtype=tdt, device=x.device)  # [C]
    var = torch.empty(c, dtype=tdt, device=x.device)  # [C]
    block_c = min(128, triton.next_power_of_2(c))
    _stats_merge_kernel[(triton.cdiv(c, block_c),)](
        row_mean, row_m2, mean, var, b, c, float(h * w), CDT=cdt, BLOCK_C=block_c, num_warps=4
    )
    tu.record_launch("batch_stats_merge")
    return mean, var


def batch_stats_backward(
    x: torch.Tensor, mean: torch.Tensor, gmean: torch.Tensor, gvar: torch.Tensor
) -> torch.Tensor:
    x, s_x = tu.sample_view(x)
    b, c, h, w = x.shape
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    rows, block, warps = tu.row_block(h * w)
    tdt = mean.dtype
    _stats_bwd_kernel[(triton.cdiv(b * c, rows),)](
        x, mean.contiguous(), gmean.to(tdt).contiguous(), gvar.to(tdt).contiguous(), dx,
        s_x, c, h * w, b * c, 1.0 / (b * h * w), CDT=tu.compute_dtype(x), ROWS=rows,
        BLOCK=block, num_warps=warps,
    )  # fmt: skip
    tu.record_launch("batch_stats_bwd")
    return dx


class BatchStatsFunction(torch.autograd.Function):
    """(mean, biased var) per channel; double backward through the reference (ref_vjp)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        mean, var = batch_stats_forward(x)
        ctx.save_for_backward(x, mean)
        return mean, var

    @staticmethod
    def backward(ctx, gmean, gvar):
        x, mean = ctx.saved_tensors
        if torch.is_grad_enabled():
            return tu.ref_vjp(batch_stats_ref, (x,), ctx.needs_input_grad, (gmean, gvar))
        if gmean is None:
            gmean = torch.zeros_like(mean)
        if gvar is None:
            gvar = torch.zeros_like(mean)
        return batch_stats_backward(x, mean, gmean, gvar)
