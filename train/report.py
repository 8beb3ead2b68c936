"""The human-readable part of a run folder: metrics.jsonl, plots/*.png, samples/*.png."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from s2i_fast.config import PreprocessStats
from s2i_fast.data.preprocess import to_uint8_hwc
from s2i_fast.fileio import append_text, write_bytes, write_image, write_text

LOSS_KEYS = ("loss_d", "loss_g", "d_real", "d_fake", "gp", "ac_d", "g_gan", "ac_g", "l1", "perc",
             "div")


class MetricsLog:
    """Append-only JSONL; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if row.get("step", 0) <= resume_step:
                    self.rows.append(row)
            write_text(path, "".join(json.dumps(r) + "\n" for r in self.rows))
        elif path.exists():
            path.unlink()

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        append_text(self.path, json.dumps(row) + "\n")


def write_plots(rows: list[dict[str, Any]], out_dir: Path) -> None:
    """losses.png, d_accuracy.png (real/fake), d_class_accuracy.png, via matplotlib Agg."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])

    def series(key: str) -> np.ndarray | None:
        if not any(key in r for r in rows):
            return None
        return np.array([r.get(key, np.nan) for r in rows], dtype=float)

    def smooth(y: np.ndarray) -> np.ndarray:
        """Centred moving average that ignores NaN (skipped steps) and does not sag at the ends."""
        k = max(1, len(y) // 50)
        if k == 1:
            return y
        kernel = np.ones(k)
        valid = np.isfinite(y).astype(float)
        total = np.convolve(np.where(valid > 0, y, 0.0), kernel, mode="same")
        count = np.convolve(valid, kernel, mode="same")
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    panels = [
        ("losses.png", "losses", [k for k in LOSS_KEYS if _nonzero(series(k))]),
        ("d_accuracy.png", "D real/fake accuracy", ["d_acc_real", "d_acc_fake"]),
        ("d_class_accuracy.png", "D class accuracy", ["d_cls_acc_real", "d_cls_acc_fake"]),
    ]
    for fname, title, keys in panels:
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for k in keys:
            y = series(k)
            if y is not None:
                ax.plot(steps, smooth(y), label=k, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_title(title)
        if "accuracy" in fname:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        write_bytes(out_dir / fname, buf.getvalue())


def _nonzero(y: np.ndarray | None) -> bool:
    """False for absent terms and terms that are off (all zero, e.g. perc without weights)."""
    return y is not None and bool(np.any(np.nan_to_num(y) != 0))


def sketch_to_display(sketch: torch.Tensor, stats: PreprocessStats) -> torch.Tensor:
    """Model-space sketch [B, 1, H, W] -> uint8 [B, H, W, 3], black strokes on white."""
    mean = torch.tensor(stats.sketch_mean).view(1, -1, 1, 1)
    scale = torch.tensor(stats.sketch_scale).view(1, -1, 1, 1)
    v = (sketch.float().cpu() * scale + mean).clamp(0, 1)  # strokes high
    img = ((1.0 - v) * 255.0 + 0.5).floor().to(torch.uint8)  # [B, 1, H, W]
    return img.permute(0, 2, 3, 1).expand(-1, -1, -1, 3).contiguous()


def save_grid(
    path: Path,
    sketch: torch.Tensor,
    fake: torch.Tensor,
    photo: torch.Tensor,
    stats: PreprocessStats,
    zoom: int = 2,
    pad: int = 2,
) -> None:
    """Three rows (sketch | generated | photo), one column per test example, as a PNG."""
    rows = [
        sketch_to_display(sketch, stats),
        to_uint8_hwc(fake.float().cpu(), stats),
        to_uint8_hwc(photo.float().cpu(), stats),
    ]  # each [N, H, W, 3]
    n, h, w, _ = rows[0].shape
    canvas = np.full((3 * (h + pad) + pad, n * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r, imgs in enumerate(rows):
        for c in range(n):
            y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
            canvas[y0 : y0 + h, x0 : x0 + w] = imgs[c].numpy()
    im = Image.fromarray(canvas)
    if zoom > 1:
        im = im.resize((im.width * zoom, im.height * zoom), Image.Resampling.NEAREST)
    write_image(path, im)
