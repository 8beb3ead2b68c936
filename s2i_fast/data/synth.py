"""The procedural data set (the embedded default): photo-like renders + hand-drawn-looking sketches.

Each photo places one object (shapes.py) in the frame with a random pose, scale and position,
fills its parts with shaded, textured colour over a varied background and casts a soft shadow.
Each of its sketches outlines the same geometry in the same frame (the visible contours only)
with wobbly strokes, gaps, overshoot and varied width, black on white, so pixel losses make
sense. Everything is drawn from numpy Generators seeded by (seed, class, photo, sketch): the
output is byte-identical for a seed, and a photo does not change when the set grows.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from tqdm.auto import tqdm

from s2i_fast.data import (
    DEFAULT_CLASSES,
    DEFAULT_PHOTOS_PER_CLASS,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    DEFAULT_SKETCHES_PER_PHOTO,
    MAX_PHOTOS_PER_CLASS,
    MAX_SEED,
    MAX_SIZE,
    MAX_SKETCHES_PER_PHOTO,
)
from s2i_fast.data.shapes import CLASSES, FLIPPABLE, Part
from s2i_fast.errors import DataError, OutputError
from s2i_fast.fileio import ensure_dir, temp_dir_beside, write_image, write_text

VARIANT = "tx_000000000000"
MARKER = ".s2i-fast-synth.json"  # written last: a set without it is incomplete
SYNTH_VERSION = 1
P_SCRIBBLE = 0.02  # sketches replaced by a scribble, listed in invalid-error
P_PARTIAL = 0.01  # sketches with most strokes missing, listed in invalid-ambiguous
SS = 2  # supersampling for masks and strokes


def _value_noise(rng: np.random.Generator, size: int, cells: float) -> np.ndarray:
    """Smooth noise in about [-1, 1], `cells` blobs across the frame. [size, size] float32."""
    n = max(2, int(round(cells)) + 1)
    grid = Image.fromarray(rng.uniform(-1, 1, (n, n)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)


def _to_px(poly: np.ndarray, tf: dict, size: int) -> np.ndarray:
    p = poly * [tf["flip"] * tf["sx"], tf["sy"]]
    c, s = np.cos(tf["rot"]), np.sin(tf["rot"])
    p = p @ np.array([[c, s], [-s, c]]) + tf["t"]
    return (p + 1.0) * (size / 2.0)


def _mask(part: Part, tf: dict, size: int) -> np.ndarray:
    """Antialiased coverage of a part, [size, size] float32 in [0, 1]."""
    big = size * SS
    im = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(im)
    d.polygon([tuple(p) for p in _to_px(part.poly, tf, big)], fill=255)
    for hole in part.holes:
        d.polygon([tuple(p) for p in _to_px(hole, tf, big)], fill=0)
    im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, dtype=np.float32) / 255.0


def _shading(mask: np.ndarray, part: Part, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(diffuse factor, specular) [H, W] from a height field built on the part's mask."""
    inside = mask > 0.5
    if not inside.any():
        return np.ones_like(mask), np.zeros_like(mask)
    ys, xs = np.nonzero(inside)
    if part.shade == "flat":
        span = max(1, xs.max() - xs.min() + ys.max() - ys.min())
        g = (
            (np.arange(mask.shape[1])[None] - xs.min()) * -light[0]
            + (np.arange(mask.shape[0])[:, None] - ys.min()) * -light[1]
        ) / span
        return (0.92 + 0.22 * g).astype(np.float32), np.zeros_like(mask)
    if part.shade == "cylinder":
        x0, x1 = xs.min(), xs.max() + 1
        u = np.clip((np.arange(mask.shape[1]) - x0) / max(1, x1 - x0) * 2 - 1, -1, 1)
        nx = np.broadcast_to(u[None], mask.shape)
        ny = np.zeros_like(mask)
    else:
        dist = ndimage.distance_transform_edt(inside).astype(np.float32)
        r = max(dist.max(), 1.0)
        h = np.sqrt(np.clip(1 - (1 - dist / r) ** 2, 0, 1)) * r  # dome profile
        gy, gx = np.gradient(ndimage.gaussian_filter(h, 1.5))
        nx, ny = -gx, -gy
    nz = np.sqrt(np.clip(1 - nx**2 - ny**2, 0.05, 1))
    norm = np.sqrt(nx**2 + ny**2 + nz**2)
    ndotl = (nx * light[0] + ny * light[1] + nz * light[2]) / norm
    diffuse = 0.32 + 0.8 * np.clip(ndotl, 0, 1)
    half = light + [0, 0, 1]
    half = half / np.linalg.norm(half)
    spec = part.gloss * np.clip((nx * half[0] + ny * half[1] + nz * half[2]) / norm, 0, 1) ** 40
    return diffuse.astype(np.float32), spec.astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """[size, size, 3] float32: gradient, table-and-wall or soft-blob backgrounds."""
    c1, c2 = rng.uniform(0.15, 0.95, 3), rng.uniform(0.15, 0.95, 3)
    c1, c2 = (c * 0.65 + c.mean() * 0.35 for c in (c1, c2))  # less garish
    y = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    kind = rng.integers(3)
    if kind == 0:
        img = c1 * (1 - y) + c2 * y
    elif kind == 1:
        horizon = rng.uniform(0.55, 0.8)
        wall = c1 * (0.85 + 0.15 * (1 - y))
        table = c2 * (0.75 + 0.25 * y)
        img = np.where(y < horizon, wall, table)
    else:
        img = c1 * (1 - y) + c2 * y
        for _ in range(int(rng.integers(3, 7))):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(0.08, 0.25) * size]
            yy, xx = np.mgrid[:size, :size]
            blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
            img = img * (1 - 0.5 * blob) + rng.uniform(0.2, 1, 3) * 0.5 * blob
    img = img * (1 + 0.08 * _value_noise(rng, size, 5)[..., None])
    return np.broadcast_to(img, (size, size, 3)).astype(np.float32)


def _pose(rng: np.random.Generator, cls: str) -> dict:
    s = rng.uniform(0.64, 0.86)
    return {
        "sx": s * rng.uniform(0.9, 1.1),
        "sy": s * rng.uniform(0.9, 1.1),
        "rot": rng.uniform(-0.22, 0.22) if cls != "house" else rng.uniform(-0.06, 0.06),
        "t": rng.uniform(-0.1, 0.1, 2),
        "flip": -1.0 if (cls in FLIPPABLE and rng.random() < 0.5) else 1.0,
    }


def render_photo(
    parts: list[Part],
    tf: dict,
    rng: np.random.Generator,
    size: int,
    masks: list[np.ndarray] | None = None,
) -> np.ndarray:
    """uint8 [size, size, 3] photo-like render of the parts over a random background."""
    img = _background(rng, size)
    az = rng.uniform(-2.6, -0.5)  # light from above, left or right
    light = np.array([np.cos(az) * 0.6, np.sin(az) * 0.6, 0.75])
    light /= np.linalg.norm(light)
    masks = masks if masks is not None else [_mask(p, tf, size) for p in parts]
    union = np.clip(np.sum(masks, 0), 0, 1)
    shift = (int(-light[1] * 10) + 4, int(-light[0] * 12))
    shadow = ndimage.gaussian_filter(np.roll(union, shift, axis=(0, 1)), 5)
    img = img * (1 - 0.4 * shadow[..., None])
    for part, m in sorted(zip(parts, masks, strict=True), key=lambda pm: pm[0].z):
        diffuse, spec = _shading(m, part, light)
        tex = 1 + part.texture[1] * _value_noise(rng, size, part.texture[0])
        col = np.asarray(part.color, np.float32) * (diffuse * tex)[..., None] + spec[..., None]
        img = img * (1 - m[..., None]) + col * m[..., None]
        if part.lines:
            crease = Image.new("L", (size * SS, size * SS), 0)
            d = ImageDraw.Draw(crease)
            for line in part.lines:
                d.line([tuple(p) for p in _to_px(line, tf, size * SS)], fill=255, width=2 * SS)
            c = np.asarray(crease.resize((size, size), Image.Resampling.BOX), np.float32) / 255
            img = img * (1 - 0.45 * (c * m)[..., None])
    img = img + rng.normal(0, 0.015, img.shape).astype(np.float32)  # sensor grain
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _resample(pts: np.ndarray, step: float, closed: bool) -> np.ndarray:
    if closed:
        pts = np.concatenate([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    s = np.concatenate([[0], np.cumsum(seg)])
    n = max(2, int(s[-1] / step) + 1)
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, pts[:, 0]), np.interp(t, s, pts[:, 1])], 1)


def _visible_runs(pts: np.ndarray, above: np.ndarray | None, scale: float) -> list[np.ndarray]:
    """Split a polyline where it passes under higher parts (the hidden stretches are dropped)."""
    if above is None:
        return [pts]
    h, w = above.shape
    ij = np.clip((pts / scale).astype(int), 0, [w - 1, h - 1])
    vis = above[ij[:, 1], ij[:, 0]] < 0.5
    runs, cur = [], []
    for p, v in zip(pts, vis, strict=True):
        if v:
            cur.append(p)
        elif cur:
            runs.append(np.array(cur))
            cur = []
    if cur:
        runs.append(np.array(cur))
    return [r for r in runs if len(r) >= 3]


def _smooth(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Smooth noise of about unit variance (fixed normalisation: safe for short runs)."""
    v = ndimage.gaussian_filter1d(rng.standard_normal(n), sigma, mode="nearest")
    return np.clip(v * np.sqrt(2.0 * np.sqrt(np.pi) * sigma), -3.0, 3.0)


def _strokes(
    run: np.ndarray, rng: np.random.Generator, sloppy: float, closed: bool
) -> list[np.ndarray]:
    """One contour -> a few hand-drawn strokes: wobble, gaps, overshoot."""
    n = len(run)
    if closed and n > 8:
        run = np.roll(run, -int(rng.integers(n)), axis=0)
        run = np.concatenate([run, run[: max(2, n // 20)]])  # close with a little overlap
        n = len(run)
    tang = np.gradient(run, axis=0)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True) + 1e-6
    normal = tang[:, ::-1] * [-1, 1]
    run = run + normal * (_smooth(rng, n, 6) * sloppy * 2.5)[:, None]
    pieces, start = [], 0
    while start < n - 2:
        length = int(rng.integers(min(n, max(4, n // 3)), n + 1))
        end = min(n, start + length)
        pieces.append(run[start:end])
        start = (
            end - int(rng.integers(0, 3)) if rng.random() < 0.5 else end + int(rng.integers(0, 3))
        )
    out = []
    for p in pieces:
        if len(p) < 2:
            continue
        for side in (0, 1):
            if rng.random() < 0.45:
                a, b = (p[1], p[0]) if side == 0 else (p[-2], p[-1])
                d = b - a
                ext = b + d / (np.linalg.norm(d) + 1e-6) * rng.uniform(3, 10) * sloppy
                p = np.concatenate([[ext], p]) if side == 0 else np.concatenate([p, [ext]])
        out.append(p)
    return out


def _warp(rng: np.random.Generator, amp: float):
    """A smooth displacement field (proportions a little off, as in a real drawing)."""
    f = rng.uniform(0.5, 1.5, (2, 2, 2))
    ph = rng.uniform(0, 2 * np.pi, (2, 2))

    def apply(pts: np.ndarray, size: float) -> np.ndarray:
        u = pts / size
        dx = sum(np.sin(2 * np.pi * (u @ f[0, k]) + ph[0, k]) for k in range(2))
        dy = sum(np.sin(2 * np.pi * (u @ f[1, k]) + ph[1, k]) for k in range(2))
        return pts + amp * size / 256 * np.stack([dx, dy], 1)

    return apply


def render_sketch(
    parts: list[Part],
    tf: dict,
    rng: np.random.Generator,
    size: int,
    kind: str = "normal",
    masks: list[np.ndarray] | None = None,
) -> np.ndarray:
    """uint8 [size, size] black-on-white sketch of the parts' visible contours."""
    big = size * SS
    im = Image.new("L", (big, big), 255)
    d = ImageDraw.Draw(im)
    step = 3.0 * SS * size / 256
    sloppy = rng.uniform(0.5, 1.3) * SS * size / 256
    base_w = max(1.2 * SS, rng.uniform(1.2, 2.6) * SS * size / 256)  # >= 1 px at any size
    warp = _warp(rng, rng.uniform(0.5, 2.5))
    if kind == "scribble":
        pts = np.cumsum(rng.normal(0, 14 * SS * size / 256, (60, 2)), 0) + big / 2
        pts = ndimage.gaussian_filter1d(pts, 1.5, axis=0)
        d.line([tuple(p) for p in pts], fill=0, width=max(1, int(base_w)), joint="curve")
        return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)
    order = sorted(range(len(parts)), key=lambda i: parts[i].z)
    masks = masks if masks is not None else [_mask(p, tf, size) for p in parts]
    keep_detail = rng.random() < 0.75
    for rank, i in enumerate(order):
        part = parts[i]
        if part.detail and not keep_detail:
            continue
        higher = [
            masks[j]
            for j in order[rank + 1 :]
            if parts[j].z > part.z and (keep_detail or not parts[j].detail)
        ]
        above = np.clip(np.sum(higher, 0), 0, 1) if higher else None
        contours = (
            [(part.poly, True)]
            + [(h, True) for h in part.holes]
            + [(ln, False) for ln in part.lines]
        )
        for poly, closed in contours:
            px = _resample(_to_px(poly, tf, big), step, closed)
            for run in _visible_runs(px, above, SS):
                full = closed and len(run) >= len(px) - 1
                for stroke in _strokes(run, rng, sloppy, full):
                    if kind == "partial" and rng.random() < 0.7:
                        continue
                    w = max(SS, int(round(base_w * rng.uniform(0.75, 1.3))))
                    d.line([tuple(p) for p in warp(stroke, big)], fill=0, width=w, joint="curve")
    return np.asarray(im.resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def scene(cls: str, seed: int, photo_index: int) -> tuple[list[Part], dict, np.random.Generator]:
    """The geometry and pose of one photo, and the generator that goes on to render it."""
    rng = np.random.default_rng([seed, list(CLASSES).index(cls), photo_index])
    parts = CLASSES[cls](rng)
    return parts, _pose(rng, cls), rng


def object_mask(parts: list[Part], tf: dict, size: int) -> np.ndarray:
    """Coverage of the whole object in the frame, [size, size] float32 in [0, 1]."""
    return np.clip(np.sum([_mask(p, tf, size) for p in parts], 0), 0, 1)


def class_names(classes: int) -> list[str]:
    """The first `classes` procedural classes (up to len(CLASSES))."""
    names = list(CLASSES)
    if not 1 <= classes <= len(names):
        raise DataError(f"synth: classes must be between 1 and {len(names)}, got {classes}")
    return names[:classes]


def synthesize(
    out: str | os.PathLike,
    classes: int = DEFAULT_CLASSES,
    photos_per_class: int = DEFAULT_PHOTOS_PER_CLASS,
    sketches_per_photo: int = DEFAULT_SKETCHES_PER_PHOTO,
    seed: int = DEFAULT_SEED,
    size: int = DEFAULT_SIZE,
    progress: bool = True,
    replace: bool = True,
) -> Path:
    """Write the procedural data set in the Sketchy layout under `out`; returns `out`.

    Built in a temporary folder beside `out` and renamed into place when complete (with the
    marker file .s2i-fast-synth.json). An existing `out` is replaced only if it is itself a
    synthesized set (has the marker) or empty; anything else raises DataError. With
    replace=False a complete set that appeared meanwhile (another process) is kept instead.
    """
    out = Path(out).expanduser()
    names = class_names(classes)
    for name, value, hi in (("photos_per_class", photos_per_class, MAX_PHOTOS_PER_CLASS),
                            ("sketches_per_photo", sketches_per_photo, MAX_SKETCHES_PER_PHOTO),
                            ("size", size, MAX_SIZE), ("seed", seed, MAX_SEED)):
        lo = 32 if name == "size" else 0 if name == "seed" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            shown = value if isinstance(value, int) and value.bit_length() < 100 else "too large"
            raise DataError(f"synth: {name} must be a whole number from {lo} to {hi}, got "
                            f"{shown}")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MARKER).exists())):
        raise DataError(f"{out}: exists and is not a synthesized data set; choose another folder")
    tmp = temp_dir_beside(out)
    try:
        _write_set(tmp, names, photos_per_class, sketches_per_photo, seed, size, progress)
        params = {
            "version": SYNTH_VERSION,
            "classes": names,
            "photos_per_class": photos_per_class,
            "sketches_per_photo": sketches_per_photo,
            "seed": seed,
            "size": size,
        }
        write_text(tmp / MARKER, json.dumps(params, indent=1) + "\n")
        if out.exists() and not replace and (out / MARKER).exists():
            return out
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except OSError as e:  # the final renames (every file went through s2i_fast.fileio)
        raise OutputError(f"could not write {out}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_set(
    root: Path,
    names: list[str],
    n_photos: int,
    n_sketches: int,
    seed: int,
    size: int,
    progress: bool,
) -> None:
    invalid: dict[str, list[str]] = {k: [] for k in ("error", "ambiguous", "pose", "context")}
    testset: list[str] = []
    bar = tqdm(total=len(names) * n_photos, desc="synth", unit="photo", disable=not progress)
    for cls in names:
        ci = list(CLASSES).index(cls)
        pdir, sdir = root / "photo" / VARIANT / cls, root / "sketch" / VARIANT / cls
        ensure_dir(pdir)
        ensure_dir(sdir)
        split_rng = np.random.default_rng([seed, ci, 1_000_003])
        n_test = max(1, int(round(0.1 * n_photos))) if n_photos >= 3 else 0
        test_idx = set(split_rng.permutation(n_photos)[:n_test].tolist())
        for pi in range(n_photos):
            parts, tf, rng = scene(cls, seed, pi)
            pid = f"{cls}_{pi:04d}"
            masks = [_mask(p, tf, size) for p in parts]  # shared by the photo and its sketches
            photo = render_photo(parts, tf, rng, size, masks)
            write_image(pdir / f"{pid}.jpg", photo, quality=92)
            if pi in test_idx:
                testset.append(f"{cls}/{pid}.jpg")
            for n in range(1, n_sketches + 1):
                srng = np.random.default_rng([seed, ci, pi, n])
                u = srng.random()
                kind = (
                    "scribble"
                    if u < P_SCRIBBLE
                    else "partial"
                    if u < P_SCRIBBLE + P_PARTIAL
                    else "normal"
                )
                sk = render_sketch(parts, tf, srng, size, kind, masks)
                write_image(sdir / f"{pid}-{n}.png", sk)
                if kind == "scribble":
                    invalid["error"].append(f"{pid}-{n}")
                elif kind == "partial":
                    invalid["ambiguous"].append(f"{pid}-{n}")
            bar.update(1)
    bar.close()
    info = root / "info"
    ensure_dir(info)
    for k, ids in invalid.items():
        write_text(info / f"invalid-{k}.txt", "".join(f"{i}\n" for i in ids))
    write_text(info / "testset.txt", "".join(f"{t}\n" for t in testset))
