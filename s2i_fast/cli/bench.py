"""`s2i-fast bench [ARTEFACT] --backends torch,onnxruntime,openvino:bf16 --batch 1,8 --csv FILE`.

A backend is `name[:precision]`; `cpu` is every CPU backend (s2i_fast/bench/cpu.py). Each
requested backend must run, at the precision asked (the precision an Engine reports is what
ran), or the command fails. On the CPU the table also shows each row's arithmetic rate and
its fraction of the machine's measured matmul ceiling in that precision.
"""

from __future__ import annotations

from pathlib import Path

import click

from s2i_fast.errors import EngineError


def _int_list(ctx, param, value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or any(not 1 <= v <= 4096 for v in out):
        raise click.BadParameter(f"expected batch sizes from 1 to 4096, got {value!r}")
    return out


def _backend_list(ctx, param, value: str) -> list:
    from s2i_fast.bench.cpu import parse_backend_specs
    from s2i_fast.engine import BACKENDS

    try:
        return parse_backend_specs(value, BACKENDS)
    except EngineError as e:
        raise click.BadParameter(str(e)) from None


@click.command("bench")
@click.argument("artefact", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True,
              help="Random-weight generator to time when no ARTEFACT is given.")
@click.option("--num-classes", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--backends", default="torch,onnxruntime", show_default=True,
              callback=_backend_list, help="Comma-separated backend[:precision]: torch, "
              "torch-compile, triton, onnxruntime, openvino, tensorrt, e.g. openvino:bf16, "
              "onnxruntime:int8; 'cpu' = every CPU backend. Each must run at the precision "
              "asked, or the command fails.")
@click.option("--batch", "batches", default="1,8", show_default=True, callback=_int_list,
              help="Comma-separated batch sizes, e.g. 1,8,64,256.")
@click.option("--resolution", type=click.Choice(["64", "128", "256"]), default="64",
              show_default=True, help="Model resolution (presets only).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default=None,
              help="Precision for backends given without one [default: an .onnx/.plan's own; "
              "fp32 for torch and ORT, openvino's default (bf16 where native), fp16 for "
              "triton and tensorrt].")
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cuda if available]")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Intra-op threads for torch and onnxruntime [default: library default].")
@click.option("--warmup", type=click.IntRange(0, 100_000), default=5, show_default=True)
@click.option("--iters", type=click.IntRange(1, 100_000), default=30, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one row per (backend, batch) to this CSV.")
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Data set whose training sketches calibrate the in-memory "
              "int8 graph [default: sketches drawn by s2i_fast.testing; speed only].")
@click.option("--ceilings/--no-ceilings", default=True, show_default=True,
              help="CPU: measure the fp32/bf16/int8 matmul ceilings and show each row's "
              "fraction of them.")
@click.option("--matmul-size", type=click.IntRange(64, 8192), default=2048, show_default=True,
              help="Side of the square matmul that measures the ceilings.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def bench(
    artefact: Path | None,
    preset: str,
    num_classes: int,
    backends: list,
    batches: list[int],
    resolution: str,
    precision: str | None,
    device: str | None,
    threads: int | None,
    warmup: int,
    iters: int,
    csv_path: Path | None,
    data_root: Path | None,
    ceilings: bool,
    matmul_size: int,
    progress: bool,
) -> None:
    """Time every requested backend side by side on ARTEFACT (checkpoint, .onnx, .plan) or on a
    preset with random weights: p50/p99 latency, images/s, peak memory, speed-up over eager."""
    import torch
    from tqdm import tqdm

    from s2i_fast.bench import harness
    from s2i_fast.bench.cpu import generator_flops, main_precision, matmul_ceiling
    from s2i_fast.bench.engines import add_speedups, time_engine

    if csv_path is not None:  # a device or folder there is refused before any timing
        from s2i_fast.fileio import check_target

        check_target(csv_path)
    if threads:
        torch.set_num_threads(threads)
    if artefact is None:
        gen, names, stats = _preset_generator(preset, int(resolution), num_classes)
    elif artefact.suffix.lower() not in (".onnx", ".plan", ".engine", ".trt"):
        from s2i_fast.checkpoint import load_generator

        gen, names, stats = load_generator(artefact, device="cpu")
    else:
        gen = None
    engines = {}
    int8_graph: list = []  # built once, shared by onnxruntime:int8 and openvino:int8
    for spec in backends:  # load everything first: a backend that cannot run fails up front
        asked = spec.precision or precision
        engines[spec.label] = _engine(spec.backend, asked, artefact, gen, names if gen else None,
                                      stats if gen else None, device, threads, data_root,
                                      int8_graph)
        _check_ran(spec.label, asked, engines[spec.label])
    for name, eng in engines.items():
        if eng.max_batch is not None and max(batches) > eng.max_batch:
            raise EngineError(f"backend {name}: batch {max(batches)} exceeds the artefact's "
                              f"limit {eng.max_batch}")
    model = str(artefact) if artefact is not None else f"{preset}@{resolution} (random)"
    total = len(engines) * len(batches) * (warmup + iters)
    bar = tqdm(total=total, desc="bench", unit="call", disable=not progress, leave=False)
    results = []
    with bar:
        for batch in batches:
            for label, eng in engines.items():
                bar.set_postfix_str(f"{label} batch {batch}")
                r = time_engine(eng, batch, warmup, iters, progress=bar)
                r.backend = label
                results.append(r)
    add_speedups(results)
    first = next(iter(engines.values()))
    on_cpu = all(e.device == "cpu" for e in engines.values())
    flops = generator_flops(gen) if gen is not None else _graph_flops(artefact)
    peaks: dict[str, float] = {}
    if ceilings and on_cpu:
        from s2i_fast.engine.cpu import native_bf16

        # bf16 without the CPU's bf16 instructions is emulated: no ceiling to compare with,
        # and a 2048^3 emulated matmul takes minutes
        native = {"fp32": True, "bf16": native_bf16(), "int8": True}
        peaks = {p: matmul_ceiling(p, matmul_size) for p, ok in native.items() if ok}
    for r in results:
        r.gflops = flops * r.batch / (r.p50_ms * 1e-3) / 1e9 if flops else None
        peak = peaks.get(main_precision(r.precision))
        r.fraction_of_peak = r.gflops / peak if (peak and r.gflops) else None
    ctx = harness.context(first.device)
    click.echo(f"{model} | {ctx['device']} | {ctx.get('cpu_flags', '')} | res "
               f"{first.resolution} | threads {threads or torch.get_num_threads()} | warm-up "
               f"{warmup}, iters {iters} | load avg {ctx['load_avg_1m']}")
    if flops:
        click.echo(f"generator: {flops / 1e9:.3f} GFLOP per image")
    if peaks:
        click.echo("matmul ceilings (" + f"{matmul_size}^3, torch): " + ", ".join(
            f"{p} {v:.0f} G{'OP' if p == 'int8' else 'FLOP'}/s" for p, v in peaks.items()))
    click.echo(harness.format_table([_display(r) for r in results], list(_DISPLAY)))
    if csv_path is not None:
        meta = {**ctx, "model": model, "resolution": first.resolution, "warmup": warmup,
                "iters": iters, "threads": threads or torch.get_num_threads(),
                "gflop_per_image": round(flops / 1e9, 4) if flops else "",
                **{f"ceiling_{p}_gflops": round(v, 1) for p, v in peaks.items()}}
        harness.append_csv(csv_path, [{**meta, **r.row()} for r in results])
        click.echo(f"appended {len(results)} rows to {csv_path}")


def _engine(backend, precision, artefact, gen, names, stats, device, threads, data_root,
            int8_graph):  # noqa: ANN001
    """The Engine of one bench row (an int8 graph is quantized in memory once if needed)."""
    from s2i_fast.engine import Engine

    kw = dict(precision=precision, threads=threads)
    if precision == "int8" and gen is not None:
        if not int8_graph:
            int8_graph.append(_int8_graph(gen, names, stats, data_root))
        return Engine.load(int8_graph[0], backend=backend, device=device, **kw)
    if gen is None:
        return Engine.load(artefact, backend=backend, device=device, **kw)
    return Engine.from_generator(gen, names, stats, backend, device, **kw)


def _int8_graph(gen, names, stats, data_root: Path | None) -> Path:  # noqa: ANN001
    """A dynamic-batch int8 graph of gen in a temp file (removed at exit), calibrated on
    data_root's training sketches, or on drawn sketches without it (speed, not quality)."""
    import atexit
    import shutil
    import tempfile

    import torch

    from s2i_fast.export.int8 import SketchSet, load_sketch_set, quantize_int8
    from s2i_fast.export.onnx_export import export_generator
    from s2i_fast.testing import drawn_batch

    cfg = gen.cfg
    if data_root is not None:
        calib = load_sketch_set(data_root, "train", names, cfg.resolution, cfg.noise_dim, 64)
    else:
        import numpy as np

        noise = torch.randn(16, cfg.noise_dim, generator=torch.Generator().manual_seed(0))
        calib = SketchSet(drawn_batch(16, cfg.resolution),
                          np.arange(16, dtype=np.int64) % len(names), noise.numpy())
    model = quantize_int8(export_generator(gen, names, stats, batch=None), calib)
    tmp = tempfile.mkdtemp(prefix="s2i-bench-int8-")
    atexit.register(shutil.rmtree, tmp, True)
    from s2i_fast.fileio import write_bytes

    return write_bytes(Path(tmp) / "int8.onnx", model.SerializeToString())


def _check_ran(label: str, asked: str | None, engine) -> None:  # noqa: ANN001
    """A row asked for a precision must have run in it (Engine.precision is what ran)."""
    from s2i_fast.engine.backends import precision_matches

    if asked is not None and not precision_matches(asked, engine.precision):
        raise EngineError(f"backend {label} ran in {engine.precision}, not {asked}")


def _graph_flops(artefact: Path | None) -> float:
    """FLOPs per image of an .onnx artefact's generator (rebuilt from its model config)."""
    if artefact is None or artefact.suffix.lower() != ".onnx":
        return 0.0
    from s2i_fast.artefact import load_onnx
    from s2i_fast.bench.cpu import generator_flops
    from s2i_fast.model import Generator

    _, meta = load_onnx(artefact)
    return generator_flops(Generator(meta.model_config))


_DISPLAY = {"backend": "backend", "batch": "batch", "ran": "precision", "p50 ms": "p50_ms",
            "p99 ms": "p99_ms", "img/s": "images_per_s", "peak MB": "peak_mem_mb",
            "vs torch": "speedup_vs_torch", "vs ort": "speedup_vs_ort", "GFLOP/s": "gflops",
            "of peak": "fraction_of_peak"}


def _display(result) -> dict:  # noqa: ANN001
    r = result.row()
    out = {label: r[key] for label, key in _DISPLAY.items()}
    for label in ("p50 ms", "p99 ms"):
        out[label] = f"{r[_DISPLAY[label]]:.2f}"
    out["img/s"] = f"{r['images_per_s']:.1f}"
    out["peak MB"] = f"{r['peak_mem_mb']:.1f}"
    for label, value in (("vs torch", result.speedup_vs_torch),
                         ("vs ort", result.speedup_vs_ort)):
        out[label] = "-" if value is None else f"{value:.2f}x"
    out["GFLOP/s"] = "-" if result.gflops is None else f"{result.gflops:.1f}"
    f = result.fraction_of_peak
    out["of peak"] = "-" if f is None else f"{100 * f:.1f}%"
    return out


def _preset_generator(preset: str, resolution: int, num_classes: int):
    """A random-weight generator in eval mode, with default stats and generic class names."""
    import torch

    from s2i_fast.config import ModelConfig, PreprocessStats
    from s2i_fast.model import Generator

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(preset, resolution=resolution, num_classes=num_classes)
    gen = Generator(cfg).eval()
    return gen, [f"class{i}" for i in range(num_classes)], PreprocessStats()
