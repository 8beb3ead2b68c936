"""User input -> the arrays every backend runner takes, with one clear EngineError per mistake."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from s2i_fast.data.classes import resolve_class
from s2i_fast.errors import EngineError, UnknownClassError


def _is_pil(x: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def _one_array(x: Any, resolution: int, where: str) -> np.ndarray:
    """One sketch (PIL, numpy or torch) -> uint8 [N, R, R]."""
    if _is_pil(x):
        from s2i_fast.data.preprocess import check_pixels, sketch_to_uint8
        from s2i_fast.errors import DataError

        try:
            check_pixels(*x.size, where)
        except DataError as e:
            raise EngineError(str(e)) from None
        try:
            return sketch_to_uint8(x, resolution)[None]  # [1, R, R]
        except (OSError, ValueError) as e:  # a lazily loaded image whose file is damaged
            raise EngineError(f"{where}: the image cannot be read ({e})") from None
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if not isinstance(x, np.ndarray):
        raise EngineError(
            f"{where}: expected a PIL image, a numpy array or a torch tensor, got "
            f"{type(x).__name__}"
        )
    if x.dtype != np.uint8:
        raise EngineError(
            f"{where}: sketch arrays must be uint8 (0-255, black lines on white), got {x.dtype}"
        )
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]  # [B, 1, H, W] -> [B, H, W]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise EngineError(f"{where}: sketch arrays must be [B, H, W] or [H, W], got {x.shape}")
    if x.shape[1:] != (resolution, resolution):
        raise EngineError(
            f"{where}: sketch arrays must be {resolution}x{resolution} for this model, got "
            f"{x.shape[1]}x{x.shape[2]} (pass PIL images to have them resized)"
        )
    return x


def sketch_batch(sketches: Any, resolution: int) -> np.ndarray:
    """PIL / numpy / torch, single or a list -> contiguous uint8 [B, R, R] (B >= 1)."""
    if isinstance(sketches, (list, tuple)):
        if not sketches:
            raise EngineError("no sketches given (empty list)")
        parts = [_one_array(s, resolution, f"sketch {i}") for i, s in enumerate(sketches)]
        batch = np.concatenate(parts)
    else:
        batch = _one_array(sketches, resolution, "sketches")
    if batch.shape[0] == 0:
        raise EngineError("no sketches given (batch of 0)")
    return np.ascontiguousarray(batch)


def _one_label(x: Any, class_names: Sequence[str]) -> int:
    if isinstance(x, np.integer):
        x = int(x)
    elif isinstance(x, np.str_):
        x = str(x)
    try:
        return resolve_class(x, class_names)
    except UnknownClassError as e:
        raise EngineError(str(e)) from None


MAX_SEED = 2**64 - 1


def check_seed(seed: Any) -> int:
    """A seed for torch.Generator: an int in [-2**63, 2**64 - 1] (64 bits); EngineError else."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise EngineError(f"seed must be an int or None, got {type(seed).__name__}")
    seed = int(seed)
    if not -(2**63) <= seed <= MAX_SEED:
        raise EngineError(f"seed must fit in 64 bits (-2**63 .. 2**64-1), got {seed}")
    return seed


def label_ids(labels: Any, batch: int, class_names: Sequence[str]) -> np.ndarray:
    """int/str or a sequence/array/tensor of them -> int64 [batch]; one label is broadcast."""
    try:
        import torch

        if isinstance(labels, torch.Tensor):
            labels = labels.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(labels, np.ndarray):
        if labels.ndim > 1:
            raise EngineError(f"labels must be one-dimensional, got shape {labels.shape}")
        if labels.dtype.kind not in "iuU":
            raise EngineError(f"label arrays must hold integer ids or names, got {labels.dtype}")
        labels = labels.tolist()
    if isinstance(labels, (list, tuple)):
        items = list(labels)
    else:
        items = [labels]
    if len(items) == 1:
        items = items * batch
    if len(items) != batch:
        raise EngineError(f"{len(items)} labels for {batch} sketches (give one, or one each)")
    return np.asarray([_one_label(x, list(class_names)) for x in items], dtype=np.int64)
