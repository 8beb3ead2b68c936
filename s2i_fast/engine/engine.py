"""One inference API over every artefact and backend.

    eng = Engine.load("model.pt")                      # checkpoint, eager torch
    eng = Engine.load("model.onnx")                    # the fastest CPU backend, or onnxruntime
    eng = Engine.load("model.pt", backend="onnxruntime")   # exported in memory
    eng = Engine.load("model-int8.onnx", backend="openvino")   # int8 (export --int8)
    images = eng.generate(sketches, "cat", seed=0)     # uint8 [B, H, W, 3]

Sketches: numpy/torch uint8 [B,H,W] or [H,W] at the model resolution (black lines on white),
or PIL images of any size and mode (resized with the training preprocessing), or a list of
either. Labels: class ids or class names, one per sketch or a single one for all. Noise is
drawn on the CPU from a torch.Generator seeded with `seed`, so every backend gets the same
noise and gives the same image (within each backend's tolerance). Calls are serialised by a
lock, so one Engine may be shared between threads. Bad input raises EngineError.

backend="auto": tensorrt for a .plan; on a machine without a CUDA GPU the fastest CPU backend
installed (engine/cpu.py: default_cpu_backend(), openvino > onnxruntime > torch); with a GPU,
torch for a checkpoint and onnxruntime for an .onnx. `engine.precision` is what ran (openvino
reads it back from its execution graph; onnxruntime checks that an int8 graph's convolutions
became integer kernels).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from s2i_fast.artefact import artefact_kind
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.engine.backends import (
    BACKENDS,
    CPU_PRECISIONS,
    OrtRunner,
    TorchRunner,
    TritonRunner,
    UInt8Runner,
    default_device,
    precision_matches,
)
from s2i_fast.engine.inputs import check_seed, label_ids, sketch_batch
from s2i_fast.errors import CheckpointError, EngineError


class Engine:
    """Sketch -> image inference on one backend. Build with Engine.load or from_generator."""

    def __init__(
        self,
        runner: Any,
        class_names: list[str],
        stats: PreprocessStats,
        model_config: ModelConfig,
        backend: str,
        device: str,
        precision: str,
        static_batch: int | None = None,
        max_batch: int | None = None,
    ) -> None:
        self._runner = runner
        self._lock = threading.Lock()
        self.class_names = list(class_names)
        self.stats = stats
        self.model_config = model_config
        self.backend = backend
        self.device = device
        self.precision = precision
        self.static_batch = static_batch  # graphs exported with a fixed batch (padded up to it)
        self.max_batch = max_batch if max_batch is not None else static_batch

    # ------------------------------------------------------------------ construction
    @property
    def resolution(self) -> int:
        return self.model_config.resolution

    @property
    def noise_dim(self) -> int:
        return self.model_config.noise_dim

    def __repr__(self) -> str:
        return (
            f"Engine(backend={self.backend!r}, device={self.device!r}, precision="
            f"{self.precision!r}, resolution={self.resolution}, classes={len(self.class_names)})"
        )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike | None = None,
        backend: str = "auto",
        device: str | None = None,
        *,
        precision: str | None = None,
        threads: int | None = None,
        batch_buckets: Sequence[int] = (1, 8, 64),
        hint: str = "latency",
    ) -> Engine:
        """Open a checkpoint (.pt), an ONNX graph (.onnx) or a TensorRT plan (.plan); with no
        path, the demo model shipped inside the package (s2i_fast/assets/).

        precision: None = the artefact's own (openvino on an fp32 graph: fp32, or bf16 where
        the CPU has it natively and measures faster, engine/cpu.py); hint: openvino's
        performance hint, latency or throughput.
        """
        if path is None:
            from s2i_fast.assets import default_model_path

            try:
                path = default_model_path()
            except CheckpointError as e:
                raise EngineError(str(e)) from e
        path = Path(path)
        kind = artefact_kind(path)
        if backend == "auto":
            backend = auto_backend(kind, device)
        if backend not in BACKENDS:
            raise EngineError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not path.is_file():
            raise EngineError(f"{path}: no such file")
        if kind == "checkpoint":
            from s2i_fast.checkpoint import load_checkpoint, load_generator

            try:
                gen, names, stats = load_generator(load_checkpoint(path), device="cpu")
            except CheckpointError as e:
                raise EngineError(str(e)) from e
            return cls.from_generator(
                gen, names, stats, backend, device, precision=precision, threads=threads,
                batch_buckets=batch_buckets, hint=hint,
            )
        if kind == "onnx":
            if backend == "onnxruntime":
                from s2i_fast.engine.ort import OrtSession

                return cls._from_session(OrtSession(path, device, threads), device, precision)
            if backend == "openvino":
                return cls._from_openvino(path, device, precision, threads, hint)
            if backend == "tensorrt":
                return cls._from_onnx_trt(path, device, precision, batch_buckets)
            raise EngineError(
                f"{path}: an ONNX graph runs on onnxruntime, openvino or tensorrt, not "
                f"{backend!r} (load the checkpoint for the torch backends)"
            )
        if backend != "tensorrt":
            raise EngineError(f"{path}: a TensorRT plan runs only on the tensorrt backend")
        return cls._from_plan(path, device)

    @classmethod
    def from_generator(
        cls,
        gen: torch.nn.Module,
        class_names: list[str],
        stats: PreprocessStats,
        backend: str = "torch",
        device: str | None = None,
        *,
        precision: str | None = None,
        threads: int | None = None,
        batch_buckets: Sequence[int] = (1, 8, 64),
        hint: str = "latency",
    ) -> Engine:
        """An Engine around an in-memory Generator (weights are copied, gen is untouched).
        backend="auto" as in Engine.load for a checkpoint."""
        cfg = ModelConfig.from_dict(gen.cfg.to_dict())
        if len(class_names) != cfg.num_classes:
            raise EngineError(f"{len(class_names)} class names for {cfg.num_classes} classes")
        if backend == "auto":
            backend = auto_backend("checkpoint", device)
        if precision == "int8":
            raise EngineError("int8 needs a calibrated graph: s2i-fast export CKPT --onnx OUT "
                              "--int8 --data ROOT, then load OUT")
        if backend in ("torch", "torch-compile", "triton"):
            precision = precision or ("fp16" if backend == "triton" else "fp32")
            _check(precision, ("fp32", "fp16", "bf16"), "precision")
            dev = default_device(device)
            if backend == "triton":
                runner: Any = TritonRunner(gen, stats, dev, precision)
            else:
                runner = TorchRunner(gen, stats, dev, precision, compile=backend != "torch")
            return cls(runner, class_names, stats, cfg, backend, str(dev), precision)
        if backend == "onnxruntime":
            from s2i_fast.engine.ort import OrtSession
            from s2i_fast.export.onnx_export import export_generator

            precision = precision or "fp32"
            _check(precision, ("fp32", "fp16"), "onnxruntime precision")
            model = export_generator(gen, class_names, stats, batch=None, precision=precision)
            return cls._from_session(
                OrtSession(model.SerializeToString(), device, threads), device, precision
            )
        if backend == "openvino":
            from s2i_fast.engine.ov import require_openvino
            from s2i_fast.export.onnx_export import export_generator

            require_openvino()  # fail before exporting
            model = export_generator(gen, class_names, stats, batch=None, precision="fp32")
            return cls._from_openvino(model.SerializeToString(), device, precision, threads, hint)
        if backend == "tensorrt":
            from s2i_fast.export.onnx_export import export_generator
            from s2i_fast.export.trt import require_tensorrt

            require_tensorrt()  # fail before exporting
            with tempfile.TemporaryDirectory(prefix="s2i-trt-") as tmp:
                onnx_path = Path(tmp) / "g.onnx"
                export_generator(gen, class_names, stats, onnx_path, batch=None)
                return cls._from_onnx_trt(onnx_path, device, precision, batch_buckets)
        raise EngineError(f"unknown backend {backend!r}")

    @classmethod
    def _from_session(cls, session, device: str | None, precision: str | None) -> Engine:
        meta = session.meta
        if precision and precision != meta.precision:
            raise EngineError(f"this graph is {meta.precision}; re-export for {precision}")
        if precision and not precision_matches(precision, session.precision):
            raise EngineError(
                f"onnxruntime ({session.provider}) ran this {meta.precision} graph in "
                f"{session.precision}, not {precision}"
                + (" (its x86 CPU kernels have no fp16 convolutions; openvino has)"
                   if precision == "fp16" else "")
            )
        dev = "cuda" if session.provider == "CUDAExecutionProvider" else "cpu"
        runner: Any = OrtRunner(session)
        if meta.raw:
            runner = UInt8Runner(runner, meta.stats)
        return cls(
            runner, meta.class_names, meta.stats, meta.model_config,
            "onnxruntime", dev, session.precision, static_batch=meta.batch,
        )

    @classmethod
    def _from_openvino(cls, source, device, precision, threads, hint) -> Engine:  # noqa: ANN001
        from s2i_fast.engine.ov import OvSession

        if device is not None and str(device) != "cpu":
            raise EngineError(f"backend 'openvino' runs on the CPU here, not {device!r}")
        if precision is not None:
            _check(precision, CPU_PRECISIONS, "openvino precision")
        session = OvSession(source, precision=precision, hint=hint, threads=threads)
        runner: Any = OrtRunner(session)
        meta = session.meta
        if meta.raw:
            runner = UInt8Runner(runner, meta.stats)
        return cls(
            runner, meta.class_names, meta.stats, meta.model_config, "openvino", "cpu",
            session.precision, static_batch=meta.batch,
        )

    @classmethod
    def _from_onnx_trt(cls, onnx_path, device, precision, batch_buckets) -> Engine:
        from s2i_fast.artefact import load_onnx
        from s2i_fast.export.trt import build_engine, require_tensorrt

        require_tensorrt()
        _, meta = load_onnx(onnx_path)
        with tempfile.TemporaryDirectory(prefix="s2i-trt-") as tmp:
            plan = Path(tmp) / "g.plan"
            # a 16-bit graph builds in its own precision; an fp32 graph in fp16 by default
            precision = precision or (meta.precision if meta.precision != "fp32" else "fp16")
            build_engine(onnx_path, plan, meta, precision=precision, buckets=batch_buckets)
            return cls._from_plan(plan, device)

    @classmethod
    def _from_plan(cls, path: Path, device: str | None) -> Engine:
        from s2i_fast.artefact import read_sidecar
        from s2i_fast.engine.trt import TrtRunner

        meta, buckets, precision = read_sidecar(path)
        runner: Any = TrtRunner(path, device)
        if meta.raw:
            runner = UInt8Runner(runner, meta.stats)
        return cls(
            runner, meta.class_names, meta.stats, meta.model_config, "tensorrt",
            str(device or "cuda"), precision, max_batch=buckets[-1],
        )

    # ------------------------------------------------------------------ inference
    def make_noise(self, batch: int, seed: int | None = None) -> np.ndarray:
        """float32 [batch, noise_dim] from a CPU torch.Generator: identical on every backend."""
        seed = secrets.randbits(63) if seed is None else check_seed(seed)
        g = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.noise_dim, generator=g).numpy()

    def generate(self, sketches: Any, labels: Any, seed: int | None = None) -> np.ndarray:
        """Sketches + labels (+ seed) -> uint8 RGB images [B, H, W, 3]."""
        sketch = sketch_batch(sketches, self.resolution)  # [B, R, R] uint8
        ids = label_ids(labels, sketch.shape[0], self.class_names)  # [B] int64
        return self.run(sketch, ids, self.make_noise(sketch.shape[0], seed))

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """Validated arrays in (uint8 [B,R,R], int64 [B], float32 [B,Z]), uint8 [B,R,R,3] out."""
        b = sketch.shape[0]
        if self.max_batch is not None and b > self.max_batch:
            raise EngineError(
                f"batch {b} is larger than this {self.backend} engine allows ({self.max_batch}); "
                "split the request or re-export with a larger or dynamic batch"
            )
        if noise.shape != (b, self.noise_dim) or label.shape != (b,):
            raise EngineError(f"noise must be [{b}, {self.noise_dim}] and labels [{b}]")
        pad = (self.static_batch or b) - b
        if pad:  # a static graph: fill with copies of the last sample, drop them after
            sketch = np.concatenate([sketch, np.repeat(sketch[-1:], pad, 0)])
            label = np.concatenate([label, np.repeat(label[-1:], pad, 0)])
            noise = np.concatenate([noise, np.repeat(noise[-1:], pad, 0)])
        with self._lock:
            out = self._runner.run(  # C-contiguous, writable (torch.from_numpy) copies if needed
                np.require(sketch, np.uint8, ["C", "W"]),
                np.require(label, np.int64, ["C", "W"]),
                np.require(noise, np.float32, ["C", "W"]),
            )
        return out[:b]


def auto_backend(kind: str, device: str | None) -> str:
    """The backend "auto" means for an artefact kind ('checkpoint', 'onnx', 'plan')."""
    if kind == "plan":
        return "tensorrt"
    cpu_only = str(device or "").startswith("cpu") or not torch.cuda.is_available()
    if cpu_only:
        from s2i_fast.engine.cpu import default_cpu_backend

        return default_cpu_backend(kind)
    return {"checkpoint": "torch", "onnx": "onnxruntime"}[kind]


def _check(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise EngineError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
