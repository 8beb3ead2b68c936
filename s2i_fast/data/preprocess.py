"""The seed's preprocessing, shared by training, `generate`, the Engine and export.

Sketches: greyscale (RGBA composited on white), resized to the model size, inverted so strokes
are high, scaled to [0, 1], then (v - mean) / scale with the data set's statistics.
Photos: RGB, resized, [0, 1], (v - mean) / scale. Model outputs go back the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from s2i_fast.config import PreprocessStats


def load_image(path, mode: str) -> Image.Image:
    """Open an image file as 'L' (sketch) or 'RGB' (photo); RGBA/LA/P composited on white."""
    from s2i_fast.errors import DataError

    try:
        with Image.open(path) as im:
            im.load()
            return to_mode(im, mode)
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({e.__class__.__name__}: {e})") from e


def to_mode(im: Image.Image, mode: str) -> Image.Image:
    """Convert any PIL image to 'L' or 'RGB', putting transparent pixels on white."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        im = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
    return im.convert(mode)


def resize(im: Image.Image, size: int) -> Image.Image:
    """Square resize; area (box) filter when shrinking, bilinear when enlarging."""
    if im.size == (size, size):
        return im
    shrinking = im.size[0] >= size and im.size[1] >= size
    return im.resize((size, size), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)


def sketch_to_uint8(im: Image.Image, size: int) -> np.ndarray:
    """Black-on-white sketch of any size/mode -> uint8 [size, size], still black-on-white."""
    return np.asarray(resize(to_mode(im, "L"), size), dtype=np.uint8)


def normalize_sketch_uint8(sketch: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """uint8 black-on-white [B, H, W] -> model space [B, 1, H, W] (inverted, centred, scaled).

    Written with plain tensor ops so that ONNX export can fold it into the graph.
    """
    v = 1.0 - sketch.to(torch.float32)[:, None] / 255.0  # strokes high, [0, 1]
    mean = torch.tensor(stats.sketch_mean, dtype=torch.float32, device=v.device)
    scale = torch.tensor(stats.sketch_scale, dtype=torch.float32, device=v.device)
    return (v - mean.view(1, -1, 1, 1)) / scale.view(1, -1, 1, 1)


def normalize_photo(photo01: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Photo in [0, 1], [B, 3, H, W] or [3, H, W] -> model space."""
    mean = torch.tensor(stats.photo_mean, dtype=photo01.dtype, device=photo01.device)
    scale = torch.tensor(stats.photo_scale, dtype=photo01.dtype, device=photo01.device)
    shape = (-1, 1, 1)
    return (photo01 - mean.view(shape)) / scale.view(shape)


def denormalize_photo(x: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Model space [B, 3, H, W] -> [0, 1] (clamped)."""
    mean = torch.tensor(stats.photo_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    scale = torch.tensor(stats.photo_scale, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * scale + mean).clamp(0.0, 1.0)


def to_uint8_hwc(x: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Model space [B, 3, H, W] -> uint8 RGB [B, H, W, 3].

    The NHWC permute comes before the cast to uint8, so that in an exported graph the uint8
    output is produced by the Cast itself: TensorRT accepts a uint8 network output only from a
    Cast (or Identity) layer. Rounding and clamping are elementwise, so the order changes no
    value.
    """
    v = denormalize_photo(x.float(), stats)
    levels = (v * 255.0 + 0.5).floor().clamp(0, 255)  # [B, 3, H, W] f32, whole numbers
    return levels.permute(0, 2, 3, 1).contiguous().to(torch.uint8)  # [B, H, W, 3]
