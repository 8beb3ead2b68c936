"""Shared plumbing for the training-path Triton kernels: availability, preconditions, fallback
with one warning, a launch counter that tests and benchmarks check, layouts, block sizes and
the route that sends double backward through the torch reference.

Nothing here imports triton at module import time: the library must import without it.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch

# Kernel launches by kernel name since import. Tests that ask for impl="triton" read it to prove
# the fused path ran (a silent fallback to the reference would leave it unchanged).
LAUNCHES: Counter[str] = Counter()

# Dtypes the kernels take. fp16/bf16/fp32 compute in fp32; fp64 (gradcheck) computes in fp64.
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_warned = False


def record_launch(name: str) -> None:
    LAUNCHES[name] += 1


def launches_total() -> int:
    return sum(LAUNCHES.values())


def interpreting() -> bool:
    """True when Triton's CPU interpreter is selected (it must be set before triton's import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def strict() -> bool:
    """S2I_TRITON_STRICT=1: refuse to fall back (benchmarks set it; so may a user)."""
    return os.environ.get("S2I_TRITON_STRICT", "0") not in ("", "0")


@lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install (missing compiler etc.)
        return False
    return True


def unusable_reason(*tensors: torch.Tensor) -> str | None:
    """Why the fused path cannot run on these tensors, or None when it can."""
    if not triton_available():
        return "triton is not installed (pip install 's2i-fast[triton]')"
    devices = {t.device.type for t in tensors}
    if len(devices) != 1:
        return f"tensors on several devices {sorted(devices)}"
    dev = devices.pop()
    if dev == "cuda":
        if interpreting():
            return "TRITON_INTERPRET=1 is set but the tensors are on CUDA"
    elif dev == "cpu":
        if not interpreting():
            return "tensors are on the CPU and TRITON_INTERPRET=1 is not set"
    else:
        return f"device {dev!r} is not supported by the Triton kernels"
    for t in tensors:
        if t.dtype not in SUPPORTED_DTYPES:
            return f"dtype {t.dtype} is not supported (use fp32, bf16, fp16 or fp64)"
    return None


def fallback(op: str, reason: str) -> None:
    """Called when impl='triton' cannot run: raise in strict mode, else warn once and go on."""
    global _warned
    if strict():
        from s2i_fast.errors import BackendUnavailable

        raise BackendUnavailable(f"Triton kernel {op} cannot run: {reason}")
    if not _warned:
        _warned = True
        warnings.warn(
            f"impl='triton' requested but {op} falls back to the torch reference: {reason} "
            "(this warning is shown once)",
            RuntimeWarning,
            stacklevel=3,
        )


def compute_dtype(*tensors: torch.Tensor):
    """Triton dtype for the kernels' internal math: fp64 if any input is fp64, else fp32."""
    import triton.language as tl

    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def sample_view(t: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(tensor, batch stride) with each sample's [C, H, W] block contiguous.

    A channel slice of a contiguous NCHW tensor (m_logits = gate_logits[:, :Cx]) qualifies as
    it is, so the kernels read the gate conv's output in place; anything else is copied once.
    """
    if t.dim() != 4:
        raise ValueError(f"expected a [B, C, H, W] tensor, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or not t[0].is_contiguous():
        t = t.contiguous()
    stride_b = t.stride(0) if t.shape[0] > 1 else t[0].numel()
    return t, stride_b


def check_same_shape(op: str, *tensors: torch.Tensor) -> None:
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"{op}: tensors must share one shape, got {sorted(shapes)}")


# Block sizes: a small documented table instead of autotuning (elementwise, memory bound).
#  - flat elementwise kernels: 1024 elements per program, 4 warps (8 elements per thread for
#    fp16/bf16 vector loads); the grid is (cdiv(C*H*W, 1024), B).
#  - row kernels (whole (b, c) planes of H*W, for per-channel parameters and per-row sums):
#    a [ROWS, BLOCK] tile of 2048 elements, BLOCK = next_pow2(H*W) up to 1024 lanes along
#    the plane (looping when H*W > 1024), ROWS = 2048 // BLOCK planes per program (2 at
#    64x64, 8 at 16x16, 128 at 4x4); 4 warps. The grid is cdiv(B*C, ROWS).
#  - under TRITON_INTERPRET=1 each program costs a fixed Python/numpy overhead, so tiles are
#    8x larger there (flat 8192, row tile 16384) while the per-plane BLOCK keeps its 1024 cap,
#    so the loops over planes larger than 1024 elements still run in the CPU tests.
FLAT_WARPS = 4


def flat_block() -> int:
    return 8192 if interpreting() else 1024


def row_block(hw: int) -> tuple[int, int, int]:
    """(ROWS, BLOCK, num_warps) for planes of hw elements."""
    import triton

    block = max(16, min(1024, triton.next_power_of_2(hw)))
    tile = 16384 if interpreting() else 2048
    return tile // block, block, 4


def ref_vjp(
    ref_fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
    inputs: Sequence[torch.Tensor],
    needs: Sequence[bool],
    grads: Sequence[torch.Tensor | None],
) -> tuple[torch.Tensor | None, ...]:
    """Vector-Jacobian product of the torch reference, differentiable (create_graph=True).

    The Functions' backward comes here when grad mode is on during backward, i.e. when the
    caller asked for create_graph=True (the DRAGAN penalty): the reference is re-run on
    aliases of the saved inputs, which keep their place in the outer graph, so the returned
    gradients can be differentiated again. Every other backward runs the fused kernels.
    """
    with torch.enable_grad():
        # Fresh aliases: the saved inputs may depend on one another in the outer graph
        # (m_logits is a conv of [x, I]); differentiating w.r.t. the saved tensors themselves
        # would add those outer paths. The aliases keep only the op's own Jacobian while the
        # result stays connected to the outer graph through them.
        inputs = tuple(t.view_as(t) if n else t for t, n in zip(inputs, needs, strict=True))
        outs = ref_fn(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        wrt = [t for t, n in zip(inputs, needs, strict=True) if n]
        pairs = [
            (o, g) for o, g in zip(outs, grads, strict=True) if g is not None and o.requires_grad
        ]
        if not wrt or not pairs:
            return tuple(None for _ in inputs)
        got = torch.autograd.grad(
            [o for o, _ in pairs],
            wrt,
            [g for _, g in pairs],
            create_graph=True,
            allow_unused=True,
        )
    it = iter(got)
    result = []
    for t, n in zip(inputs, needs, strict=True):
        if not n:
            result.append(None)
            continue
        g = next(it)
        result.append(torch.zeros_like(t) if g is None else g)
    return tuple(result)
