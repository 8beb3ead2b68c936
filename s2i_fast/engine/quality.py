"""The quality guard: a low-precision artefact is written only if its images match fp32's.

    candidate graph (int8 from export/int8.py, or the fp16 graph variant)
      -> run through the Engine on every installed CPU backend that takes it (onnxruntime,
         openvino at its default precision), on the data set's test sketches
      -> compared with the fp32 generator's images (eager PyTorch, the reference of the ONNX
         tolerance table): per-value level differences, per-image L1 and SSIM, and, when a
         classifier is given, its accuracy on both sets of images
      -> every backend within GUARD_LIMITS[precision]: written through s2i_fast.fileio;
         otherwise QualityGuardError, and no file (nor temp file) is left at the target.

GUARD_LIMITS (export/README.md, "Quality guard") were set from what good calibrations measure
on the trained tiny model (int8: mean 2.2 levels, p99 7-8, worst image L1 2.9, worst SSIM
0.977; bf16: mean 0.27, SSIM 0.999) with about 2x margin, and a deliberately broken calibration
fails them by far.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from s2i_fast.errors import BackendUnavailable, S2IError


class QualityGuardError(S2IError):
    """A low-precision artefact differs from fp32 by more than its limits (nothing written)."""


@dataclass(frozen=True)
class GuardLimits:
    max_mean_levels: float  # mean |difference| over every value, uint8 levels
    max_p99_levels: float  # 99th percentile of |difference|
    max_image_l1: float  # the worst image's mean |difference|, levels
    min_ssim: float  # the worst image's SSIM against fp32 (RGB, 7x7 window)
    max_accuracy_drop: float = 0.05  # classifier accuracy, fp32 images minus these (fraction)


GUARD_LIMITS: dict[str, GuardLimits] = {
    "int8": GuardLimits(max_mean_levels=4.0, max_p99_levels=16.0, max_image_l1=6.0,
                        min_ssim=0.93),
    "fp16": GuardLimits(max_mean_levels=0.5, max_p99_levels=3.0, max_image_l1=1.0,
                        min_ssim=0.995),
    "bf16": GuardLimits(max_mean_levels=1.0, max_p99_levels=4.0, max_image_l1=1.5,
                        min_ssim=0.99),
}


@dataclass
class GuardReport:
    backend: str
    precision: str  # what ran (Engine.precision)
    images: int
    max_levels: int
    p99_levels: float
    mean_levels: float
    worst_image_l1: float
    worst_ssim: float
    accuracy_fp32: float | None = None
    accuracy: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        acc = ""
        if self.accuracy is not None:
            acc = f", class accuracy {self.accuracy:.3f} (fp32 {self.accuracy_fp32:.3f})"
        verdict = "passed" if self.passed else "FAILED: " + "; ".join(self.failures)
        return (f"{self.backend} ({self.precision}) vs fp32 on {self.images} test sketches: "
                f"mean {self.mean_levels:.2f} levels, p99 {self.p99_levels:.0f}, max "
                f"{self.max_levels}, worst image L1 {self.worst_image_l1:.2f}, worst SSIM "
                f"{self.worst_ssim:.4f}{acc}: {verdict}")

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def ssim_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of uint8 RGB images [N, H, W, 3] (scikit-image, 7x7 window)."""
    try:
        from skimage.metrics import structural_similarity
    except ImportError as e:
        raise BackendUnavailable("the quality guard needs scikit-image: "
                                 "pip install 's2i-fast[export]'") from e
    return np.array([structural_similarity(x, y, channel_axis=2, data_range=255)
                     for x, y in zip(a, b, strict=True)])


def compare(
    backend: str,
    precision: str,
    reference: np.ndarray,
    images: np.ndarray,
    limits: GuardLimits,
    labels: np.ndarray | None = None,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
) -> GuardReport:
    """One backend's images [N,H,W,3] uint8 against the fp32 reference, judged by limits."""
    diff = np.abs(images.astype(np.int16) - reference.astype(np.int16))  # [N, H, W, 3]
    per_image_l1 = diff.reshape(len(diff), -1).mean(1)
    ssim = ssim_per_image(images, reference)
    report = GuardReport(
        backend=backend, precision=precision, images=len(images), max_levels=int(diff.max()),
        p99_levels=float(np.percentile(diff, 99)), mean_levels=float(diff.mean()),
        worst_image_l1=float(per_image_l1.max()), worst_ssim=float(ssim.min()),
    )
    checks = [
        (report.mean_levels <= limits.max_mean_levels,
         f"mean {report.mean_levels:.2f} levels > {limits.max_mean_levels}"),
        (report.p99_levels <= limits.max_p99_levels,
         f"p99 {report.p99_levels:.0f} levels > {limits.max_p99_levels:.0f}"),
        (report.worst_image_l1 <= limits.max_image_l1,
         f"worst image L1 {report.worst_image_l1:.2f} > {limits.max_image_l1}"),
        (report.worst_ssim >= limits.min_ssim,
         f"worst SSIM {report.worst_ssim:.4f} < {limits.min_ssim}"),
    ]
    if classify is not None and labels is not None:
        report.accuracy_fp32 = float((classify(reference) == labels).mean())
        report.accuracy = float((classify(images) == labels).mean())
        drop = report.accuracy_fp32 - report.accuracy
        checks.append((drop <= limits.max_accuracy_drop,
                       f"class accuracy drops by {drop:.3f} > {limits.max_accuracy_drop}"))
    report.failures = [msg for ok, msg in checks if not ok]
    return report


def guard_backends(precision: str) -> list[str]:
    """The installed CPU backends a `precision` graph is checked on (each must pass)."""
    from s2i_fast.engine.cpu import backend_installed

    return [b for b in ("onnxruntime", "openvino") if backend_installed(b)]


def check_and_write(
    candidate,  # noqa: ANN001  onnx.ModelProto of the low-precision graph
    out: str | os.PathLike | None,
    reference_engine,  # noqa: ANN001  Engine on the fp32 generator
    test,  # noqa: ANN001  export.int8.SketchSet: the test sketches
    *,
    precision: str,
    limits: GuardLimits | None = None,
    backends: Sequence[str] | None = None,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
    batch: int = 16,
) -> list[GuardReport]:
    """Run the guard on every backend; write `candidate` to `out` only if all pass.

    Raises QualityGuardError (its message holds every backend's summary) when one fails, and
    BackendUnavailable when no backend to check with is installed.
    """
    from s2i_fast.engine.engine import Engine
    from s2i_fast.errors import EngineError

    limits = limits or GUARD_LIMITS[precision]
    backends = list(backends) if backends is not None else guard_backends(precision)
    if not backends:
        raise BackendUnavailable("the quality guard needs onnxruntime or openvino to run the "
                                 "graph: pip install 's2i-fast[export]'")
    data = candidate.SerializeToString()
    reference = _images(reference_engine, test, batch)
    reports = []
    with tempfile.TemporaryDirectory(prefix="s2i-guard-") as tmp:
        path = Path(tmp) / "candidate.onnx"
        path.write_bytes(data)
        for backend in backends:
            try:
                engine = Engine.load(path, backend=backend, device="cpu")
            except BackendUnavailable:
                raise
            except EngineError as e:
                raise QualityGuardError(f"{backend} cannot run the {precision} graph: {e}") from e
            images = _images(engine, test, batch)
            reports.append(compare(backend, engine.precision, reference, images, limits,
                                   test.label, classify))
    failed = [r for r in reports if not r.passed]
    if failed:
        target = f"{out} not written" if out is not None else "rejected"
        raise QualityGuardError(f"quality guard: {precision} graph {target}: "
                                + " | ".join(r.summary() for r in reports))
    if out is not None:
        from s2i_fast.fileio import write_bytes

        write_bytes(out, data)
    return reports


def _images(engine, test, batch: int) -> np.ndarray:  # noqa: ANN001
    """Engine.run over a SketchSet in batches (static graphs are padded by the Engine)."""
    step = min(batch, engine.max_batch or batch)
    outs = [engine.run(s, lab, z) for s, lab, z in test.batches(step)]
    return np.concatenate(outs)  # [N, H, W, 3] uint8


def export_int8(
    gen,  # noqa: ANN001  a Generator (any mode; an eval copy is exported)
    class_names: list[str],
    stats,  # noqa: ANN001  PreprocessStats
    out: str | os.PathLike | None,
    data_root: str | os.PathLike,
    *,
    calibration: int = 128,
    test: int = 64,
    method: str = "percentile",
    keep: Sequence[str] = ("out",),
    batch: int | None = None,
    raw: bool = False,
    seed: int = 0,
    backends: Sequence[str] | None = None,
    limits: GuardLimits | None = None,
    classify: Callable[[np.ndarray], np.ndarray] | None = None,
    **export_options,
):
    """Export, calibrate (on `calibration` training sketches of data_root), quantize and guard
    (on `test` test sketches) an int8 graph; written to `out` only if the guard passes.

    export_options (opset, exporter) go to export_generator. Returns (onnx.ModelProto,
    list[GuardReport]); QualityGuardError when it fails.
    """
    from s2i_fast.engine.engine import Engine
    from s2i_fast.export.int8 import load_sketch_set, quantize_int8
    from s2i_fast.export.onnx_export import export_generator

    cfg = gen.cfg
    fp32 = export_generator(gen, class_names, stats, batch=batch, raw=raw, precision="fp32",
                            **export_options)
    calib = load_sketch_set(data_root, "train", class_names, cfg.resolution, cfg.noise_dim,
                            calibration, seed=seed)
    model = quantize_int8(fp32, calib, method=method, keep=keep)
    test_set = load_sketch_set(data_root, "test", class_names, cfg.resolution, cfg.noise_dim,
                               test, seed=seed + 1)
    reference = Engine.from_generator(gen, class_names, stats, "torch", "cpu", precision="fp32")
    reports = check_and_write(model, out, reference, test_set, precision="int8", limits=limits,
                              backends=backends, classify=classify)
    return model, reports
