"""`s2i-fast export CKPT --onnx OUT.onnx [--fp16 | --int8 --data ROOT] [--trt OUT.plan]`.

Low-precision graphs (--int8, --fp16) pass the quality guard (s2i_fast/engine/quality.py)
before they are written: their images on every installed CPU backend against fp32's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
import numpy as np

from s2i_fast.export.int8 import CALIBRATION_METHODS, DEFAULT_CALIBRATION, KEEP_GROUPS
from s2i_fast.export.onnx_export import DEFAULT_OPSET, EXPORTERS


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--onnx", "onnx_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write an ONNX graph here.")
@click.option("--trt", "trt_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Build a TensorRT engine (.plan, with a .plan.json sidecar) here.")
@click.option("--raw", is_flag=True,
              help="Float tensors in model space instead of uint8 sketch -> uint8 RGB.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Static batch size of the ONNX graph.")
@click.option("--dynamic-batch", is_flag=True, help="A dynamic batch axis instead of --batch.")
@click.option("--fp16", is_flag=True,
              help="fp16 ONNX graph (16-bit compute, fp32 islands as Cast nodes).")
@click.option("--bf16", is_flag=True,
              help="bf16 ONNX graph (opset 22; runs in TensorRT, not in onnxruntime's CPU "
                   "provider).")
@click.option("--opset", type=click.IntRange(13, 22), default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset (bf16 graphs are raised to 22).")
@click.option("--int8", is_flag=True,
              help="int8 graph by static post-training quantization (QDQ), calibrated on "
              "--data's training sketches; written only if the quality guard passes.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Sketchy-layout data set: --int8 calibrates on its training "
              "split; the quality guard runs on its test split [default for --fp16: drawn "
              "test sketches].")
@click.option("--calibration", type=click.IntRange(1, 100_000), default=DEFAULT_CALIBRATION,
              show_default=True, help="Training sketches used to calibrate --int8.")
@click.option("--calibration-method", type=click.Choice(CALIBRATION_METHODS),
              default="percentile", show_default=True,
              help="How activation ranges are chosen from the calibration run.")
@click.option("--int8-keep", default="out", show_default=True,
              help="Layer groups kept in floating point with --int8: comma-separated from "
              f"{', '.join(KEEP_GROUPS)}, or 'none'.")
@click.option("--guard-sketches", type=click.IntRange(1, 100_000), default=64,
              show_default=True, help="Test sketches the quality guard compares on.")
@click.option("--exporter", type=click.Choice(EXPORTERS), default="auto", show_default=True,
              help="torch.onnx exporter: auto = TorchScript tracer, dynamo if that fails.")
@click.option("--precision", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16",
              show_default=True, help="TensorRT build precision (with --trt).")
@click.option("--batch-buckets", default="1,8,64", show_default=True,
              help="TensorRT: one static optimisation profile per batch size.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="TensorRT timing cache file, loaded and saved [default: OUT.plan.cache].")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the ONNX graph in onnxruntime against PyTorch after export.")
def export(
    checkpoint: Path,
    onnx_out: Path | None,
    trt_out: Path | None,
    raw: bool,
    batch: int,
    dynamic_batch: bool,
    fp16: bool,
    bf16: bool,
    int8: bool,
    data_root: Path | None,
    calibration: int,
    calibration_method: str,
    int8_keep: str,
    guard_sketches: int,
    opset: int,
    exporter: str,
    precision: str,
    batch_buckets: str,
    timing_cache: Path | None,
    verify: bool,
) -> None:
    """Export CHECKPOINT to an ONNX graph (--onnx) and/or a TensorRT engine (--trt)."""
    from s2i_fast.checkpoint import load_checkpoint, load_generator
    from s2i_fast.export.onnx_export import export_generator
    from s2i_fast.export.trt_policy import parse_buckets

    if onnx_out is None and trt_out is None:
        raise click.UsageError("give --onnx OUT.onnx and/or --trt OUT.plan")
    if dynamic_batch and batch != 1:
        raise click.UsageError("--batch and --dynamic-batch exclude each other")
    if fp16 and bf16:
        raise click.UsageError("--fp16 and --bf16 exclude each other")
    graph_precision = "fp16" if fp16 else "bf16" if bf16 else "fp32"
    if int8 and graph_precision != "fp32":
        raise click.UsageError(f"--int8 and --{graph_precision} exclude each other")
    if int8 and trt_out is not None:
        raise click.UsageError("--int8 graphs are for the CPU backends; --trt builds fp16/bf16")
    if int8 and onnx_out is None:
        raise click.UsageError("--int8 writes an ONNX graph: give --onnx OUT.onnx")
    if int8 and data_root is None:
        raise click.UsageError("--int8 needs --data ROOT: it calibrates on the training "
                               "sketches and guards on the test sketches of that data set")
    keep = [k.strip() for k in int8_keep.split(",") if k.strip() and k.strip() != "none"]
    bad = [k for k in keep if k not in KEEP_GROUPS]
    if bad:
        raise click.BadParameter(f"unknown group(s) {bad}; choose from {', '.join(KEEP_GROUPS)} "
                                 "or 'none'", param_hint="--int8-keep")
    if trt_out is not None:
        from s2i_fast.export.trt import require_tensorrt

        require_tensorrt()  # BackendUnavailable: one line naming the package, exit code 2
        buckets = parse_buckets(batch_buckets)
        if onnx_out is not None and not dynamic_batch:
            raise click.UsageError("--trt needs a dynamic-batch graph: add --dynamic-batch")
        if graph_precision not in ("fp32", precision):
            raise click.UsageError(f"--{graph_precision} graph and --precision {precision} differ; "
                                   "--trt builds in --precision from the fp32 or that graph")
    from s2i_fast.fileio import check_target

    for target in (onnx_out, trt_out):  # a device or folder there is refused before any work
        if target is not None:
            check_target(target)
    payload = load_checkpoint(checkpoint)
    gen, class_names, stats = load_generator(payload, device="cpu")
    kwargs = dict(raw=raw, batch=None if dynamic_batch else batch, opset=opset, exporter=exporter,
                  precision=graph_precision)
    if onnx_out is not None:
        if int8:
            model = _export_int8(gen, class_names, stats, onnx_out, data_root, kwargs,
                                 calibration, calibration_method, keep, guard_sketches)
        elif fp16:
            model = _export_fp16(gen, class_names, stats, onnx_out, data_root, kwargs,
                                 guard_sketches)
        else:
            model = export_generator(gen, class_names, stats, onnx_out, **kwargs)
        nodes = len(model.graph.node)
        precision_name = "int8" if int8 else kwargs["precision"]
        click.echo(f"wrote {onnx_out} ({onnx_out.stat().st_size / 1e6:.1f} MB, {nodes} nodes, "
                   f"batch {'dynamic' if dynamic_batch else batch}, {precision_name}"
                   f"{', raw' if raw else ''})")
        if verify and not (int8 or fp16):  # the guard has compared the low-precision ones
            _verify(onnx_out, gen, class_names, stats)
    if trt_out is not None:
        from s2i_fast.artefact import load_onnx
        from s2i_fast.export.trt import build_engine

        cache = timing_cache or Path(str(trt_out) + ".cache")
        with tempfile.TemporaryDirectory(prefix="s2i-export-") as tmp:
            src = onnx_out
            if src is None:
                src = Path(tmp) / "graph.onnx"
                kwargs.update(batch=None, precision="fp32")
                export_generator(gen, class_names, stats, src, **kwargs)
            _, meta = load_onnx(src)
            side = build_engine(src, trt_out, meta, precision=precision, buckets=buckets,
                                timing_cache=cache, notice=lambda m: click.echo(f"note: {m}",
                                                                                err=True))
        click.echo(f"wrote {trt_out} ({precision}, TensorRT {side['tensorrt']}, profiles for "
                   f"batch {buckets}, {len(side['fp32_layers'])} nodes in fp32 islands, "
                   f"timing cache {cache})")


def _export_int8(gen, class_names, stats, out: Path, data_root: Path, kwargs: dict,
                 calibration: int, method: str, keep: list[str], guard_sketches: int):
    from s2i_fast.engine.quality import export_int8

    click.echo(f"calibrating int8 on up to {calibration} training sketches of {data_root} "
               f"({method}; kept in floating point: {', '.join(keep) or 'nothing'}) ...")
    model, reports = export_int8(
        gen, class_names, stats, out, data_root, calibration=calibration, test=guard_sketches,
        method=method, keep=keep, batch=kwargs["batch"], raw=kwargs["raw"],
        opset=kwargs["opset"], exporter=kwargs["exporter"],
    )
    for report in reports:
        click.echo(f"quality guard: {report.summary()}")
    return model


def _export_fp16(gen, class_names, stats, out: Path, data_root: Path | None, kwargs: dict,
                 guard_sketches: int):
    """The fp16 graph variant, written only if the quality guard passes."""
    from s2i_fast.engine import Engine
    from s2i_fast.engine.quality import check_and_write
    from s2i_fast.export.onnx_export import export_generator

    model = export_generator(gen, class_names, stats, None, **kwargs)
    test = _guard_sketches(gen, class_names, data_root, guard_sketches)
    reference = Engine.from_generator(gen, class_names, stats, "torch", "cpu", precision="fp32")
    for report in check_and_write(model, out, reference, test, precision="fp16"):
        click.echo(f"quality guard: {report.summary()}")
    return model


def _guard_sketches(gen, class_names, data_root: Path | None, limit: int):
    """The data set's test sketches, or (no --data) sketches drawn like a person draws."""
    import torch

    from s2i_fast.export.int8 import SketchSet, load_sketch_set
    from s2i_fast.testing import drawn_batch

    cfg = gen.cfg
    if data_root is not None:
        return load_sketch_set(data_root, "test", class_names, cfg.resolution, cfg.noise_dim,
                               limit, seed=1)
    n = min(limit, 16)
    noise = torch.randn(n, cfg.noise_dim, generator=torch.Generator().manual_seed(1)).numpy()
    labels = np.arange(n, dtype=np.int64) % len(class_names)
    return SketchSet(drawn_batch(n, cfg.resolution), labels, noise)


def _verify(onnx_path: Path, gen, class_names, stats) -> None:
    """Run the graph in onnxruntime and PyTorch on one random batch; print the difference."""
    import numpy as np

    from s2i_fast.artefact import load_onnx
    from s2i_fast.engine import Engine
    from s2i_fast.errors import BackendUnavailable

    if load_onnx(onnx_path)[1].precision == "bf16":
        click.echo("not verified in onnxruntime: its CPU provider has no bf16 kernels (the bf16 "
                   "graph is for TensorRT)", err=True)
        return
    try:
        ort_engine = Engine.load(onnx_path, backend="onnxruntime")
    except BackendUnavailable as e:
        click.echo(f"not verified: {e}", err=True)
        return
    ref = Engine.from_generator(gen, class_names, stats, "torch", "cpu",
                                precision="fp32")
    b = ort_engine.static_batch or 2
    rng = np.random.default_rng(0)
    sketch = rng.integers(0, 256, (b, ref.resolution, ref.resolution), dtype=np.uint8)
    labels = np.arange(b) % len(class_names)
    diff = np.abs(ort_engine.generate(sketch, labels, seed=0).astype(np.int16)
                  - ref.generate(sketch, labels, seed=0).astype(np.int16))
    click.echo(f"verified in onnxruntime ({ort_engine.precision}) against PyTorch fp32: max "
               f"diff {int(diff.max())} levels, {100 * (diff > 0).mean():.2f}% of values differ")
