"""Generator and discriminator of docs/networks.md, for resolutions 64, 128 and 256.

Widths follow the resolution: the level at resolution r has w(r) = base * 64 / r channels, so
for base 64 at 64x64 the encoder is 64 -> 128 -> 256 -> 512 (docs/networks.md) and the
bottleneck is always 4x4 with w(8) + noise channels. Higher resolutions add narrow levels on
top instead of widening the deep ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from s2i_fast.config import ModelConfig
from s2i_fast.model import ops
from s2i_fast.model.mru import MRU
from s2i_fast.model.norm import BatchNorm2d, ConditionalBatchNorm2d


def level_width(cfg: ModelConfig, r: int) -> int:
    """Channels of the encoder level at resolution r."""
    return max(1, cfg.base * 64 // r)


def encoder_resolutions(cfg: ModelConfig) -> list[int]:
    """Resolutions of the encoder levels, top first: [R, R/2, ..., 8]."""
    n = int(math.log2(cfg.resolution)) - 2  # levels down to the 4x4 bottleneck
    return [cfg.resolution >> i for i in range(n)]


def image_pyramid(image: torch.Tensor, resolutions: list[int]) -> dict[int, torch.Tensor]:
    """Area resize (average pooling by powers of two) of image to each resolution."""
    top = image.shape[-1]
    return {r: image if r == top else F.avg_pool2d(image, top // r) for r in resolutions}


class NormAct(nn.Module):
    """conv -> norm -> LeakyReLU, the block after each MRU.

    impl="triton" runs the norm's statistics and its apply step + LeakyReLU as fused kernels
    (the same function; the conv stays on cuDNN).
    """

    def __init__(self, conv: nn.Module, norm: nn.Module, slope: float, impl: str = "ref") -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm
        self.slope = slope
        self.impl = impl

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv(x)
        if self.impl == "triton":
            scale, shift = self.norm.scale_shift(y, label, impl="triton")
            return ops.norm_act(y, scale, shift, self.slope, impl="triton")
        return F.leaky_relu(self.norm(y, label), self.slope)


def _set_impl(root: nn.Module, impl: str) -> None:
    ops.require(impl)
    for m in root.modules():
        if isinstance(m, (MRU, NormAct)):
            m.impl = impl


class Upsample(nn.Module):
    """x2 upsampling followed by a conv (no ConvTranspose: exports cleanly)."""

    def __init__(self, mode: str, channels: int) -> None:
        super().__init__()
        self.mode = mode
        self.out_channels = channels // 4 if mode == "pixelshuffle" else channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixelshuffle":
            return F.pixel_shuffle(x, 2)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Generator(nn.Module):
    """G(sketch, label, noise) -> image in [-1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ops.require(cfg.impl)
        self.cfg = cfg
        slope = cfg.act_slope
        self.resolutions = encoder_resolutions(cfg)

        def cbn(c: int) -> nn.Module:
            return ConditionalBatchNorm2d(c, cfg.num_classes)

        def mru(cin: int, cout: int) -> MRU:
            return MRU(cin, 1, cout, cbn, slope, impl=cfg.impl)

        res = cfg.resolution
        if cfg.stem == "label":
            self.stem_embed = nn.Embedding(cfg.num_classes, res * res)
            # N(0, 0.02), the usual GAN init: nn.Embedding's N(0, 1) is per-pixel white noise
            # that Adam barely moves in a short run and shows as speckle on every output
            nn.init.normal_(self.stem_embed.weight, 0.0, 0.02)
            stem_ch = 1
        else:
            self.stem_conv = nn.Conv2d(1, 8, 3, padding=1)
            stem_ch = 8

        self.enc_mru = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        cin = stem_ch
        for r in self.resolutions:
            w = level_width(cfg, r)
            self.enc_mru.append(mru(cin, w))
            down = nn.Conv2d(w, w, 3, 2, 1, bias=False)
            self.enc_down.append(NormAct(down, cbn(w), slope, cfg.impl))
            cin = w

        self.noise_fc = nn.Linear(cfg.noise_dim, cfg.noise_channels * 16)
        cin = level_width(cfg, 8) + cfg.noise_channels  # bottleneck at 4x4

        self.dec_mru = nn.ModuleList()
        self.dec_up = nn.ModuleList()
        for r in reversed(self.resolutions):  # output resolution of each up step
            w = level_width(cfg, r)
            self.dec_mru.append(mru(cin, w))
            up = Upsample(cfg.upsample, w)
            conv = nn.Conv2d(up.out_channels, w // 2 if w > 1 else 1, 3, padding=1, bias=False)
            block = NormAct(conv, cbn(conv.out_channels), slope, cfg.impl)
            self.dec_up.append(nn.ModuleDict({"up": up, "block": block}))
            cin = conv.out_channels + w
        w = level_width(cfg, res)
        self.out_mru = mru(cin, w)
        self.out_conv = nn.Conv2d(w, 3, 3, padding=1)

    def set_impl(self, impl: str) -> None:
        _set_impl(self, impl)
        self.cfg.impl = impl

    def forward(
        self, sketch: torch.Tensor, label: torch.Tensor, noise: torch.Tensor | None = None
    ) -> torch.Tensor:
        # sketch [B, 1, R, R] normalised, label [B] int64, noise [B, noise_dim]
        b = sketch.shape[0]
        res = self.cfg.resolution
        if noise is None:
            noise = torch.randn(b, self.cfg.noise_dim, device=sketch.device, dtype=sketch.dtype)
        pyramid = image_pyramid(sketch, self.resolutions + [4])
        if self.cfg.stem == "label":
            h = self.stem_embed(label).view(b, 1, res, res).to(sketch.dtype)  # [B, 1, R, R]
        else:
            h = self.stem_conv(sketch)  # [B, 8, R, R]
        skips = []
        for r, mru, down in zip(self.resolutions, self.enc_mru, self.enc_down, strict=True):
            h = mru(h, pyramid[r], label)  # [B, w(r), r, r]
            skips.append(h)
            h = down(h, label)  # [B, w(r), r/2, r/2]
        z = self.noise_fc(noise.to(h.dtype)).view(b, self.cfg.noise_channels, 4, 4)
        h = torch.cat([h, z], 1)  # [B, w(8) + noise_channels, 4, 4]
        r = 4
        for mru, up, skip in zip(self.dec_mru, self.dec_up, reversed(skips), strict=True):
            h = mru(h, pyramid[r], label)  # [B, w(2r), r, r]
            h = up["block"](up["up"](h), label)  # [B, w(2r)/2, 2r, 2r]
            h = torch.cat([h, skip], 1)
            r *= 2
        h = self.out_mru(h, pyramid[r], label)  # [B, w(R), R, R]
        return torch.tanh(self.out_conv(h))  # [B, 3, R, R]


class Discriminator(nn.Module):
    """D(image, sketch) -> (real/fake logit [B], class logits [B, K])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ops.require(cfg.impl)
        self.cfg = cfg
        slope = cfg.act_slope
        self.resolutions = encoder_resolutions(cfg)
        sn = spectral_norm
        img_ch = 4  # [image RGB, sketch]

        self.enc_mru = nn.ModuleList()
        self.enc_down = nn.ModuleList()
        cin = img_ch
        for r in self.resolutions:
            w = level_width(cfg, r)
            self.enc_mru.append(MRU(cin, img_ch, w, BatchNorm2d, slope, wrap=sn, impl=cfg.impl))
            down = sn(nn.Conv2d(w, w, 3, 2, 1, bias=False))
            self.enc_down.append(NormAct(down, BatchNorm2d(w), slope, cfg.impl))
            cin = w
        self.fc_gan = sn(nn.Linear(cin, 1))
        self.fc_cls = sn(nn.Linear(cin, cfg.num_classes))

    def set_impl(self, impl: str) -> None:
        _set_impl(self, impl)
        self.cfg.impl = impl

    def forward(
        self, image: torch.Tensor, sketch: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([image, sketch.to(image.dtype)], 1)  # [B, 4, R, R]
        pyramid = image_pyramid(h, self.resolutions)
        for r, mru, down in zip(self.resolutions, self.enc_mru, self.enc_down, strict=True):
            h = down(mru(h, pyramid[r]))  # [B, w(r), r/2, r/2]
        feat = h.mean(dim=(2, 3))  # [B, w(8)]
        return self.fc_gan(feat).squeeze(1), self.fc_cls(feat)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
