"""Compile every inference-kernel variant a generator uses for a GPU target, without a GPU.

    python -m s2i_fast.kernels.compile_check --preset paper --dtype fp16 --batch 1 --arch 90

Traces one forward of TritonGenerator (launches recorded, not run), then compiles each distinct
kernel specialisation with Triton's real compiler down to a cubin for sm_<arch> (ptxas ships
with triton), once per autotune config that survives pruning, and checks each fits the shared
memory of the device (227 KiB on an H100). It catches what the CPU interpreter cannot: type and
layout errors in the GPU lowering, tl.dot shape rules, shared-memory overflow. It does not run
anything: numerics are the interpreter tests' and the GPU tests' job. Needs TRITON_INTERPRET
unset (the interpreter replaces the kernels at import).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

SMEM_LIMIT = {90: 232448, 100: 232448, 80: 166912, 89: 101376}  # bytes per block (opt-in max)
_PTR = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32",
        torch.int64: "*i64", torch.int32: "*i32"}


def trace_launches(gen: torch.nn.Module, dtype: torch.dtype, batch: int) -> list[tuple]:
    """Record every launch of one TritonGenerator forward (CPU tensors, nothing runs)."""
    from s2i_fast.kernels import conv_igemm
    from s2i_fast.kernels.inference import TritonGenerator

    tg = TritonGenerator._fold_generator(gen.eval(), dtype, torch.device("cpu"), False)
    conv_igemm.RECORDER = []
    try:
        plan = tg._build(batch)
        for op in plan.ops:
            op()
        return list(conv_igemm.RECORDER)
    finally:
        conv_igemm.RECORDER = None


def _signature(fn, args: list, meta: dict) -> dict[str, str]:  # noqa: ANN001
    sig = {}
    names = [n for n in fn.arg_names if n not in meta]
    for name, a in zip(names, args, strict=False):
        if isinstance(a, torch.Tensor):
            sig[name] = _PTR[a.dtype]
        elif isinstance(a, float):
            sig[name] = "fp32"
        else:
            sig[name] = "i64" if abs(int(a)) >= 2**31 else "i32"
    for name in meta:
        sig[name] = "constexpr"
    return sig


def compile_all(records: list[tuple], arch: int = 90, all_configs: bool = False,
                progress: bool = True) -> list[dict]:
    """Compile each distinct (kernel, signature, constexprs, config); one row per compile."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from s2i_fast.kernels import conv_igemm, infer_aux

    if type(conv_igemm._conv_kernel).__name__ == "InterpretedFunction":
        raise RuntimeError("compile_check needs TRITON_INTERPRET unset")
    target = GPUTarget("cuda", arch, 32)
    jobs, seen = [], set()
    for rec in records:
        kind, args, meta = rec[0], rec[1], rec[2]
        if kind == "conv":
            fn = conv_igemm._conv_kernel
            m, n = rec[3], rec[4]
            cfgs = [dict(BM=bm, BN=bn, BK=bk, SPLIT=sp, num_warps=w, num_stages=s)
                    for bm, bn, bk, w, s, sp in conv_igemm._GPU_CONFIGS
                    if conv_igemm.config_fits(bm, bn, m, n, sp, meta["KS"], bk, meta["C1"])]
            if not cfgs:  # what _prune falls back to
                bm, bn, bk, w, s, sp = next(c for c in conv_igemm._GPU_CONFIGS if c[5] == 1)
                cfgs = [dict(BM=bm, BN=bn, BK=bk, SPLIT=sp, num_warps=w, num_stages=s)]
            if not all_configs:  # smallest and largest tile, and the largest split-K
                plain = sorted((c for c in cfgs if c["SPLIT"] == 1),
                               key=lambda c: c["BM"] * c["BN"])
                split = [c for c in cfgs if c["SPLIT"] > 1]
                cfgs = [c for c in cfgs if plain and c in (plain[0], plain[-1])]
                cfgs += split[-1:]
        else:
            fn = infer_aux._pyramid_kernel if kind == "pyramid" else infer_aux._noise_fc_kernel
            cfgs = [dict(num_warps=4, num_stages=3)]
        for cfg in cfgs:
            consts = dict(meta)
            consts.update({k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")})
            sig = _signature(fn, args, consts)
            key = (fn.__name__, tuple(sorted(sig.items())), tuple(sorted(consts.items())),
                   cfg.get("num_warps"), cfg.get("num_stages"))
            if key not in seen:
                seen.add(key)
                jobs.append((fn, sig, consts, cfg))
    rows = []
    for i, (fn, sig, consts, cfg) in enumerate(jobs):
        t0 = time.time()
        opts = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
        try:
            k = triton.compile(ASTSource(fn, sig, consts), target=target, options=opts)
            shared, err = int(k.metadata.shared), None
        except Exception as e:  # noqa: BLE001  (report every failure, then fail)
            shared, err = -1, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        limit = SMEM_LIMIT.get(arch, 232448)
        if err is None and shared > limit:
            err = f"shared memory {shared} B > {limit} B"
        short = {k: v for k, v in consts.items() if k in (
            "C1", "C2", "C3", "N", "EPI", "UP", "STRIDE", "BM", "BN", "BK", "SPLIT", "R", "NC")}
        rows.append(dict(kernel=fn.__name__, consts=short, cfg=opts, shared=shared, error=err,
                         seconds=round(time.time() - t0, 2)))
        if progress:
            status = "ok" if err is None else f"FAIL {err}"
            print(f"[{i + 1}/{len(jobs)}] {fn.__name__} {short} {opts} smem={shared} {status}",
                  flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--base", type=int, default=None, help="override the preset's width")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--stem", default="label", choices=["label", "sketch"])
    p.add_argument("--upsample", default="nearest", choices=["nearest", "pixelshuffle"])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--all-configs", action="store_true",
                   help="every pruned autotune config (default: smallest and largest tile)")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("compile_check: unset TRITON_INTERPRET first", file=sys.stderr)
        return 2
    from s2i_fast.config import ModelConfig
    from s2i_fast.model.networks import Generator

    over = dict(resolution=a.resolution, stem=a.stem, upsample=a.upsample)
    cfg = ModelConfig.from_preset(a.preset, **over)
    if a.base:
        cfg.base = a.base
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype]
    records = trace_launches(Generator(cfg), dtype, a.batch)
    rows = compile_all(records, a.arch, a.all_configs)
    bad = [r for r in rows if r["error"]]
    print(f"{len(records)} launches, {len(rows)} compiles for sm_{a.arch}, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
