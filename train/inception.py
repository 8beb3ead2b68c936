"""Inception-v4 trunk (Conv2d_1a_3x3 .. Mixed_5b) for the perceptual loss, timm-compatible.

timm's `inception_v4` cannot be installed here (it needs torchvision), so this is the first seven
blocks of timm's model, with the same module names, so its state_dict loads as is:

    features.0  Conv2d_1a_3x3  3 -> 32, stride 2          features.4  Mixed_4a  160 -> 192
    features.1  Conv2d_2a_3x3  32 -> 32        (tap 1)    features.5  Mixed_5a  192 -> 384
    features.2  Conv2d_2b_3x3  32 -> 64, pad 1            features.6  Mixed_5b  384 -> 384 (tap 3)
    features.3  Mixed_3a       64 -> 160                  (tap 2 is after features.4)

Each conv block is conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU, named `.conv` / `.bn`.
Weights come from a file or timm's local Hugging Face cache and are never downloaded.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from s2i_fast.config import PreprocessStats
from s2i_fast.errors import CheckpointError

TAPS = (1, 4, 6)  # after Conv2d_2a_3x3, Mixed_4a, Mixed_5b
INPUT_SIZE = 299
HF_CACHE_GLOB = "models--timm--inception_v4.tf_in1k/snapshots/*/"


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size, stride: int = 1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Mixed3a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.maxpool = nn.MaxPool2d(3, stride=2)
        self.conv = ConvBN(64, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.maxpool(x), self.conv(x)], 1)  # [B, 160, h, w]


class Mixed4a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(160, 64, 1), ConvBN(64, 96, 3))
        self.branch1 = nn.Sequential(
            ConvBN(160, 64, 1),
            ConvBN(64, 64, (1, 7), padding=(0, 3)),
            ConvBN(64, 64, (7, 1), padding=(3, 0)),
            ConvBN(64, 96, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x)], 1)  # [B, 192, h, w]


class Mixed5a(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBN(192, 192, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.maxpool(x)], 1)  # [B, 384, h, w]


class InceptionA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch0 = ConvBN(384, 96, 1)
        self.branch1 = nn.Sequential(ConvBN(384, 64, 1), ConvBN(64, 96, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvBN(384, 64, 1), ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBN(384, 96, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)]
        return torch.cat(branches, 1)  # [B, 384, h, w]


class InceptionV4Trunk(nn.Module):
    """timm inception_v4 `features.0` .. `features.6`; forward returns the three taps."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBN(3, 32, 3, stride=2),  # Conv2d_1a_3x3
            ConvBN(32, 32, 3),  # Conv2d_2a_3x3
            ConvBN(32, 64, 3, padding=1),  # Conv2d_2b_3x3
            Mixed3a(),
            Mixed4a(),
            Mixed5a(),
            InceptionA(),  # Mixed_5b
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        # x [B, 3, 299, 299] normalised with mean = std = 0.5
        taps = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in TAPS:
                taps.append(x)  # [B,32,147,147], [B,192,71,71], [B,384,35,35] at 299
        return taps


def find_cached_weights() -> Path | None:
    """timm's Hugging Face cache entry for inception_v4.tf_in1k, if present (no download)."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    for name in ("model.safetensors", "pytorch_model.bin"):
        hits = sorted(glob.glob(os.path.join(hub, HF_CACHE_GLOB, name)))
        if hits:
            return Path(hits[-1])
    return None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors (needs the safetensors package) or a torch file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such perceptual weight file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointError(
                f"{path}: reading .safetensors needs `pip install safetensors`"
            ) from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(f"{path}: unreadable safetensors file ({e})") from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable torch state dict ({e.__class__.__name__})"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return sd


def load_trunk_weights(trunk: InceptionV4Trunk, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load timm-named weights; keys of later layers (features.7+, last_linear) are ignored."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own = trunk.state_dict()
    missing = [k for k in own if k not in sd]
    if missing:
        raise CheckpointError(
            f"{source}: not timm inception_v4 weights ({len(missing)} keys missing, "
            f"e.g. {missing[0]})"
        )
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}"
            )
    trunk.load_state_dict({k: sd[k] for k in own})


class PerceptualNet(nn.Module):
    """Frozen, eval-mode trunk taking model-space photos [B, 3, R, R] to the three taps."""

    def __init__(self, stats: PreprocessStats, trunk: InceptionV4Trunk | None = None) -> None:
        super().__init__()
        self.trunk = trunk if trunk is not None else InceptionV4Trunk()
        self.register_buffer("photo_mean", torch.tensor(stats.photo_mean).view(1, 3, 1, 1))
        self.register_buffer("photo_scale", torch.tensor(stats.photo_scale).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualNet:  # always eval: frozen statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x01 = x.float() * self.photo_scale + self.photo_mean  # model space -> [0, 1]
        x = (x01 - 0.5) / 0.5  # timm inception mean = std = 0.5
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.trunk(x)  # [B, 3, 299, 299] -> three taps


def build_perceptual(
    stats: PreprocessStats, weights: str | os.PathLike | None = None
) -> tuple[PerceptualNet | None, str]:
    """(net, message). net is None when no weights exist; the message says which source or why."""
    path = Path(weights) if weights else find_cached_weights()
    if path is None:
        return None, (
            "perceptual loss off: no Inception-v4 weights (pass --perceptual-weights FILE or put "
            "timm's inception_v4.tf_in1k in the Hugging Face cache; nothing is downloaded)"
        )
    trunk = InceptionV4Trunk()
    load_trunk_weights(trunk, read_state_dict(path), str(path))
    return PerceptualNet(stats, trunk), f"perceptual loss on: Inception-v4 weights from {path}"
