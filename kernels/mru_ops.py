"""The fused side of the MRU's elementwise ops: dispatch to the Triton kernels.

The ops and their plain-torch specification (`*_ref`) live in s2i_fast/model/ops.py, which the
model calls; importing this module registers the functions below there as impl "triton".
Each public function here takes impl="ref" | "triton". "triton" runs the fused kernels
(gate.py, norm_act_kernels.py, batch_stats.py, bn_tail.py) when their preconditions hold:
triton installed and the tensors on CUDA, or on the CPU with TRITON_INTERPRET=1; dtypes
fp16/bf16/fp32 (fp32 math) or fp64. Otherwise it falls back to the reference with one warning
(S2I_TRITON_STRICT=1 makes that an error instead); `s2i_fast.kernels._triton_utils.LAUNCHES`
counts the kernels that ran.

Double backward (the DRAGAN penalty): when a backward runs with create_graph=True, each fused
Function computes its gradients by re-running the torch reference on its saved inputs
(`_triton_utils.ref_vjp`), so the gradients are differentiable; plain backward uses the kernels.
"""

from __future__ import annotations

import torch

from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model import ops
from s2i_fast.model.ops import (
    batch_stats_ref,
    bn_act_combine_ref,
    gate_mask_ref,
    gated_combine_ref,
    norm_act_combine_ref,
    norm_act_ref,
)


def _use_triton(op: str, impl: str, *tensors: torch.Tensor) -> bool:
    if impl not in ("ref", "triton"):
        raise ValueError(f"impl must be 'ref' or 'triton', got {impl!r}")
    if impl == "ref":
        return False
    reason = tu.unusable_reason(*tensors)
    if reason is None:
        return True
    tu.fallback(op, reason)
    return False


def gate_mask(m_logits: torch.Tensor, x: torch.Tensor, impl: str = "ref") -> torch.Tensor:
    """sigmoid(m_logits) * x, both [B, Cx, H, W] (m_logits may be a channel-slice view)."""
    if _use_triton("gate_mask", impl, m_logits, x):
        from s2i_fast.kernels.gate import GateMaskFunction

        return GateMaskFunction.apply(m_logits, x)
    return gate_mask_ref(m_logits, x)


def norm_act(
    z_pre: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    slope: float,
    impl: str = "ref",
) -> torch.Tensor:
    """LeakyReLU(z_pre * scale + shift); z_pre [B, C, H, W], scale/shift [B, C] or [C]."""
    if _use_triton("norm_act", impl, z_pre, scale, shift):
        from s2i_fast.kernels.norm_act_kernels import NormActFunction

        return NormActFunction.apply(z_pre, scale, shift, float(slope))
    return norm_act_ref(z_pre, scale, shift, slope)


def gated_combine(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor, impl: str = "ref"
) -> torch.Tensor:
    """(1 - n) * s + n * z, n = sigmoid(n_logits); all [B, Co, H, W]."""
    if _use_triton("gated_combine", impl, n_logits, shortcut, z):
        from s2i_fast.kernels.gate import GatedCombineFunction

        return GatedCombineFunction.apply(n_logits, shortcut, z)
    return gated_combine_ref(n_logits, shortcut, z)


def norm_act_combine(
    z_pre: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    slope: float,
    n_logits: torch.Tensor,
    shortcut: torch.Tensor,
    impl: str = "ref",
    shortcut_scale: torch.Tensor | None = None,
    shortcut_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1 - n) * s + n * LeakyReLU(z_pre * scale + shift) in one kernel (the MRU's tail).

    s = shortcut, or shortcut * shortcut_scale + shortcut_shift when both are given (the
    shortcut's norm, fused in: the normalised shortcut is never written)."""
    if (shortcut_scale is None) != (shortcut_shift is None):
        raise ValueError("give both shortcut_scale and shortcut_shift, or neither")
    extra = () if shortcut_scale is None else (shortcut_scale, shortcut_shift)
    if _use_triton("norm_act_combine", impl, z_pre, scale, shift, n_logits, shortcut, *extra):
        from s2i_fast.kernels.norm_act_kernels import NormActCombineFunction

        return NormActCombineFunction.apply(
            z_pre, scale, shift, float(slope), n_logits, shortcut, shortcut_scale, shortcut_shift
        )
    return norm_act_combine_ref(
        z_pre, scale, shift, slope, n_logits, shortcut, shortcut_scale, shortcut_shift
    )


def bn_act_combine(
    z_pre: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
    slope: float,
    n_logits: torch.Tensor,
    shortcut: torch.Tensor,
    shortcut_gamma: torch.Tensor | None = None,
    shortcut_beta: torch.Tensor | None = None,
    impl: str = "ref",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MRU's tail in training with batch norm(s) fused, statistics and all: (y, stats).

    Fused path: batch_stats + norm_act_combine forward; backward is the whole batch norm in
    two passes (bn_tail.py). stats [4, C] (no gradient) feeds the running averages."""
    if (shortcut_gamma is None) != (shortcut_beta is None):
        raise ValueError("give both shortcut_gamma and shortcut_beta, or neither")
    extra = () if shortcut_gamma is None else (shortcut_gamma, shortcut_beta)
    if _use_triton("bn_act_combine", impl, z_pre, gamma, beta, n_logits, shortcut, *extra):
        from s2i_fast.kernels.bn_tail import BNActCombineFunction

        return BNActCombineFunction.apply(
            z_pre, gamma, beta, n_logits, shortcut, shortcut_gamma, shortcut_beta,
            float(eps), float(slope),
        )  # fmt: skip
    return bn_act_combine_ref(
        z_pre, gamma, beta, eps, slope, n_logits, shortcut, shortcut_gamma, shortcut_beta
    )


def batch_stats(x: torch.Tensor, impl: str = "ref") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], biased var [C]) of x [B, C, H, W], fp32; one read of x on the fused path."""
    if _use_triton("batch_stats", impl, x):
        from s2i_fast.kernels.batch_stats import BatchStatsFunction

        return BatchStatsFunction.apply(x)
    return batch_stats_ref(x)


ops.register(
    "triton",
    {
        "gate_mask": lambda m, x: gate_mask(m, x, impl="triton"),
        "norm_act": lambda z, sc, sh, slope: norm_act(z, sc, sh, slope, impl="triton"),
        "gated_combine": lambda n, s, z: gated_combine(n, s, z, impl="triton"),
        "norm_act_combine": lambda z, sc, sh, slope, n, s, ssc, ssh: norm_act_combine(
            z, sc, sh, slope, n, s, impl="triton", shortcut_scale=ssc, shortcut_shift=ssh
        ),
        "bn_act_combine": lambda z, g, b, eps, slope, n, s, sg, sb: bn_act_combine(
            z, g, b, eps, slope, n, s, sg, sb, impl="triton"
        ),
        "batch_stats": lambda x: batch_stats(x, impl="triton"),
    },
)
