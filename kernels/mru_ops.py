"""Elementwise MRU ops: the reference (specification) and the dispatch to fused kernels.

DESIGN.md's MRU, with gate_logits = conv3x3_gate([x, I]) split into m_logits (Cx) and
n_logits (Co):

    m*x       = sigmoid(m_logits) * x                       gate_mask
    z         = act(z_pre * scale + shift)                  norm_act (the norm's apply step)
    y         = (1 - n) * s + n * z,  n = sigmoid(n_logits)  gated_combine
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def _check_impl(impl: str) -> None:
    if impl not in ("ref", "triton"):
        raise ValueError(f"impl must be 'ref' or 'triton', got {impl!r}")


def gate_mask(m_logits: torch.Tensor, x: torch.Tensor, impl: str = "ref") -> torch.Tensor:
    _check_impl(impl)
    return _gate_mask_ref(m_logits, x)


def norm_act(
    z_pre: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    slope: float,
    impl: str = "ref",
) -> torch.Tensor:
    _check_impl(impl)
    return _norm_act_ref(z_pre, scale, shift, slope)


def gated_combine(
    n_logits: torch.Tensor, shortcut: torch.Tensor, z: torch.Tensor, impl: str = "ref"
) -> torch.Tensor:
    _check_impl(impl)
    return _gated_combine_ref(n_logits, shortcut, z)
