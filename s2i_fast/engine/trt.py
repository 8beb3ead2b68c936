"""TensorRT runtime: run a .plan built by `s2i-fast export --trt` (export/trt.py builds it).

Buffers are torch CUDA tensors. The I/O tensor names, modes, dtypes and shapes are read from the
engine (get_tensor_name / get_tensor_mode / get_tensor_dtype / get_tensor_shape) and checked
against the artefact contract, so a plan whose I/O is not what its sidecar says fails on load,
not with garbage. A request runs on the smallest batch bucket that holds it, padded up to the
bucket size (export/trt_policy.py: select_profile). Every set_* call and execute_async_v3 is
checked: a False result is one EngineError line with TensorRT's own last error message.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from s2i_fast.artefact import INPUTS, OUTPUT, OnnxMeta, read_sidecar
from s2i_fast.errors import BackendUnavailable, EngineError
from s2i_fast.export.trt import make_logger, require_tensorrt
from s2i_fast.export.trt_policy import select_profile

# TensorRT DataType member name -> torch dtype name
TORCH_DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
    "INT32": "int32", "INT64": "int64", "UINT8": "uint8", "BOOL": "bool",
}


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine, as the engine reports it."""

    name: str
    is_input: bool
    dtype: Any  # torch.dtype
    shape: tuple[int, ...]  # -1 for the dynamic batch axis


def expected_io(meta: OnnxMeta) -> dict[str, tuple[bool, str, tuple[int, ...]]]:
    """{name: (is input, torch dtype name, shape with -1 batch)} of the artefact contract."""
    r, z = meta.resolution, meta.model_config.noise_dim
    if meta.raw:
        sketch, image = ("float32", (-1, 1, r, r)), ("float32", (-1, 3, r, r))
    else:
        sketch, image = ("uint8", (-1, r, r)), ("uint8", (-1, r, r, 3))
    return {
        "sketch": (True, *sketch),
        "label": (True, "int64", (-1,)),
        "noise": (True, "float32", (-1, z)),
        OUTPUT: (False, *image),
    }


def read_io(trt, engine) -> dict[str, TensorSpec]:  # noqa: ANN001 (tensorrt objects)
    """The engine's I/O tensors, read from the engine itself."""
    import torch

    specs = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        dt = engine.get_tensor_dtype(name)
        dtype_name = TORCH_DTYPE_NAMES.get(getattr(dt, "name", str(dt)))
        if dtype_name is None:
            raise EngineError(f"engine tensor {name!r} has type {dt}, which s2i-fast cannot feed")
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        specs[name] = TensorSpec(name, mode == trt.TensorIOMode.INPUT,
                                 getattr(torch, dtype_name), shape)
    return specs


def check_io(specs: dict[str, TensorSpec], meta: OnnxMeta, where: str) -> None:
    """EngineError unless the engine's I/O is exactly the artefact contract."""
    want = expected_io(meta)
    if set(specs) != set(want):
        raise EngineError(f"{where}: engine I/O is {sorted(specs)}, expected {sorted(want)}")
    for name, (is_input, dtype_name, shape) in want.items():
        got = specs[name]
        kind = "input" if is_input else "output"
        if got.is_input != is_input:
            raise EngineError(f"{where}: engine tensor {name!r} is not an {kind}")
        if str(got.dtype) != f"torch.{dtype_name}":
            raise EngineError(f"{where}: engine {kind} {name!r} is {got.dtype}, expected "
                              f"torch.{dtype_name}")
        if len(got.shape) != len(shape) or got.shape[1:] != shape[1:]:
            raise EngineError(f"{where}: engine {kind} {name!r} has shape {got.shape}, expected "
                              f"{shape} (-1: batch)")


def deserialize(trt, runtime, plan: bytes, logger, where: str):  # noqa: ANN001
    """runtime.deserialize_cuda_engine, its None result turned into one EngineError line."""
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineError(f"{where}: TensorRT {trt.__version__} cannot load this plan "
                          f"({logger.last_error()}); a plan is tied to the TensorRT version and "
                          "GPU that built it: rebuild it with `s2i-fast export --trt`")
    return engine


class TrtRunner:
    """Runs a .plan on one CUDA device with torch-allocated buffers. Not locked: Engine locks."""

    def __init__(self, plan_path: str | os.PathLike, device: str | None = None) -> None:
        import torch

        meta, buckets, precision = read_sidecar(plan_path)
        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("backend 'tensorrt' needs a CUDA GPU; none is visible")
        dev = torch.device(device or "cuda")
        if dev.type != "cuda":
            raise EngineError(f"backend 'tensorrt' runs on a CUDA device, not {device!r}")
        logger = make_logger(trt)
        with torch.cuda.device(dev):
            try:
                runtime = trt.Runtime(logger)
            except (TypeError, RuntimeError) as e:
                raise EngineError(f"TensorRT could not create a runtime: {e}") from e
            engine = deserialize(trt, runtime, Path(plan_path).read_bytes(), logger,
                                 str(plan_path))
            stream = torch.cuda.Stream(dev)
        self._runtime = runtime  # the engine must not outlive its runtime
        self._setup(trt, engine, meta, buckets, precision, dev, stream, logger, str(plan_path))

    @classmethod
    def from_engine(cls, trt, engine, meta: OnnxMeta, buckets, precision: str,  # noqa: ANN001
                    device, stream=None, where: str = "engine") -> TrtRunner:
        """A runner around an already deserialised engine (what __init__ does after loading;
        the tests drive it with a stand-in tensorrt module on the CPU)."""
        self = cls.__new__(cls)
        self._runtime = None
        self._setup(trt, engine, meta, buckets, precision, device, stream, make_logger(trt),
                    where)
        return self

    def _setup(self, trt, engine, meta, buckets, precision, device, stream, logger,  # noqa: ANN001
               where: str) -> None:
        import torch

        self.torch = torch
        self.meta, self.buckets, self.precision = meta, list(buckets), precision
        self.device, self.stream, self.logger = device, stream, logger
        self.engine = engine
        self.io = read_io(trt, engine)
        check_io(self.io, meta, where)
        profiles = engine.num_optimization_profiles
        if profiles != len(self.buckets):
            raise EngineError(f"{where}: engine has {profiles} optimisation profiles, its "
                              f"metadata names {len(self.buckets)} buckets {self.buckets}")
        with self._on_device():
            self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineError(f"{where}: TensorRT could not create an execution context "
                              f"({logger.last_error()})")
        self.profile = -1

    def _on_device(self):
        if self.device.type == "cuda":
            return self.torch.cuda.device(self.device)
        return contextlib.nullcontext()

    def _stream_handle(self) -> int:
        return self.stream.cuda_stream if self.stream is not None else 0

    def _check(self, ok: bool, call: str) -> None:
        if not ok:
            raise EngineError(f"TensorRT {call} failed: {self.logger.last_error()}")

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        torch = self.torch
        b = sketch.shape[0]
        index, padded = select_profile(self.buckets, b)
        arrays = dict(zip(INPUTS, (sketch, label, noise), strict=True))
        stream_ctx = (torch.cuda.stream(self.stream) if self.stream is not None
                      else contextlib.nullcontext())
        with self._on_device(), stream_ctx:
            handle = self._stream_handle()
            if index != self.profile:
                self._check(self.context.set_optimization_profile_async(index, handle),
                            f"set_optimization_profile_async({index})")
                self.profile = index
            keep = []  # device buffers live until the stream is synchronised
            for name, arr in arrays.items():
                spec = self.io[name]
                t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device, spec.dtype,
                                                                  non_blocking=True)
                if padded > b:  # repeat the last sample up to the bucket size
                    t = torch.cat([t, t[-1:].expand(padded - b, *t.shape[1:])])
                t = t.contiguous()
                self._check(self.context.set_input_shape(name, tuple(t.shape)),
                            f"set_input_shape({name!r}, {tuple(t.shape)})")
                self._check(self.context.set_tensor_address(name, t.data_ptr()),
                            f"set_tensor_address({name!r})")
                keep.append(t)
            shape = tuple(int(d) for d in self.context.get_tensor_shape(OUTPUT))
            if len(shape) != len(self.io[OUTPUT].shape) or any(d < 0 for d in shape):
                raise EngineError(f"TensorRT left the output shape unresolved: {shape}")
            out = torch.empty(shape, dtype=self.io[OUTPUT].dtype, device=self.device)
            self._check(self.context.set_tensor_address(OUTPUT, out.data_ptr()),
                        f"set_tensor_address({OUTPUT!r})")
            self._check(self.context.execute_async_v3(handle), "execute_async_v3")
            if self.stream is not None:
                self.stream.synchronize()
        return out[:b].cpu().numpy()
