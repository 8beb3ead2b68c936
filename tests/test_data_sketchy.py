"""The Sketchy-layout loader on a fixture with the real database's quirks, built in the test."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from s2i_fast.config import PreprocessStats
from s2i_fast.data.dataset import SketchyDataset
from s2i_fast.data.sketchy import scan_sketchy
from s2i_fast.data.stats import dataset_stats
from s2i_fast.errors import DataError

V0, V_PHOTO_BBOX, V_SKETCH_BBOX = "tx_000000000000", "tx_000100000000", "tx_000000001010"
# class -> sketch PNG mode; the odd names are real Sketchy class names
CLASSES = {"car_(sedan)": "RGBA", "hot-air_balloon": "L", "jack-o-lantern": "RGB"}
PHOTOS_PER_CLASS, SKETCHES_PER_PHOTO, SIZE = 4, 2, 32


def _photo_ids(cls: str) -> list[str]:
    return [f"n{zlib.crc32(cls.encode()) % 10**8:08d}_{k}" for k in range(PHOTOS_PER_CLASS)]


def _write_sketch(path: Path, mode: str, rng: np.random.Generator) -> None:
    ink = np.ones((SIZE, SIZE), bool)
    ink[rng.integers(4, 12) : rng.integers(20, 28), 8:10] = False  # a vertical stroke
    if mode == "RGBA":  # black strokes on a transparent background, as some tools save them
        arr = np.zeros((SIZE, SIZE, 4), np.uint8)
        arr[..., 3] = np.where(ink, 0, 255)
        Image.fromarray(arr, "RGBA").save(path)
    elif mode == "RGB":
        Image.fromarray(np.repeat(np.where(ink, 255, 0).astype(np.uint8)[..., None], 3, 2)).save(
            path
        )
    else:
        Image.fromarray(np.where(ink, 255, 0).astype(np.uint8), "L").save(path)


def make_sketchy(root: Path, seed: int = 0) -> Path:
    """A small Sketchy-layout tree: odd class names, CRLF info files, RGBA/L/RGB sketches,
    two photo variants and two sketch variants."""
    rng = np.random.default_rng(seed)
    for cls, mode in CLASSES.items():
        for variant in (V0, V_PHOTO_BBOX):
            d = root / "photo" / variant / cls
            d.mkdir(parents=True)
            for pid in _photo_ids(cls):
                arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{pid}.jpg", quality=90)
        for variant in (V0, V_SKETCH_BBOX):
            d = root / "sketch" / variant / cls
            d.mkdir(parents=True)
            for pid in _photo_ids(cls):
                for n in range(1, SKETCHES_PER_PHOTO + 1):
                    _write_sketch(d / f"{pid}-{n}.png", mode, rng)
    car, jack, balloon = (
        _photo_ids(c) for c in ("car_(sedan)", "jack-o-lantern", "hot-air_balloon")
    )
    info = root / "info"
    info.mkdir()
    crlf = {  # CRLF endings, trailing blanks and empty lines, one entry with class/.png
        "error": f"{car[0]}-1  \r\n\r\n",
        "ambiguous": f"{jack[1]}-2\r\n   \r\n",
        "pose": f"car_(sedan)/{car[2]}-2.png \r\n",
        "context": f"{balloon[3]}-1\t\r\n",
    }
    for k, text in crlf.items():
        (info / f"invalid-{k}.txt").write_bytes(text.encode())
    test_lines = [
        f"car_(sedan)/{car[1]}.jpg",
        f"jack-o-lantern/{jack[0]}.jpg ",
        f"hot-air_balloon/{balloon[2]}.jpg",
        "",
    ]
    (info / "testset.txt").write_bytes("\r\n".join(test_lines).encode())
    return root


@pytest.fixture
def sketchy(tmp_path: Path) -> Path:
    return make_sketchy(tmp_path / "sketchy")


def _photos(records) -> set[tuple[str, str]]:
    return {(r.class_name, r.photo_id) for r in records}


def test_scan_accepts_quirks(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy)
    assert idx.classes == sorted(CLASSES)
    rep = idx.report
    n_total = len(CLASSES) * PHOTOS_PER_CLASS * SKETCHES_PER_PHOTO
    assert rep["photos"] == len(CLASSES) * PHOTOS_PER_CLASS
    assert rep["sketches"] == n_total
    assert rep["dropped"] == {"error": 1, "ambiguous": 0, "pose": 0, "context": 0}
    assert rep["listed_invalid"] == {"error": 1, "ambiguous": 1, "pose": 1, "context": 1}
    assert rep["kept"] == n_total - 1 == len(idx.train) + len(idx.test)
    assert rep["variants"] == {
        "photo": sorted([V0, V_PHOTO_BBOX]),
        "sketch": sorted([V0, V_SKETCH_BBOX]),
    }
    for r in idx.train + idx.test:
        assert idx.classes[r.label] == r.class_name
        assert r.sketch_id.rsplit("-", 1)[0] == r.photo_id == r.photo_path.stem
        assert r.sketch_path.stem == r.sketch_id
        assert r.photo_path.parent.name == r.sketch_path.parent.name == r.class_name
        assert V0 in r.photo_path.parts and V0 in r.sketch_path.parts
    assert f"{_photo_ids('car_(sedan)')[0]}-1" not in {r.sketch_id for r in idx.train + idx.test}


def test_testset_split(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy)
    car, jack, balloon = (
        _photo_ids(c) for c in ("car_(sedan)", "jack-o-lantern", "hot-air_balloon")
    )
    want = {("car_(sedan)", car[1]), ("jack-o-lantern", jack[0]), ("hot-air_balloon", balloon[2])}
    assert _photos(idx.test) == want
    assert not _photos(idx.train) & _photos(idx.test)
    assert idx.report["split"] == "testset.txt" and idx.report["test_photos"] == 3
    assert len(idx.test) == 3 * SKETCHES_PER_PHOTO


def test_seeded_split_by_photo(sketchy: Path) -> None:
    (sketchy / "info" / "testset.txt").unlink()
    a = scan_sketchy(sketchy, test_fraction=0.25, split_seed=1)
    b = scan_sketchy(sketchy, test_fraction=0.25, split_seed=1)
    assert [r.sketch_id for r in a.test] == [r.sketch_id for r in b.test]
    assert not _photos(a.train) & _photos(a.test)  # all sketches of a photo in one split
    assert len(_photos(a.test)) == len(CLASSES)  # 25% of 4 photos per class
    seeds = {
        tuple(sorted(_photos(scan_sketchy(sketchy, test_fraction=0.25, split_seed=s).test)))
        for s in range(6)
    }
    assert len(seeds) > 1
    assert scan_sketchy(sketchy, test_fraction=0.0).test == []
    # a class's split does not depend on which other classes are selected
    sub = scan_sketchy(sketchy, classes=["jack-o-lantern"], test_fraction=0.25, split_seed=1)
    assert _photos(sub.test) == {p for p in _photos(a.test) if p[0] == "jack-o-lantern"}


def test_variant_selection(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy, photo_variant=V_PHOTO_BBOX, sketch_variant=V_SKETCH_BBOX)
    recs = idx.train + idx.test
    assert recs and all(V_PHOTO_BBOX in r.photo_path.parts for r in recs)
    assert all(V_SKETCH_BBOX in r.sketch_path.parts for r in recs)
    with pytest.raises(DataError, match="tx_999") as e:
        scan_sketchy(sketchy, photo_variant="tx_999")
    assert V_PHOTO_BBOX in str(e.value) and "\n" not in str(e.value)


def test_drop_invalid_on_request(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy, drop_invalid=["ambiguous", "pose", "context"])
    assert idx.report["dropped"] == {"error": 1, "ambiguous": 1, "pose": 1, "context": 1}
    kept = {r.sketch_id for r in idx.train + idx.test}
    car, jack, balloon = (
        _photo_ids(c) for c in ("car_(sedan)", "jack-o-lantern", "hot-air_balloon")
    )
    for sid in (f"{car[0]}-1", f"{jack[1]}-2", f"{car[2]}-2", f"{balloon[3]}-1"):
        assert sid not in kept
    assert len(kept) == len(CLASSES) * PHOTOS_PER_CLASS * SKETCHES_PER_PHOTO - 4
    assert scan_sketchy(sketchy, drop_invalid="pose").report["dropped"]["pose"] == 1
    with pytest.raises(DataError, match="unknown invalid"):
        scan_sketchy(sketchy, drop_invalid=["blurry"])


def test_class_subsets(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy, classes=["jack-o-lantern", "car_(sedan)"])
    assert idx.classes == ["car_(sedan)", "jack-o-lantern"]  # labels follow sorted order
    assert {r.label for r in idx.train} == {0, 1}
    assert scan_sketchy(sketchy, classes=2).classes == sorted(CLASSES)[:2]
    with pytest.raises(DataError, match="unknown class 'zebra'"):
        scan_sketchy(sketchy, classes=["zebra"])
    with pytest.raises(DataError, match="asked for 7 classes"):
        scan_sketchy(sketchy, classes=7)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as e:
        scan_sketchy(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    (tmp_path / "ds" / "photo" / V0).mkdir(parents=True)
    with pytest.raises(DataError, match="sketch variant"):
        scan_sketchy(tmp_path / "ds")


def test_sketch_without_photo(sketchy: Path) -> None:
    orphan = sketchy / "sketch" / V0 / "jack-o-lantern" / "n99999999_1-1.png"
    _write_sketch(orphan, "L", np.random.default_rng(0))
    with pytest.raises(DataError) as e:
        scan_sketchy(sketchy)
    assert str(orphan) in str(e.value) and "no photo" in str(e.value)
    idx = scan_sketchy(sketchy, skip_bad=True)
    assert idx.report["skipped"] == {"sketch_without_photo": 1}
    assert any(str(orphan) in m for m in idx.report["skipped_examples"])
    assert len(idx.train) + len(idx.test) == len(CLASSES) * PHOTOS_PER_CLASS * 2 - 1
    assert "jack-o-lantern" in idx.classes  # the rest of the class is intact


def test_empty_class(sketchy: Path) -> None:
    for variant in (V0,):
        (sketchy / "photo" / variant / "zebra").mkdir()
        (sketchy / "sketch" / variant / "zebra").mkdir()
    with pytest.raises(DataError, match="'zebra'") as e:
        scan_sketchy(sketchy)
    assert "zebra" in str(e.value) and "\n" not in str(e.value)
    idx = scan_sketchy(sketchy, skip_bad=True)
    assert "zebra" not in idx.classes and idx.classes == sorted(CLASSES)
    assert idx.report["skipped"]["empty_class"] >= 1


def test_dataset_items_and_sketch_modes(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy)
    stats = PreprocessStats(sketch_mean=[0.0], sketch_scale=[1.0])
    ds = SketchyDataset(idx, "train", stats, resolution=64, augment=False)
    seen_modes = set()
    for i in range(len(ds)):
        item = ds[i]
        assert item["photo"].shape == (3, 64, 64) and item["photo"].dtype == torch.float32
        assert item["sketch"].shape == (1, 64, 64) and item["label"].dtype == torch.int64
        assert item["index"] == i and item["label"].ndim == 0
        sk = item["sketch"][0]  # inverted: background 0, the stroke at column ~16-20 high
        assert float(sk[:, 40:].abs().max()) < 1e-6, idx.train[i].sketch_path
        assert float(sk.max()) > 0.9
        seen_modes.add(Image.open(idx.train[i].sketch_path).mode)
    assert seen_modes == {"RGBA", "L", "RGB"}


def test_corrupt_file_named_and_counted(sketchy: Path) -> None:
    idx = scan_sketchy(sketchy)
    bad = idx.train[3].sketch_path
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    stats = PreprocessStats()
    ds = SketchyDataset(idx, "train", stats)
    with pytest.raises(DataError) as e:
        ds[3]
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    ds_skip = SketchyDataset(idx, "train", stats, skip_bad=True)
    with pytest.warns(UserWarning, match="skipping"):
        item = ds_skip[3]
    assert item["index"] == 4 and list(ds_skip.bad) == [str(bad)]
    with pytest.raises(DataError, match="not an image"):
        dataset_stats(idx, cache=False, progress=False)
    skip_idx = scan_sketchy(sketchy, skip_bad=True)
    stats = dataset_stats(skip_idx, cache=False, progress=False)  # skip_bad follows the index
    assert 0.0 < stats.sketch_mean[0] < 1.0
    empty = idx.train[0].photo_path
    empty.write_bytes(b"")  # zero-byte files are caught by the scan itself
    with pytest.raises(DataError, match="empty file"):
        scan_sketchy(sketchy)
    assert scan_sketchy(sketchy, skip_bad=True).report["skipped"]["empty_file"] >= 1
