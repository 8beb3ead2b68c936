"""s2i_fast.data: the Sketchy-layout loader, preprocessing statistics, datasets and generators.

Heavy modules (torch datasets, scipy-based rendering) load on first use, so
`from s2i_fast.data import scan_sketchy` stays cheap.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from s2i_fast.errors import DataError

# The one source of the data defaults: the embedded synthetic set (what `train` uses when no
# data is given), image size, the edge detector of `data sketchify`, the seeded test split.
DEFAULT_CLASSES = 10
DEFAULT_PHOTOS_PER_CLASS = 24
DEFAULT_SKETCHES_PER_PHOTO = 3
DEFAULT_SEED = 0
DEFAULT_SIZE = 256
DEFAULT_EDGE_METHOD = "xdog"
DEFAULT_TEST_FRACTION = 0.1
# bounds of `data synth`: what a person could mean (Sketchy has about 100 photos per class)
MAX_PHOTOS_PER_CLASS = 100_000
MAX_SKETCHES_PER_PHOTO = 1000
MAX_SIZE = 1024
MAX_SEED = 2**64 - 1  # seeds of numpy's SeedSequence (any int >= 0); 64 bits is plenty

_LAZY = {
    "SketchRecord": "s2i_fast.data.sketchy",
    "SketchyIndex": "s2i_fast.data.sketchy",
    "scan_sketchy": "s2i_fast.data.sketchy",
    "dataset_stats": "s2i_fast.data.stats",
    "SketchyDataset": "s2i_fast.data.dataset",
    "synthesize": "s2i_fast.data.synth",
    "sketchify": "s2i_fast.data.sketchify",
}

__all__ = sorted([*_LAZY, "default_data_root", "ensure_default_data"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 's2i_fast.data' has no attribute {name!r}")


def default_data_root() -> Path:
    """$S2I_FAST_DATA if set, else ~/.cache/s2i-fast/synth-default."""
    env = os.environ.get("S2I_FAST_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.path.expanduser("~")) / ".cache" / "s2i-fast" / "synth-default"


def _is_complete(root: Path) -> bool:
    from s2i_fast.data.synth import MARKER

    return (root / MARKER).is_file()


def ensure_default_data(root: Path | None = None, progress: bool = True) -> Path:
    """Return the default data set's root, synthesizing it on first use.

    A folder that already holds a data set (the synth marker, or photo/ and sketch/ folders,
    e.g. $S2I_FAST_DATA pointing at the real Sketchy database) is used as it is. The set is
    written into a temporary folder and renamed into place, so a half-written set is never seen.
    """
    from s2i_fast.data.synth import synthesize

    root = Path(root).expanduser() if root is not None else default_data_root()
    if _is_complete(root) or ((root / "photo").is_dir() and (root / "sketch").is_dir()):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root}: exists but holds no Sketchy-layout data set")
    if root.is_dir():
        root.rmdir()  # empty: replaced atomically below
    try:
        synthesize(
            root,
            classes=DEFAULT_CLASSES,
            photos_per_class=DEFAULT_PHOTOS_PER_CLASS,
            sketches_per_photo=DEFAULT_SKETCHES_PER_PHOTO,
            seed=DEFAULT_SEED,
            progress=progress,
            replace=False,
        )
    except OSError as e:
        if _is_complete(root):  # another process finished first
            return root
        raise DataError(f"{root}: cannot write the default data set ({e.strerror or e})") from e
    except DataError:
        if _is_complete(root):
            return root
        raise
    return root


def synth_params(root: Path) -> dict[str, Any] | None:
    """The parameters a synthesized set was made with (None if `root` is not one)."""
    from s2i_fast.data.synth import MARKER

    try:
        return json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
