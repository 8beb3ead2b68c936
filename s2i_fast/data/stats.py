"""The seed's normalisation statistics, computed once per data set and cached as JSON.

Over the training split at the model resolution (images read exactly as dataset.py reads them,
without jitter): photos in [0, 1] (each photo once), sketches inverted so strokes are high.
    mean  = per-channel mean over every pixel
    scale = max(|min - mean|, |max - mean|) per channel (1.0 for a constant channel)
so (v - mean) / scale lies in [-1, 1] for every training image.

Cache: ROOT/.s2i-fast-cache/stats-<key>.json when ROOT is writable, else
~/.cache/s2i-fast/stats/ (XDG_CACHE_HOME honoured). The key hashes the root, the variants,
the classes, the resolution and the training file list (names, sizes, mtimes).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from s2i_fast.config import PreprocessStats
from s2i_fast.data.dataset import read_photo01, read_sketch_uint8
from s2i_fast.data.sketchy import SketchyIndex
from s2i_fast.errors import DataError

CACHE_VERSION = 1
_MIN_SCALE = 1e-6


class _Accumulator:
    """Running per-channel sum, count, min and max in float64."""

    def __init__(self, channels: int) -> None:
        self.sum = np.zeros(channels, np.float64)
        self.count = 0
        self.min = np.full(channels, np.inf)
        self.max = np.full(channels, -np.inf)

    def add(self, x: np.ndarray) -> None:  # x: [C, H, W]
        flat = x.reshape(x.shape[0], -1)
        self.sum += flat.sum(axis=1, dtype=np.float64)
        self.count += flat.shape[1]
        self.min = np.minimum(self.min, flat.min(axis=1))
        self.max = np.maximum(self.max, flat.max(axis=1))

    def result(self) -> tuple[list[float], list[float]]:
        mean = self.sum / max(self.count, 1)
        scale = np.maximum(np.abs(self.min - mean), np.abs(self.max - mean))
        scale = np.where(scale > _MIN_SCALE, scale, 1.0)
        return [float(v) for v in mean], [float(v) for v in scale]


def _user_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s2i-fast" / "stats"


def _stat_sig(path: Path) -> str:
    try:
        st = path.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        return "missing"


def stats_cache_key(index: SketchyIndex, resolution: int) -> str:
    """Hash of the data set's identity: root, variants, classes, resolution, file list."""
    root = index.root.resolve()
    h = hashlib.sha256()
    photos = sorted({r.photo_path for r in index.train})
    for p in photos + [r.sketch_path for r in index.train]:
        rel = os.path.relpath(p, root)
        h.update(f"{rel}|{_stat_sig(Path(p))}\n".encode())
    ident = {
        "version": CACHE_VERSION,
        "root": str(root),
        "photo_variant": index.report.get("photo_variant"),
        "sketch_variant": index.report.get("sketch_variant"),
        "classes": list(index.classes),
        "resolution": int(resolution),
        "files": h.hexdigest(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def stats_cache_path(index: SketchyIndex, resolution: int, key: str | None = None) -> Path:
    """Where the cached statistics live (the data set's folder if writable, else the user's)."""
    key = key or stats_cache_key(index, resolution)
    name = f"stats-{key}.json"
    local = index.root / ".s2i-fast-cache"
    if os.access(index.root, os.W_OK) and (not local.exists() or os.access(local, os.W_OK)):
        return local / name
    return _user_cache_dir() / name


def _read_cache(path: Path) -> PreprocessStats | None:
    try:
        obj = json.loads(path.read_text())
        return PreprocessStats.from_dict(obj["stats"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def compute_stats(
    index: SketchyIndex, resolution: int = 64, progress: bool = True, skip_bad: bool = False
) -> tuple[PreprocessStats, dict[str, str]]:
    """Compute (no cache). Returns the stats and {file: error} of skipped unreadable images."""
    if not index.train:
        raise DataError(f"{index.root}: the training split is empty; cannot compute statistics")
    photos = sorted({str(r.photo_path) for r in index.train})
    sketches = [str(r.sketch_path) for r in index.train]
    photo_acc, sketch_acc = _Accumulator(3), _Accumulator(1)
    bad: dict[str, str] = {}

    def read(job: tuple[str, str]):
        kind, path = job
        try:
            if kind == "photo":
                return kind, path, read_photo01(path, resolution)  # [3, R, R]
            u8 = read_sketch_uint8(path, resolution)
            return kind, path, 1.0 - u8[None].astype(np.float32) / 255.0  # [1, R, R]
        except DataError as e:
            return kind, path, e

    jobs = [("photo", p) for p in photos] + [("sketch", s) for s in sketches]
    workers = max(1, min(8, os.cpu_count() or 1))
    bar = tqdm(total=len(jobs), desc="data statistics", unit="img", disable=not progress)
    try:
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(jobs), 256):  # blocks bound the decoded images in memory
                for kind, path, value in pool.map(read, jobs[start : start + 256]):
                    bar.update(1)
                    if isinstance(value, DataError):
                        if not skip_bad:
                            raise value
                        bad[path] = str(value)
                        continue
                    (photo_acc if kind == "photo" else sketch_acc).add(value)
    finally:
        bar.close()
    if photo_acc.count == 0 or sketch_acc.count == 0:
        raise DataError(f"{index.root}: no readable images in the training split")
    pm, ps = photo_acc.result()
    sm, ss = sketch_acc.result()
    return PreprocessStats(photo_mean=pm, photo_scale=ps, sketch_mean=sm, sketch_scale=ss), bad


def dataset_stats(
    index: SketchyIndex,
    resolution: int = 64,
    cache: bool = True,
    progress: bool = True,
    skip_bad: bool | None = None,
) -> PreprocessStats:
    """Per-channel mean and scale over the training split at `resolution`, cached as JSON.

    skip_bad (default: the value scan_sketchy was called with) skips unreadable images instead
    of raising DataError naming the file; skipped files are recorded in the cache file.
    """
    if skip_bad is None:
        skip_bad = bool(index.report.get("skip_bad", False))
    key = stats_cache_key(index, resolution)
    path = stats_cache_path(index, resolution, key)
    if cache:
        for candidate in (path, _user_cache_dir() / path.name):
            hit = _read_cache(candidate)
            if hit is not None:
                return hit
    stats, bad = compute_stats(index, resolution, progress=progress, skip_bad=skip_bad)
    if cache:
        record = {
            "key": key,
            "root": str(index.root.resolve()),
            "resolution": resolution,
            "classes": list(index.classes),
            "train_sketches": len(index.train),
            "skipped": bad,
            "stats": stats.to_dict(),
        }
        from s2i_fast.errors import OutputError
        from s2i_fast.fileio import write_json

        try:
            write_json(path, record)
        except OutputError:
            try:
                write_json(_user_cache_dir() / path.name, record)
            except OutputError:
                pass  # a cache we cannot write only costs time
    return stats
