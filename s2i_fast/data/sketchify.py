"""Sketches from any folder of photos by edge detection, as pix2pix's edges2* sets were made.

    PHOTOS/<class>/**/<name>.<ext>   subfolders become classes (nested images included)
    PHOTOS/<name>.<ext>              a flat folder is one class named after the folder

Each photo is resized to size x size (non-uniformly, as Sketchy's tx_000000000000) and written
as JPEG; its sketch is detected on that resized photo, so the two share one frame:
    xdog  (default) difference of Gaussians, soft-thresholded (Winnemoeller et al. 2012)
    canny Gaussian, Sobel, non-maximum suppression, hysteresis
then thinned to one pixel, cleaned of specks, drawn two pixels wide, black on white.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from s2i_fast.data import DEFAULT_EDGE_METHOD, DEFAULT_SIZE
from s2i_fast.data.preprocess import load_image
from s2i_fast.data.sketchy import DEFAULT_VARIANT, IMAGE_EXTS, INVALID_LISTS
from s2i_fast.errors import DataError, OutputError
from s2i_fast.fileio import ensure_dir, temp_dir_beside, write_image, write_text

METHODS = ("xdog", "canny")
MARKER = ".s2i-fast-sketchify.json"


def xdog_edges(
    img: np.ndarray,
    sigma: float = 1.0,
    k: float = 1.6,
    tau: float = 0.99,
    eps: float = -0.015,
    phi: float = 150.0,
) -> np.ndarray:
    """img float [H, W, C] in [0, 1] -> bool edge map [H, W].

    XDoG per channel, D = G_sigma - tau * G_k*sigma, soft threshold
    E = 1 if D >= eps else 1 + tanh(phi * (D - eps)); an edge where any channel's E < 0.5
    (channels, not just luminance, so edges between colours of equal brightness survive).
    """
    g1 = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    g2 = ndimage.gaussian_filter(img, (sigma * k, sigma * k, 0))
    d = (g1 - tau * g2).min(axis=2)  # [H, W] darkest response over channels
    e = np.where(d >= eps, 1.0, 1.0 + np.tanh(phi * (d - eps)))
    return e < 0.5


def canny_edges(
    img: np.ndarray, sigma: float = 2.0, low: float = 0.8, high: float = 0.93
) -> np.ndarray:
    """img float [H, W, C] -> bool edge map; the gradient is the strongest channel's.

    Thresholds are quantiles of the non-maximum-suppressed gradient magnitude.
    """
    g = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    gx, gy = ndimage.sobel(g, axis=1), ndimage.sobel(g, axis=0)  # [H, W, C]
    strongest = np.hypot(gx, gy).argmax(axis=2)[..., None]
    gx = np.take_along_axis(gx, strongest, 2)[..., 0]
    gy = np.take_along_axis(gy, strongest, 2)[..., 0]
    mag = np.hypot(gx, gy)
    ang = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    sector = (((ang + 22.5) // 45) % 4).astype(np.int8)  # 0: E-W, 1: NE, 2: N-S, 3: NW
    offsets = {0: (0, 1), 1: (1, 1), 2: (1, 0), 3: (1, -1)}
    pad = np.pad(mag, 1)
    h, w = mag.shape
    keep = np.zeros_like(mag, dtype=bool)
    for s, (dy, dx) in offsets.items():
        a = pad[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        b = pad[1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (mag >= a) & (mag >= b)
    nms = np.where(keep, mag, 0.0)
    nz = nms[nms > 1e-6]
    if nz.size == 0:
        return np.zeros(mag.shape, dtype=bool)
    lo, hi = np.quantile(nz, low), np.quantile(nz, high)
    weak = nms >= lo
    labels, _ = ndimage.label(weak, structure=np.ones((3, 3)))
    strong_labels = np.unique(labels[(nms >= hi) & weak])
    return np.isin(labels, strong_labels[strong_labels > 0])


def thin(edges: np.ndarray, max_iter: int = 50) -> np.ndarray:
    """Zhang-Suen thinning of a bool image to one-pixel-wide lines (vectorised)."""
    img = np.pad(edges.astype(np.uint8), 1)
    for _ in range(max_iter):
        changed = False
        for step in (0, 1):
            p = img
            n = [
                p[:-2, 1:-1],
                p[:-2, 2:],
                p[1:-1, 2:],
                p[2:, 2:],  # P2..P5
                p[2:, 1:-1],
                p[2:, :-2],
                p[1:-1, :-2],
                p[:-2, :-2],
            ]  # P6..P9
            b = sum(x.astype(np.int16) for x in n)
            seq = n + [n[0]]
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.int16) for i in range(8))
            if step == 0:
                c = (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
            else:
                c = (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
            remove = (p[1:-1, 1:-1] == 1) & (b >= 2) & (b <= 6) & (a == 1) & c
            if remove.any():
                img[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            break
    return img[1:-1, 1:-1].astype(bool)


def clean(edges: np.ndarray, min_pixels: int) -> np.ndarray:
    """Drop connected specks smaller than min_pixels (8-connectivity)."""
    labels, n = ndimage.label(edges, structure=np.ones((3, 3)))
    if n == 0:
        return edges
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def sketch_from_photo(photo: Image.Image, method: str = "xdog") -> np.ndarray:
    """RGB photo -> uint8 [H, W] black-on-white line drawing of the same size."""
    if method not in METHODS:
        raise DataError(f"unknown sketch method {method!r}; choose one of {METHODS}")
    img = np.asarray(photo.convert("RGB"), dtype=np.float32) / 255.0  # [H, W, 3]
    scale = photo.size[0] / 256.0
    if method == "xdog":
        edges = xdog_edges(img, sigma=max(0.6, scale))
    else:
        edges = canny_edges(img, sigma=2.0 * scale)
    lines = clean(thin(edges), min_pixels=max(6, int(20 * scale)))
    lines = ndimage.binary_dilation(lines, structure=np.ones((2, 2), bool))  # 2 px strokes
    return np.where(lines, 0, 255).astype(np.uint8)


def find_photos(photos: Path) -> dict[str, list[Path]]:
    """{class name: [image paths]} following the folder convention in the module docstring."""
    if not photos.is_dir():
        raise DataError(f"{photos}: photo folder not found")

    def images(d: Path, recursive: bool) -> list[Path]:
        it = d.rglob("*") if recursive else d.iterdir()
        return sorted(
            p
            for p in it
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTS
            and not any(part.startswith(".") for part in p.relative_to(photos).parts)
        )

    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in photos.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = images(sub, recursive=True)
        if found:
            out[sub.name] = found
    top = images(photos, recursive=False)
    if top:
        name = photos.resolve().name or "photos"
        out.setdefault(name, [])
        out[name] = sorted(out[name] + top)
    if not out:
        raise DataError(f"{photos}: no images found (looked for {', '.join(sorted(IMAGE_EXTS))})")
    return out


def _photo_id(path: Path, class_dir: Path, used: set[str]) -> str:
    rel = path.relative_to(class_dir) if path.is_relative_to(class_dir) else Path(path.name)
    pid = "__".join(rel.with_suffix("").parts).replace(" ", "_")
    base, i = pid, 1
    while pid in used:
        i += 1
        pid = f"{base}_{i}"
    used.add(pid)
    return pid


def sketchify(
    photos: str | os.PathLike,
    out: str | os.PathLike,
    method: str = DEFAULT_EDGE_METHOD,
    size: int = DEFAULT_SIZE,
    skip_bad: bool = False,
    progress: bool = True,
) -> Path:
    """Write PHOTOS as a Sketchy-layout data set at `out` with one detected sketch per photo.

    Unreadable photos raise DataError naming the file (skip_bad: counted in the marker file
    out/.s2i-fast-sketchify.json instead). `out` must not exist or be empty.
    """
    photos, out = Path(photos).expanduser(), Path(out).expanduser()
    if method not in METHODS:
        raise DataError(f"unknown sketch method {method!r}; choose one of {METHODS}")
    if size < 32:
        raise DataError(f"size must be >= 32, got {size}")
    classes = find_photos(photos)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: exists and is not empty; choose another folder")
    tmp = temp_dir_beside(out)
    skipped: dict[str, str] = {}
    written = 0
    try:
        total = sum(len(v) for v in classes.values())
        bar = tqdm(total=total, desc=f"sketchify ({method})", unit="photo", disable=not progress)
        for cls, paths in classes.items():
            pdir = tmp / "photo" / DEFAULT_VARIANT / cls
            sdir = tmp / "sketch" / DEFAULT_VARIANT / cls
            ensure_dir(pdir)
            ensure_dir(sdir)
            class_dir = photos / cls if (photos / cls).is_dir() else photos
            used: set[str] = set()
            for path in paths:
                bar.update(1)
                try:
                    im = load_image(path, "RGB")
                except DataError as e:
                    if not skip_bad:
                        raise
                    skipped[str(path)] = str(e)
                    continue
                im = im.resize((size, size), Image.Resampling.LANCZOS)
                pid = _photo_id(path, class_dir, used)
                write_image(pdir / f"{pid}.jpg", im, quality=95)
                write_image(sdir / f"{pid}-1.png", sketch_from_photo(im, method))
                written += 1
            if not any(pdir.iterdir()):  # every photo of the class was unreadable
                shutil.rmtree(pdir)
                shutil.rmtree(sdir)
        bar.close()
        if written == 0:
            raise DataError(f"{photos}: no readable photos")
        info = tmp / "info"
        ensure_dir(info)
        for k in INVALID_LISTS:
            write_text(info / f"invalid-{k}.txt", "")
        meta = {
            "source": str(photos.resolve()),
            "method": method,
            "size": size,
            "classes": sorted(classes),
            "photos": written,
            "skipped": skipped,
        }
        write_text(tmp / MARKER, json.dumps(meta, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
    except OSError as e:  # the final renames (every file went through s2i_fast.fileio)
        raise OutputError(f"could not write {out}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
