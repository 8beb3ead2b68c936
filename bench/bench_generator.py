"""Whole-generator inference benchmark: eager fp32, eager fp16 channels_last, torch.compile
(--compile-mode: max-autotune by default) and the Triton engine (TritonGenerator, CUDA graph).

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
discarded, each call timed with CUDA events around it (the harness's time_calls), p50 / p99
latency, images/s at p50, peak memory (peak_mem_mb: torch.cuda.max_memory_allocated over the
batch's warm-up and timing minus what was allocated before the backend was built, so weights,
plan buffers and the split-K workspace count: the triton rows hold the plans of every timed
batch, prepared together; timed_peak_mb: above what was allocated when
timing began, i.e. transient memory alone; workspace_mb: the plan's split-K workspace; no
autotuning buffers exist: configs come from the shipped table), speed-up over eager fp32 at
that batch, and launches: GPU kernels of one call counted by torch.profiler (measured, graph
replays included). cuDNN runs with cudnn.benchmark on, fp32 with TF32 off. build_s: building
the backend and its first call (compilation included). Rows are appended to
bench/results/generator.csv with the device, versions, load and git commit; a table is
printed last. A requested backend that fails is an error (exit 1), never a skip. Without
CUDA: exit 2, except --smoke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import sys
import time
from pathlib import Path

from s2i_fast.bench.harness import (
    PeakMemory,
    append_csv,
    context,
    count_kernels,
    percentile,
    print_table,
    time_calls,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CSV = ROOT / "bench" / "results" / "generator.csv"
BACKENDS = ("torch", "torch-compile", "triton")


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
    p.add_argument("--compile-mode", default="max-autotune",
                   choices=["max-autotune", "reduce-overhead", "default"],
                   help="torch.compile mode of the torch-compile backend")
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


class _TritonCall:
    """The triton backend as a caller sees it (mode call) or its graph replay alone."""

    def __init__(self, tg, replay_only: bool) -> None:  # noqa: ANN001
        self.tg, self.replay_only = tg, replay_only
        self.filled: dict[int, tuple] = {}

    def __call__(self, s, l, n):  # noqa: ANN001, ANN204, E741
        if not self.replay_only:
            return self.tg(s, l, n)
        b = s.shape[0]
        if self.filled.get(b) != (s.data_ptr(), l.data_ptr(), n.data_ptr()):
            for buf, x in zip(self.tg.static_io(b)[:3], (s, l, n), strict=True):
                buf.copy_(x)  # new inputs: written into the static buffers once
            self.filled[b] = (s.data_ptr(), l.data_ptr(), n.data_ptr())
        return self.tg.replay(b)


def make_backend(name: str, mode: str, gen, dtype, device: str, torch,  # noqa: ANN001, ANN201
                 args: argparse.Namespace | None = None):
    """A callable (sketch, label, noise) -> [B, 3, R, R] and its launches per forward (or '')."""
    import copy

    if mode == "baseline":  # eager fp32, TF32 off
        g = copy.deepcopy(gen).to(device).float()
        return (lambda s, l, n: g(s, l, n)), ""
    if name in ("torch", "torch-compile"):
        g = copy.deepcopy(gen).to(device).to(dtype).to(memory_format=torch.channels_last)
        if name == "torch":
            return (lambda s, l, n: g(s.to(dtype), l, n.to(dtype)).float()), ""
        # max-autotune = Inductor's GEMM/conv autotuning + CUDA graphs; reduce-overhead = CUDA
        # graphs alone (compiles in a fraction of the time); one static graph per batch
        mode_ = getattr(args, "compile_mode", "max-autotune")
        compiled = torch.compile(g, mode=mode_, fullgraph=True, dynamic=False)
        return (lambda s, l, n: compiled(s.to(dtype), l, n.to(dtype)).float().clone()), ""
    if name == "triton":
        from s2i_fast.kernels.inference import TritonGenerator

        tg = TritonGenerator.from_generator(gen, dtype=dtype, device=device)
        return _TritonCall(tg, replay_only=mode == "replay"), tg.launches_per_forward
    raise SystemExit(f"Error: unknown backend {name!r}; choose from {', '.join(BACKENDS)}")


def inputs(gen, batch: int, device: str, torch):  # noqa: ANN001, ANN201
    g = torch.Generator().manual_seed(batch)
    r = gen.cfg.resolution
    sketch = torch.rand(batch, 1, r, r, generator=g) * 2 - 1
    label = torch.randint(0, gen.cfg.num_classes, (batch,), generator=g)
    noise = torch.randn(batch, gen.cfg.noise_dim, generator=g)
    return sketch.to(device), label.to(device), noise.to(device)


def measured_launches(name: str, fn, x: tuple, device: str) -> int | str:  # noqa: ANN001
    """Kernels one call launches: torch.profiler on CUDA (graph replays included); under the
    interpreter the Triton launches the plan issues (recorded, not run); '' otherwise."""
    if device == "cuda":
        return count_kernels(lambda: fn(*x), device)
    if name != "triton":
        return ""
    from s2i_fast.kernels import conv_igemm

    conv_igemm.RECORDER = []
    try:
        fn(*x)
        return len(conv_igemm.RECORDER)
    finally:
        conv_igemm.RECORDER = None


def setup_cuda(torch) -> None:  # noqa: ANN001
    """fp32 references in IEEE fp32 (TF32 off), cuDNN picks its fastest algorithms."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True


def time_variants(args: argparse.Namespace, gen, variants_: list[tuple[str, str]],
                  batches: list[int], dtype, device: str, torch, meta: dict,
                  deadline: float | None = None) -> list[dict]:  # noqa: ANN001
    """Rows for each (backend, mode) x batch (see the module doc). A variant that fails
    raises; a variant left when ``deadline`` (time.monotonic()) has passed gets a row saying
    it was skipped for the time budget."""
    dtype_names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
    cuda = device == "cuda"
    ref = make_backend("torch", "baseline", gen, torch.float32, device, torch)[0]
    rows, eager_p50 = [], {}
    with torch.inference_mode():
        for name, mode in variants_:
            precision = "fp32" if mode == "baseline" else dtype_names[dtype]
            if deadline is not None and time.monotonic() > deadline:
                rows += [dict(meta, backend=name, mode=mode, precision=precision, batch=b,
                              note="skipped: time budget") for b in batches]
                continue
            if cuda:  # peak memory is reported above what was allocated before the backend
                gc.collect()
                torch.cuda.empty_cache()
                base_mem = torch.cuda.memory_allocated()
            t_build = time.perf_counter()
            fn, _ = make_backend(name, mode, gen, dtype, device, torch, args)
            check = inputs(gen, min(8, max(batches)), device, torch)
            if name == "triton" and cuda:  # every batch's kernels compiled at once, captured
                fn.tg.prepare(sorted({*batches, check[0].shape[0]}))
            want, got = ref(*check).float(), fn(*check).float()
            build_s = time.perf_counter() - t_build  # includes the first (compiling) call
            rel = ((got - want).norm() / want.norm()).item()
            mx = (got - want).abs().max().item()
            print(f"[check] {name:13s} {mode:8s} rel L2 err {rel:.2e}  max abs err {mx:.2e}  "
                  f"(built and first call in {build_s:.1f} s)", flush=True)
            if not rel <= args.max_rel:
                raise RuntimeError(f"{name} {mode}: relative error {rel:.3e} > --max-rel "
                                   f"{args.max_rel}")
            for b in batches:
                x = inputs(gen, b, device, torch)
                with PeakMemory(device) as mem:
                    t = time_calls(lambda x=x, fn=fn: fn(*x), device, args.warmup, args.iters)
                p50, p99 = percentile(t, 50), percentile(t, 99)
                if mode == "baseline":
                    eager_p50[b] = p50
                peak = ((torch.cuda.max_memory_allocated() - base_mem) / 2**20 if cuda
                        else float("nan"))
                tg = getattr(fn, "tg", None)
                ws_mb = (tg.plans[b].workspace.nbytes / 2**20 if tg is not None
                         and b in tg.plans else "")
                rows.append(dict(meta, timestamp=dt.datetime.now(dt.timezone.utc).isoformat(
                    timespec="seconds"), backend=name, mode=mode, precision=precision,
                    batch=b, p50_ms=round(p50, 4), p99_ms=round(p99, 4),
                    images_per_s=round(b / p50 * 1e3, 1), peak_mem_mb=round(peak, 1),
                    timed_peak_mb=round(mem.peak_mb, 1) if cuda else "",
                    workspace_mb=ws_mb if ws_mb == "" else round(ws_mb, 2),
                    speedup_vs_torch_fp32=round(eager_p50[b] / p50, 2) if b in eager_p50
                    else "", rel_err=f"{rel:.2e}", max_abs_err=f"{mx:.2e}",
                    launches=measured_launches(name, fn, x, device), iters=args.iters,
                    build_s=round(build_s, 1)))
                print(f"  {name:13s} {mode:8s} batch {b:4d}: p50 {p50:9.4f} ms  "
                      f"p99 {p99:9.4f} ms  launches {rows[-1]['launches']}", flush=True)
            fn = None  # free the backend before the next one is built
    return rows


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
    gen = build_generator(args, torch)
    ctx = context(device)
    if not cuda:
        ctx["device"] += " (triton interpreter)"
    meta = dict(ctx, preset="micro" if args.smoke else gen.cfg.preset, base=gen.cfg.base,
                resolution=gen.cfg.resolution, compile_mode=args.compile_mode)
    print(f"# {ctx['device']} | torch {ctx['torch']} | triton {ctx['triton']} | CUDA "
          f"{ctx.get('cuda', '')} | commit {ctx['git_commit']} | base {gen.cfg.base} "
          f"{gen.cfg.resolution}x{gen.cfg.resolution}", flush=True)
    if cuda:
        setup_cuda(torch)
    try:
        rows = time_variants(args, gen, variants(backends), batches, dtype, device, torch, meta)
    except Exception as e:  # a requested backend that fails is an error
        print(f"Error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    out = Path(args.csv) if args.csv else (None if args.smoke else DEFAULT_CSV)
    if out is not None:
        append_csv(out, rows)
        print(f"# appended {len(rows)} rows to {out}")
    print_table(rows, TABLE)
    return 0


TABLE = ["backend", "precision", "mode", "batch", "p50_ms", "p99_ms", "images_per_s",
         "peak_mem_mb", "workspace_mb", "speedup_vs_torch_fp32", "rel_err", "launches"]


if __name__ == "__main__":
    sys.exit(main())
