"""The procedural data set, the embedded default and sketchify."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import s2i_fast.data as data_pkg
from s2i_fast.data import default_data_root, ensure_default_data
from s2i_fast.data.shapes import CLASSES
from s2i_fast.data.sketchify import sketchify
from s2i_fast.data.sketchy import read_invalid_lists, scan_sketchy
from s2i_fast.data.synth import MARKER, object_mask, scene, synthesize
from s2i_fast.errors import DataError

V = "tx_000000000000"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "set"
    return synthesize(
        out,
        classes=len(CLASSES),
        photos_per_class=2,
        sketches_per_photo=2,
        seed=5,
        size=64,
        progress=False,
    )


def test_layout_and_loader(small_set: Path) -> None:
    assert len(CLASSES) >= 10
    for cls in CLASSES:
        photos = sorted((small_set / "photo" / V / cls).iterdir())
        assert [p.name for p in photos] == [f"{cls}_0000.jpg", f"{cls}_0001.jpg"]
        sketches = sorted(p.name for p in (small_set / "sketch" / V / cls).iterdir())
        assert sketches == [f"{cls}_{i:04d}-{n}.png" for i in range(2) for n in (1, 2)]
        with Image.open(photos[0]) as im:
            assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"
    for k in ("error", "ambiguous", "pose", "context"):
        assert (small_set / "info" / f"invalid-{k}.txt").is_file()
    assert (small_set / MARKER).is_file()
    idx = scan_sketchy(small_set)
    assert idx.classes == sorted(CLASSES)
    assert idx.report["split"] == "testset.txt"
    assert idx.report["photos"] == 2 * len(CLASSES)


def test_deterministic_from_seed(small_set: Path, tmp_path: Path) -> None:
    again = synthesize(
        tmp_path / "again",
        classes=len(CLASSES),
        photos_per_class=2,
        sketches_per_photo=2,
        seed=5,
        size=64,
        progress=False,
    )
    assert _digest(again) == _digest(small_set)
    other = synthesize(
        tmp_path / "other",
        classes=2,
        photos_per_class=2,
        sketches_per_photo=2,
        seed=6,
        size=64,
        progress=False,
    )
    a, b = _digest(other), _digest(small_set)
    shared = [k for k in a if k.endswith((".jpg", ".png"))]
    assert shared and all(a[k] != b[k] for k in shared)
    # re-running into a synthesized folder replaces it; a foreign folder is refused
    synthesize(
        again, classes=1, photos_per_class=1, sketches_per_photo=1, seed=5, size=64, progress=False
    )
    assert sorted(p.name for p in (again / "photo" / V).iterdir()) == ["apple"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synthesized"):
        synthesize(foreign, classes=1, photos_per_class=1, progress=False)


def test_sketch_outlines_the_photo_object(small_set: Path) -> None:
    """Learnable pairs: strokes lie on the photo's object, and they trace most of its outline."""
    invalid = read_invalid_lists(small_set)
    bad = invalid["error"] | invalid["ambiguous"]
    checked = 0
    for cls in CLASSES:
        for pi in range(2):
            parts, tf, _ = scene(cls, 5, pi)
            obj = object_mask(parts, tf, 64) > 0.5
            near = ndimage.binary_dilation(obj, iterations=3)
            edge = obj & ~ndimage.binary_erosion(obj)
            for n in (1, 2):
                sid = f"{cls}_{pi:04d}-{n}"
                if sid in bad:
                    continue
                sk = np.asarray(Image.open(small_set / "sketch" / V / cls / f"{sid}.png"))
                ink = sk < 128
                assert ink.sum() > 20, sid
                assert (ink & near).sum() / ink.sum() > 0.9, f"{sid}: strokes off the object"
                traced = ndimage.binary_dilation(ink, iterations=3) & edge
                assert traced.sum() / edge.sum() > 0.5, f"{sid}: outline mostly missing"
                checked += 1
            photo = np.asarray(Image.open(small_set / "photo" / V / cls / f"{cls}_{pi:04d}.jpg"))
            assert photo.std() > 10  # not a flat image
    assert checked >= 2 * len(CLASSES)


def test_ensure_default_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2I_FAST_DATA", str(tmp_path / "env-root"))
    assert default_data_root() == tmp_path / "env-root"
    monkeypatch.setattr(data_pkg, "DEFAULT_CLASSES", 2)
    monkeypatch.setattr(data_pkg, "DEFAULT_PHOTOS_PER_CLASS", 2)
    monkeypatch.setattr(data_pkg, "DEFAULT_SKETCHES_PER_PHOTO", 1)
    root = ensure_default_data(progress=False)
    assert root == tmp_path / "env-root" and (root / MARKER).is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # temp folder renamed away
    before = _digest(root)
    mtime = (root / MARKER).stat().st_mtime_ns
    assert ensure_default_data(progress=False) == root
    assert _digest(root) == before and (root / MARKER).stat().st_mtime_ns == mtime
    half = tmp_path / "half"
    (half / "photo").mkdir(parents=True)  # a half-written folder is not taken for a data set
    with pytest.raises(DataError, match="no Sketchy-layout"):
        ensure_default_data(half, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (ensure_default_data(empty, progress=False) / MARKER).is_file()


def test_sketchify(small_set: Path, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    for cls in ("apple", "car"):
        (src / cls / "nested").mkdir(parents=True)
        for i, p in enumerate(sorted((small_set / "photo" / V / cls).iterdir())):
            dst = src / cls / ("nested" if i else "") / f"img {i}.jpg"
            dst.write_bytes(p.read_bytes())
    for method in ("xdog", "canny"):
        out = sketchify(src, tmp_path / f"out-{method}", method=method, size=64, progress=False)
        idx = scan_sketchy(out, test_fraction=0.0)
        assert idx.classes == ["apple", "car"] and len(idx.train) == 4
        for r in idx.train:
            sk = np.asarray(Image.open(r.sketch_path))
            assert sk.shape == (64, 64) and set(np.unique(sk)) <= {0, 255}
            assert 0.005 < (sk == 0).mean() < 0.3, (method, r.sketch_path)  # lines, not blobs
            assert Image.open(r.photo_path).size == (64, 64)
    flat = tmp_path / "flat_photos"
    flat.mkdir()
    (flat / "a.jpg").write_bytes((src / "apple" / "img 0.jpg").read_bytes())
    (flat / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as e:
        sketchify(flat, tmp_path / "out-flat", size=64, progress=False)
    assert str(flat / "broken.jpg") in str(e.value)
    assert not (tmp_path / "out-flat").exists()
    out = sketchify(flat, tmp_path / "out-flat", size=64, skip_bad=True, progress=False)
    assert scan_sketchy(out, test_fraction=0.0).classes == ["flat_photos"]
    with pytest.raises(DataError, match="not empty"):
        sketchify(flat, out, size=64, progress=False)
