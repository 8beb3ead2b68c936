"""Shared checks for the inference-kernel tests (conv and MRU epilogues).

Low-precision outputs are judged against an fp32 reference: the kernel's error may be at most
twice torch's own error in that dtype plus ATOL[dtype] x the reference's scale; fp32 within 1e-4.
"""

import torch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
ATOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}


def nhwc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 2, 3, 1).contiguous()


def nchw(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2).float()


def assert_close(out: torch.Tensor, ref32: torch.Tensor, ref_lp: torch.Tensor | None,
                 dtype: torch.dtype, what: str) -> None:
    """Kernel output vs fp32 reference, judged by torch's own error in `dtype` (see module doc)."""
    out, ref32 = out.float(), ref32.float()
    err = (out - ref32).abs()
    scale = max(1.0, ref32.abs().max().item())
    if dtype == torch.float32:
        tol = 1e-4 * scale
    else:
        torch_err = (ref_lp.float() - ref32).abs().max().item()
        tol = 2.0 * torch_err + ATOL[dtype] * scale
    worst = err.max().item()
    if worst > tol:
        idx = tuple(int(i) for i in torch.nonzero(err == err.max())[0])
        raise AssertionError(f"{what} [{dtype}]: {(err > tol).sum().item()} of {err.numel()} "
                             f"elements off; worst {worst:.3e} at {idx} (tol {tol:.3e})")
