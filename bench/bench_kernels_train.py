"""Per-kernel benchmark of the fused MRU training kernels against the torch reference.

    python bench/bench_kernels_train.py                  # CUDA: paper-preset MRU shapes
    python bench/bench_kernels_train.py --smoke          # CPU, Triton interpreter, tiny shapes

For each op (gate_mask, gated_combine, norm_act, norm_act_combine[_short], batch_stats,
bn_act_combine: the MRU tail in training, batch statistics and batch-norm backward included;
scale/shift stand for gamma/beta there), each level
of the paper preset at 64x64 (level r has C = 4096 / r channels at r x r; gate_mask reads the
decoder MRU inputs, 1.5x wider), batch 16 and 64, dtype bf16 and fp32, impl ref and triton,
mode forward / backward / full: milliseconds (median, p20, p80 via triton.testing.do_bench),
GB/s of the fused kernel's minimal traffic (the same byte count for both impls, so GB/s is an
effective bandwidth and the ratio is the speed-up) and its fraction of a measured device copy.
Rows are appended to bench/results/kernels_train.csv with the device, versions and git commit.
Fails (exit 2) without CUDA unless --smoke; with impl=triton nothing may fall back to torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2i_fast.bench.harness import (  # noqa: E402
    RESULTS,
    append_csv,
    bench_ms,
    context,
    copy_bandwidth_gbs,
    print_table,
    require_cuda,
    smoke_requested,
)

SMOKE = smoke_requested()

import os  # noqa: E402

import torch  # noqa: E402

os.environ["S2I_TRITON_STRICT"] = "1"  # a benchmark that asked for Triton must not fall back

from s2i_fast.kernels import _triton_utils as tu  # noqa: E402
from s2i_fast.kernels import mru_ops  # noqa: E402

OPS = ["gate_mask", "gated_combine", "norm_act", "norm_act_combine", "norm_act_combine_short",
       "batch_stats", "bn_act_combine"]  # fmt: skip
# minimal bytes per element of the [B, C, H, W] tensor, (forward, backward), in elements:
# reads + writes of full tensors; per-channel parameters and statistics are negligible
TRAFFIC = {
    "gate_mask": (3, 5),  # fwd: logits, x -> out;      bwd: g, logits, x -> dlogits, dx
    "gated_combine": (4, 7),  # fwd: logits, s, z -> y; bwd: g, logits, s, z -> dl, ds, dz
    "norm_act": (2, 3),  # fwd: z_pre -> z;                bwd: g, z_pre -> dz_pre
    "norm_act_combine": (4, 7),  # fwd: z_pre, logits, s -> y; bwd: g + 3 -> 3 grads
    "norm_act_combine_short": (4, 7),  # the same, reading the shortcut before its norm
    "batch_stats": (1, 2),  # fwd: x;                      bwd: x -> dx
    # the MRU tail in training, CBN on z_pre and the shortcut, statistics included:
    # fwd: stats of z_pre and s_pre, then z_pre, logits, s_pre -> y; bwd: two passes of 4 reads,
    # the second writing dz_pre, dlogits, ds_pre
    "bn_act_combine": (6, 11),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def levels(smoke: bool) -> list[tuple[str, int, int]]:
    """(name, channels, resolution) of the paper preset's MRU levels at 64x64."""
    if smoke:
        return [("tiny", 5, 8)]
    return [(f"L{r}", 4096 // r, r) for r in (64, 32, 16, 8, 4)]


def make_case(op: str, b: int, c: int, r: int, dtype: torch.dtype, device):  # noqa: ANN001
    """(leaves, call(impl) -> outputs): inputs as the MRU produces them."""
    g = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, requires_grad=True):
        t = torch.randn(*shape, generator=g, device=device).to(dtype)
        return t.requires_grad_(requires_grad)

    if op == "gate_mask":
        cx = c * 3 // 2  # decoder MRU input (skip concat): 1.5x the level width
        logits, x = randn(b, cx + c, r, r), randn(b, cx, r, r)  # gate conv output, x
        return [logits, x], lambda impl: mru_ops.gate_mask(logits[:, :cx], x, impl=impl)
    if op == "gated_combine":
        logits, s, z = randn(b, 2 * c, r, r), randn(b, c, r, r), randn(b, c, r, r)
        return [logits, s, z], lambda impl: mru_ops.gated_combine(logits[:, c:], s, z, impl)
    scale = (torch.rand(b, c, generator=g, device=device) + 0.5).requires_grad_()  # fp32
    shift = torch.randn(b, c, generator=g, device=device).requires_grad_()
    z_pre = randn(b, c, r, r)
    if op == "norm_act":
        return [z_pre, scale, shift], lambda impl: mru_ops.norm_act(
            z_pre, scale, shift, 0.2, impl=impl
        )
    if op == "norm_act_combine":
        logits, s = randn(b, 2 * c, r, r), randn(b, c, r, r)
        return [z_pre, scale, shift, logits, s], lambda impl: mru_ops.norm_act_combine(
            z_pre, scale, shift, 0.2, logits[:, c:], s, impl=impl
        )
    if op == "norm_act_combine_short":  # the MRU's tail when Cx != Co: shortcut norm fused
        logits, s_pre = randn(b, 2 * c, r, r), randn(b, c, r, r)
        s_scale = (torch.rand(b, c, generator=g, device=device) + 0.5).requires_grad_()
        s_shift = torch.randn(b, c, generator=g, device=device).requires_grad_()
        leaves = [z_pre, scale, shift, logits, s_pre, s_scale, s_shift]
        return leaves, lambda impl: mru_ops.norm_act_combine(
            z_pre, scale, shift, 0.2, logits[:, c:], s_pre, impl=impl,
            shortcut_scale=s_scale, shortcut_shift=s_shift,
        )  # fmt: skip
    if op == "batch_stats":
        return [z_pre], lambda impl: mru_ops.batch_stats(z_pre, impl=impl)
    if op == "bn_act_combine":  # CBN rows for z_pre and the shortcut, as in G's MRUs
        logits, s_pre = randn(b, 2 * c, r, r), randn(b, c, r, r)
        s_gamma = (torch.rand(b, c, generator=g, device=device) + 0.5).requires_grad_()
        s_beta = torch.randn(b, c, generator=g, device=device).requires_grad_()
        leaves = [z_pre, scale, shift, logits, s_pre, s_gamma, s_beta]
        return leaves, lambda impl: mru_ops.bn_act_combine(
            z_pre, scale, shift, 1e-5, 0.2, logits[:, c:], s_pre, s_gamma, s_beta, impl=impl
        )
    raise ValueError(op)


def measure(op, b, c, r, dtype, impl, mode, device):  # noqa: ANN001
    leaves, call = make_case(op, b, c, r, dtype, device)

    def outputs():  # the differentiable outputs (bn_act_combine's statistics are not)
        out = call(impl)
        return tuple(o for o in (out if isinstance(out, tuple) else (out,)) if o.requires_grad)

    outs = outputs()
    grads = [torch.randn_like(o) for o in outs]
    if mode == "forward":
        fn = outputs
    elif mode == "backward":
        fn = lambda: torch.autograd.grad(outs, leaves, grads, retain_graph=True)  # noqa: E731
    else:
        fn = lambda: torch.autograd.grad(outputs(), leaves, grads)  # noqa: E731
    before = tu.launches_total()
    ms = bench_ms(fn, device)
    if impl == "triton" and tu.launches_total() == before:
        raise RuntimeError(f"{op}: impl=triton launched no Triton kernel")
    return ms


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU interpreter")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--batch", default="16,64")
    p.add_argument("--dtype", default="bf16,fp32")
    p.add_argument("--modes", default="forward,backward,full")
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to append to (default bench/results/kernels_train.csv; "
                        "--smoke writes none unless given)")  # fmt: skip
    a = p.parse_args(argv)
    if not a.smoke:
        require_cuda("bench_kernels_train")
    device = torch.device("cpu" if a.smoke else "cuda")
    batches = [2] if a.smoke else [int(x) for x in a.batch.split(",")]
    env = context(device)
    ceiling = copy_bandwidth_gbs(device)
    print(f"{env['device']}  torch {env['torch']}  triton {env['triton']}  "
          f"commit {env['git_commit']}  copy ceiling {ceiling:.0f} GB/s")  # fmt: skip
    rows = []
    for op in a.ops.split(","):
        for name, c, r in levels(a.smoke):
            for b in batches:
                for dname in a.dtype.split(","):
                    dtype = DTYPES[dname]
                    elem = torch.finfo(dtype).bits // 8
                    n = b * c * r * r
                    ref_ms = {}
                    for impl in ("ref", "triton"):
                        for mode in a.modes.split(","):
                            p50, p20, p80 = measure(op, b, c, r, dtype, impl, mode, device)
                            fwd, bwd = TRAFFIC[op]
                            units = {"forward": fwd, "backward": bwd, "full": fwd + bwd}[mode]
                            gbs = units * n * elem / (p50 * 1e-3) / 1e9
                            if impl == "ref":
                                ref_ms[mode] = p50
                            rows.append({
                                **env, "op": op, "level": name, "batch": b, "channels": c,
                                "height": r, "width": r, "dtype": dname, "impl": impl,
                                "mode": mode, "ms_p50": round(p50, 5), "ms_p20": round(p20, 5),
                                "ms_p80": round(p80, 5), "gb_per_s": round(gbs, 1),
                                "copy_gb_per_s": round(ceiling, 1),
                                "frac_of_copy": round(gbs / ceiling, 3),
                                "speedup_vs_ref": round(ref_ms[mode] / p50, 3),
                            })  # fmt: skip
    print_table(rows, ["op", "level", "batch", "channels", "height", "dtype", "impl", "mode",
                       "ms_p50", "ms_p20", "ms_p80", "gb_per_s", "frac_of_copy",
                       "speedup_vs_ref"])  # fmt: skip
    out = a.out if a.out is not None else (None if a.smoke else RESULTS / "kernels_train.csv")
    if out is not None:
        append_csv(out, rows)
        print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
