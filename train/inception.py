"""The perceptual network: timm's `inception_v4`, cut after Mixed_5b, frozen, in eval mode.

The perceptual loss compares activations at three depths of timm's model (`features.N`):

    features.1  Conv2d_2a_3x3   [B,  32, 147, 147] at 299 px      (tap 1)
    features.4  Mixed_4a        [B, 192,  71,  71]                (tap 2)
    features.6  Mixed_5b        [B, 384,  35,  35]                (tap 3)

so only features.0 .. features.6 are kept and run. Weights come from a file the user names
(.safetensors, or a torch file read with weights_only=True) or from timm's local Hugging Face
cache; nothing is ever downloaded (the model is built with pretrained=False and the weights
loaded here). timm is the `perceptual` extra: `pip install 's2i-fast[perceptual]'`.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from s2i_fast.config import PreprocessStats
from s2i_fast.errors import CheckpointError, MissingDependency

TAPS = (1, 4, 6)  # after Conv2d_2a_3x3, Mixed_4a, Mixed_5b
KEEP = TAPS[-1] + 1  # features.0 .. features.6
INPUT_SIZE = 299
MEAN = STD = 0.5  # timm's inception_v4 input normalisation
HF_CACHE_GLOB = "models--timm--inception_v4.tf_in1k/snapshots/*/"
INSTALL_HINT = "pip install 's2i-fast[perceptual]' (timm, with a torchvision built for your torch)"


def require_timm():
    try:
        import timm
    except Exception as e:  # ImportError, or torchvision failing to load beside this torch
        raise MissingDependency(f"the perceptual loss needs timm ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}): {INSTALL_HINT}"
                                ) from e
    return timm


def inception_v4_trunk() -> nn.Sequential:
    """timm's inception_v4 (random init, never downloaded) cut after Mixed_5b."""
    timm = require_timm()
    model = timm.create_model("inception_v4", pretrained=False, num_classes=0)
    return model.features[:KEEP]


def trunk_taps(trunk: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """The three tap activations of x [B, 3, 299, 299] (normalised with MEAN/STD)."""
    taps = []
    for i, block in enumerate(trunk):
        x = block(x)
        if i in TAPS:
            taps.append(x)
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
    """A state dict from .safetensors or a torch file (weights_only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such perceptual weight file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise MissingDependency(f"{path}: reading .safetensors needs {INSTALL_HINT}") from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise CheckpointError(
                f"{path}: unreadable safetensors file ({type(e).__name__})"
            ) from e
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: not a readable torch state dict ({e.__class__.__name__})"
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return sd


def load_trunk_weights(trunk: nn.Sequential, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load timm-named weights (`features.N....`); later layers' keys are ignored."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    own = {f"features.{k}": v for k, v in trunk.state_dict().items()}
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
    trunk.load_state_dict({k.removeprefix("features."): sd[k] for k in own})


class PerceptualNet(nn.Module):
    """Frozen, eval-mode trunk taking model-space photos [B, 3, R, R] to the three taps."""

    def __init__(self, stats: PreprocessStats, trunk: nn.Sequential) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("photo_mean", torch.tensor(stats.photo_mean).view(1, 3, 1, 1))
        self.register_buffer("photo_scale", torch.tensor(stats.photo_scale).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualNet:  # always eval: frozen statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x01 = x.float() * self.photo_scale + self.photo_mean  # model space -> [0, 1]
        x = (x01 - MEAN) / STD
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return trunk_taps(self.trunk, x)  # [B, 3, 299, 299] -> three taps


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
    sd = read_state_dict(path)
    trunk = inception_v4_trunk()
    load_trunk_weights(trunk, sd, str(path))
    return PerceptualNet(stats, trunk), f"perceptual loss on: Inception-v4 weights from {path}"
