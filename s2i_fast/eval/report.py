"""What `s2i-fast eval` writes: metrics.json, a self-contained report.html (pictures inlined as
PNG data URIs) and grid.png (one test sketch per class: sketch | each seed | photo)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from s2i_fast.eval.evaluate import COLUMNS, ROWS, TestSet
from s2i_fast.fileio import ensure_dir, write_image, write_json, write_text

PER_CLASS = 4  # sketches shown per class in the report
GAP = 2  # px of white between tiles


def _rgb(sketch: np.ndarray) -> np.ndarray:
    return np.repeat(sketch[..., None], 3, axis=2)


def grid(rows: list[list[np.ndarray]], scale: int = 1) -> Image.Image:
    """Tiles [R, R, 3] uint8, row by row, on white with GAP px between them."""
    r = rows[0][0].shape[0]
    cols = max(len(row) for row in rows)
    h = len(rows) * (r + GAP) - GAP
    w = cols * (r + GAP) - GAP
    canvas = np.full((h, w, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            y, x = i * (r + GAP), j * (r + GAP)
            canvas[y:y + r, x:x + r] = tile
    im = Image.fromarray(canvas)
    return im.resize((w * scale, h * scale), Image.NEAREST) if scale > 1 else im


def _tiles(data: TestSet, generated: np.ndarray, i: int) -> list[np.ndarray]:
    return [_rgb(data.sketches[i]), *generated[i], data.photos[i]]


def overview(data: TestSet, generated: np.ndarray) -> Image.Image:
    """The first test sketch of each class, one row each."""
    firsts = [data.class_names.index(c) for c in data.classes if c in data.class_names]
    return grid([_tiles(data, generated, i) for i in firsts])


def _data_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fmt(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def metric_table_markdown(metrics: dict[str, Any]) -> str:
    """The metric table as Markdown (rows: model and the two references)."""
    cols = [c for c in COLUMNS if any(metrics["rows"][r][c[0]] is not None for r in ROWS)]
    lines = ["| row | " + " | ".join(c[1] for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for r in ROWS:
        vals = [fmt(metrics["rows"][r][k], p) for k, _, p, _ in cols]
        lines.append(f"| {r} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def _table_html(metrics: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(h)}{' ↑' if up else ' ↓'}</th>"
                   for _, h, _, up in COLUMNS)
    body = []
    for r in ROWS:
        cells = "".join(f"<td>{fmt(metrics['rows'][r][k], p)}</td>" for k, _, p, _ in COLUMNS)
        body.append(f"<tr><th>{r}</th>{cells}</tr>")
    return f"<table><tr><th>row</th>{head}</tr>{''.join(body)}</table>"


def report_html(metrics: dict[str, Any], data: TestSet, generated: np.ndarray) -> str:
    seeds = generated.shape[1]
    sections = []
    for c in data.classes:
        idx = [i for i, name in enumerate(data.class_names) if name == c][:PER_CLASS]
        if not idx:
            continue
        acc = metrics["per_class"].get(c, {}).get("class_accuracy")
        im = grid([_tiles(data, generated, i) for i in idx], scale=2)
        sections.append(
            f"<h3>{html.escape(c)} <small>class accuracy {fmt(acc, '{:.2f}')}</small></h3>"
            f'<img alt="{html.escape(c)}: sketch, {seeds} seeds, photo" src="{_data_uri(im)}">')
    s = metrics["summary"]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in metrics["notes"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>s2i-fast eval</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
img {{ image-rendering: pixelated; display: block; margin-bottom: 1em; }}
small {{ color: #666; font-weight: normal; }}
</style></head><body>
<h1>s2i-fast eval</h1>
<p>{html.escape(metrics['artefact'])} on {html.escape(metrics['data']['root'])}
({metrics['data']['sketches']} test sketches, {metrics['data']['classes']} classes,
{metrics['seeds']} seeds; {html.escape(metrics['engine']['backend'])} on
{html.escape(metrics['engine']['device'])}, {metrics['seconds']} s).</p>
{_table_html(metrics)}
<p>Class accuracy {fmt(s['accuracy_vs_real'], '{:.2f}')} of the real photos';
classifier Fréchet distance {fmt(s['fd_vs_floor'], '{:.2f}')} &times; the real-vs-real floor.
L1 {'better' if s['l1_better_than_mean_photo'] else 'not better'} and SSIM
{'better' if s['ssim_better_than_mean_photo'] else 'not better'} than answering the mean
training photo.</p>
<ul>{notes}</ul>
<h2>Test sketches: sketch | {seeds} seeds | photo</h2>
{''.join(sections)}
</body></html>
"""


def write_report(out: str | Path, metrics: dict[str, Any], data: TestSet,
                 generated: np.ndarray) -> dict[str, Path]:
    """Write metrics.json, report.html and grid.png into `out`; returns their paths."""
    out = ensure_dir(out)
    paths = {"metrics": out / "metrics.json", "report": out / "report.html",
             "grid": out / "grid.png"}
    json.dumps(metrics)  # fail before writing anything if it is not serialisable
    write_image(paths["grid"], overview(data, generated))
    write_text(paths["report"], report_html(metrics, data, generated))
    write_json(paths["metrics"], metrics)
    return paths
