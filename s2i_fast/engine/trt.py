"""TensorRT runtime: run a .plan built by `s2i-fast export --trt` (export/trt.py builds it).

Buffers are torch CUDA tensors; a request runs on the smallest batch bucket that holds it,
padded up to the bucket size (export/trt_policy.py: select_profile).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from s2i_fast.artefact import OUTPUT, read_sidecar
from s2i_fast.errors import BackendUnavailable, EngineError
from s2i_fast.export.trt import require_tensorrt
from s2i_fast.export.trt_policy import select_profile


class TrtRunner:
    """Runs a .plan on one CUDA device with torch-allocated buffers. Not locked: Engine locks."""

    def __init__(self, plan_path: str | os.PathLike, device: str | None = None) -> None:
        import torch

        self.meta, self.buckets, self.precision = read_sidecar(plan_path)
        trt = require_tensorrt()
        if not torch.cuda.is_available():
            raise BackendUnavailable("backend 'tensorrt' needs a CUDA GPU; none is visible")
        self.device = torch.device(device or "cuda")
        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        with torch.cuda.device(self.device):
            self.engine = self.runtime.deserialize_cuda_engine(Path(plan_path).read_bytes())
            if self.engine is None:
                raise EngineError(f"{plan_path}: corrupt TensorRT plan or built by another version")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        self.profile = -1

    def run(self, sketch: np.ndarray, label: np.ndarray, noise: np.ndarray) -> np.ndarray:
        torch = self.torch
        b = sketch.shape[0]
        index, padded = select_profile(self.buckets, b)
        inputs = {"sketch": sketch, "label": label.astype(np.int64), "noise": noise}
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if index != self.profile:
                self.context.set_optimization_profile_async(index, self.stream.cuda_stream)
                self.profile = index
            keep = []
            for name, arr in inputs.items():
                t = torch.from_numpy(np.ascontiguousarray(arr)).to(self.device, non_blocking=True)
                if padded > b:  # repeat the last sample up to the bucket size
                    t = torch.cat([t, t[-1:].expand(padded - b, *t.shape[1:])]).contiguous()
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
                keep.append(t)
            shape = tuple(self.context.get_tensor_shape(OUTPUT))
            dtype = torch.float32 if self.meta.raw else torch.uint8
            out = torch.empty(shape, dtype=dtype, device=self.device)
            self.context.set_tensor_address(OUTPUT, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execution failed")
            self.stream.synchronize()
        return out[:b].cpu().numpy()
