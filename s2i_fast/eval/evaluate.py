"""`s2i-fast eval`: score a model on a data set's test split, through the Engine.

Every test sketch is generated under `seeds` noise seeds by whatever artefact the Engine loads
(a checkpoint, an ONNX graph, a TensorRT plan). Three rows are scored by the same code:

    model        the generated images
    mean-photo   the mean training photo, answered for every input (a model that ignores the
                 sketch and the class; it has the best L1 a constant answer can have on average)
    real-photo   the test photo itself (the ceiling; its classifier Fréchet distance to the
                 training photos is the real-vs-real floor)

Columns (metrics.py has the definitions): L1 and SSIM to the photo; class accuracy of a photo
classifier trained on the real training photos (classifier.py); Fréchet distance in that
classifier's feature space to the training photos; FID and KID (torchvision's Inception v3 from
a weights file the user names, through torchmetrics; skipped with a note without one); sketch
fidelity (edges of the image, by the `data sketchify` detector, against the input strokes);
diversity over seeds, in pixels and in classifier features.

Distribution metrics (Fréchet, FID, KID) depend on the sample count, so each compares one set
of N test images with the training photos: the model's value is the mean over its seeds.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from s2i_fast.data.dataset import read_photo01, read_sketch_uint8
from s2i_fast.errors import DataError, UnknownClassError
from s2i_fast.eval import metrics as M

ROWS = ("model", "mean-photo", "real-photo")
DEFAULT_SEEDS = 4
BATCH = 32
# columns of the metric table: key, heading, format, True where larger is better
COLUMNS: tuple[tuple[str, str, str, bool], ...] = (
    ("l1", "L1 to photo", "{:.4f}", False),
    ("ssim", "SSIM", "{:.3f}", True),
    ("class_accuracy", "class acc.", "{:.3f}", True),
    ("classifier_fd", "classifier FD", "{:.2f}", False),
    ("fid", "FID", "{:.1f}", False),
    ("kid", "KID", "{:.4f}", False),
    ("edge_precision", "edge P", "{:.3f}", True),
    ("edge_recall", "edge R", "{:.3f}", True),
    ("edge_f", "edge F", "{:.3f}", True),
    ("diversity_px", "diversity (px)", "{:.4f}", True),
    ("diversity_features", "diversity (features)", "{:.3f}", True),
)


@dataclass
class TestSet:
    """The test split at one resolution: uint8 arrays and labels by class name."""

    sketches: np.ndarray  # [N, R, R] black on white
    photos: np.ndarray  # [N, R, R, 3]
    class_names: list[str]  # [N]
    sketch_ids: list[str]
    train_photos: np.ndarray  # [T, R, R, 3], each training photo once
    classes: list[str] = field(default_factory=list)  # the data set's classes, sorted


def _u8(photo01: np.ndarray) -> np.ndarray:
    return np.rint(photo01.transpose(1, 2, 0) * 255.0).astype(np.uint8)


def load_test_set(root: str | Path, resolution: int, limit: int | None = None,
                  progress: bool = True) -> TestSet:
    """Read the test split's sketches and photos, and every training photo once."""
    from s2i_fast.data import scan_sketchy

    index = scan_sketchy(root)
    test = index.test
    if not test:
        raise DataError(f"{root}: the test split is empty (no sketches to evaluate)")
    if limit is not None:
        test = _spread(test, limit)
    seen: dict[Path, None] = {}
    for rec in index.train:
        seen.setdefault(rec.photo_path, None)
    if len(seen) < 2:
        raise DataError(f"{root}: fewer than two training photos (nothing to compare with)")
    bar = tqdm(total=len(test) + len(seen), desc="eval: reading", unit="img",
               disable=not progress)
    sketches, photos = [], []
    for rec in test:
        sketches.append(read_sketch_uint8(rec.sketch_path, resolution))
        photos.append(_u8(read_photo01(rec.photo_path, resolution)))
        bar.update()
    train = []
    for path in seen:
        train.append(_u8(read_photo01(path, resolution)))
        bar.update()
    bar.close()
    return TestSet(
        sketches=np.stack(sketches), photos=np.stack(photos),
        class_names=[r.class_name for r in test], sketch_ids=[r.sketch_id for r in test],
        train_photos=np.stack(train), classes=list(index.classes),
    )


def _spread(records: list, limit: int) -> list:
    """At most `limit` records, taken round-robin over classes so every class stays in."""
    by_class: dict[str, list] = {}
    for r in records:
        by_class.setdefault(r.class_name, []).append(r)
    out: list = []
    while len(out) < min(limit, len(records)):
        for items in by_class.values():
            if items and len(out) < limit:
                out.append(items.pop(0))
    return out


def generate_all(engine: Any, data: TestSet, seeds: int, progress: bool = True) -> np.ndarray:
    """uint8 [N, seeds, R, R, 3]: every sketch under seeds 0..seeds-1 (noise per batch from
    `seed * 1_000_003 + first index`, so a run is reproducible on any backend)."""
    from s2i_fast.data.classes import resolve_class

    try:
        labels = np.array([resolve_class(c, engine.class_names) for c in data.class_names],
                          dtype=np.int64)
    except UnknownClassError as e:
        raise UnknownClassError(f"the data set has a class the model does not know: {e}") from e
    n = len(labels)
    batch = min(BATCH, engine.max_batch or BATCH)
    out = np.zeros((n, seeds, engine.resolution, engine.resolution, 3), np.uint8)
    steps = [(s, i) for s in range(seeds) for i in range(0, n, batch)]
    for s, i in tqdm(steps, desc="eval: generating", unit="batch", disable=not progress):
        j = min(n, i + batch)
        noise = engine.make_noise(j - i, seed=s * 1_000_003 + i)
        out[i:j, s] = engine.run(data.sketches[i:j], labels[i:j], noise)
    return out


def inception_extractor(weights: str | Path):
    """torchvision's Inception v3 pool features (2048) from a local weights file, as the
    feature module torchmetrics' FID and KID take (uint8 [N, 3, H, W] in)."""
    import torch
    from torch import nn

    from s2i_fast.errors import MissingDependency

    try:
        from torchvision.models import inception_v3
    except ImportError as e:
        raise MissingDependency(
            "FID/KID need torchvision built for this torch: install both in one pip command "
            "(e.g. pip install torch==2.14.1 torchvision==0.29.1)") from e
    path = Path(weights)
    if not path.is_file():
        raise DataError(f"{path}: no such Inception weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        net.load_state_dict(state)
    except Exception as e:  # any unreadable or foreign file: one line
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: not torchvision Inception v3 weights ({reason})") from e
    net.fc = nn.Identity()
    net.eval()

    class Features(nn.Module):
        num_features = 2048

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # uint8 [N, 3, H, W]
            x = x.float() / 127.5 - 1.0  # the Google weights' input range, [-1, 1]
            x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear",
                                          align_corners=False, antialias=True)
            with torch.no_grad():
                return self.net(x)

    return Features()


def _fid_kid(extractor, train: np.ndarray, sets: list[np.ndarray]) -> list[tuple[float, float]]:
    """(FID, KID mean) of each image set against the training photos.

    Each image goes through Inception once: torchmetrics' FID and KID are fed the pool
    features through an identity feature module (their `feature=` argument).
    """
    import torch
    from torch import nn
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    def features(images: np.ndarray) -> torch.Tensor:
        return torch.cat([
            extractor(torch.from_numpy(images[i:i + BATCH]).permute(0, 3, 1, 2).contiguous())
            for i in range(0, len(images), BATCH)])

    class Precomputed(nn.Identity):
        num_features = extractor.num_features

    n = min(len(train), *(len(s) for s in sets))
    fid = FrechetInceptionDistance(feature=Precomputed(), reset_real_features=False)
    kid = KernelInceptionDistance(feature=Precomputed(), reset_real_features=False,
                                  subset_size=min(50, n), subsets=20)
    real = features(train)
    fid.update(real, real=True)
    kid.update(real, real=True)
    out = []
    for images in sets:
        fid.reset()
        kid.reset()
        fake = features(images)
        fid.update(fake, real=False)
        kid.update(fake, real=False)
        kid_mean, _ = kid.compute()
        out.append((float(fid.compute()), float(kid_mean)))
    return out


def _row(images: np.ndarray, data: TestSet, classifier, train_features: np.ndarray,
         fidkid: list[tuple[float, float]] | None) -> tuple[dict[str, float | None], np.ndarray]:
    """Metrics of images [N, K, R, R, 3] (K seeds; K = 1 for the reference rows), and the
    classifier's predicted class ids [N, K]."""
    n, k = images.shape[:2]
    flat = images.reshape(n * k, *images.shape[2:])
    photos = np.repeat(data.photos, k, axis=0)
    sketches = np.repeat(data.sketches, k, axis=0)
    truth = np.repeat(np.array([classifier.classes.index(c) for c in data.class_names]), k)
    features, logits = classifier.features_and_logits(flat)
    pred = np.argmax(logits, axis=1)
    fds = [M.frechet_distance(features.reshape(n, k, -1)[:, s], train_features)
           for s in range(k)]
    edges = M.edge_fidelity(flat, sketches)
    row: dict[str, float | None] = {
        "l1": float(M.l1(flat, photos).mean()),
        "ssim": float(M.ssim(flat, photos).mean()),
        "class_accuracy": M.accuracy(pred, truth),
        "classifier_fd": float(np.mean(fds)),
        "fid": None, "kid": None,
        "edge_precision": edges["precision"], "edge_recall": edges["recall"],
        "edge_f": edges["f"],
        "diversity_px": None, "diversity_features": None,
    }
    if fidkid is not None:
        row["fid"] = float(np.mean([f for f, _ in fidkid]))
        row["kid"] = float(np.mean([q for _, q in fidkid]))
    if k > 1:
        row["diversity_px"] = M.pairwise_diversity(images)
        row["diversity_features"] = M.feature_diversity(features.reshape(n, k, -1))
    return row, pred.reshape(n, k)


def evaluate(
    engine: Any,
    data_root: str | Path,
    *,
    classifier: Any,
    seeds: int = DEFAULT_SEEDS,
    inception_weights: str | Path | None = None,
    limit: int | None = None,
    artefact: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[dict[str, Any], np.ndarray, TestSet]:
    """Score an s2i_fast.Engine on `data_root`'s test split.

    classifier: an s2i_fast.eval.classifier.Classifier; artefact: what the engine was loaded
    from, for the record (None: the shipped model). Returns (metrics, generated
    [N, seeds, R, R, 3], the test set) — metrics is what metrics.json holds.
    """
    if seeds < 1:
        raise ValueError("seeds must be at least 1")
    t0 = time.perf_counter()
    missing = sorted(set(engine.class_names) - set(classifier.classes))
    data = load_test_set(data_root, engine.resolution, limit, progress)
    unknown = sorted(set(data.classes) - set(classifier.classes))
    if unknown:
        raise UnknownClassError(
            f"the classifier does not know the data set's class(es) {', '.join(unknown[:5])}; "
            "train one on this data set (s2i-fast classifier train)")
    generated = generate_all(engine, data, seeds, progress)
    log(f"eval: {len(data.sketches)} test sketches x {seeds} seeds on {engine.backend}")

    mean_photo = np.rint(data.train_photos.astype(np.float64).mean(axis=0)).astype(np.uint8)
    mean_images = np.broadcast_to(mean_photo, data.photos.shape)[:, None]
    images = {"model": generated, "mean-photo": mean_images, "real-photo": data.photos[:, None]}
    train_features = classifier.features(data.train_photos)

    fidkid: dict[str, list[tuple[float, float]]] | None = None
    notes: list[str] = []
    if inception_weights is not None:
        extractor = inception_extractor(inception_weights)
        sets = [generated[:, s] for s in range(seeds)]
        sets += [np.ascontiguousarray(mean_images[:, 0]), data.photos]
        log("eval: FID and KID (Inception v3)")
        res = _fid_kid(extractor, data.train_photos, sets)
        fidkid = {"model": res[:seeds], "mean-photo": [res[seeds]], "real-photo": [res[-1]]}
    else:
        notes.append("FID and KID skipped: no Inception v3 weights named (--inception-weights "
                     "FILE, torchvision's inception_v3 state dict)")
    rows, preds = {}, {}
    for name in tqdm(ROWS, desc="eval: scoring", unit="row", disable=not progress):
        rows[name], preds[name] = _row(
            np.ascontiguousarray(images[name]), data, classifier, train_features,
            None if fidkid is None else fidkid[name])

    model, mean, real = rows["model"], rows["mean-photo"], rows["real-photo"]
    summary = {
        "accuracy_vs_real": _ratio(model["class_accuracy"], real["class_accuracy"]),
        "fd_vs_floor": _ratio(model["classifier_fd"], real["classifier_fd"]),
        "l1_better_than_mean_photo": model["l1"] < mean["l1"],
        "ssim_better_than_mean_photo": model["ssim"] > mean["ssim"],
    }
    per_class = {}
    for c in data.classes:
        idx = [i for i, name in enumerate(data.class_names) if name == c]
        if idx:
            pred = preds["model"][idx].ravel()
            per_class[c] = {"sketches": len(idx), "class_accuracy": M.accuracy(
                pred, np.full(len(pred), classifier.classes.index(c)))}
    if missing:
        notes.append(f"the classifier lacks model class(es) {', '.join(missing[:5])}")
    result = {
        "format": "s2i-fast-eval",
        "version": 1,
        "artefact": str(artefact) if artefact is not None else "shipped model",
        "engine": {"backend": engine.backend, "device": engine.device,
                   "precision": engine.precision, "resolution": engine.resolution},
        "data": {"root": str(data_root), "split": "test", "sketches": len(data.sketches),
                 "classes": len(data.classes), "training_photos": len(data.train_photos)},
        "seeds": seeds,
        "classifier": {"classes": len(classifier.classes), "resolution": classifier.resolution,
                       "accuracy_on_real_test_photos": real["class_accuracy"],
                       **({"path": str(classifier.path)} if getattr(classifier, "path", None)
                          else {})},
        "rows": rows,
        "summary": summary,
        "per_class": per_class,
        "notes": notes,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": platform.processor() or platform.machine(),
    }
    return result, generated, data


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return float(a / b)
