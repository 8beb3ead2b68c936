"""ONNX export of the generator with the preprocessing folded in, and its metadata.

Exporter choice (torch 2.13, measured here): both `torch.onnx.export(dynamo=False)` (the
TorchScript tracer) and `dynamo=True` (torch.export + onnxscript) give graphs that match eager
bit for bit in uint8 and run equally fast in ONNX Runtime. The tracer is the default: it exports
in ~0.6 s instead of ~11 s. `exporter="auto"` falls back to dynamo if the tracer fails;
`exporter="dynamo"` forces it. The fp32 islands of the fp16/bf16 variants are found from the
graph's structure (export/trt_policy.py), so they hold for either exporter.

Precision variants: the fp32 generator is always what is traced; "fp16" and "bf16" graphs are
made from that fp32 graph by export/precision.py (16-bit compute, the fp32 islands written in as
Cast nodes, inputs and outputs keep their types). bf16 graphs are opset 22 (the first with
bfloat16 Conv); they run in TensorRT, not in ONNX Runtime's CPU provider.

The metadata written into every graph is the artefact contract of s2i_fast/artefact.py.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from s2i_fast.artefact import INPUTS, OUTPUT, OnnxMeta, require_onnx
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import EngineError

DEFAULT_OPSET = 17
EXPORTERS = ("auto", "torchscript", "dynamo")
PRECISIONS = ("fp32", "fp16", "bf16")


def example_inputs(meta: OnnxMeta, batch: int) -> tuple[torch.Tensor, ...]:
    """Inputs of the right dtype/shape for tracing (sketch, label, noise)."""
    res, z = meta.resolution, meta.model_config.noise_dim
    g = torch.Generator().manual_seed(0)
    if meta.raw:
        sketch = torch.rand(batch, 1, res, res, generator=g) * 2 - 1  # [B, 1, H, W]
    else:
        sketch = torch.randint(0, 256, (batch, res, res), generator=g, dtype=torch.uint8)
    label = torch.arange(batch, dtype=torch.int64) % meta.model_config.num_classes
    return sketch, label, torch.randn(batch, z, generator=g)


def _trace_export(module, args, opset, dynamic_axes, dynamo: bool) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        kwargs: dict[str, Any] = {
            "input_names": list(INPUTS),
            "output_names": [OUTPUT],
            "opset_version": opset,
            "dynamo": dynamo,
        }
        if dynamic_axes:
            kwargs["dynamic_axes"] = dynamic_axes
        if dynamo:
            kwargs["verbose"] = False
            kwargs["optimize"] = True
            onnx_program = torch.onnx.export(module, args, **kwargs)
            return onnx_program.model_proto.SerializeToString()
        else:
            kwargs["do_constant_folding"] = True
            torch.onnx.export(module, args, buf, **kwargs)
    return buf.getvalue()


def export_module(
    module: nn.Module,
    meta: OnnxMeta,
    *,
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
):
    """Export an fp32 wrapper (export.wrappers) to an onnx.ModelProto, checked, with metadata;
    meta.precision "fp16"/"bf16" lowers the traced graph (export/precision.py)."""
    onnx = require_onnx()
    if exporter not in EXPORTERS:
        raise EngineError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    batch = meta.batch if meta.batch is not None else 2
    args = example_inputs(meta, batch)
    dynamic_axes = None
    if meta.batch is None:
        dynamic_axes = {name: {0: "batch"} for name in (*INPUTS, OUTPUT)}
    order = {"auto": [False, True], "torchscript": [False], "dynamo": [True]}[exporter]
    errors = []
    data = b""
    for dynamo in order:
        try:
            data = _trace_export(module, args, opset, dynamic_axes, dynamo)
            break
        except Exception as e:  # exporter internals: report both attempts in one line
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {e}")
    if not data:
        firsts = "; ".join(x.splitlines()[0] for x in errors)
        raise EngineError(f"ONNX export failed ({firsts})")
    model = onnx.load_from_string(data)
    assert_no_conv_transpose(model)
    return lower_export(_with_meta(model, replace(meta, precision="fp32")), meta.precision)


def _with_meta(model, meta: OnnxMeta):
    onnx = require_onnx()
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "s2i-fast"
    onnx.checker.check_model(model, full_check=True)
    return model


def lower_export(model, precision: str):
    """An exported fp32 graph (with its metadata) as its fp16/bf16 variant, metadata updated;
    the same graph for "fp32". export/precision.py does the lowering."""
    from s2i_fast.artefact import load_onnx

    if precision == "fp32":
        return model
    from s2i_fast.export.precision import lower_precision

    _, meta = load_onnx(model.SerializeToString())
    if meta.precision != "fp32":
        raise EngineError(f"lower_export needs an fp32 export, got a {meta.precision} one")
    return _with_meta(lower_precision(model, precision), replace(meta, precision=precision))


def assert_no_conv_transpose(model) -> None:
    bad = [n.name or n.op_type for n in model.graph.node if n.op_type == "ConvTranspose"]
    if bad:
        raise EngineError(f"exported graph contains ConvTranspose nodes: {bad[:3]}")


def export_generator(
    gen: nn.Module,
    class_names: list[str],
    stats: PreprocessStats,
    out: str | os.PathLike | None = None,
    *,
    raw: bool = False,
    batch: int | None = 1,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    exporter: str = "auto",
):
    """Export a Generator (any mode; a prepared eval copy is traced). Returns the ModelProto.

    batch=None gives a dynamic batch axis; precision "fp16" or "bf16" gives the 16-bit graph
    variant (export/precision.py: 16-bit compute with fp32 islands, inputs/outputs keep their
    types). Written atomically to out.
    """
    from s2i_fast.export.wrappers import prepare_generator, wrap

    if precision not in PRECISIONS:
        raise EngineError(f"ONNX graphs are {', '.join(PRECISIONS)}; got {precision!r}")
    if batch is not None and batch < 1:
        raise EngineError(f"batch must be >= 1, got {batch}")
    cfg = ModelConfig.from_dict(gen.cfg.to_dict())
    cfg.impl = "ref"
    meta = OnnxMeta(list(class_names), stats, cfg, raw, precision, batch)
    prepared = prepare_generator(gen, "fp32").cpu()  # a copy: gen stays where it is
    prepared.set_impl("ref")  # the torch reference ops are what ONNX traces
    model = export_module(wrap(prepared, stats, raw), meta, opset=opset, exporter=exporter)
    if out is not None:
        from s2i_fast.fileio import write_bytes

        write_bytes(out, model.SerializeToString())
    return model


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike | None = None, **kwargs):
    """Load a checkpoint and export its generator; kwargs as export_generator."""
    from s2i_fast.checkpoint import load_generator

    gen, class_names, stats = load_generator(ckpt, device="cpu")
    return export_generator(gen, class_names, stats, out, **kwargs)
