"""Small fixtures for export/engine tests and demos: a tiny generator whose eval function is
non-trivial (running statistics and per-class gamma/beta away from their initial values) and
sketches drawn with PIL the way people draw them (black strokes on white)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from s2i_fast.config import ModelConfig, PreprocessStats

CLASS_NAMES = ["cat", "car_(sedan)", "jack-o-lantern"]
STATS = PreprocessStats(
    photo_mean=[0.47, 0.45, 0.40],
    photo_scale=[0.53, 0.55, 0.60],
    sketch_mean=[0.08],
    sketch_scale=[0.92],
)


def make_generator(num_classes: int = 3, seed: int = 0, preset: str = "tiny"):
    """Random Generator in eval mode with non-trivial CBN running stats and gamma/beta."""
    from s2i_fast.model import ConditionalBatchNorm2d, Generator

    torch.manual_seed(seed)
    gen = Generator(ModelConfig.from_preset(preset, num_classes=num_classes))
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.gamma.weight.normal_(1.0, 0.2)
                m.beta.weight.normal_(0.0, 0.2)
        gen.train()
        res = gen.cfg.resolution
        for _ in range(2):  # move running statistics away from (0, 1)
            sketch = torch.rand(3, 1, res, res) * 2 - 1
            gen(sketch, torch.randint(0, num_classes, (3,)), torch.randn(3, gen.cfg.noise_dim))
    return gen.eval()


def save_test_checkpoint(path, num_classes: int = 3, seed: int = 0):
    """Write a checkpoint of make_generator(); returns (path, generator)."""
    from s2i_fast.checkpoint import make_payload, save_checkpoint

    gen = make_generator(num_classes, seed)
    names = (CLASS_NAMES + [f"class{i}" for i in range(num_classes)])[:num_classes]
    save_checkpoint(path, make_payload(gen.cfg, names, STATS, gen.state_dict()))
    return path, gen


def draw_sketch(seed: int, size: int = 256) -> Image.Image:
    """A black-on-white line drawing: an outline, a few strokes and a circle."""
    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    c = size / 2
    r = size * rng.uniform(0.2, 0.35)
    pts = [
        (c + r * np.cos(a) * rng.uniform(0.8, 1.2), c + r * np.sin(a) * rng.uniform(0.8, 1.2))
        for a in np.linspace(0, 2 * np.pi, 9)[:-1]
    ]
    width = max(1, size // 64)
    draw.line(pts + pts[:1], fill=0, width=width)
    for _ in range(4):
        x0, y0, x1, y1 = rng.uniform(0.1, 0.9, 4) * size
        draw.line([(x0, y0), (x1, y1)], fill=0, width=width)
    e = size * 0.08
    draw.ellipse([c - e, c - e - r / 2, c + e, c + e - r / 2], outline=0, width=width)
    return im


def drawn_batch(n: int, resolution: int = 64, start: int = 0) -> np.ndarray:
    """uint8 [n, R, R] drawn sketches, resized with the training preprocessing."""
    from s2i_fast.data.preprocess import sketch_to_uint8

    return np.stack([sketch_to_uint8(draw_sketch(start + i), resolution) for i in range(n)])
