"""Block sizes, split-K and the split-K workspace for the implicit-GEMM conv (``conv_igemm``).

Which config a launch runs (``select_config``):

- under the interpreter: a fixed table (big tiles = fewer numpy programs), SPLIT 1 unless a
  test forces one;
- on CUDA: the shipped tuning table for sm_90 (``tuning_sm90.json`` beside this file), keyed by
  (dtype, batch bucket, layer shape), so a fresh machine compiles only the config each layer
  runs; a layer the table lacks, or another GPU, gets ``heuristic_config`` (the same rule the
  table was filled with). Nothing is autotuned at run time: ``python -m s2i_fast.kernels.tune``
  measures the candidates on a GPU and rewrites the table. ``S2I_CONV_TABLE=path`` reads another
  table, ``S2I_CONV_TABLE=none`` uses the heuristic alone.

The heuristic (``heuristic_config``) picks among the candidates ``config_fits`` admits for the
GEMM's regime: the candidates whose grid fills at least one wave of the GPU (132 SMs on an
H100/H200) and, among those, the largest tile (fewer re-reads of the gathered input), then the
smallest SPLIT, then the longer channel chunk; when none fills a wave, the one with the most
programs. That puts split-K on the deep layers at small batch (few output tiles: weight
streaming over few SMs) and 128-row tiles on the big layers at batch >= 64.

Split-K workspace (``SplitWorkspace``): SPLIT programs per output tile each store their fp32
partial tile into their own slice [SPLIT, tiles, BM*BN]; the last to arrive (an int32 counter
per tile) sums the slices in a fixed order, k = 0, 1, ..., SPLIT-1, and resets the counter: the
result does not depend on arrival order (bit-identical run to run, replay to replay). SPLIT=1
needs no workspace. A ``TritonGenerator`` plan owns one workspace, sized once from its launches
before warm-up and capture, never grown; direct calls share one per (device, stream), which may
grow between calls but never while the stream is capturing a CUDA graph.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import triton

RANK1_BELOW = 16  # inputs with fewer channels use rank-1 updates instead of a padded tl.dot
SM90_SMS = 132  # streaming multiprocessors of an H100 / H200 (SXM)
BATCH_BUCKETS = (1, 8, 64, 256)
TABLE_PATH = Path(__file__).with_name("tuning_sm90.json")


@dataclass(frozen=True)
class ConvConfig:
    """One launch config of ``_conv_kernel``."""

    BM: int
    BN: int
    BK: int
    num_warps: int
    num_stages: int
    SPLIT: int

    @classmethod
    def of(cls, t: tuple | list | dict) -> ConvConfig:
        return cls(**t) if isinstance(t, dict) else cls(*t)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# (BM, BN, BK, num_warps, num_stages, SPLIT). Three small sets, chosen by the GEMM's regime.
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
GPU_CONFIGS = [ConvConfig(*c) for c in _GPU_CONFIGS]


def _npow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def batch_bucket(batch: int) -> int:
    """The tuning table's batch bucket: the smallest of BATCH_BUCKETS >= batch (else the last)."""
    return next((b for b in BATCH_BUCKETS if batch <= b), BATCH_BUCKETS[-1])


def _shape_ok(bm: int, bn: int, bk: int, m: int, n: int, split: int, ks: int, c1: int) -> bool:
    if split > 1 and ks != 3:
        return False
    if bm > max(16, _npow2(m)) or bn > max(16, _npow2(n)):
        return False
    if 0 < c1 < RANK1_BELOW and bm * bn > 64 * 64:  # unrolled rank-1 taps: keep code small
        return False
    return not (c1 >= RANK1_BELOW and bk > max(64, _npow2(c1)))


def config_fits(bm: int, bn: int, m: int, n: int, split: int = 1, ks: int = 3, bk: int = 16,
                c1: int = 0, sms: int = SM90_SMS) -> bool:
    """The candidate rule. Regime: N <= 32 -> the narrow set; less than one wave of programs
    with 64x64 tiles -> the small set (split-K only for 3x3 convs); else the large set. Within
    it, no tile taller than the rows or wider than the columns, no 128-channel chunk for a
    dot-path input of <= 64 channels, no tile over 64x64 for a narrow (rank-1, unrolled)
    input."""
    if n <= 32:
        regime = _NARROW
    elif triton.cdiv(m, 64) * triton.cdiv(n, 64) < sms:
        regime = _SMALL
    else:
        regime = _LARGE
    if (bm, bn, bk) not in [c[:3] for c in regime if c[5] == split]:
        return False
    return _shape_ok(bm, bn, bk, m, n, split, ks, c1)


def candidates(m: int, n: int, ks: int, c1: int, fp32: bool, split: int | None = None,
               sms: int = SM90_SMS) -> list[ConvConfig]:
    """Every config worth compiling for this GEMM (the tune command times them all).

    split=None: the regime's candidates (``config_fits``); split=k: every config with SPLIT k
    that fits the shape, whatever the regime (a forced split). fp32 (exact FMA dot, a debugging
    precision): tiles up to 64x64, which compile fast."""
    pool = GPU_CONFIGS + [ConvConfig(*c) for c in _NARROW[2:]]
    if split is None:
        keep = [c for c in GPU_CONFIGS
                if config_fits(c.BM, c.BN, m, n, c.SPLIT, ks, c.BK, c1, sms)]
    else:
        keep = list(dict.fromkeys(c for c in pool if c.SPLIT == split
                                  and _shape_ok(c.BM, c.BN, c.BK, m, n, split, ks, c1)))
    if fp32:
        keep = [c for c in keep if c.BM * c.BN <= 64 * 64]
    if not keep:
        keep = [ConvConfig(16, 16 if n <= 16 else 32, 64, 4, 4, split) if (split or 1) > 1
                else ConvConfig(*_SMALL[0])]
    return keep


def heuristic_config(m: int, n: int, ks: int, c1: int, fp32: bool, split: int | None = None,
                     sms: int = SM90_SMS) -> ConvConfig:
    """The documented choice among ``candidates`` (module doc): fill a wave, then the largest
    tile, the smallest split, the longest channel chunk."""
    cands = candidates(m, n, ks, c1, fp32, split, sms)

    def programs(c: ConvConfig) -> int:
        return triton.cdiv(m, c.BM) * triton.cdiv(n, c.BN) * c.SPLIT

    full = [c for c in cands if programs(c) >= sms]
    if full:
        return max(full, key=lambda c: (c.BM * c.BN, -c.SPLIT, c.BK, c.BM))
    return max(cands, key=lambda c: (programs(c), c.BM * c.BN, -c.SPLIT, c.BK))


# ---------------------------------------------------------------------- the tuning table
DTYPE_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def layer_key(dtype: torch.dtype, batch: int, meta: dict, ho: int, wo: int) -> str:
    """'fp16/b1/e1k3s1u0/4x4/c576+1+0/n1088': dtype, batch bucket, epilogue, kernel size,
    stride, upsampling, output size, channels of the three sources, output channels."""
    return (f"{DTYPE_NAMES[dtype]}/b{batch_bucket(batch)}/e{meta['EPI']}k{meta['KS']}"
            f"s{meta['STRIDE']}u{meta['UP']}/{ho}x{wo}/c{meta['C1']}+{meta['C2']}+{meta['C3']}"
            f"/n{meta['N']}")


@lru_cache(maxsize=4)
def _read_table(path: str) -> dict[str, ConvConfig]:
    data = json.loads(Path(path).read_text())
    return {k: ConvConfig.of({f: v[f] for f in ConvConfig.__dataclass_fields__})
            for k, v in data.get("entries", {}).items()}


def table_path() -> Path | None:
    """The table in use: S2I_CONV_TABLE (a path, or 'none'), else the shipped sm_90 table."""
    env = os.environ.get("S2I_CONV_TABLE", "")
    if env.lower() == "none":
        return None
    return Path(env) if env else TABLE_PATH


def table() -> dict[str, ConvConfig]:
    """The entries in use (read once; ``reload_table()`` after rewriting the file)."""
    return _table_for(os.environ.get("S2I_CONV_TABLE", ""))


def reload_table() -> None:
    _read_table.cache_clear()
    _table_for.cache_clear()


@lru_cache(maxsize=4)
def _table_for(env: str) -> dict[str, ConvConfig]:  # noqa: ARG001  (the cache key)
    path = table_path()
    if path is None or not path.exists():
        return {}
    return _read_table(str(path))


@lru_cache(maxsize=8)
def _device_info(index: int) -> tuple[tuple[int, int], int]:
    props = torch.cuda.get_device_properties(index)
    return (props.major, props.minor), props.multi_processor_count


def choose_config(dtype: torch.dtype, batch: int, meta: dict, m: int, n: int, ho: int,
                  wo: int, cap: tuple[int, int] = (9, 0), sms: int = SM90_SMS,
                  split: int | None = None) -> ConvConfig:
    """The config a launch runs on a GPU of compute capability ``cap`` with ``sms`` SMs
    (module doc): a forced split -> the heuristic restricted to it; sm_90 -> the table's
    entry, else the heuristic."""
    c1 = max(meta["C1"], meta["C3"])
    fp32 = dtype == torch.float32
    if split is not None:
        return heuristic_config(m, n, meta["KS"], c1, fp32, split, sms)
    if tuple(cap) == (9, 0):
        hit = table().get(layer_key(dtype, batch, meta, ho, wo))
        if hit is not None:
            return hit
    return heuristic_config(m, n, meta["KS"], c1, fp32, None, sms)


def select_config(dtype: torch.dtype, batch: int, meta: dict, m: int, n: int, ho: int,
                  wo: int, device: torch.device, split: int | None = None) -> ConvConfig:
    """``choose_config`` for the CUDA device the launch runs on."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    cap, sms = _device_info(index)
    return choose_config(dtype, batch, meta, m, n, ho, wo, cap, sms, split)


def interpreter_blocks(m: int, n: int, c: int) -> tuple[int, int, int]:
    """(BM, BN, BK) under the interpreter: rows <= 1024, channels <= 64, chunk <= 64."""
    bm = min(1024, max(16, _npow2(m)))
    return bm, min(64, max(16, _npow2(n))), min(64, max(16, _npow2(c)))


# ---------------------------------------------------------------------- split-K workspace
def split_need(m: int, n: int, bm: int, bn: int, split: int) -> tuple[int, int]:
    """(fp32 partials, int32 counters) one split-K launch needs; (0, 0) for SPLIT=1."""
    if split <= 1:
        return 0, 0
    tiles = triton.cdiv(m, bm) * triton.cdiv(n, bn)
    return split * tiles * bm * bn, tiles


class SplitWorkspace:
    """fp32 partial slices and int32 arrival counters of split-K launches (module doc).

    ``reserve`` sizes it (allocating once, zeroed counters); ``buffers(need)`` hands out views
    and raises if the reservation is too small, so a plan's workspace never grows."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.partials = torch.zeros(0, device=self.device, dtype=torch.float32)
        self.counters = torch.zeros(0, device=self.device, dtype=torch.int32)
        self.allocations = 0  # how many times storage was allocated (checks: 1 per plan)

    @property
    def nbytes(self) -> int:
        return self.partials.numel() * 4 + self.counters.numel() * 4

    def reserve(self, floats: int, counts: int) -> None:
        if floats <= self.partials.numel() and counts <= self.counters.numel():
            return
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                f"split-K workspace too small ({self.partials.numel()} floats, "
                f"{self.counters.numel()} counters; need {floats}, {counts}) while a CUDA graph "
                "is being captured: size it before capture (TritonGenerator plans do)")
        self.partials = torch.zeros(max(floats, self.partials.numel()), device=self.device,
                                    dtype=torch.float32)
        self.counters = torch.zeros(max(counts, self.counters.numel()), device=self.device,
                                    dtype=torch.int32)
        self.allocations += 1

    def buffers(self, floats: int, counts: int) -> tuple[torch.Tensor, torch.Tensor]:
        if floats > self.partials.numel() or counts > self.counters.numel():
            raise RuntimeError(
                f"split-K workspace holds {self.partials.numel()} floats and "
                f"{self.counters.numel()} counters; this launch needs {floats} and {counts}")
        return self.partials, self.counters


_SHARED: dict[tuple[str, int], SplitWorkspace] = {}  # (device, stream) -> workspace
_DUMMIES: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def shared_workspace(device: torch.device) -> SplitWorkspace:
    """The workspace of direct (plan-less) launches on the current stream of ``device``."""
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0
    key = (str(device), stream)
    if key not in _SHARED:
        _SHARED[key] = SplitWorkspace(device)
    return _SHARED[key]


def no_workspace(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Typed placeholders for SPLIT=1 launches (the kernel never touches them)."""
    key = str(device)
    if key not in _DUMMIES:
        _DUMMIES[key] = (torch.zeros(1, device=device, dtype=torch.float32),
                         torch.zeros(1, device=device, dtype=torch.int32))
    return _DUMMIES[key]
