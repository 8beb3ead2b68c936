"""Inference wrappers around an eval-mode Generator: what ONNX export traces and the torch
backends of the Engine run, so every backend computes one function.

    UInt8Generator: uint8 sketch [B,H,W] (black on white) + int64 label [B] + float32 noise
                    [B,Z] -> uint8 RGB [B,H,W,3]; the data set's preprocessing folded in.
    RawGenerator:   float sketch [B,1,H,W] (model space) + label + noise -> float [B,3,H,W].

Both take fp32 inputs and give fp32/uint8 outputs whatever the compute dtype: an fp16/bf16
variant casts inside, keeps norm statistics (running mean/var) in fp32 and casts each conv and
linear layer's input to its weight's dtype (the norm apply step may promote to fp32).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from s2i_fast.config import PreprocessStats
from s2i_fast.data.preprocess import normalize_sketch_uint8, to_uint8_hwc

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


def bake_parametrizations(module: nn.Module) -> nn.Module:
    """Replace every parametrization (spectral norm, weight norm, ...) by its current value."""
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module


def _cast_input_to_weight(mod: nn.Module, args: tuple) -> tuple:
    return (args[0].to(mod.weight.dtype),) + tuple(args[1:])


def prepare_generator(gen: nn.Module, precision: str = "fp32") -> nn.Module:
    """A deep copy of gen for inference: eval mode, parametrizations baked, cast to precision.

    Norm running statistics stay fp32 so rsqrt(var + eps) never under/overflows in fp16.
    """
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    gen = bake_parametrizations(copy.deepcopy(gen)).eval()
    for p in gen.parameters():
        p.requires_grad_(False)
    dtype = DTYPES[precision]
    if dtype != torch.float32:
        gen = gen.to(dtype)
        for sub in gen.modules():
            if hasattr(sub, "running_mean") and hasattr(sub, "running_var"):
                sub.running_mean = sub.running_mean.float()
                sub.running_var = sub.running_var.float()
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                sub.register_forward_pre_hook(_cast_input_to_weight)
    return gen


def _compute_dtype(gen: nn.Module) -> torch.dtype:
    return next(gen.parameters()).dtype


class RawGenerator(nn.Module):
    """Model space in and out: sketch [B,1,H,W] f32, label [B], noise [B,Z] -> [B,3,H,W] f32."""

    def __init__(self, gen: nn.Module) -> None:
        super().__init__()
        self.g = gen
        self.dtype = _compute_dtype(gen)

    def forward(
        self, sketch: torch.Tensor, label: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        out = self.g(sketch.to(self.dtype), label, noise.to(self.dtype))  # [B, 3, H, W]
        return out.float()


class UInt8Generator(nn.Module):
    """uint8 sketch [B,H,W] + label [B] + noise [B,Z] -> uint8 RGB [B,H,W,3], preprocessing in."""

    def __init__(self, gen: nn.Module, stats: PreprocessStats) -> None:
        super().__init__()
        self.g = gen
        self.stats = stats
        self.dtype = _compute_dtype(gen)

    def forward(
        self, sketch: torch.Tensor, label: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        x = normalize_sketch_uint8(sketch, self.stats)  # [B, 1, H, W] f32, model space
        out = self.g(x.to(self.dtype), label, noise.to(self.dtype))  # [B, 3, H, W]
        return to_uint8_hwc(out.float(), self.stats)  # [B, H, W, 3] uint8


def wrap(gen: nn.Module, stats: PreprocessStats, raw: bool = False) -> nn.Module:
    """The wrapper for a prepared generator: RawGenerator if raw else UInt8Generator."""
    return (RawGenerator(gen) if raw else UInt8Generator(gen, stats)).eval()
