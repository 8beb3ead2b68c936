"""A stand-in `tensorrt` module shaped like TensorRT 10.x or 11.x, for the tests that need no GPU.

Why a fake: TensorRT's builder cannot be installed here (its libraries come from NVIDIA's own
index, and it needs a CUDA GPU), so the version-adaptive code of export/trt.py and
s2i_fast/engine/trt.py is exercised against this module instead. Its shape is not guessed: the
enum members and values and the class attribute names come from tests/data/tensorrt_api.json,
introspected from the real tensorrt-cu12-bindings wheels (10.0.1, 10.16.1.11, 11.0.0.114,
11.4.0.106), and tests/test_export_trt.py checks that every method defined here exists on the
real class of the same version. Behaviour follows the documented return values (None or False
on failure, errors reported through the logger). The engine tests that need the real thing
stay in tests/test_export_trt.py and run where TensorRT and a GPU are present.

Plans built here are JSON: the I/O of the parsed ONNX graph and the profile shapes. "Running"
one writes (7 * label + sketch[0, 0]) % 256 into each uint8 output sample, read and written
through the addresses the runner set, so buffer handling, padding and slicing are checked.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path

import numpy as np

API = json.loads((Path(__file__).parent / "data" / "tensorrt_api.json").read_text())
ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 2: "UINT8", 7: "INT64", 6: "INT32", 9: "BOOL"}
NP_DTYPES = {"UINT8": np.uint8, "INT64": np.int64, "FLOAT": np.float32, "HALF": np.float16,
             "INT32": np.int32, "BOOL": np.bool_}


class HostMemory:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self.nbytes = len(data)
        self.dtype = None

    def __bytes__(self) -> bytes:
        return self._data

    def __buffer__(self, flags):  # noqa: ANN001 (buffer protocol, Python 3.12+)
        return memoryview(self._data)


def fake_tensorrt(version: str = "10.16.1.11", *, gpu: str = "gpu-A", parse_error: str = "",
                  build_error: str = "", bad_dtype: str = "") -> types.ModuleType:
    """A fresh fake module. parse_error / build_error make parse() / the build fail with that
    message; bad_dtype="label:INT32" makes built engines report that I/O dtype."""
    api = API[version]
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []  # (what, detail) in call order, for the tests
    trt.gpu = gpu
    enums = {name: enum.IntEnum(name.split(".")[-1], members)
             for name, members in api["enums"].items()}
    for name, cls in enums.items():
        if "." not in name:
            setattr(trt, name, cls)
    severity = enums["ILogger.Severity"]

    class ILogger:
        Severity = severity

        def __init__(self) -> None:
            pass

        def log(self, sev, msg) -> None:  # noqa: ANN001
            pass

    class Logger(ILogger):
        def __init__(self, min_severity=severity.WARNING) -> None:  # noqa: ANN001
            super().__init__()

    for member in severity:
        setattr(Logger, member.name, member)

    class ParserError:
        def __init__(self, message: str, node: str) -> None:
            self._message, self._node = message, node

        def desc(self) -> str:
            return self._message

        def node_name(self) -> str:
            return self._node

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.io: list = []

        def get_flag(self, flag) -> bool:  # noqa: ANN001
            return bool(self.flags & (1 << int(flag)))

    class OnnxParser:
        def __init__(self, network, logger) -> None:  # noqa: ANN001
            self.network, self.logger, self._errors = network, logger, []

        def parse(self, model, path=None) -> bool:  # noqa: ANN001
            import onnx

            proto = onnx.load_from_string(bytes(model))
            trt.calls.append(("parse", proto))
            if parse_error:
                self._errors = [ParserError(parse_error, proto.graph.node[0].name)]
                return False
            for value, is_input in [(v, True) for v in proto.graph.input] + \
                                   [(v, False) for v in proto.graph.output]:
                tt = value.type.tensor_type
                shape = [d.dim_value if d.dim_value else -1 for d in tt.shape.dim]
                self.network.io.append([value.name, is_input, ONNX_TO_TRT[tt.elem_type], shape])
            return True

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict = {}

        def set_shape(self, name, lo, opt, hi) -> None:  # noqa: ANN001
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class ITimingCache:
        def __init__(self, owner_gpu: str, entries: int = 0) -> None:
            self.gpu, self.entries = owner_gpu, entries

        def serialize(self) -> HostMemory:
            return HostMemory(f"FAKECACHE:{self.gpu}:{self.entries}".encode())

    class IBuilderConfig:
        def __init__(self, logger) -> None:  # noqa: ANN001
            self.logger = logger
            self.flags = {trt.BuilderFlag.TF32} if hasattr(trt.BuilderFlag, "TF32") else set()
            self.profiles: list = []
            self.cache = None

        def set_flag(self, flag) -> None:  # noqa: ANN001
            trt.calls.append(("set_flag", flag.name))
            self.flags.add(flag)

        def clear_flag(self, flag) -> None:  # noqa: ANN001
            trt.calls.append(("clear_flag", flag.name))
            self.flags.discard(flag)

        def get_flag(self, flag) -> bool:  # noqa: ANN001
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size) -> None:  # noqa: ANN001
            trt.calls.append(("set_memory_pool_limit", (pool.name, size)))

        def add_optimization_profile(self, profile) -> int:  # noqa: ANN001
            self.profiles.append(profile.shapes)
            return len(self.profiles) - 1

        def create_timing_cache(self, serialized_timing_cache) -> ITimingCache | None:  # noqa: ANN001
            data = bytes(serialized_timing_cache)
            if not data:
                return ITimingCache(trt.gpu)
            parts = data.decode("latin-1").split(":")
            if len(parts) != 3 or parts[0] != "FAKECACHE":
                self.logger.log(severity.ERROR, "Timing cache blob is corrupt")
                return None
            return ITimingCache(parts[1], int(parts[2]))

        def set_timing_cache(self, cache, ignore_mismatch) -> bool:  # noqa: ANN001
            if cache.gpu != trt.gpu and not ignore_mismatch:
                self.logger.log(severity.ERROR, "Timing cache was created on a different device")
                return False
            self.cache = cache
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger) -> None:  # noqa: ANN001
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            trt.calls.append(("create_network", flags))
            return INetworkDefinition(flags)

        def create_builder_config(self) -> IBuilderConfig:
            return IBuilderConfig(self.logger)

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network, config) -> HostMemory | None:  # noqa: ANN001
            trt.calls.append(("build", sorted(f.name for f in config.flags)))
            if build_error:
                self.logger.log(severity.ERROR, build_error)
                return None
            if config.cache is not None:
                config.cache.entries += 1
            io = [list(x) for x in network.io]
            if bad_dtype:
                name, dtype = bad_dtype.split(":")
                for entry in io:
                    if entry[0] == name:
                        entry[2] = dtype
            buckets = [shapes["sketch"][2][0] for shapes in config.profiles]
            return HostMemory(json.dumps({"io": io, "buckets": buckets}).encode())

    class IExecutionContext:
        def __init__(self, engine) -> None:  # noqa: ANN001
            self.engine, self.profile = engine, 0
            self.shapes: dict = {}
            self.addresses: dict = {}

        def set_optimization_profile_async(self, profile_index, stream_handle) -> bool:  # noqa: ANN001
            trt.calls.append(("set_optimization_profile_async", profile_index))
            if not 0 <= profile_index < len(self.engine.buckets):
                return False
            self.profile = profile_index
            return True

        def set_input_shape(self, name, shape) -> bool:  # noqa: ANN001
            bucket = self.engine.buckets[self.profile]
            want = self.engine.spec[name][2]
            ok = len(shape) == len(want) and shape[0] == bucket and list(shape[1:]) == want[1:]
            if not ok:
                self.engine.logger.log(severity.ERROR, f"{name}: shape {shape} outside profile")
                return False
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, memory) -> bool:  # noqa: ANN001
            if name not in self.engine.spec:
                return False
            self.addresses[name] = int(memory)
            return True

        def get_tensor_shape(self, name) -> tuple:  # noqa: ANN001
            if name in self.shapes:
                return self.shapes[name]
            shape = list(self.engine.spec[name][2])
            if "sketch" in self.shapes:
                shape[0] = self.shapes["sketch"][0]
            return tuple(shape)

        def execute_async_v3(self, stream_handle) -> bool:  # noqa: ANN001
            trt.calls.append(("execute_async_v3", dict(self.shapes)))
            spec = self.engine.spec
            if set(self.addresses) != set(spec) or len(self.shapes) != sum(
                    1 for v in spec.values() if v[0]):
                return False
            n = self.shapes["sketch"][0]
            label = _view(self.addresses["label"], spec["label"][1], (n,))
            sketch = _view(self.addresses["sketch"], spec["sketch"][1], self.shapes["sketch"])
            out_shape = self.get_tensor_shape("image")
            out = _view(self.addresses["image"], spec["image"][1], out_shape)
            for i in range(n):
                out[i] = (7 * int(label[i]) + int(sketch[i].reshape(-1)[0])) % 256
            return True

    class ICudaEngine:
        def __init__(self, plan: dict, logger) -> None:  # noqa: ANN001
            self.spec = {name: (is_in, dtype, shape) for name, is_in, dtype, shape in plan["io"]}
            self.names = [entry[0] for entry in plan["io"]]
            self.buckets = plan["buckets"]
            self.logger = logger

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.buckets)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name):  # noqa: ANN001
            mode = trt.TensorIOMode
            return mode.INPUT if self.spec[name][0] else mode.OUTPUT

        def get_tensor_dtype(self, name):  # noqa: ANN001
            return trt.DataType[self.spec[name][1]]

        def get_tensor_shape(self, name) -> tuple:  # noqa: ANN001
            return tuple(self.spec[name][2])

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

    class Runtime:
        def __init__(self, logger) -> None:  # noqa: ANN001
            self.logger = logger

        def deserialize_cuda_engine(self, serialized_engine) -> ICudaEngine | None:  # noqa: ANN001
            try:
                return ICudaEngine(json.loads(bytes(serialized_engine)), self.logger)
            except (ValueError, KeyError):
                self.logger.log(severity.ERROR, "Serialization assertion failed")
                return None

    for cls in (ILogger, Logger, ParserError, INetworkDefinition, OnnxParser, IOptimizationProfile,
                ITimingCache, IBuilderConfig, Builder, IExecutionContext, ICudaEngine, Runtime):
        setattr(trt, cls.__name__, cls)
    trt.IHostMemory = HostMemory
    return trt


def _view(address: int, dtype_name: str, shape) -> np.ndarray:  # noqa: ANN001
    dtype = np.dtype(NP_DTYPES[dtype_name])
    count = int(np.prod(shape))
    buf = (ctypes.c_uint8 * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


def defined_api(trt: types.ModuleType) -> dict[str, list[str]]:
    """{class: public attributes this fake defines}, to compare with the real bindings."""
    out = {}
    for name in API[trt.__version__]["classes"]:
        cls = getattr(trt, name, None)
        if cls is None:
            continue
        attrs = set()
        for klass in cls.__mro__:
            if klass is object:
                continue
            attrs.update(a for a in vars(klass) if not a.startswith("_"))
        out[name] = sorted(attrs)
    return out
