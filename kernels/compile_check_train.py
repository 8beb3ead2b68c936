"""Compile every training-kernel specialisation for a GPU target, without a GPU.

    python -m s2i_fast.kernels.compile_check_train [--arch 90] [--quick]

Builds each @triton.jit kernel of gate.py, norm_act_kernels.py, batch_stats.py, bn_tail.py with
Triton's real compiler down to a cubin for sm_<arch> (ptxas ships with triton), for every input
dtype (fp32, bf16, fp16; scale/shift fp32 as the norms produce them), the COMBINE/SHORT_NORM
variants and the row-block sizes of _triton_utils.row_block (planes of 4x4 up to 64x64). It
catches what the CPU interpreter cannot (type errors in the GPU lowering, loop-carried dtype
mismatches, shared memory); numerics are the interpreter tests' job. Needs TRITON_INTERPRET
unset.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

_PTR = {"fp32": "*fp32", "bf16": "*bf16", "fp16": "*fp16"}
_FP32_ARGS = {"mean_ptr", "m2_ptr", "gmean_ptr", "gvar_ptr", "scale_ptr", "shift_ptr",
              "dscale_ptr", "dshift_ptr", "sscale_ptr", "sshift_ptr", "dsscale_ptr",
              "dsshift_ptr", "coef_ptr", "sums_ptr"}  # fmt: skip
_FLOAT_ARGS = {"slope", "inv_n", "hw"}


def jobs(quick: bool = False) -> list[tuple]:
    """(kernel, signature, constexprs) for every specialisation the launchers can produce."""
    import triton.language as tl

    gate = importlib.import_module("s2i_fast.kernels.gate")
    nak = importlib.import_module("s2i_fast.kernels.norm_act_kernels")
    dtypes = ["bf16"] if quick else ["fp32", "bf16", "fp16"]
    planes = [16, 4096] if quick else [16, 64, 256, 1024, 4096]  # 4x4 .. 64x64
    flat = [gate._gate_mask_fwd_kernel, gate._gate_mask_bwd_kernel,
            gate._gated_combine_fwd_kernel, gate._gated_combine_bwd_kernel]  # fmt: skip
    bst = importlib.import_module("s2i_fast.kernels.batch_stats")
    bnt = importlib.import_module("s2i_fast.kernels.bn_tail")
    rows = [(bst._row_stats_kernel, None), (bst._stats_bwd_kernel, None),
            (bnt._bn_tail_reduce_kernel, None), (bnt._bn_tail_grad_kernel, None)]
    merge = bst._stats_merge_kernel
    rows += [(k, c) for k in (nak._norm_act_fwd_kernel, nak._norm_act_bwd_kernel)
             for c in ((False, False), (True, False), (True, True))]  # (COMBINE, SHORT_NORM)
    out = []
    for dt in dtypes:

        def sig(fn, consts, dt=dt):
            s = {}
            for name in fn.arg_names:
                if name in consts:
                    s[name] = "constexpr"
                elif name.endswith("_ptr"):
                    s[name] = "*fp32" if name in _FP32_ARGS else _PTR[dt]
                else:
                    s[name] = "fp32" if name in _FLOAT_ARGS else "i32"
            if fn is merge:  # reads and writes only the fp32 statistics
                s.update({n: "*fp32" for n in s if n.endswith("_ptr")})
            return s

        for fn in flat:
            consts = {"CDT": tl.float32, "BLOCK": 1024}
            out.append((fn, sig(fn, consts), consts, 4))
        consts = {"CDT": tl.float32, "BLOCK_C": 128}
        out.append((merge, sig(merge, consts), consts, 4))
        for hw in planes:
            n_rows, block, warps = _row_block_gpu(hw)
            for fn, combine in rows:
                consts = {"CDT": tl.float32, "ROWS": n_rows, "BLOCK": block}
                if combine is not None:
                    consts["COMBINE"], consts["SHORT_NORM"] = combine
                out.append((fn, sig(fn, consts), consts, warps))
    return out


def _row_block_gpu(hw: int) -> tuple[int, int, int]:
    from s2i_fast.kernels import _triton_utils as tu

    saved = os.environ.pop("TRITON_INTERPRET", None)  # the GPU table, not the interpreter's
    try:
        return tu.row_block(hw)
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--quick", action="store_true", help="bf16 and two plane sizes only")
    a = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("compile_check_train: unset TRITON_INTERPRET first", file=sys.stderr)
        return 2
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", a.arch, 32)
    todo = jobs(a.quick)
    failed = 0
    for i, (fn, sig, consts, warps) in enumerate(todo):
        t0 = time.time()
        try:
            k = triton.compile(ASTSource(fn, sig, consts), target=target,
                               options={"num_warps": warps})  # fmt: skip
            status = f"ok smem={k.metadata.shared}"
        except Exception as e:  # noqa: BLE001  (report every failure, then fail)
            failed += 1
            status = f"FAIL {type(e).__name__}: {str(e).splitlines()[0][:300]}"
        shown = {k: v for k, v in consts.items() if k != "CDT"}
        ptr = next(v for n, v in sig.items() if n.endswith("_ptr") and n not in _FP32_ARGS)
        print(f"[{i + 1}/{len(todo)}] {fn.__name__} {ptr} {shown} warps={warps} "
              f"{status} ({time.time() - t0:.1f}s)", flush=True)  # fmt: skip
    print(f"{len(todo) - failed}/{len(todo)} specialisations compiled for sm_{a.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
