"""Elementwise MRU ops: the reference (specification) and the dispatch to fused kernels.

DESIGN.md's MRU, with gate_logits = conv3x3_gate([x, I]) split into m_logits (Cx) and
n_logits (Co):

    m*x       = sigmoid(m_logits) * x                       gate_mask
    z         = act(z_pre * scale + shift)                  norm_act (the norm's apply step)
    y         = (1 - n) * s + n * z,  n = sigmoid(n_logits)  gated_combine
    y         = gated_combine(n_logits, s, norm_act(...))   norm_act_combine (one fused kernel)
    mean, var = biased batch statistics per channel         batch_stats

Every public function takes impl="ref" | "triton". "ref" runs the `_name_ref` torch code below
(the specification; what ONNX export traces). "triton" runs the fused kernels (gate.py,
norm_act_kernels.py, batch_stats.py) when their preconditions hold: triton installed and the
tensors on CUDA, or on the CPU with TRITON_INTERPRET=1; dtypes fp16/bf16/fp32 (fp32 math) or
fp64. Otherwise it falls back to the reference with one warning (S2I_TRITON_STRICT=1 makes
that an error instead); `s2i_fast.kernels._triton_utils.LAUNCHES` counts the kernels that ran.

Double backward (the DRAGAN penalty): when a backward runs with create_graph=True, each fused
Function computes its gradients by re-running the torch reference on its saved inputs
(`_triton_utils.ref_vjp`), so the gradients are differentiable; plain backward uses the kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from s2i_fast.kernels import _triton_utils as tu


def _gate_mask_ref(m_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """m * x with m = sigmoid(m_logits); both [B, Cx, H, W]."""
    return torch.sigmoid(m_logits) * x


def _norm_act_ref(
    z_pre: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: float
) -> torch.Tensor:
    """LeakyReLU(z_pre * scale + shift); scale/shift [B, C] (per sample, CBN) or [C]."""
    if scale.dim() == 1:
        scale, shift = scale[None], shift[None]
    z = z_pre * scale[:, :, None, None] + shift[:, :, None, None]  # [B, C, H, W]
    return F.leaky_relu(z, slope)


def _gated_combine_ref(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """(1 - n) * s + n * z with n = sigmoid(n_logits); all [B, Co, H, W]."""
    n = torch.sigmoid(n_logits)
    return (1.0 - n) * shortcut + n * z


def _norm_act_combine_ref(
    z_pre: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    slope: float,
    n_logits: torch.Tensor,
    shortcut: torch.Tensor,
    shortcut_scale: torch.Tensor | None = None,
    shortcut_shift: torch.Tensor | None = None,
) -> torch.Tensor:
    """gated_combine(n_logits, s, norm_act(z_pre, scale, shift, slope)), where s = shortcut,
    or the shortcut's norm applied, shortcut * shortcut_scale + shortcut_shift, when given."""
    if shortcut_scale is not None:
        shortcut = _norm_apply_ref(shortcut, shortcut_scale, shortcut_shift)
    return _gated_combine_ref(n_logits, shortcut, _norm_act_ref(z_pre, scale, shift, slope))


def _norm_apply_ref(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x * scale + shift, scale/shift [B, C] or [C] (a norm's apply step, no activation)."""
    if scale.dim() == 1:
        scale, shift = scale[None], shift[None]
    return x * scale[:, :, None, None] + shift[:, :, None, None]


def _batch_stats_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], biased var [C]) over (B, H, W) in fp32 (fp64 for fp64 x)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    var, mean = torch.var_mean(xf, dim=(0, 2, 3), unbiased=False)
    return mean, var


def _bn_act_combine_ref(
    z_pre: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
    slope: float,
    n_logits: torch.Tensor,
    shortcut: torch.Tensor,
    shortcut_gamma: torch.Tensor | None = None,
    shortcut_beta: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The MRU's tail in training, batch statistics included: (y, stats [4, C]).

    BN(x) = gamma * (x - mean) * rstd + beta with the batch's mean and biased var of x; gamma,
    beta [B, C] (CBN rows) or [C] (BN). y = norm_act_combine with z_pre normalised by BN and
    the shortcut by its own BN when shortcut_gamma/beta are given. stats rows: mean, var of
    z_pre, then of the shortcut (zeros without a shortcut norm)."""

    def affine(x, g, b):
        mean, var = _batch_stats_ref(x)
        rstd = torch.rsqrt(var + eps)
        scale = g * rstd if g.dim() == 1 else g * rstd[None]
        return scale, b - (mean if g.dim() == 1 else mean[None]) * scale, mean, var

    scale, shift, mean, var = affine(z_pre, gamma, beta)
    stats = [mean, var, torch.zeros_like(mean), torch.zeros_like(var)]
    s_scale = s_shift = None
    if shortcut_gamma is not None:
        s_scale, s_shift, stats[2], stats[3] = affine(shortcut, shortcut_gamma, shortcut_beta)
    y = _norm_act_combine_ref(z_pre, scale, shift, slope, n_logits, shortcut, s_scale, s_shift)
    return y, torch.stack(stats).detach()


def _check_impl(impl: str) -> None:
    if impl not in ("ref", "triton"):
        raise ValueError(f"impl must be 'ref' or 'triton', got {impl!r}")


def _use_triton(op: str, impl: str, *tensors: torch.Tensor) -> bool:
    _check_impl(impl)
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
    return _gate_mask_ref(m_logits, x)


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
    return _norm_act_ref(z_pre, scale, shift, slope)


def gated_combine(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor, impl: str = "ref"
) -> torch.Tensor:
    """(1 - n) * s + n * z, n = sigmoid(n_logits); all [B, Co, H, W]."""
    if _use_triton("gated_combine", impl, n_logits, shortcut, z):
        from s2i_fast.kernels.gate import GatedCombineFunction

        return GatedCombineFunction.apply(n_logits, shortcut, z)
    return _gated_combine_ref(n_logits, shortcut, z)


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
    return _norm_act_combine_ref(
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
    return _bn_act_combine_ref(
        z_pre, gamma, beta, eps, slope, n_logits, shortcut, shortcut_gamma, shortcut_beta
    )


def batch_stats(x: torch.Tensor, impl: str = "ref") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], biased var [C]) of x [B, C, H, W], fp32; one read of x on the fused path."""
    if _use_triton("batch_stats", impl, x):
        from s2i_fast.kernels.batch_stats import BatchStatsFunction

        return BatchStatsFunction.apply(x)
    return _batch_stats_ref(x)
