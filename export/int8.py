"""int8 ONNX graphs by static post-training quantization, calibrated on the data set's sketches.

    fp32 graph (onnx_export) -> onnxruntime.quantization.quantize_static, QDQ format
        activations uint8 (asymmetric, per tensor), weights int8 (symmetric, per output
        channel), the convolutions quantized; the ranges calibrated on a bounded number of
        training-split sketches (their own labels, seeded noise)
    -> the same graph contract (uint8 sketch in, uint8 RGB out), metadata precision "int8".

The QDQ graph runs on both CPU backends: ONNX Runtime fuses each DequantizeLinear -> Conv ->
QuantizeLinear into QLinearConv, OpenVINO's CPU plugin turns it into int8 convolutions (VNNI
or AMX where the CPU has them). Layers named in `keep` stay in floating point (fp32 on ONNX
Runtime, OpenVINO's inference precision elsewhere); KEEP_GROUPS names the usual choices. Every
int8 graph passes the quality guard (s2i_fast/engine/quality.py) before it is written.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2i_fast.artefact import OnnxMeta, load_onnx
from s2i_fast.errors import BackendUnavailable, DataError, EngineError

DEFAULT_CALIBRATION = 128  # sketches; ranges settle well before (measured: 64 vs 256 differ <1%)
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# groups of convolutions that may stay in floating point, by ONNX node name (module scope)
KEEP_GROUPS: dict[str, tuple[str, ...]] = {
    "out": ("/g/out_conv/",),  # the last conv, straight into tanh and the uint8 image
    "gates": ("/conv_gate/",),  # every MRU's gate logits, straight into sigmoid
    "first": ("/g/enc_mru.0/",),  # the first MRU: reads the sketch itself
}


@dataclass
class SketchSet:
    """Sketches with their labels and noise, as the graph takes them."""

    sketch: np.ndarray  # uint8 [N, R, R], black lines on white
    label: np.ndarray  # int64 [N], the model's class ids
    noise: np.ndarray  # float32 [N, Z]

    def __len__(self) -> int:
        return int(self.sketch.shape[0])

    def batches(self, batch: int):
        for i in range(0, len(self), batch):
            yield self.sketch[i:i + batch], self.label[i:i + batch], self.noise[i:i + batch]


def load_sketch_set(
    root: str | os.PathLike,
    split: str,
    class_names: Sequence[str],
    resolution: int,
    noise_dim: int,
    limit: int,
    seed: int = 0,
) -> SketchSet:
    """Up to `limit` sketches of one split of a Sketchy-layout data set, spread over the
    classes the model knows (round robin, seeded order), with seeded normal noise.

    Classes of the data set that the model does not know are left out; none in common is a
    DataError.
    """
    import torch

    from s2i_fast.data.dataset import read_sketch_uint8
    from s2i_fast.data.sketchy import scan_sketchy

    index = scan_sketchy(root)
    ids = {name: i for i, name in enumerate(class_names)}
    per_class: dict[int, list] = {}
    for rec in index.split(split):
        if rec.class_name in ids:
            per_class.setdefault(ids[rec.class_name], []).append(rec)
    if not per_class:
        raise DataError(f"{root}: no {split} sketches of the model's classes "
                        f"({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''})")
    rng = np.random.default_rng(seed)
    queues = [list(rng.permutation(len(v))) for v in per_class.values()]
    groups = list(per_class.values())
    chosen = []
    while len(chosen) < limit and any(queues):
        for records, queue in zip(groups, queues, strict=True):
            if queue and len(chosen) < limit:
                chosen.append(records[queue.pop()])
    sketch = np.stack([read_sketch_uint8(r.sketch_path, resolution) for r in chosen])
    label = np.array([ids[r.class_name] for r in chosen], dtype=np.int64)
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(chosen), noise_dim, generator=g).numpy()
    return SketchSet(sketch, label, noise)


def require_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise BackendUnavailable(
            "int8 export needs onnxruntime's quantization tools: pip install 's2i-fast[export]'"
        ) from e
    return quantization


def keep_nodes(model, keep: Sequence[str]) -> list[str]:  # noqa: ANN001
    """Names of the Conv/Gemm nodes of the groups in `keep` (KEEP_GROUPS keys)."""
    unknown = [k for k in keep if k not in KEEP_GROUPS]
    if unknown:
        raise EngineError(f"unknown layer group(s) {unknown}; choose from {list(KEEP_GROUPS)}")
    patterns = [p for k in keep for p in KEEP_GROUPS[k]]
    return [n.name for n in model.graph.node
            if n.op_type in ("Conv", "Gemm") and any(p in n.name for p in patterns)]


def quantize_int8(
    model_fp32,  # noqa: ANN001  onnx.ModelProto of an fp32 uint8 (or raw) graph
    calibration: SketchSet,
    *,
    method: str = "minmax",
    keep: Sequence[str] = (),
    batch: int = 8,
):
    """The int8 QDQ graph of an fp32 graph (a new ModelProto with precision "int8")."""
    import onnx

    q = require_quantization()
    meta = OnnxMeta.from_props({p.key: p.value for p in model_fp32.metadata_props})
    if meta.precision != "fp32":
        raise EngineError(f"int8 quantization starts from the fp32 graph, not {meta.precision}")
    if method not in CALIBRATION_METHODS:
        raise EngineError(f"calibration method must be one of {CALIBRATION_METHODS}")
    if len(calibration) == 0:
        raise DataError("no calibration sketches")
    methods = {"minmax": q.CalibrationMethod.MinMax, "percentile": q.CalibrationMethod.Percentile,
               "entropy": q.CalibrationMethod.Entropy}
    reader = _Reader(calibration, batch, meta)
    with tempfile.TemporaryDirectory(prefix="s2i-int8-") as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model_fp32, str(src))
        # ONNX shape inference + ORT's basic graph optimisations, as the quantizer expects;
        # the symbolic shape pass cannot type the uint8 -> float preprocessing, so it is off
        q.shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
            q.quantize_static(
                str(pre), str(out), reader,
                quant_format=q.QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=keep_nodes(model_fp32, keep),
                calibrate_method=methods[method],
                extra_options={"CalibTensorRangeSymmetric": False, "CalibMovingAverage": False},
            )
        model = onnx.load(str(out))
    meta.precision = "int8"
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "s2i-fast"
    onnx.checker.check_model(model)
    load_onnx(model.SerializeToString())  # the contract still holds
    return model


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a SketchSet (duck-typed)."""

    def __init__(self, data: SketchSet, batch: int, meta: OnnxMeta) -> None:
        if meta.batch is not None:
            batch = meta.batch
        self.items = []
        for sketch, label, noise in data.batches(batch):
            if meta.batch is not None and len(sketch) != meta.batch:
                break  # a static graph takes only full batches
            if meta.raw:
                import torch

                from s2i_fast.data.preprocess import normalize_sketch_uint8

                sketch = normalize_sketch_uint8(torch.from_numpy(sketch), meta.stats).numpy()
            self.items.append({"sketch": sketch, "label": label, "noise": noise})
        self._it = iter(self.items)

    def get_next(self):  # noqa: ANN201
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.items)
