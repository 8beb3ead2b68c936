"""Loader for the Sketchy database's on-disk layout (also written by `data synth` / `sketchify`).

    ROOT/photo/<variant>/<class>/<photo_id>.jpg
    ROOT/sketch/<variant>/<class>/<photo_id>-<n>.png
    ROOT/info/invalid-{error,ambiguous,pose,context}.txt   one sketch id per line
    ROOT/info/testset.txt                                   optional: <class>/<photo_id>.jpg

`scan_sketchy` only lists files (it never decodes an image), so it is quick even on the full
75k-sketch database. Unreadable images are found when they are read (dataset.py, stats.py).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from s2i_fast.data import DEFAULT_SEED, DEFAULT_TEST_FRACTION
from s2i_fast.data.classes import known_classes, parse_class_spec
from s2i_fast.errors import DataError

DEFAULT_VARIANT = "tx_000000000000"
INVALID_LISTS: tuple[str, ...] = ("error", "ambiguous", "pose", "context")
DROPPABLE: tuple[str, ...] = ("ambiguous", "pose", "context")
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
_MAX_EXAMPLES = 20  # skipped files listed by name in the report


@dataclass
class SketchRecord:
    sketch_path: Path
    photo_path: Path
    class_name: str
    label: int
    sketch_id: str  # "<photo_id>-<n>"
    photo_id: str


@dataclass
class SketchyIndex:
    root: Path
    classes: list[str]  # sorted; label = position
    train: list[SketchRecord]
    test: list[SketchRecord]
    report: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[SketchRecord]:
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return self.train if name == "train" else self.test


class _Problems:
    """Broken inputs: raise at once, or (skip_bad) count them and carry on."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.counts: dict[str, int] = {}
        self.examples: list[str] = []

    def __call__(self, kind: str, message: str) -> None:
        if not self.skip_bad:
            raise DataError(message)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(message)


def _list_dirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


def _list_images(path: Path) -> list[os.DirEntry]:
    try:
        entries = list(os.scandir(path))
    except OSError:
        return []
    files = [
        e
        for e in entries
        if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTS and e.is_file()
    ]
    return sorted(files, key=lambda e: e.name)


def _read_lines(path: Path) -> list[str]:
    """Lines of a text file with CRLF/CR endings, trailing blanks and empty lines removed."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    text = raw.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return [line.strip() for line in text.split("\n") if line.strip()]


def _sketch_key(line: str) -> str:
    """'cls/n0123_45-2.png' or 'n0123_45-2' -> 'n0123_45-2'."""
    name = line.replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTS else name


def read_invalid_lists(root: Path) -> dict[str, set[str]]:
    """{'error': {sketch ids}, 'ambiguous': ..., 'pose': ..., 'context': ...} (missing -> empty)."""
    info = Path(root) / "info"
    return {
        k: {_sketch_key(s) for s in _read_lines(info / f"invalid-{k}.txt")} for k in INVALID_LISTS
    }


def read_testset(root: Path) -> set[tuple[str, str]] | None:
    """{(class, photo_id)} from info/testset.txt, or None when the file does not exist."""
    path = Path(root) / "info" / "testset.txt"
    if not path.is_file():
        return None
    out: set[tuple[str, str]] = set()
    for line in _read_lines(path):
        parts = line.replace("\\", "/").strip("/").split("/")
        if len(parts) >= 2:
            out.add((parts[-2], os.path.splitext(parts[-1])[0]))
    return out


def _select_classes(
    available: list[str], classes: Sequence[str] | int | None, where: Path
) -> list[str]:
    if classes is None:
        return list(available)
    if isinstance(classes, (int, np.integer)) and not isinstance(classes, bool):
        n = int(classes)
        if n < 1 or n > len(available):
            raise DataError(f"{where}: asked for {n} classes, the data set has {len(available)}")
        return available[:n]
    if isinstance(classes, str):
        classes = parse_class_spec(classes) or []
        if isinstance(classes, int):
            return _select_classes(available, classes, where)
    wanted = list(dict.fromkeys(str(c) for c in classes))
    if not wanted:
        raise DataError(f"{where}: empty class list")
    known = set(available)
    for name in wanted:
        if name not in known:
            raise DataError(f"{where}: unknown class {name!r} (known: {known_classes(available)})")
    return sorted(wanted)


def _seeded_test_photos(
    photo_ids: list[str], class_name: str, test_fraction: float, split_seed: int
) -> set[str]:
    """Per-class split by photo, independent of which other classes are selected."""
    n = len(photo_ids)
    if test_fraction <= 0 or n < 2:
        return set()
    n_test = min(n - 1, max(1, int(round(test_fraction * n))))
    rng = np.random.default_rng([int(split_seed), zlib.crc32(class_name.encode("utf-8"))])
    order = rng.permutation(n)
    return {photo_ids[i] for i in order[:n_test]}


def scan_sketchy(
    root: str | os.PathLike,
    *,
    photo_variant: str = DEFAULT_VARIANT,
    sketch_variant: str = DEFAULT_VARIANT,
    classes: Sequence[str] | int | None = None,
    drop_invalid: Iterable[str] = (),
    test_fraction: float = DEFAULT_TEST_FRACTION,
    split_seed: int = DEFAULT_SEED,
    skip_bad: bool = False,
) -> SketchyIndex:
    """Index a Sketchy-layout data set: every kept sketch paired with its photo.

    classes: names (any order; labels follow sorted order) or a count (first N sorted names).
    drop_invalid: any of "ambiguous", "pose", "context"; "error" sketches are always dropped.
    Raises DataError (one line naming the file or class) on a missing folder, an unknown class
    name, an empty class or a sketch with no photo; with skip_bad those are counted in
    index.report["skipped"] instead (classes left with no sketches are then left out).
    """
    root = Path(root).expanduser()
    if isinstance(drop_invalid, str):
        drop_invalid = [d for d in drop_invalid.split(",") if d.strip()]
    drop = {d.strip().lower() for d in drop_invalid}
    unknown = drop - set(DROPPABLE) - {"error"}
    if unknown:
        raise DataError(f"unknown invalid list(s) {sorted(unknown)}; choose from {list(DROPPABLE)}")
    drop.add("error")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    variants = {"photo": _list_dirs(root / "photo"), "sketch": _list_dirs(root / "sketch")}
    photo_dir, sketch_dir = root / "photo" / photo_variant, root / "sketch" / sketch_variant
    for kind, d, v in (("photo", photo_dir, photo_variant), ("sketch", sketch_dir, sketch_variant)):
        if not d.is_dir():
            found = ", ".join(variants[kind]) or "none"
            raise DataError(f"{d}: {kind} variant folder {v!r} not found (found: {found})")

    available = sorted(set(_list_dirs(photo_dir)) | set(_list_dirs(sketch_dir)))
    if not available:
        raise DataError(f"{sketch_dir}: no class folders")
    selected = _select_classes(available, classes, root)
    problems = _Problems(skip_bad)
    invalid = read_invalid_lists(root)
    testset = read_testset(root)

    dropped = dict.fromkeys(INVALID_LISTS, 0)
    listed = dict.fromkeys(INVALID_LISTS, 0)
    n_photos = n_sketches = n_photos_unused = 0
    per_class: dict[str, list[tuple[str, Path, Path, str]]] = {}
    for cls in selected:
        photos: dict[str, Path] = {}
        empty_photos: set[str] = set()
        for e in _list_images(photo_dir / cls):
            pid = os.path.splitext(e.name)[0]
            if pid not in photos:
                photos[pid] = Path(e.path)
                if e.stat().st_size == 0:
                    empty_photos.add(pid)
                    problems("empty_file", f"{e.path}: empty file")
        sketch_entries = _list_images(sketch_dir / cls)
        n_photos += len(photos)
        n_sketches += len(sketch_entries)
        if not (photo_dir / cls).is_dir():
            problems(
                "missing_photo_folder", f"{photo_dir / cls}: photo folder missing for class {cls!r}"
            )
        elif not photos:
            problems("empty_class", f"{photo_dir / cls}: class {cls!r} has no photos")
        if not sketch_entries:
            problems("empty_class", f"{sketch_dir / cls}: class {cls!r} has no sketches")
        kept: list[tuple[str, Path, Path, str]] = []
        used: set[str] = set()
        for e in sketch_entries:
            sid = os.path.splitext(e.name)[0]
            pid, sep, num = sid.rpartition("-")
            if not sep or not pid or not num.isdigit():
                problems("bad_name", f"{e.path}: sketch name is not <photo_id>-<n>")
                continue
            if pid not in photos:
                if photos:  # a class without photos is reported once, above
                    problems(
                        "sketch_without_photo", f"{e.path}: no photo {pid!r} in {photo_dir / cls}"
                    )
                continue
            if e.stat().st_size == 0:
                problems("empty_file", f"{e.path}: empty file")
                continue
            if pid in empty_photos:
                continue  # reported once above
            on = [k for k in INVALID_LISTS if sid in invalid[k]]
            for k in on:
                listed[k] += 1
            hit = next((k for k in on if k in drop), None)
            if hit is not None:
                dropped[hit] += 1
                continue
            kept.append((sid, Path(e.path), photos[pid], pid))
            used.add(pid)
        n_photos_unused += len(set(photos) - used)
        if sketch_entries and photos and not kept:
            problems("empty_class", f"{sketch_dir / cls}: class {cls!r} has no sketches left")
        if kept:
            per_class[cls] = kept

    final_classes = [c for c in selected if c in per_class]
    if not final_classes:
        raise DataError(f"{root}: no usable sketch/photo pairs")
    train: list[SketchRecord] = []
    test: list[SketchRecord] = []
    test_photos: set[tuple[str, str]] = set()
    for label, cls in enumerate(final_classes):
        kept = per_class[cls]
        if testset is not None:
            test_ids = {pid for (c, pid) in testset if c == cls}
        else:
            pids = sorted({pid for (_, _, _, pid) in kept})
            test_ids = _seeded_test_photos(pids, cls, test_fraction, split_seed)
        for sid, spath, ppath, pid in kept:
            rec = SketchRecord(spath, ppath, cls, label, sid, pid)
            if pid in test_ids:
                test.append(rec)
                test_photos.add((cls, pid))
            else:
                train.append(rec)
    n_train_photos = len({(r.class_name, r.photo_id) for r in train})
    report: dict[str, Any] = {
        "root": str(root),
        "photo_variant": photo_variant,
        "sketch_variant": sketch_variant,
        "variants": variants,
        "classes": len(final_classes),
        "class_names": final_classes,
        "photos": n_photos,
        "photos_without_sketches": n_photos_unused,
        "sketches": n_sketches,
        "kept": len(train) + len(test),
        "dropped": dropped,
        "listed_invalid": listed,
        "drop_invalid": sorted(drop),
        "split": "testset.txt"
        if testset is not None
        else f"seeded(fraction={test_fraction}, seed={split_seed})",
        "train": len(train),
        "test": len(test),
        "train_photos": n_train_photos,
        "test_photos": len(test_photos),
        "skip_bad": skip_bad,
        "skipped": dict(problems.counts),
        "skipped_examples": list(problems.examples),
    }
    return SketchyIndex(root=root, classes=final_classes, train=train, test=test, report=report)
