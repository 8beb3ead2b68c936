"""The engine: one inference API over every artefact (checkpoint, ONNX graph, TensorRT plan)
and backend (torch, torch-compile, triton, onnxruntime, openvino, tensorrt).

    from s2i_fast.engine import Engine
    eng = Engine.load("model.onnx")
    images = eng.generate(sketches, "cat", seed=0)     # uint8 [B, H, W, 3]

engine.py holds the Engine, inputs.py turns user input into arrays, backends.py holds the
runners of the torch backends and onnxruntime, ort.py, ov.py and trt.py the ONNX Runtime
session, the OpenVINO session and the TensorRT runtime; cpu.py says which CPU backend is the
default (default_cpu_backend()); quality.py is the quality guard of low-precision exports.
"""

from s2i_fast.engine.backends import BACKENDS
from s2i_fast.engine.cpu import CPU_BACKEND_ORDER, default_cpu_backend
from s2i_fast.engine.engine import Engine

__all__ = ["BACKENDS", "CPU_BACKEND_ORDER", "Engine", "default_cpu_backend"]
