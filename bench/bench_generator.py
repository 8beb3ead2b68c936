"""Whole-generator inference benchmark: eager fp32, eager fp16 channels_last, torch.compile
(max-autotune, CUDA graphs) and the Triton engine (TritonGenerator, one CUDA graph).

    python bench/bench_generator.py                      # paper preset, 64x64, batch 1 8 64 256
    python bench/bench_generator.py --batch 1 --backends triton,torch-compile --iters 500
    python bench/bench_generator.py --smoke              # no GPU: Triton path, interpreter, CPU

Backends have the Engine's names (torch, torch-compile, triton) and rows say their precision:
`torch` fp32 (TF32 off) is always measured as the baseline, the others run in --precision;
`torch` in that precision runs channels_last. The triton backend is timed twice: mode `call`
(input copies, graph replay, output clone: what a caller sees) and mode `replay` (the CUDA
graph on its static buffers alone).

Per backend: first a correctness check against eager fp32 on the same inputs (relative L2
error and max abs error printed; over --max-rel fails the run), then per batch: warm-up
discarded, each call timed with CUDA events around it (input copies, graph replay and output
included: what a caller of the backend sees), p50 / p99 latency, images/s at p50, peak memory
(torch.cuda.max_memory_allocated over that batch's warm-up and timing, minus what was
allocated before the backend was built: its weights, buffers and workspaces count),
speed-up over eager fp32 at that batch. Rows are appended to bench/results/generator.csv with
the device, versions and git commit; a table is printed last. A requested backend that fails
is an error (exit 1), never a skip. Without CUDA: exit 2, except --smoke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import sys
import time
from pathlib import Path

from s2i_fast.bench.harness import append_csv, git_commit, print_table

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT / "bench" / "results" / "generator.csv"
BACKENDS = ("torch", "torch-compile", "triton")
FIELDS = ["timestamp", "device", "torch", "triton", "cuda", "git_commit", "preset", "base",
          "resolution", "backend", "precision", "mode", "batch", "p50_ms", "p99_ms",
          "images_per_s", "peak_mem_mb", "speedup_vs_torch_fp32", "rel_err", "max_abs_err",
          "launches", "iters"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--resolution", type=int, default=64, choices=[64, 128, 256])
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", default="1,8,64,256", help="comma-separated batch sizes")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--precision", default="fp16", choices=["fp16", "bf16"],
                   help="precision of every row but the torch fp32 baseline")
    p.add_argument("--ckpt", default=None, help="generator checkpoint (default: random init)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--max-rel", type=float, default=2e-2,
                   help="largest relative L2 error vs eager fp32 that passes")
    p.add_argument("--csv", default=None, help=f"results file (default {DEFAULT_CSV}; "
                   "--smoke writes none unless given)")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, Triton interpreter, micro config, batch 1: proves the script runs")
    return p.parse_args(argv)


def build_generator(args: argparse.Namespace, torch):  # noqa: ANN001, ANN201
    from s2i_fast.config import ModelConfig
    from s2i_fast.model.networks import Generator

    if args.ckpt:
        from s2i_fast.checkpoint import load_generator

        gen, _, _ = load_generator(args.ckpt, "cpu", "ref")
        return gen.eval()
    if args.smoke:
        cfg = ModelConfig(resolution=64, base=2, num_classes=3, noise_channels=8)
    else:
        cfg = ModelConfig.from_preset(args.preset, resolution=args.resolution,
                                      num_classes=args.num_classes)
    torch.manual_seed(0)
    gen = Generator(cfg).eval()
    with torch.no_grad():  # non-trivial norm statistics, so the check exercises the folding
        for m in gen.modules():
            if hasattr(m, "running_var"):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return gen


def variants(backends: list[str]) -> list[tuple[str, str]]:
    """(backend, mode) rows to time, the torch baseline first."""
    out = [("torch", "baseline")]
    for b in backends:
        out.append((b, "call"))
        if b == "triton":
            out.append((b, "replay"))
    return out


def make_backend(name: str, mode: str, gen, dtype, device: str, torch):  # noqa: ANN001, ANN201
    """A callable (sketch, label, noise) -> [B, 3, R, R] and its launches per forward (or '')."""
    import copy

    if mode == "baseline":  # eager fp32, TF32 off
        g = copy.deepcopy(gen).to(device).float()
        return (lambda s, l, n: g(s, l, n)), ""
    if name in ("torch", "torch-compile"):
        g = copy.deepcopy(gen).to(device).to(dtype).to(memory_format=torch.channels_last)
        if name == "torch":
            return (lambda s, l, n: g(s.to(dtype), l, n.to(dtype)).float()), ""
        # max-autotune = Inductor's GEMM/conv autotuning + CUDA graphs; one static graph per batch
        compiled = torch.compile(g, mode="max-autotune", fullgraph=True, dynamic=False)
        return (lambda s, l, n: compiled(s.to(dtype), l, n.to(dtype)).float().clone()), ""
    if name == "triton":
        from s2i_fast.kernels.inference import TritonGenerator

        tg = TritonGenerator.from_generator(gen, dtype=dtype, device=device)
        if mode == "call":
            return tg, tg.launches_per_forward

        def replay(s, l, n):  # noqa: ANN001, ANN202, E741
            b = s.shape[0]
            if b not in tg.plans:  # first call: fill the static inputs once
                for buf, x in zip(tg.static_io(b)[:3], (s, l, n), strict=True):
                    buf.copy_(x)
            return tg.replay(b)

        return replay, tg.launches_per_forward
    raise SystemExit(f"Error: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def inputs(gen, batch: int, device: str, torch):  # noqa: ANN001, ANN201
    g = torch.Generator().manual_seed(batch)
    r = gen.cfg.resolution
    sketch = torch.rand(batch, 1, r, r, generator=g) * 2 - 1
    label = torch.randint(0, gen.cfg.num_classes, (batch,), generator=g)
    noise = torch.randn(batch, gen.cfg.noise_dim, generator=g)
    return sketch.to(device), label.to(device), noise.to(device)


def time_backend(fn, args: tuple, warmup: int, iters: int, cuda: bool, torch) -> list[float]:  # noqa: ANN001
    """Per-call latencies in ms (CUDA events on the GPU, perf_counter on the CPU)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    if cuda:
        torch.cuda.synchronize()
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bad = [b for b in args.backends.split(",") if b.strip() and b.strip() not in BACKENDS]
    if bad:
        print(f"Error: unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}",
              file=sys.stderr)
        return 1
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere
    import torch

    DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}  # noqa: N806
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("bench_generator: no CUDA device; this benchmark needs a GPU "
              "(run with --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    device = "cuda" if cuda else "cpu"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    batches = [int(b) for b in args.batch.split(",")]
    if args.smoke:
        backends, batches, args.warmup, args.iters = ["triton"], [1], 0, 1
        dtype = torch.float32
    import triton

    gen = build_generator(args, torch)
    dev_name = (torch.cuda.get_device_name() if cuda
                else f"cpu {platform.machine()} (triton interpreter)")
    meta = dict(device=dev_name, torch=torch.__version__, triton=triton.__version__,
                cuda=torch.version.cuda or "", git_commit=git_commit(),
                preset="micro" if args.smoke else gen.cfg.preset, base=gen.cfg.base,
                resolution=gen.cfg.resolution)
    print(f"# {dev_name} | torch {meta['torch']} | triton {meta['triton']} | CUDA {meta['cuda']}"
          f" | commit {meta['git_commit']} | base {gen.cfg.base} {gen.cfg.resolution}x"
          f"{gen.cfg.resolution}", flush=True)

    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 baseline is IEEE fp32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
    ref = make_backend("torch", "baseline", gen, torch.float32, device, torch)[0]
    rows, eager_p50 = [], {}
    with torch.inference_mode():
        for name, mode in variants(backends):
            try:
                if cuda:  # peak memory is reported above what was allocated before the backend
                    gc.collect()
                    torch.cuda.empty_cache()
                    base_mem = torch.cuda.memory_allocated()
                fn, launches = make_backend(name, mode, gen, dtype, device, torch)
                check = inputs(gen, min(8, max(batches)), device, torch)
                want, got = ref(*check).float(), fn(*check).float()
                rel = ((got - want).norm() / want.norm()).item()
                mx = (got - want).abs().max().item()
                print(f"[check] {name:13s} {mode:8s} rel L2 err {rel:.2e}  max abs err {mx:.2e}",
                      flush=True)
                if not rel <= args.max_rel:
                    raise RuntimeError(f"relative error {rel:.3e} > --max-rel {args.max_rel}")
                for b in batches:
                    x = inputs(gen, b, device, torch)
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    t = time_backend(fn, x, args.warmup, args.iters, cuda, torch)
                    p50, p99 = pct(t, 50), pct(t, 99)
                    if mode == "baseline":
                        eager_p50[b] = p50
                    peak = ((torch.cuda.max_memory_allocated() - base_mem) / 2**20 if cuda
                            else float("nan"))
                    rows.append(dict(meta, timestamp=dt.datetime.now(dt.timezone.utc).isoformat(
                        timespec="seconds"), backend=name, mode=mode,
                        precision="fp32" if mode == "baseline" else DTYPE_NAMES[dtype],
                        batch=b, p50_ms=round(p50, 4), p99_ms=round(p99, 4),
                        images_per_s=round(b / p50 * 1e3, 1), peak_mem_mb=round(peak, 1),
                        speedup_vs_torch_fp32=round(eager_p50[b] / p50, 2) if b in eager_p50
                        else "", rel_err=f"{rel:.2e}", max_abs_err=f"{mx:.2e}",
                        launches=launches, iters=args.iters))
                    print(f"  {name:13s} {mode:8s} batch {b:4d}: p50 {p50:9.4f} ms  "
                          f"p99 {p99:9.4f} ms", flush=True)
            except Exception as e:  # a requested backend that fails is an error
                print(f"Error: backend {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
                return 1
    out = Path(args.csv) if args.csv else (None if args.smoke else DEFAULT_CSV)
    if out is not None:
        append_csv(out, [{k: r.get(k, "") for k in FIELDS} for r in rows])
        print(f"# appended {len(rows)} rows to {out}")
    print_table(rows, ["backend", "precision", "mode", "batch", "p50_ms", "p99_ms",
                       "images_per_s", "peak_mem_mb", "speedup_vs_torch_fp32", "rel_err",
                       "launches"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
