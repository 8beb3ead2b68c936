"""torch Dataset over a SketchyIndex: (photo, sketch, label) in model space.

Reading an image is the same code path for training and for the statistics (stats.py):
    photo:  load_image(path, "RGB") -> resize(R) -> [0, 1]            float32 [3, R, R]
    sketch: load_image(path, "L")   -> resize(R) -> uint8 black-on-white [R, R]
            -> normalize_sketch_uint8 (inverted, centred, scaled)    float32 [1, R, R]
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from s2i_fast.config import RESOLUTIONS, PreprocessStats
from s2i_fast.data.preprocess import load_image, normalize_photo, normalize_sketch_uint8, resize
from s2i_fast.data.sketchy import SketchyIndex
from s2i_fast.errors import DataError


def read_photo01(path: str | Path, resolution: int) -> np.ndarray:
    """Photo file -> float32 [3, R, R] in [0, 1]."""
    im = resize(load_image(path, "RGB"), resolution)
    return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0


def read_sketch_uint8(path: str | Path, resolution: int) -> np.ndarray:
    """Sketch file (grey/RGB/RGBA, black on white) -> uint8 [R, R], still black on white."""
    return np.array(resize(load_image(path, "L"), resolution), dtype=np.uint8)  # writable copy


def color_jitter(photo01: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    """Random brightness then contrast (torchvision's ColorJitter semantics), torch RNG.

    photo01: [3, R, R] in [0, 1]; factors drawn uniformly from [1 - s, 1 + s].
    """
    if brightness > 0:
        b = 1.0 + (torch.rand(()).item() * 2.0 - 1.0) * brightness
        photo01 = (photo01 * b).clamp(0.0, 1.0)
    if contrast > 0:
        c = 1.0 + (torch.rand(()).item() * 2.0 - 1.0) * contrast
        grey = (0.299 * photo01[0] + 0.587 * photo01[1] + 0.114 * photo01[2]).mean()
        photo01 = ((photo01 - grey) * c + grey).clamp(0.0, 1.0)
    return photo01


class SketchyDataset(Dataset):
    """item = {"photo": [3,R,R], "sketch": [1,R,R] (both float32, model space),
    "label": int64 scalar tensor, "index": int}.

    augment (default: split == "train") applies colour jitter to photos only, drawn from torch's
    RNG, so a seeded trainer gets the same batches. A corrupt image raises DataError naming the
    file; with skip_bad it is replaced by the next readable item and counted in `self.bad`
    (per process: DataLoader workers keep their own count).
    """

    def __init__(
        self,
        index: SketchyIndex,
        split: str = "train",
        stats: PreprocessStats | None = None,
        resolution: int = 64,
        augment: bool | None = None,
        skip_bad: bool = False,
        brightness: float = 0.2,
        contrast: float = 0.2,
    ) -> None:
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}")
        self.index = index
        self.split = split
        self.records = index.split(split)
        if stats is None:
            raise ValueError("stats is required (see s2i_fast.data.dataset_stats)")
        self.stats = stats
        self.resolution = resolution
        self.augment = (split == "train") if augment is None else bool(augment)
        self.skip_bad = skip_bad
        self.brightness = brightness
        self.contrast = contrast
        self.classes = list(index.classes)
        self.bad: dict[str, str] = {}  # file -> error message

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, i: int) -> dict:
        rec = self.records[i]
        photo01 = torch.from_numpy(read_photo01(rec.photo_path, self.resolution))  # [3, R, R]
        sketch_u8 = torch.from_numpy(read_sketch_uint8(rec.sketch_path, self.resolution))
        if self.augment:
            photo01 = color_jitter(photo01, self.brightness, self.contrast)
        photo = normalize_photo(photo01, self.stats)  # [3, R, R]
        sketch = normalize_sketch_uint8(sketch_u8[None], self.stats)[0]  # [1, R, R]
        return {
            "photo": photo.contiguous(),
            "sketch": sketch.contiguous(),
            "label": torch.tensor(rec.label, dtype=torch.int64),
            "index": i,
        }

    def __getitem__(self, i: int) -> dict:
        n = len(self.records)
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        for k in range(n):
            j = (i + k) % n
            try:
                return self._load(j)
            except DataError as e:
                if not self.skip_bad:
                    raise
                key = str(e).split(": ", 1)[0]
                if key not in self.bad:
                    self.bad[key] = str(e)
                    warnings.warn(f"skipping unreadable image: {e}", stacklevel=2)
        raise DataError(f"{self.index.root}: no readable items in the {self.split} split")
