"""The MRU's elementwise ops: their specification in plain torch, and the switch to a fused
implementation.

With gate_logits = conv3x3_gate([x, I]) split into m_logits (Cx) and n_logits (Co)
(docs/networks.md has the whole unit):

    m*x       = sigmoid(m_logits) * x                        gate_mask
    z         = act(z_pre * scale + shift)                   norm_act (a norm's apply step)
    y         = (1 - n) * s + n * z,  n = sigmoid(n_logits)   gated_combine
    y         = gated_combine(n_logits, s, norm_act(...))    norm_act_combine (the MRU's tail)
    (y, stats)= the tail with batch norm(s) computed inside  bn_act_combine (training)
    mean, var = biased batch statistics per channel          batch_stats

The `*_ref` functions below are the specification: what the model computes with impl="ref"
and what ONNX export traces. Each public op takes impl="ref" | "triton"; any other impl is
looked up among the implementations registered with `register`. The fused Triton kernels
register themselves as "triton" when `s2i_fast.kernels` is imported; this module never
imports them (the model is below the kernels in the layer order, docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

IMPLS: tuple[str, ...] = ("ref", "triton")
OPS: tuple[str, ...] = (
    "gate_mask", "norm_act", "gated_combine", "norm_act_combine", "bn_act_combine",
    "batch_stats",
)  # fmt: skip

_REGISTERED: dict[str, Mapping[str, Callable]] = {}


# ---------------------------------------------------------------------- the specification
def gate_mask_ref(m_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """m * x with m = sigmoid(m_logits); both [B, Cx, H, W]."""
    return torch.sigmoid(m_logits) * x


def norm_apply_ref(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """x * scale + shift, scale/shift [B, C] (per sample, CBN) or [C] (a norm's apply step)."""
    if scale.dim() == 1:
        scale, shift = scale[None], shift[None]
    return x * scale[:, :, None, None] + shift[:, :, None, None]


def norm_act_ref(
    z_pre: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: float
) -> torch.Tensor:
    """LeakyReLU(z_pre * scale + shift); scale/shift [B, C] or [C]."""
    return F.leaky_relu(norm_apply_ref(z_pre, scale, shift), slope)  # [B, C, H, W]


def gated_combine_ref(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor
) -> torch.Tensor:
    """(1 - n) * s + n * z with n = sigmoid(n_logits); all [B, Co, H, W]."""
    n = torch.sigmoid(n_logits)
    return (1.0 - n) * shortcut + n * z


def norm_act_combine_ref(
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
        shortcut = norm_apply_ref(shortcut, shortcut_scale, shortcut_shift)
    return gated_combine_ref(n_logits, shortcut, norm_act_ref(z_pre, scale, shift, slope))


def batch_stats_ref(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], biased var [C]) over (B, H, W) in fp32 (fp64 for fp64 x)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    var, mean = torch.var_mean(xf, dim=(0, 2, 3), unbiased=False)
    return mean, var


def bn_act_combine_ref(
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
        mean, var = batch_stats_ref(x)
        rstd = torch.rsqrt(var + eps)
        scale = g * rstd if g.dim() == 1 else g * rstd[None]
        return scale, b - (mean if g.dim() == 1 else mean[None]) * scale, mean, var

    scale, shift, mean, var = affine(z_pre, gamma, beta)
    stats = [mean, var, torch.zeros_like(mean), torch.zeros_like(var)]
    s_scale = s_shift = None
    if shortcut_gamma is not None:
        s_scale, s_shift, stats[2], stats[3] = affine(shortcut, shortcut_gamma, shortcut_beta)
    y = norm_act_combine_ref(z_pre, scale, shift, slope, n_logits, shortcut, s_scale, s_shift)
    return y, torch.stack(stats).detach()


# ---------------------------------------------------------------------- the switch
def register(impl: str, table: Mapping[str, Callable]) -> None:
    """Make `impl` available to every op: table maps each name in OPS to a function with the
    reference's signature."""
    missing = [name for name in OPS if name not in table]
    if missing:
        raise ValueError(f"implementation {impl!r} lacks {missing}")
    _REGISTERED[impl] = dict(table)


def check_impl(impl: str) -> None:
    if impl not in IMPLS and impl not in _REGISTERED:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")


def require(impl: str) -> None:
    """Raise unless every op can run with impl (the reference, or a registered one)."""
    if impl != "ref":
        _fused(impl, OPS[0])


def _fused(impl: str, op: str) -> Callable:
    check_impl(impl)
    try:
        return _REGISTERED[impl][op]
    except KeyError:
        raise ValueError(
            f"impl={impl!r} needs its kernels registered: import s2i_fast.kernels first "
            "(pip install 's2i-fast[triton]')"
        ) from None


def gate_mask(m_logits: torch.Tensor, x: torch.Tensor, impl: str = "ref") -> torch.Tensor:
    if impl == "ref":
        return gate_mask_ref(m_logits, x)
    return _fused(impl, "gate_mask")(m_logits, x)


def norm_act(
    z_pre: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, slope: float, impl: str = "ref"
) -> torch.Tensor:
    if impl == "ref":
        return norm_act_ref(z_pre, scale, shift, slope)
    return _fused(impl, "norm_act")(z_pre, scale, shift, slope)


def gated_combine(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor, impl: str = "ref"
) -> torch.Tensor:
    if impl == "ref":
        return gated_combine_ref(n_logits, shortcut, z)
    return _fused(impl, "gated_combine")(n_logits, shortcut, z)


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
    if (shortcut_scale is None) != (shortcut_shift is None):
        raise ValueError("give both shortcut_scale and shortcut_shift, or neither")
    fn = norm_act_combine_ref if impl == "ref" else _fused(impl, "norm_act_combine")
    return fn(z_pre, scale, shift, slope, n_logits, shortcut, shortcut_scale, shortcut_shift)


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
    if (shortcut_gamma is None) != (shortcut_beta is None):
        raise ValueError("give both shortcut_gamma and shortcut_beta, or neither")
    fn = bn_act_combine_ref if impl == "ref" else _fused(impl, "bn_act_combine")
    return fn(z_pre, gamma, beta, eps, slope, n_logits, shortcut, shortcut_gamma, shortcut_beta)


def batch_stats(x: torch.Tensor, impl: str = "ref") -> tuple[torch.Tensor, torch.Tensor]:
    if impl == "ref":
        return batch_stats_ref(x)
    return _fused(impl, "batch_stats")(x)
