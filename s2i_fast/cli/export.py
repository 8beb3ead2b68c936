"""`s2i-fast export CKPT --onnx OUT.onnx [--trt OUT.plan]`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

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
    if trt_out is not None:
        from s2i_fast.export.trt import require_tensorrt

        require_tensorrt()  # BackendUnavailable: one line naming the package, exit code 2
        buckets = parse_buckets(batch_buckets)
        if onnx_out is not None and not dynamic_batch:
            raise click.UsageError("--trt needs a dynamic-batch graph: add --dynamic-batch")
        if graph_precision not in ("fp32", precision):
            raise click.UsageError(f"--{graph_precision} graph and --precision {precision} differ; "
                                   "--trt builds in --precision from the fp32 or that graph")
    payload = load_checkpoint(checkpoint)
    gen, class_names, stats = load_generator(payload, device="cpu")
    kwargs = dict(raw=raw, batch=None if dynamic_batch else batch, opset=opset, exporter=exporter,
                  precision=graph_precision)
    if onnx_out is not None:
        model = export_generator(gen, class_names, stats, onnx_out, **kwargs)
        nodes = len(model.graph.node)
        click.echo(f"wrote {onnx_out} ({onnx_out.stat().st_size / 1e6:.1f} MB, {nodes} nodes, "
                   f"batch {'dynamic' if dynamic_batch else batch}, {kwargs['precision']}"
                   f"{', raw' if raw else ''})")
        if verify:
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
