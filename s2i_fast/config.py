"""Dataclass configs with named presets (StyleGAN/gpt-fast style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

WIDTH_PRESETS: dict[str, int] = {"tiny": 16, "paper": 64}
RESOLUTIONS: tuple[int, ...] = (64, 128, 256)
STEMS: tuple[str, ...] = ("label", "sketch")
IMPLS: tuple[str, ...] = ("ref", "triton")


@dataclass
class ModelConfig:
    """Everything that fixes the shapes of G and D."""

    preset: str = "tiny"
    base: int = 16  # channel width at the top level; every width scales with it
    resolution: int = 64  # 64, 128 or 256
    num_classes: int = 10
    stem: str = "label"  # "label": learned embedding -> [B,1,H,W]; "sketch": conv3x3 -> 8 ch
    noise_dim: int = 64
    noise_channels: int = 64  # z -> linear -> noise_channels at the bottleneck
    act_slope: float = 0.2  # LeakyReLU slope
    upsample: str = "nearest"  # "nearest" or "pixelshuffle"
    impl: str = "ref"  # elementwise MRU path: "ref" (torch) or "triton" (fused kernels)

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {self.resolution}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
        if self.upsample not in ("nearest", "pixelshuffle"):
            raise ValueError(f"upsample must be 'nearest' or 'pixelshuffle', got {self.upsample!r}")
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        if self.num_classes < 1:
            raise ValueError("num_classes must be >= 1")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> ModelConfig:
        if preset not in WIDTH_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(WIDTH_PRESETS)}")
        return cls(preset=preset, base=WIDTH_PRESETS[preset], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class PreprocessStats:
    """Data-set statistics of the seed's normalisation: (v - mean) / scale, values in [-1, 1].

    photo_mean / sketch_mean are per-channel means of images scaled to [0, 1] (photo: 3 values,
    sketch: 1 value, after inversion so strokes are high); scale = max(|min-mean|, |max-mean|)
    over the data set, one value per channel.
    """

    photo_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    photo_scale: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    sketch_mean: list[float] = field(default_factory=lambda: [0.5])
    sketch_scale: list[float] = field(default_factory=lambda: [0.5])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessStats:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: [float(x) for x in v] for k, v in d.items() if k in names})
