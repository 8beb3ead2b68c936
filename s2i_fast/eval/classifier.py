"""A small photo classifier of a data set's classes: does a generated image show the class its
sketch was drawn for (accuracy), and features for Fréchet distance and diversity.

    train_classifier(root) -> (PhotoClassifier, info)   the unique training photos of a
                                                       Sketchy-layout set, seeded, on the CPU
    save_classifier(path, model, info)                 one file, written through fileio
    load_classifier(path) -> Classifier                validated; ClassifierError otherwise

Classifier takes uint8 [N, H, W, 3] RGB images (the Engine's output) and resizes them to its
resolution the way training photos were (s2i_fast.data.preprocess.resize).
"""

from __future__ import annotations

import io
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from s2i_fast.errors import ClassifierError, DataError, UnknownClassError
from s2i_fast.fileio import stat_regular, write_bytes

FORMAT = "s2i-fast-classifier"
VERSION = 1
DEFAULT_WIDTH = 16
DEFAULT_EPOCHS = 300  # the default synthetic set (220 photos, 64 px): about a minute, 1 thread
DEFAULT_LR = 3e-3
BATCH = 64  # images per forward pass of the Classifier wrapper
MAX_WIDTH = 256  # a file asking for a wider network is refused before anything is allocated


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class PhotoClassifier(nn.Module):
    """Five conv-BN-ReLU blocks (widths w, 2w, 4w, 8w with stride 2, then 8w with stride 1),
    global average pooling and a linear layer: about 0.25 M parameters at width 16.

    Input float [N, 3, R, R] in [0, 1], any R (64, 128 and 256 are the model's resolutions);
    features(x) -> [N, 8w] (after pooling), forward(x) -> logits [N, num_classes].
    """

    def __init__(self, num_classes: int, width: int = DEFAULT_WIDTH) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ValueError(f"num_classes and width must be >= 1, got {num_classes}, {width}")
        self.num_classes, self.width = int(num_classes), int(width)
        w = self.width
        self.body = nn.Sequential(_block(3, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
                                  _block(4 * w, 8 * w, 2), _block(8 * w, 8 * w, 1))
        self.head = nn.Linear(8 * w, self.num_classes)

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x - 0.5).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---------------------------------------------------------------------- training
def _unique_photos(records) -> tuple[list[Path], list[int]]:  # noqa: ANN001
    seen: dict[Path, int] = {}
    for r in records:
        seen.setdefault(Path(r.photo_path), int(r.label))
    paths = sorted(seen)
    return paths, [seen[p] for p in paths]


def _read_photos(paths: list[Path], resolution: int) -> torch.Tensor:
    from s2i_fast.data.dataset import read_photo01

    out = torch.empty(len(paths), 3, resolution, resolution)
    for i, p in enumerate(paths):
        out[i] = torch.from_numpy(read_photo01(p, resolution))
    return out


CHANNEL_SHUFFLE = True
_PERMS = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]])


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, a translation of up to R/16 px (edges replicated) and a
    brightness factor in [0.85, 1.15], per image, from `gen`."""
    n, _, r, _ = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = max(1, r // 16)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=gen).tolist()
    x = torch.stack([padded[i, :, dy[i]:dy[i] + r, dx[i]:dx[i] + r] for i in range(n)])
    bright = 1.0 + (torch.rand(n, generator=gen) * 2.0 - 1.0) * 0.15
    x = (x * bright[:, None, None, None]).clamp(0.0, 1.0)
    if CHANNEL_SHUFFLE:
        perm = _PERMS[torch.randint(0, len(_PERMS), (n,), generator=gen)]
        x = x.gather(1, perm[:, :, None, None].expand(-1, -1, r, r))
    return x


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    model.eval()
    out = [model(x[i:i + BATCH]).argmax(1) for i in range(0, len(x), BATCH)]
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def train_classifier(
    data_root: str | os.PathLike,
    *,
    resolution: int = 64,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    progress: bool = True,
) -> tuple[PhotoClassifier, dict[str, Any]]:
    """Train a PhotoClassifier on the unique training photos of a Sketchy-layout set.

    Photos (test split left out, each photo once however many sketches it has) are read at
    `resolution`, augmented (flip, translation, brightness), and fitted with Adam under a
    cosine learning-rate decay; seeded by torch.manual_seed(seed) and a generator of its own,
    so a run on the CPU repeats exactly. info: train_accuracy (unaugmented, after training),
    test_accuracy on the real test photos (None when the set has none), their counts,
    epochs, seed, resolution, lr, batch_size, classes, data_root, train_seconds (wall time
    from reading the photos to the end of training).
    DataError for a missing or malformed data set.
    """
    from tqdm.auto import tqdm

    from s2i_fast.data import scan_sketchy
    from s2i_fast.eval.metrics import accuracy

    for name, value in (("resolution", resolution), ("epochs", epochs),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16, got {resolution}")
    index = scan_sketchy(data_root)
    train_paths, train_labels = _unique_photos(index.train)
    test_paths, test_labels = _unique_photos(index.test)
    if not train_paths:
        raise DataError(f"{index.root}: no training photos (every photo is in the test split)")
    t0 = time.perf_counter()
    x_train = _read_photos(train_paths, resolution)
    y_train = torch.tensor(train_labels, dtype=torch.int64)
    x_test = _read_photos(test_paths, resolution)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = PhotoClassifier(len(index.classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total)))
    bar = tqdm(range(epochs), desc="classifier", unit="epoch", disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        seen = correct = 0
        loss_sum = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            if len(idx) < 2 and len(order) > 1:  # BatchNorm needs two samples
                continue
            x, y = _augment(x_train[idx], gen), y_train[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(idx)
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.2f}")
    bar.close()
    model.eval()
    train_acc = accuracy(_predict(model, x_train), train_labels)
    test_acc = accuracy(_predict(model, x_test), test_labels) if test_paths else None
    info = {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "train_photos": len(train_paths),
        "test_photos": len(test_paths),
        "epochs": epochs,
        "seed": seed,
        "resolution": resolution,
        "lr": lr,
        "batch_size": batch_size,
        "classes": list(index.classes),
        "data_root": str(index.root),
        "train_seconds": round(time.perf_counter() - t0, 2),
    }
    return model, info


# ---------------------------------------------------------------------- the file
def save_classifier(path: str | os.PathLike, model: PhotoClassifier, info: dict[str, Any]) -> Path:
    """Write model and info to one file (torch.save, atomically through fileio.write_bytes)."""
    classes = list(info["classes"])
    if len(classes) != model.num_classes:
        raise ValueError(f"{len(classes)} class names for a model of {model.num_classes} classes")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "classes": classes,
        "resolution": int(info["resolution"]),
        "width": model.width,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "info": dict(info),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_bytes(path, buf.getvalue())


def load_classifier(path: str | os.PathLike) -> Classifier:
    """Read and check a classifier file; one ClassifierError naming the file for a missing
    file, something that is not a regular file, a truncated or foreign file, or weights that
    do not fit the network the file describes. Loading runs no pickled code (weights_only)."""
    path = Path(path)
    stat_regular(path, ClassifierError, "no such classifier file", "expected a classifier file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, foreign formats
        raise ClassifierError(f"{path}: not a readable s2i-fast classifier (truncated or foreign "
                              f"file: {e.__class__.__name__})") from e
    model, classes, resolution, info = _check_payload(payload, str(path))
    return Classifier(model, classes, resolution, info)


def _check_payload(payload: Any, where: str) -> tuple[PhotoClassifier, list[str], int, dict]:
    def bad(msg: str) -> ClassifierError:
        return ClassifierError(f"{where}: {msg}")

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise bad(f"not an s2i-fast classifier (format {found!r}; a generator checkpoint is "
                  "not a classifier)")
    if payload.get("version") != VERSION:
        raise bad(f"classifier format version {payload.get('version')!r}; this build reads "
                  f"{VERSION}")
    classes = payload.get("classes")
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)):
        raise bad("classes must be a non-empty list of distinct names")
    resolution, width = payload.get("resolution"), payload.get("width")
    for name, value, lo, hi in (("resolution", resolution, 16, 4096),
                                ("width", width, 1, MAX_WIDTH)):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise bad(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
    info = payload.get("info")
    if not isinstance(info, dict):
        raise bad(f"info must be a dict, got {type(info).__name__}")
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise bad(f"state_dict must be a dict of tensors, got {type(state).__name__}")
    model = PhotoClassifier(len(classes), width)
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise bad(f"state_dict does not fit the network (missing {missing[:3]}, unexpected "
                  f"{extra[:3]})")
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise bad(f"state_dict[{key!r}] is {shape}, the network needs {tuple(ref.shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise bad(f"state_dict[{key!r}] has non-finite values")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected})
    return model.eval(), list(classes), resolution, info


# ---------------------------------------------------------------------- inference
class Classifier:
    """A loaded classifier: uint8 images [N, H, W, 3] in, labels / features / logits out.

    Batched (64 images a pass), no gradients, on the CPU; images of another size are resized
    to `resolution` with the training photos' resize (box filter shrinking, bilinear
    enlarging). Labels index `classes`.
    """

    def __init__(self, model: PhotoClassifier, classes: Sequence[str], resolution: int,
                 info: dict[str, Any] | None = None) -> None:
        self.model = model.eval()
        self.classes = list(classes)
        self.resolution = int(resolution)
        self.info = dict(info or {})
        self._index = {c: i for i, c in enumerate(self.classes)}

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def class_index(self, names: str | Sequence[str]) -> int | np.ndarray:
        """Label of one class name (int), or int64 [len(names)] for a sequence of names;
        UnknownClassError for a name the classifier was not trained on."""
        if isinstance(names, str):
            return self._lookup(names)
        return np.array([self._lookup(n) for n in names], dtype=np.int64)

    def _lookup(self, name: str) -> int:
        try:
            return self._index[name]
        except (KeyError, TypeError):
            raise UnknownClassError(f"class {name!r} is not one of the classifier's "
                                    f"{len(self.classes)} classes ({', '.join(self.classes)})"
                                    ) from None

    def _tensor(self, images: np.ndarray) -> torch.Tensor:
        from PIL import Image

        from s2i_fast.data.preprocess import resize

        r = self.resolution
        if images.shape[1:3] != (r, r):
            images = np.stack([np.asarray(resize(Image.fromarray(im), r)) for im in images])
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0

    @torch.no_grad()
    def _run(self, images, what: str) -> np.ndarray:  # noqa: ANN001
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} "
                             f"{tuple(images.shape)}")
        dim = self.feature_dim if what == "features" else len(self.classes)
        out = [np.zeros((0, dim), np.float32)]
        for i in range(0, len(images), BATCH):
            x = self._tensor(images[i:i + BATCH])
            y = self.model.features(x) if what == "features" else self.model(x)
            out.append(y.numpy().astype(np.float32))
        return np.concatenate(out)

    def logits(self, images) -> np.ndarray:  # noqa: ANN001
        """float32 [N, len(classes)]."""
        return self._run(images, "logits")

    def features(self, images) -> np.ndarray:  # noqa: ANN001
        """float32 [N, D]: the pooled penultimate activations (D = 8 x width)."""
        return self._run(images, "features")

    def features_and_logits(self, images) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
        """(features [N, D], logits [N, len(classes)]) from one pass over the images."""
        feats = self.features(images)
        with torch.no_grad():
            logits = self.model.head(torch.from_numpy(feats)).numpy().astype(np.float32)
        return feats, logits

    def predict(self, images) -> np.ndarray:  # noqa: ANN001
        """int64 [N]: the most likely class of each image."""
        return self.logits(images).argmax(axis=1).astype(np.int64)
