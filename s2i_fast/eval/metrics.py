"""Metrics of generated images: pixel distance, SSIM, accuracy, Fréchet distance, edge fidelity
against the input sketch, and the diversity of the images one sketch gives over seeds.

Pure numpy / scipy / scikit-image. Images are uint8 [N, H, W, 3] RGB (the Engine's output),
sketches uint8 [N, H, W], black strokes (0) on white (255). Wrong shapes raise ValueError.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import linalg, ndimage
from scipy.spatial import distance

from s2i_fast.data import DEFAULT_EDGE_METHOD

EDGE_THRESHOLD = 128  # a line-map or sketch pixel darker than this is an edge / a stroke


def _images(x, name: str, ndim: int = 4) -> np.ndarray:  # noqa: ANN001
    x = np.asarray(x)
    if x.ndim != ndim or x.shape[-1] != 3:
        lead = "[N, H, W, 3]" if ndim == 4 else "[S, K, H, W, 3]"
        raise ValueError(f"{name}: expected images {lead}, got shape {tuple(x.shape)}")
    return x


def _same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"image sets differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


def l1(a, b) -> np.ndarray:  # noqa: ANN001
    """Mean absolute difference per image pair, in [0, 1] (pixel values divided by 255).

    a, b: uint8 [N, H, W, 3]; returns float64 [N] (0 = identical, 1 = black vs white).
    """
    a, b = _images(a, "a"), _images(b, "b")
    _same_shape(a, b)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return diff.reshape(len(a), -1).mean(axis=1) / 255.0


def ssim(a, b) -> np.ndarray:  # noqa: ANN001
    """Structural similarity per image pair (skimage.metrics.structural_similarity, 7x7
    window, channel_axis=-1, data_range=255); float64 [N], 1 = identical.

    a, b: uint8 [N, H, W, 3], H and W at least 7.
    """
    from skimage.metrics import structural_similarity

    a, b = _images(a, "a"), _images(b, "b")
    _same_shape(a, b)
    if min(a.shape[1:3]) < 7:
        raise ValueError(f"ssim needs images of at least 7x7 pixels, got {a.shape[1:3]}")
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255)
                     for x, y in zip(a, b, strict=True)], dtype=np.float64)


def accuracy(pred, labels) -> float:  # noqa: ANN001
    """Fraction of predictions equal to their labels (two integer sequences of one length)."""
    pred, labels = np.asarray(pred).ravel(), np.asarray(labels).ravel()
    if pred.shape != labels.shape:
        raise ValueError(f"{pred.size} predictions for {labels.size} labels")
    if pred.size == 0:
        raise ValueError("accuracy of no predictions")
    return float(np.mean(pred == labels))


def _gaussian(f, name: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{name}: expected features [N, D], got shape {tuple(f.shape)}")
    if len(f) < 2:
        raise ValueError(f"{name}: a covariance needs at least 2 feature vectors, got {len(f)}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(f1, f2) -> float:  # noqa: ANN001
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D]:
    ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), the formula of FID.

    The matrix square root is scipy.linalg.sqrtm; its tiny imaginary part (numerical noise) is
    dropped, and a singular product is regularised with 1e-6 on the diagonals as pytorch-fid
    does. ValueError for fewer than 2 vectors in a set or different D.
    """
    mu1, s1 = _gaussian(f1, "f1")
    mu2, s2 = _gaussian(f2, "f2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature sizes differ: {mu1.size} vs {mu2.size}")
    with warnings.catch_warnings():  # a singular product (e.g. one repeated image) is expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)  # rounding can make a distance of a set to itself slightly negative


def edge_map(image: np.ndarray, method: str = DEFAULT_EDGE_METHOD) -> np.ndarray:
    """bool [H, W]: the edges `data sketchify` finds in one uint8 [H, W, 3] image."""
    from s2i_fast.data.sketchify import sketch_from_photo

    lines = sketch_from_photo(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)),
                              method=method)
    return lines < EDGE_THRESHOLD


def _strokes(sketch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    sketch = np.asarray(sketch, dtype=np.uint8)
    if sketch.shape != size:  # (H, W) of the image; nearest keeps strokes black and white
        sketch = np.asarray(Image.fromarray(sketch).resize((size[1], size[0]),
                                                           Image.Resampling.NEAREST))
    return sketch < EDGE_THRESHOLD


def _near(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """bool map: pixels within `tolerance` px (Euclidean) of a True pixel of `mask`."""
    if not mask.any():
        return np.zeros_like(mask)
    return ndimage.distance_transform_edt(~mask) <= tolerance


def edge_fidelity(images, sketches, tolerance: float = 2) -> dict[str, float]:  # noqa: ANN001
    """How well the edges of generated images follow the input strokes.

    Edges of each image come from the `data sketchify` detector (sketch_from_photo with the
    default method; a line-map pixel < 128 is an edge), strokes are sketch pixels < 128 (a
    sketch of another size is resized to the image's, nearest). precision = fraction of edge
    pixels within `tolerance` px (Euclidean distance transform) of a stroke pixel; recall =
    fraction of stroke pixels within `tolerance` of an edge pixel; f = their harmonic mean.
    Counts are pooled over all images (micro average): an image with no edges adds nothing to
    precision and its strokes as misses to recall. A ratio with nothing to count is 0.

    images uint8 [N, H, W, 3], sketches uint8 [N, h, w]; returns {"precision", "recall", "f"}.
    """
    images = _images(images, "images")
    sketches = np.asarray(sketches)
    if sketches.ndim != 3 or len(sketches) != len(images):
        raise ValueError(f"sketches: expected [{len(images)}, H, W], got shape "
                         f"{tuple(sketches.shape)}")
    edges_hit = edges_all = strokes_hit = strokes_all = 0
    for image, sketch in zip(images, sketches, strict=True):
        edges = edge_map(image)
        strokes = _strokes(sketch, edges.shape)
        edges_all += int(edges.sum())
        strokes_all += int(strokes.sum())
        edges_hit += int((edges & _near(strokes, tolerance)).sum())
        strokes_hit += int((strokes & _near(edges, tolerance)).sum())
    precision = edges_hit / edges_all if edges_all else 0.0
    recall = strokes_hit / strokes_all if strokes_all else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": float(precision), "recall": float(recall), "f": float(f)}


def _pairs(k: int) -> Sequence[tuple[int, int]]:
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def pairwise_diversity(images) -> float:  # noqa: ANN001
    """Mean over sketches of the mean pairwise L1 (in [0, 1]) between the K images each sketch
    gave: images uint8 [S, K, H, W, 3] (S sketches x K seeds). 0 = the seeds change nothing.
    ValueError for K < 2."""
    images = _images(images, "images", ndim=5)
    s, k = images.shape[:2]
    if k < 2:
        raise ValueError(f"diversity needs at least 2 images per sketch, got {k}")
    if s == 0:
        raise ValueError("diversity of no sketches")
    x = images.reshape(s, k, -1).astype(np.float32)
    per_sketch = [np.mean([np.abs(x[n, i] - x[n, j]).mean() for i, j in _pairs(k)])
                  for n in range(s)]
    return float(np.mean(per_sketch) / 255.0)


def _mean_pairwise_distance(f: np.ndarray) -> float:
    """Mean Euclidean distance over the unordered pairs of rows of f [K, D] (K >= 2)."""
    return float(distance.pdist(f, "euclidean").mean())


def feature_diversity(features) -> float:  # noqa: ANN001
    """Scale-free diversity over seeds, from features [S, K, D] (S sketches x K seeds).

    The mean pairwise Euclidean distance between the K feature vectors of each sketch
    (averaged over sketches), divided by the mean pairwise distance between the features of
    different sketches (the first seed of each): 0 = the seeds give identical features, 1 =
    seeds differ as much as different sketches do. ValueError for S < 2 or K < 2; when the
    sketches' features do not differ at all the ratio is 0 if the seeds' do not either, else
    inf.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"features: expected [S, K, D], got shape {tuple(f.shape)}")
    s, k = f.shape[:2]
    if k < 2:
        raise ValueError(f"diversity needs at least 2 seeds per sketch, got {k}")
    if s < 2:
        raise ValueError(f"feature diversity needs at least 2 sketches to compare with, got {s}")
    within = float(np.mean([_mean_pairwise_distance(f[n]) for n in range(s)]))
    between = _mean_pairwise_distance(f[:, 0])
    if between == 0.0:
        return 0.0 if within == 0.0 else float("inf")
    return within / between
