"""Block sizes and split-K for the implicit-GEMM conv (``conv_igemm``).

Interpreter: a fixed table (big tiles = fewer numpy programs). GPU: triton.autotune over small
config sets chosen by the GEMM's regime (``config_fits``), so the first run compiles a handful
of configs per layer; tuning happens on the first call, i.e. in a warm-up before any CUDA graph
capture. ``split_workspace`` holds the zeroed fp32 workspace and counters split-K adds into.
"""

from __future__ import annotations

import torch
import triton

RANK1_BELOW = 16  # inputs with fewer channels use rank-1 updates instead of a padded tl.dot

# (BM, BN, BK, num_warps, num_stages, SPLIT). Three small sets, chosen by the GEMM's regime, so
# the first (autotuning) run compiles ~5 configs per layer, not dozens.
_SMALL = [  # few output tiles (deep layers at small batch): narrow tiles and split-K
    (16, 16, 128, 2, 4, 1), (16, 32, 128, 4, 4, 1), (16, 64, 64, 4, 4, 1),
    (16, 32, 128, 4, 4, 3), (16, 32, 128, 4, 4, 9), (16, 64, 64, 4, 4, 9), (32, 32, 64, 4, 4, 1),
]
_LARGE = [  # many output tiles: big tiles, fewer re-reads of the gathered input
    (64, 64, 64, 4, 3, 1), (128, 64, 32, 4, 3, 1), (64, 128, 32, 4, 3, 1),
    (128, 128, 32, 8, 3, 1), (128, 128, 64, 8, 3, 1),
]
_NARROW = [  # N <= 32 (the final conv, narrow micro layers)
    (128, 16, 32, 4, 3, 1), (64, 32, 64, 4, 3, 1), (32, 32, 64, 4, 4, 1), (16, 16, 128, 2, 4, 1),
    (16, 32, 128, 4, 4, 1)]
_GPU_CONFIGS = _SMALL + _LARGE + _NARROW[:2]  # the rest of _NARROW is in _SMALL
_WORKSPACES: dict = {}  # device -> [(fp32 workspace, int32 counters)], all kept alive


def _npow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def config_fits(bm: int, bn: int, m: int, n: int, split: int = 1, ks: int = 3, bk: int = 16,
                c1: int = 0) -> bool:
    """Autotune pruning. Regime: N <= 32 -> the narrow set; less than one wave of programs
    with 64x64 tiles (132 SMs on an H100) -> the small set (split-K only for 3x3 convs); else
    the large set. Within it, no tile taller than the rows or wider than the columns, no
    128-channel chunk for a dot-path input of <= 64 channels, no tile over 64x64 for a narrow
    (rank-1, unrolled) input."""
    cfg = (bm, bn, bk)
    if n <= 32:
        regime = _NARROW
    elif triton.cdiv(m, 64) * triton.cdiv(n, 64) < 132:
        regime = _SMALL
    else:
        regime = _LARGE
    if cfg not in [c[:3] for c in regime if c[5] == split]:
        return False
    if split > 1 and ks != 3:
        return False
    if bm > max(16, _npow2(m)) or bn > max(16, _npow2(n)):
        return False
    if 0 < c1 < RANK1_BELOW and bm * bn > 64 * 64:  # unrolled rank-1 taps: keep code small
        return False
    return not (c1 >= RANK1_BELOW and bk > max(64, _npow2(c1)))


def _prune(configs, named_args, **kwargs):  # noqa: ANN001, ANN202  (autotune hook)
    def arg(name: str):  # noqa: ANN202
        return named_args.get(name, kwargs.get(name))

    m, n, ks, c1 = arg("M"), arg("N"), arg("KS"), arg("C1")
    keep = [c for c in configs if config_fits(c.kwargs["BM"], c.kwargs["BN"], m, n,
                                              c.kwargs["SPLIT"], ks, c.kwargs["BK"], c1)]
    if arg("IEEE"):  # fp32 (exact FMA dot, a debugging precision): small tiles compile fast
        keep = [c for c in keep if c.kwargs["BM"] * c.kwargs["BN"] <= 64 * 64]
    return keep or [c for c in configs if c.kwargs["SPLIT"] == 1][:1]


def split_workspace(device: torch.device, m: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed split-K workspace big enough for any tiling of an [m, n] output (every split
    launch leaves it zeroed again). Grows by allocating a new one; old ones stay alive, since a
    captured CUDA graph may still point at them. Warm-up (before capture) does the growing.
    One pool per device: split launches must not run concurrently on two streams."""
    need_ws, need_cnt = (m + 127) * (n + 127), triton.cdiv(m, 16) * triton.cdiv(n, 16)
    pool = _WORKSPACES.setdefault(str(device), [])
    if not pool or pool[-1][0].numel() < need_ws or pool[-1][1].numel() < need_cnt:
        size_ws = max(need_ws, pool[-1][0].numel() if pool else 0)
        size_cnt = max(need_cnt, pool[-1][1].numel() if pool else 0)
        pool.append((torch.zeros(size_ws, device=device, dtype=torch.float32),
                     torch.zeros(size_cnt, device=device, dtype=torch.int32)))
    return pool[-1]


def interpreter_blocks(m: int, n: int, c: int) -> tuple[int, int, int]:
    """(BM, BN, BK) under the interpreter: rows <= 1024, channels <= 64, chunk <= 64."""
    bm = min(1024, max(16, _npow2(m)))
    return bm, min(64, max(16, _npow2(n))), min(64, max(16, _npow2(c)))
