"""The Masked Residual Unit (SketchyGAN, Chen & Hays 2018), docs/networks.md's equations.

    gate_logits = conv3x3_gate([x, I])          Cx + Co channels (conv_m and conv_n fused)
    m = sigmoid(gate_logits[:, :Cx])            mask on x
    n = sigmoid(gate_logits[:, Cx:])            combine weight
    z = act(norm(conv3x3_z([m*x, I])))          Co channels
    s = x if Cx == Co else norm(conv1x1(x))     shortcut
    y = (1 - n) * s + n * z
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from s2i_fast.model import ops

NormFactory = Callable[[int], nn.Module]


class MRU(nn.Module):
    def __init__(
        self,
        in_channels: int,
        image_channels: int,
        out_channels: int,
        norm: NormFactory,
        act_slope: float = 0.2,
        wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
        impl: str = "ref",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.image_channels = image_channels
        self.out_channels = out_channels
        self.act_slope = act_slope
        self.impl = impl
        cat = in_channels + image_channels
        # conv_m and conv_n read the same input: one conv, Cx + Co outputs; no norm on masks
        self.conv_gate = wrap(nn.Conv2d(cat, in_channels + out_channels, 3, padding=1))
        self.conv_z = wrap(nn.Conv2d(cat, out_channels, 3, padding=1, bias=False))
        self.norm_z = norm(out_channels)
        if in_channels != out_channels:
            self.conv_short = wrap(nn.Conv2d(in_channels, out_channels, 1, bias=False))
            self.norm_short = norm(out_channels)
        else:
            self.conv_short = None
            self.norm_short = None

    def forward(
        self, x: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> torch.Tensor:
        # x [B, Cx, H, W], image [B, Ci, H, W] -> y [B, Co, H, W]
        if self.impl == "triton":
            return self._forward_fused(x, image, label)
        cx = self.in_channels
        gate_logits = self.conv_gate(torch.cat([x, image], 1))  # [B, Cx + Co, H, W]
        m_logits, n_logits = gate_logits[:, :cx], gate_logits[:, cx:]
        masked_x = ops.gate_mask(m_logits, x, impl=self.impl)  # [B, Cx, H, W]
        z_pre = self.conv_z(torch.cat([masked_x, image], 1))  # [B, Co, H, W]
        scale, shift = self.norm_z.scale_shift(z_pre, label)
        z = ops.norm_act(z_pre, scale, shift, self.act_slope, impl=self.impl)
        if self.conv_short is None:
            shortcut = x
        else:
            shortcut = self.norm_short(self.conv_short(x), label)  # [B, Co, H, W]
        return ops.gated_combine(n_logits, shortcut, z, impl=self.impl)

    def _forward_fused(
        self, x: torch.Tensor, image: torch.Tensor, label: torch.Tensor | None
    ) -> torch.Tensor:
        """impl="triton": the same function; convs stay on cuDNN, the elementwise chain runs in
        fused kernels: gate_mask, then in training bn_act_combine (batch statistics of both
        norms in one pass each; both norms' apply, LeakyReLU and the gated combine in one
        pass; the whole batch-norm backward in two), in eval norm_act_combine with the
        running statistics. z and the normalised shortcut are never written. Where a kernel
        cannot run, the kernels fall back to the reference with one warning."""
        impl = "triton"
        cx = self.in_channels
        gate_logits = self.conv_gate(torch.cat([x, image], 1))  # [B, Cx + Co, H, W]
        m_logits, n_logits = gate_logits[:, :cx], gate_logits[:, cx:]  # views, read in place
        masked_x = ops.gate_mask(m_logits, x, impl=impl)  # [B, Cx, H, W]
        z_pre = self.conv_z(torch.cat([masked_x, image], 1))  # [B, Co, H, W]
        shortcut = x if self.conv_short is None else self.conv_short(x)  # [B, Co, H, W]
        norms = [self.norm_z] + ([] if self.norm_short is None else [self.norm_short])
        if all(n.fusable_batch_norm() and n.eps == self.norm_z.eps for n in norms):
            gamma, beta = self.norm_z.affine(label)
            s_gamma, s_beta = (None, None) if self.norm_short is None else (
                self.norm_short.affine(label))  # fmt: skip
            y, stats = ops.bn_act_combine(
                z_pre, gamma, beta, self.norm_z.eps, self.act_slope, n_logits, shortcut,
                s_gamma, s_beta, impl=impl,
            )  # fmt: skip
            count = z_pre.numel() // z_pre.shape[1]
            self.norm_z._update_running(stats[0], stats[1], count)
            if self.norm_short is not None:
                self.norm_short._update_running(stats[2], stats[3], count)
            return y
        scale, shift = self.norm_z.scale_shift(z_pre, label, impl=impl)
        s_scale = s_shift = None
        if self.norm_short is not None:
            s_scale, s_shift = self.norm_short.scale_shift(shortcut, label, impl=impl)
        return ops.norm_act_combine(
            z_pre, scale, shift, self.act_slope, n_logits, shortcut, impl=impl,
            shortcut_scale=s_scale, shortcut_shift=s_shift,
        )  # fmt: skip
