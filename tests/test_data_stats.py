"""Preprocessing statistics (against an independent numpy computation), caching, the Dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import s2i_fast.data.stats as stats_mod
from s2i_fast.config import PreprocessStats
from s2i_fast.data.dataset import SketchyDataset
from s2i_fast.data.sketchy import scan_sketchy
from s2i_fast.data.stats import dataset_stats, stats_cache_path

V = "tx_000000000000"
SRC = 128  # files are 128x128; the model resolution 64 is an exact 2x2 box average


def make_dataset(
    root: Path,
    classes: int = 2,
    photos: int = 5,
    sketches: int = 2,
    blank_sketches: bool = False,
    seed: int = 0,
) -> Path:
    """PNG photos (lossless, so numpy can read the same pixels) and sketches, no info files."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        pdir, sdir = root / "photo" / V / f"class{c}", root / "sketch" / V / f"class{c}"
        pdir.mkdir(parents=True)
        sdir.mkdir(parents=True)
        for p in range(photos):
            lo, hi = rng.integers(10, 60), rng.integers(180, 250)  # min/max not 0/255
            arr = rng.integers(lo, hi, (SRC, SRC, 3), dtype=np.uint8)
            arr[..., 2] //= 2  # channels with different statistics
            Image.fromarray(arr).save(pdir / f"c{c}p{p}.png")
            for n in range(1, sketches + 1):
                sk = np.full((SRC, SRC), 255, np.uint8)
                if not blank_sketches:
                    r0 = rng.integers(0, SRC - 40)
                    sk[r0 : r0 + 30, 20:26] = rng.integers(0, 100)
                Image.fromarray(sk, "L").save(sdir / f"c{c}p{p}-{n}.png")
    return root


def _box64(path: Path) -> np.ndarray:
    """Independent reader: 2x2 box average in numpy, [0, 1], float64 [H, W, C]."""
    a = np.asarray(Image.open(path), dtype=np.float64)
    a = a.reshape(64, 2, 64, 2, *a.shape[2:]).mean(axis=(1, 3))
    return a / 255.0


def test_stats_match_numpy(tmp_path: Path) -> None:
    idx = scan_sketchy(make_dataset(tmp_path / "ds"), test_fraction=0.2)
    st = dataset_stats(idx, resolution=64, cache=False, progress=False)
    photos = np.stack([_box64(p) for p in sorted({r.photo_path for r in idx.train})])
    sketches = np.stack([1.0 - _box64(r.sketch_path) for r in idx.train])[..., None]
    for got_mean, got_scale, arr in (
        (st.photo_mean, st.photo_scale, photos),
        (st.sketch_mean, st.sketch_scale, sketches),
    ):
        flat = arr.reshape(-1, arr.shape[-1])
        mean = flat.mean(0)
        scale = np.maximum(np.abs(flat.min(0) - mean), np.abs(flat.max(0) - mean))
        # PIL rounds the box average to uint8: at most half a level per pixel
        np.testing.assert_allclose(got_mean, mean, atol=0.6 / 255)
        np.testing.assert_allclose(got_scale, scale, atol=1.0 / 255)
    assert st.photo_mean[2] < st.photo_mean[0] - 0.1  # per channel, not pooled
    # normalised training data lies in [-1, 1] and reaches the bound in each channel
    ds = SketchyDataset(idx, "train", st, resolution=64, augment=False)
    items = [ds[i] for i in range(len(ds))]
    ph = torch.stack([it["photo"] for it in items])  # [N, 3, 64, 64]
    sk = torch.stack([it["sketch"] for it in items])  # [N, 1, 64, 64]
    for x in (ph, sk):
        assert float(x.abs().max()) <= 1.0 + 1e-5
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1).abs().amax(1)
        assert torch.all(per_channel > 1.0 - 1e-4)


def test_stats_training_split_only(tmp_path: Path) -> None:
    idx = scan_sketchy(make_dataset(tmp_path / "ds"), test_fraction=0.4)
    st = dataset_stats(idx, cache=False, progress=False)
    idx.test[0].photo_path.write_bytes(b"garbage")  # the test split is never read
    assert dataset_stats(idx, cache=False, progress=False) == st


def test_constant_channels_guarded(tmp_path: Path) -> None:
    idx = scan_sketchy(make_dataset(tmp_path / "ds", blank_sketches=True))
    st = dataset_stats(idx, cache=False, progress=False)
    assert st.sketch_mean == [0.0] and st.sketch_scale == [1.0]


def test_stats_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_dataset(tmp_path / "ds")
    idx = scan_sketchy(root)
    path = stats_cache_path(idx, 64)
    assert path.parent == root / ".s2i-fast-cache" and not path.exists()
    st = dataset_stats(idx, resolution=64, progress=False)
    assert path.is_file()
    record = json.loads(path.read_text())
    assert record["resolution"] == 64 and record["stats"] == st.to_dict()

    def no_recompute(*a, **k):
        raise AssertionError("statistics recomputed despite the cache")

    monkeypatch.setattr(stats_mod, "compute_stats", no_recompute)
    assert dataset_stats(scan_sketchy(root), resolution=64, progress=False) == st
    # another resolution, class subset or changed file is another key
    assert stats_cache_path(idx, 128) != path
    assert stats_cache_path(scan_sketchy(root, classes=1), 64) != path
    Image.fromarray(np.zeros((SRC, SRC, 3), np.uint8)).save(idx.train[0].photo_path)
    assert stats_cache_path(scan_sketchy(root), 64) != path
    with pytest.raises(AssertionError, match="recomputed"):
        dataset_stats(scan_sketchy(root), resolution=64, progress=False)


def test_jitter_deterministic_and_photo_only(tmp_path: Path) -> None:
    idx = scan_sketchy(make_dataset(tmp_path / "ds", classes=1, photos=2, sketches=1))
    st = dataset_stats(idx, cache=False, progress=False)
    plain = SketchyDataset(idx, "train", st, augment=False)
    ds = SketchyDataset(idx, "train", st)  # train split: augment on by default
    assert ds.augment and not SketchyDataset(idx, "test", st).augment
    torch.manual_seed(3)
    a = ds[0]
    torch.manual_seed(3)
    b = ds[0]
    c = ds[0]
    assert torch.equal(a["photo"], b["photo"]) and not torch.equal(a["photo"], c["photo"])
    assert not torch.equal(a["photo"], plain[0]["photo"])
    assert torch.equal(a["sketch"], plain[0]["sketch"])


def test_cache_falls_back_to_user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data set folder we cannot write to (e.g. a shared read-only mount)."""
    root = make_dataset(tmp_path / "ds", classes=1, photos=2, sketches=1)
    idx = scan_sketchy(root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(stats_mod.os, "access", lambda path, mode: False)
    path = stats_cache_path(idx, 64)
    assert path.parent == tmp_path / "xdg" / "s2i-fast" / "stats"
    st = dataset_stats(idx, progress=False)
    assert path.is_file() and not (root / ".s2i-fast-cache").exists()
    assert PreprocessStats.from_dict(json.loads(path.read_text())["stats"]) == st
