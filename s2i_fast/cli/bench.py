"""`s2i-fast bench [ARTEFACT] --backends torch,onnxruntime --batch 1,8 --csv FILE`."""

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


def _backend_list(ctx, param, value: str) -> list[str]:
    from s2i_fast.engine import BACKENDS

    out = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in out if v not in BACKENDS]
    if bad or not out:
        raise click.BadParameter(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(out))


@click.command("bench")
@click.argument("artefact", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny", show_default=True,
              help="Random-weight generator to time when no ARTEFACT is given.")
@click.option("--num-classes", type=click.IntRange(1, 100_000), default=10, show_default=True)
@click.option("--backends", default="torch,onnxruntime", show_default=True,
              callback=_backend_list, help="Comma-separated: torch, torch-compile, triton, "
              "onnxruntime, tensorrt. Each one must run, or the command fails.")
@click.option("--batch", "batches", default="1,8", show_default=True, callback=_int_list,
              help="Comma-separated batch sizes, e.g. 1,8,64,256.")
@click.option("--resolution", type=click.Choice(["64", "128", "256"]), default="64",
              show_default=True, help="Model resolution (presets only).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Compute precision [default: an .onnx/.plan's own; fp32 for torch and ORT, "
              "fp16 for triton and tensorrt].")
@click.option("--device", default=None, help="cpu or cuda[:N] [default: cuda if available]")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Intra-op threads for torch and onnxruntime [default: library default].")
@click.option("--warmup", type=click.IntRange(0, 100_000), default=5, show_default=True)
@click.option("--iters", type=click.IntRange(1, 100_000), default=30, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Append one row per (backend, batch) to this CSV.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def bench(
    artefact: Path | None,
    preset: str,
    num_classes: int,
    backends: list[str],
    batches: list[int],
    resolution: str,
    precision: str | None,
    device: str | None,
    threads: int | None,
    warmup: int,
    iters: int,
    csv_path: Path | None,
    progress: bool,
) -> None:
    """Time every requested backend side by side on ARTEFACT (checkpoint, .onnx, .plan) or on a
    preset with random weights: p50/p99 latency, images/s, peak memory, speed-up over eager."""
    import torch
    from tqdm import tqdm

    from s2i_fast.bench import harness
    from s2i_fast.bench.engines import add_speedups, time_engine
    from s2i_fast.engine import Engine

    if threads:
        torch.set_num_threads(threads)
    engines = {}
    if artefact is None:
        gen, names, stats = _preset_generator(preset, int(resolution), num_classes)
    for name in backends:  # load everything first: a backend that cannot run fails up front
        kw = dict(precision=precision, threads=threads)
        if artefact is not None:
            engines[name] = Engine.load(artefact, backend=name, device=device, **kw)
        else:
            engines[name] = Engine.from_generator(gen, names, stats, name, device, **kw)
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
            for name, eng in engines.items():
                bar.set_postfix_str(f"{name} batch {batch}")
                results.append(time_engine(eng, batch, warmup, iters, progress=bar))
    add_speedups(results)
    first = next(iter(engines.values()))
    ctx = harness.context(first.device)
    click.echo(f"{model} | {ctx['device']} | res {first.resolution} | warm-up {warmup}, "
               f"iters {iters} | load avg {ctx['load_avg_1m']}")
    click.echo(harness.format_table([_display(r) for r in results], list(_DISPLAY)))
    if csv_path is not None:
        meta = {**ctx, "model": model, "resolution": first.resolution, "warmup": warmup,
                "iters": iters, "threads": threads or torch.get_num_threads()}
        harness.append_csv(csv_path, [{**meta, **r.row()} for r in results])
        click.echo(f"appended {len(results)} rows to {csv_path}")


_DISPLAY = {"backend": "backend", "batch": "batch", "prec": "precision", "p50 ms": "p50_ms",
            "p99 ms": "p99_ms", "img/s": "images_per_s", "peak MB": "peak_mem_mb",
            "vs torch": "speedup_vs_torch"}


def _display(result) -> dict:  # noqa: ANN001
    r = result.row()
    out = {label: r[key] for label, key in _DISPLAY.items()}
    for label in ("p50 ms", "p99 ms"):
        out[label] = f"{r[_DISPLAY[label]]:.2f}"
    out["img/s"] = f"{r['images_per_s']:.1f}"
    out["peak MB"] = f"{r['peak_mem_mb']:.1f}"
    s = result.speedup_vs_torch
    out["vs torch"] = "-" if s is None else f"{s:.2f}x"
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
