"""Per-kernel benchmark of the inference path: every launch of one TritonGenerator forward.

    python bench/bench_conv.py                     # paper preset, 64x64, batch 1 and 256, fp16
    python bench/bench_conv.py --batch 8 --dtype bf16
    python bench/bench_conv.py --smoke             # no GPU: interpreter, micro config

For each launch (in forward order): what it computes, and two times with a stated L2 policy:

- ms_in_graph: its device time inside the CUDA graph replay of the whole plan, from
  torch.profiler's kernel records over --reps replays (median): warm L2 and the real input of
  each kernel (the previous one's output), as the generator runs. These sum to about the
  replay's time (printed beside the sum), unlike isolated timings.
- ms_cold (p50 / p20 / p80): the launch alone through triton.testing.do_bench, which clears
  the L2 before every repetition (cold L2: weights and inputs come from HBM).

Then TFLOP/s (2 * multiply-adds / ms_in_graph) and its fraction of a measured ceiling (a large
fp16/bf16 torch.matmul on the same device), GB/s over the bytes it must move (weights + inputs
read once + outputs written once), and cuDNN's time for the bare convolution of the same shape
(F.conv2d, channels_last, no epilogue, cudnn.benchmark on) under do_bench's cold-L2 policy,
beside ms_cold. The config each conv ran (the tuning table's) is in the row. Rows are appended
to bench/results/conv.csv with device, versions and git commit. Without CUDA: exit 2, except
--smoke.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench_generator import ROOT, build_generator  # noqa: E402

from s2i_fast.bench.harness import append_csv, context  # noqa: E402

DEFAULT_CSV = ROOT / "bench" / "results" / "conv.csv"
FIELDS = ["timestamp", "device", "torch", "triton", "git_commit", "load_avg_1m", "preset",
          "batch", "dtype", "index", "kernel", "shape", "config", "ms_in_graph", "ms_cold",
          "ms_cold_p20", "ms_cold_p80", "tflops", "frac_ceiling", "gbps", "cudnn_ms_cold",
          "ceiling_tflops", "replay_ms"]
EPI_NAMES = {0: "conv", 1: "gate", 2: "z+combine"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--resolution", type=int, default=64, choices=[64, 128, 256])
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", default="1,256")
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    p.add_argument("--ckpt", default=None)
    p.add_argument("--csv", default=None, help=f"default {DEFAULT_CSV} (--smoke: none)")
    p.add_argument("--reps", type=int, default=20, help="profiled graph replays")
    p.add_argument("--smoke", action="store_true")
    return p.parse_args(argv)


def describe(rec: tuple) -> tuple[str, str, float, float]:
    """(kernel, shape text, multiply-adds, bytes moved) of one recorded launch."""
    kind, args, meta = rec[0], rec[1], rec[2]
    if kind == "pyramid":
        b, r = args[2], meta["R"]
        return "pyramid", f"B{b} R{r}", 0.0, b * r * r * 4 * 1.5
    if kind == "noise_fc":
        noise, w = args[0], args[1]
        return "noise_fc", f"B{noise.shape[0]} {w.shape[0]}->{w.shape[1]}", float(
            noise.shape[0] * w.numel()), float(w.numel() * w.element_size())
    m, n = rec[3], rec[4]
    c1, c2, c3, ks = meta["C1"], meta["C2"], meta["C3"], meta["KS"]
    macs = m * n * (ks * ks * (c1 + c2) + c3)
    a = conv_args(rec)
    w = a["w_ptr"]
    es = w.element_size()
    hin, win, ho, wo = a["Hin"], a["Win"], a["Ho"], a["Wo"]
    batch = m // (ho * wo)
    bytes_ = (w.numel() + batch * hin * win * (c1 * (4 if meta["UP"] == 2 else 1) + c2)
              + m * n * (2 if meta["EPI"] else 1) + m * c3) * es
    up = {0: "", 1: " up-nearest", 2: " up-shuffle"}[meta["UP"]]
    shape = (f"{EPI_NAMES[meta['EPI']]} {ho}x{wo} {c1}+{c2}"
             f"{f'+{c3}' if c3 else ''}->{n} s{meta['STRIDE']}{up}")
    return "conv", shape, float(macs), float(bytes_)


def conv_args(rec: tuple) -> dict:
    """The recorded positional arguments of a conv launch by the kernel's parameter names."""
    from s2i_fast.kernels import conv_igemm

    names = [n for n in conv_igemm._conv_kernel.arg_names if n not in rec[2]]
    return dict(zip(names, rec[1], strict=False))


def cudnn_ms(rec: tuple, dtype, torch, do_bench) -> float:  # noqa: ANN001
    """Time of the bare F.conv2d with the same shape (channels_last), no epilogue."""
    import torch.nn.functional as F

    meta, m = rec[2], rec[3]
    a = conv_args(rec)
    ho, wo = a["Ho"], a["Wo"]
    b = m // (ho * wo)
    cin = meta["C1"] + meta["C2"]
    hin, win = (ho, wo) if meta["UP"] else (a["Hin"], a["Win"])
    x = torch.randn(b, cin, hin, win, device="cuda", dtype=dtype).to(
        memory_format=torch.channels_last)
    w = torch.randn(rec[4], cin, meta["KS"], meta["KS"], device="cuda", dtype=dtype).to(
        memory_format=torch.channels_last)
    return do_bench(lambda: F.conv2d(x, w, stride=meta["STRIDE"], padding=meta["KS"] // 2))


def times_in_graph(tg, batch: int, reps: int, torch) -> tuple[list[float] | None, float]:  # noqa: ANN001
    """(median device ms of each launch inside the plan's graph replay, replay ms); None
    when the profiler does not see one kernel record per launch."""
    from torch.profiler import ProfilerActivity, profile

    n = len(tg.plans[batch].ops)
    tg.replay(batch)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        tg.replay(batch)
    end.record()
    end.synchronize()
    replay_ms = start.elapsed_time(end) / reps
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            tg.replay(batch)
        torch.cuda.synchronize()
    kernels = sorted((e for e in prof.events() if str(getattr(e, "device_type", "")).endswith(
        "CUDA") and not e.name.lower().startswith(("memcpy", "memset"))),
        key=lambda e: e.time_range.start)
    if len(kernels) != n * reps:
        return None, replay_ms
    per = [sorted(kernels[r * n + i].time_range.elapsed_us() / 1e3 for r in range(reps))
           for i in range(n)]
    return [p[len(p) // 2] for p in per], replay_ms


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        print("bench_conv: no CUDA device; this benchmark needs a GPU (--smoke checks the "
              "script on the CPU)", file=sys.stderr)
        return 2
    from triton.testing import do_bench

    from s2i_fast.kernels import conv_igemm
    from s2i_fast.kernels.inference import TritonGenerator

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.smoke:
        dtype, batches = torch.float32, [1]
    else:
        batches = [int(b) for b in args.batch.split(",")]
        torch.backends.cudnn.benchmark = True  # cuDNN's baseline with its fastest algorithms
    gen = build_generator(args, torch)
    device = "cuda" if cuda else "cpu"
    tg = TritonGenerator.from_generator(gen, dtype=dtype, device=device)
    if cuda:
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        ceiling = 2 * n**3 / do_bench(lambda: a @ a) / 1e9  # TFLOP/s
    else:
        ceiling = float("nan")
    ctx = context(device)
    meta = dict(ctx, preset="micro" if args.smoke else gen.cfg.preset,
                dtype=args.dtype if not args.smoke else "fp32", ceiling_tflops=round(ceiling, 1))
    print(f"# {ctx['device']} | torch {ctx['torch']} | triton {ctx['triton']} | commit "
          f"{ctx['git_commit']} | matmul ceiling {ceiling:.1f} TFLOP/s ({meta['dtype']})")
    tg.prepare(batches)  # compiled in parallel, captured
    rows = []
    for b in batches:
        sk, lab, nz, _ = tg.static_io(b)
        sk.uniform_(-1, 1)
        nz.normal_()
        ops = tg.plans[b].ops
        tg.replay(b)
        conv_igemm.RECORDER = []
        try:
            for op in ops:
                op()
            recs = list(conv_igemm.RECORDER)
        finally:
            conv_igemm.RECORDER = None
        if cuda:
            in_graph, replay_ms = times_in_graph(tg, b, args.reps, torch)
        else:
            in_graph, replay_ms = None, float("nan")
        total = 0.0
        print(f"\n## batch {b}: {len(ops)} launches, graph replay {replay_ms:.4f} ms")
        print(f"{'#':>3s} {'kernel':8s} {'shape':44s} {'in graph':>9s} {'cold':>8s} "
              f"{'TFLOP/s':>8s} {'%ceil':>6s} {'GB/s':>7s} {'cuDNN':>8s}")
        for i, (op, rec) in enumerate(zip(ops, recs, strict=True)):
            kernel, shape, macs, nbytes = describe(rec)
            if cuda:
                p50, p20, p80 = do_bench(op, quantiles=[0.5, 0.2, 0.8])
                ref = cudnn_ms(rec, dtype, torch, do_bench) if kernel == "conv" else float("nan")
            else:
                t0 = time.perf_counter()
                op()
                p50 = p20 = p80 = (time.perf_counter() - t0) * 1e3
                ref = float("nan")
            seq = in_graph[i] if in_graph else p50
            total += seq
            tflops = 2 * macs / seq / 1e9
            gbps = nbytes / seq / 1e6
            cfg = rec[6] if kernel == "conv" else None
            print(f"{i:3d} {kernel:8s} {shape:44s} {seq:9.4f} {p50:8.4f} {tflops:8.2f} "
                  f"{100 * tflops / ceiling:6.1f} {gbps:7.1f} {ref:8.4f}")
            rows.append(dict(meta, batch=b, index=i, kernel=kernel, shape=shape,
                             config="" if cfg is None else
                             f"{cfg.BM}x{cfg.BN}x{cfg.BK} w{cfg.num_warps} s{cfg.num_stages} "
                             f"split{cfg.SPLIT}",
                             ms_in_graph="" if not in_graph else round(seq, 5),
                             ms_cold=round(p50, 5), ms_cold_p20=round(p20, 5),
                             ms_cold_p80=round(p80, 5), tflops=round(tflops, 2),
                             frac_ceiling=round(tflops / ceiling, 3), gbps=round(gbps, 1),
                             cudnn_ms_cold=round(ref, 5), replay_ms=round(replay_ms, 5)))
        what = "in-graph kernel times" if in_graph else "isolated times"
        print(f"sum of {what}: {total:.4f} ms; graph replay {replay_ms:.4f} ms (batch {b})")
    out = Path(args.csv) if args.csv else (None if args.smoke else DEFAULT_CSV)
    if out is not None:
        append_csv(out, [{k: r.get(k, "") for k in FIELDS} for r in rows])
        print(f"# appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
