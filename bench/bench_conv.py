"""Per-kernel benchmark of the inference path: every launch of one TritonGenerator forward.

    python bench/bench_conv.py                     # paper preset, 64x64, batch 1 and 256, fp16
    python bench/bench_conv.py --batch 8 --dtype bf16
    python bench/bench_conv.py --smoke             # no GPU: interpreter, micro config

For each launch (in forward order): what it computes, median / p20 / p80 ms through
triton.testing.do_bench, TFLOP/s (2 * multiply-adds / time) and its fraction of a measured
ceiling (a large fp16/bf16 torch.matmul on the same device), GB/s over the bytes it must move
(weights + inputs read once + outputs written once), and cuDNN's time for the bare convolution
of the same shape (F.conv2d, channels_last, no epilogue) beside it. Rows are appended to
bench/results/conv.csv with device, versions and git commit. Without CUDA: exit 2, except
--smoke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

from bench_generator import ROOT, build_generator  # noqa: E402

from s2i_fast.bench.harness import append_csv, git_commit  # noqa: E402

DEFAULT_CSV = ROOT / "bench" / "results" / "conv.csv"
FIELDS = ["timestamp", "device", "torch", "triton", "git_commit", "preset", "batch", "dtype",
          "index", "kernel", "shape", "ms_p50", "ms_p20", "ms_p80", "tflops", "frac_ceiling",
          "gbps", "cudnn_ms", "ceiling_tflops"]
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
    import triton
    from triton.testing import do_bench

    from s2i_fast.kernels import conv_igemm
    from s2i_fast.kernels.inference import TritonGenerator

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.smoke:
        dtype, batches = torch.float32, [1]
    else:
        batches = [int(b) for b in args.batch.split(",")]
    gen = build_generator(args, torch)
    device = "cuda" if cuda else "cpu"
    tg = TritonGenerator.from_generator(gen, dtype=dtype, device=device, cuda_graph=False)
    if cuda:
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        ceiling = 2 * n**3 / do_bench(lambda: a @ a) / 1e9  # TFLOP/s
        dev_name = torch.cuda.get_device_name()
    else:
        ceiling, dev_name = float("nan"), "cpu (triton interpreter)"
    meta = dict(device=dev_name, torch=torch.__version__, triton=triton.__version__,
                git_commit=git_commit(), preset="micro" if args.smoke else gen.cfg.preset,
                dtype=args.dtype if not args.smoke else "fp32", ceiling_tflops=round(ceiling, 1))
    print(f"# {dev_name} | torch {meta['torch']} | triton {meta['triton']} | commit "
          f"{meta['git_commit']} | matmul ceiling {ceiling:.1f} TFLOP/s ({meta['dtype']})")
    rows = []
    for b in batches:
        sk = torch.rand(b, 1, gen.cfg.resolution, gen.cfg.resolution, device=device) * 2 - 1
        lab = torch.zeros(b, dtype=torch.int64, device=device)
        tg(sk, lab, torch.randn(b, gen.cfg.noise_dim, device=device))  # build, compile, tune
        ops = tg.plans[b].ops
        conv_igemm.RECORDER = []
        try:
            for op in ops:
                op()
            recs = list(conv_igemm.RECORDER)
        finally:
            conv_igemm.RECORDER = None
        total = 0.0
        print(f"\n## batch {b}: {len(ops)} launches")
        print(f"{'#':>3s} {'kernel':8s} {'shape':44s} {'ms':>8s} {'TFLOP/s':>8s} {'%ceil':>6s} "
              f"{'GB/s':>7s} {'cuDNN ms':>8s}")
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
            total += p50
            tflops = 2 * macs / p50 / 1e9
            gbps = nbytes / p50 / 1e6
            print(f"{i:3d} {kernel:8s} {shape:44s} {p50:8.4f} {tflops:8.2f} "
                  f"{100 * tflops / ceiling:6.1f} {gbps:7.1f} {ref:8.4f}")
            rows.append(dict(meta, timestamp=dt.datetime.now(dt.timezone.utc).isoformat(
                timespec="seconds"), batch=b, index=i, kernel=kernel, shape=shape,
                ms_p50=round(p50, 5), ms_p20=round(p20, 5), ms_p80=round(p80, 5),
                tflops=round(tflops, 2), frac_ceiling=round(tflops / ceiling, 3),
                gbps=round(gbps, 1), cudnn_ms=round(ref, 5)))
        print(f"sum of kernel medians: {total:.4f} ms (batch {b})")
    out = Path(args.csv) if args.csv else (None if args.smoke else DEFAULT_CSV)
    if out is not None:
        append_csv(out, [{k: r.get(k, "") for k in FIELDS} for r in rows])
        print(f"# appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
