"""Compile every inference-kernel variant a generator uses for a GPU target, without a GPU.

    python -m s2i_fast.kernels.compile_check --preset paper --dtype fp16 --batch 1,8,64,256

Traces one forward of TritonGenerator per batch size (launches recorded, not run), then
compiles each distinct kernel specialisation with Triton's real compiler down to a cubin for
sm_<arch> (ptxas ships with triton), with the config each conv runs on sm_90 (the tuning
table, kernels/conv_tuning.py: split-K at batch 1, 128x128 tiles at batch >= 64), or with
every tune candidate (--all-configs), over --jobs processes, and checks each fits the shared
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
    plan = tg._build(batch)
    conv_igemm.RECORDER = []
    try:
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


def _jobs(records: list[tuple], all_configs: bool) -> list[tuple]:
    """(kernel name, signature, constexprs, options) of each distinct specialisation."""
    from s2i_fast.kernels import conv_igemm
    from s2i_fast.kernels.conv_tuning import candidates

    jobs, seen = [], set()
    for rec in records:
        kind, args, meta = rec[0], rec[1], rec[2]
        if kind == "conv":
            name, fn = "_conv_kernel", conv_igemm._conv_kernel
            cfgs = [rec[6]]  # what runs on sm_90
            if all_configs:
                m, n = rec[3], rec[4]
                cfgs += candidates(m, n, meta["KS"], max(meta["C1"], meta["C3"]),
                                   bool(meta["IEEE"]))
            cfgs = [c.as_dict() for c in dict.fromkeys(cfgs)]
        else:
            name = "_pyramid_kernel" if kind == "pyramid" else "_noise_fc_kernel"
            fn = getattr(_infer_aux(), name)
            cfgs = [dict(num_warps=4, num_stages=3)]
        for cfg in cfgs:
            consts = dict(meta)
            consts.update({k: v for k, v in cfg.items() if k not in ("num_warps", "num_stages")})
            sig = _signature(fn, args, consts)
            opts = {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}
            key = (name, tuple(sorted(sig.items())), tuple(sorted(consts.items())),
                   tuple(sorted(opts.items())))
            if key not in seen:
                seen.add(key)
                jobs.append((name, sig, consts, opts))
    return jobs


def _infer_aux():  # noqa: ANN202
    from s2i_fast.kernels import infer_aux

    return infer_aux


def _compile_job(job: tuple, arch: int) -> dict:
    """Compile one specialisation for sm_<arch>; a row with its shared memory or its error."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from s2i_fast.kernels import conv_igemm

    name, sig, consts, opts = job
    fn = conv_igemm._conv_kernel if name == "_conv_kernel" else getattr(_infer_aux(), name)
    t0 = time.time()
    try:
        k = triton.compile(ASTSource(fn, sig, consts), target=GPUTarget("cuda", arch, 32),
                           options=opts)
        shared, err = int(k.metadata.shared), None
    except Exception as e:  # noqa: BLE001  (report every failure, then fail)
        shared, err = -1, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    limit = SMEM_LIMIT.get(arch, 232448)
    if err is None and shared > limit:
        err = f"shared memory {shared} B > {limit} B"
    short = {k: v for k, v in consts.items() if k in (
        "C1", "C2", "C3", "N", "EPI", "UP", "STRIDE", "BM", "BN", "BK", "SPLIT", "R", "NC")}
    return dict(kernel=name, consts=short, cfg=opts, shared=shared, error=err,
                seconds=round(time.time() - t0, 2))


def compile_all(records: list[tuple], arch: int = 90, all_configs: bool = False,
                progress: bool = True, jobs: int = 1) -> list[dict]:
    """Compile each distinct (kernel, signature, constexprs, config); one row per compile,
    over ``jobs`` processes (forked: no CUDA is initialised here)."""
    from s2i_fast.kernels import conv_igemm

    if type(conv_igemm._conv_kernel).__name__ == "InterpretedFunction":
        raise RuntimeError("compile_check needs TRITON_INTERPRET unset")
    todo = _jobs(records, all_configs)
    rows = []

    def show(i: int, row: dict) -> None:
        if progress:
            status = "ok" if row["error"] is None else f"FAIL {row['error']}"
            print(f"[{i + 1}/{len(todo)}] {row['kernel']} {row['consts']} {row['cfg']} "
                  f"smem={row['shared']} {status} ({row['seconds']}s)", flush=True)

    if jobs <= 1 or len(todo) <= 1:
        for i, job in enumerate(todo):
            rows.append(_compile_job(job, arch))
            show(i, rows[-1])
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("fork")) as pool:
        for i, row in enumerate(pool.map(_compile_job, todo, [arch] * len(todo))):
            rows.append(row)
            show(i, row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--base", type=int, default=None, help="override the preset's width")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--stem", default="label", choices=["label", "sketch"])
    p.add_argument("--upsample", default="nearest", choices=["nearest", "pixelshuffle"])
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--batch", default="1,8,64,256", help="comma-separated batch sizes")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--all-configs", action="store_true",
                   help="every tune candidate too (default: the config each launch runs)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compile processes")
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
    gen = Generator(cfg)
    batches = [int(b) for b in a.batch.split(",")]
    records = [r for b in batches for r in trace_launches(gen, dtype, b)]
    t0 = time.time()
    rows = compile_all(records, a.arch, a.all_configs, jobs=a.jobs)
    bad = [r for r in rows if r["error"]]
    print(f"{len(records)} launches (batch {a.batch}), {len(rows)} compiles for sm_{a.arch} "
          f"in {time.time() - t0:.0f} s on {a.jobs} processes, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
