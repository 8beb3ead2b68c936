"""Write the conv tuning table: measured on a GPU, or filled by the heuristic without one.

    python -m s2i_fast.kernels.tune --preset paper --batch 1,8,64,256 --dtype fp16 \\
        --out kernels/tuning_sm90.json                  # on an H100/H200: times every candidate
    python -m s2i_fast.kernels.tune --heuristic          # no GPU: the shipped heuristic table

Measured: for each distinct conv layer of the generator at each batch bucket, every candidate
config (``conv_tuning.candidates``: the regime's tiles and split-K) is compiled (all at once,
over the CPU cores), checked against the heuristic's output and timed with
triton.testing.do_bench; the fastest goes into the table with its time and the heuristic's
(entries marked "measured"). Entries of layers not re-measured are kept. --budget-s stops early
(the rest keep their previous entries). Heuristic: the entries are ``heuristic_config``'s
choice for sm_90 (132 SMs), marked "heuristic".
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import torch

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
HEURISTIC_MODELS = [("paper", 64), ("tiny", 64)]  # what the shipped table covers


def _generator(preset: str, resolution: int, num_classes: int = 10):  # noqa: ANN202
    from s2i_fast.config import ModelConfig
    from s2i_fast.model.networks import Generator

    torch.manual_seed(0)
    return Generator(ModelConfig.from_preset(preset, resolution=resolution,
                                             num_classes=num_classes)).eval()


def _conv_records(tg, batch: int) -> list[tuple]:  # noqa: ANN001
    from s2i_fast.kernels import conv_igemm

    plan = tg._build(batch)
    conv_igemm.RECORDER = []
    try:
        for op in plan.ops:
            op()
        return [r for r in conv_igemm.RECORDER if r[0] == "conv"]
    finally:
        conv_igemm.RECORDER = None


def _named(rec: tuple) -> dict:
    from s2i_fast.kernels import conv_igemm

    names = [n for n in conv_igemm._conv_kernel.arg_names if n not in rec[2]]
    return dict(zip(names, rec[1], strict=False))


def key_of(rec: tuple, dtype: torch.dtype) -> str:
    from s2i_fast.kernels.conv_tuning import layer_key

    a = _named(rec)
    ho, wo = a["Ho"], a["Wo"]
    return layer_key(dtype, rec[3] // (ho * wo), rec[2], ho, wo)


def read(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"format": 1, "arch": "sm_90", "entries": {}}


def write(path: Path, data: dict) -> None:
    """The table as JSON with one line per entry (readable diffs when entries are re-measured)."""
    from s2i_fast.fileio import write_text

    head = {k: v for k, v in data.items() if k != "entries"}
    lines = [json.dumps(head, indent=1)[:-2] + ',\n "entries": {']
    items = sorted(data.get("entries", {}).items())
    lines += [f"  {json.dumps(k)}: {json.dumps(v)}" + ("," if i < len(items) - 1 else "")
              for i, (k, v) in enumerate(items)]
    lines.append(" }\n}\n")
    write_text(path, "\n".join(lines))


def heuristic_table(batches: list[int], dtypes: list[str]) -> dict:
    """Entries of the heuristic for the shipped models (traced on the CPU, nothing runs)."""
    from s2i_fast.kernels.conv_tuning import SM90_SMS, heuristic_config
    from s2i_fast.kernels.inference import TritonGenerator

    entries = {}
    for preset, res in HEURISTIC_MODELS:
        gen = _generator(preset, res)
        for dname in dtypes:
            dtype = DTYPES[dname]
            tg = TritonGenerator._fold_generator(gen, dtype, torch.device("cpu"), False)
            for b in batches:
                for rec in _conv_records(tg, b):
                    meta, m, n = rec[2], rec[3], rec[4]
                    cfg = heuristic_config(m, n, meta["KS"], max(meta["C1"], meta["C3"]),
                                           dtype == torch.float32, None, SM90_SMS)
                    entries[key_of(rec, dtype)] = {**cfg.as_dict(), "source": "heuristic"}
    return entries


def _launch_fn(rec: tuple, cfg, ws):  # noqa: ANN001, ANN202
    """A callable launching the recorded conv with ``cfg`` (split-K buffers from ws)."""
    import triton

    from s2i_fast.kernels import conv_igemm
    from s2i_fast.kernels.conv_tuning import no_workspace, split_need

    args, meta, m, n = list(rec[1]), rec[2], rec[3], rec[4]
    names = [nm for nm in conv_igemm._conv_kernel.arg_names if nm not in meta]
    i_ws = names.index("split_ws_ptr")
    need = split_need(m, n, cfg.BM, cfg.BN, cfg.SPLIT)
    if cfg.SPLIT > 1:
        ws.reserve(*need)
        args[i_ws:i_ws + 2] = ws.buffers(*need)
    else:
        args[i_ws:i_ws + 2] = no_workspace(args[0].device)
    grid = (triton.cdiv(m, cfg.BM), triton.cdiv(n, cfg.BN), cfg.SPLIT)

    def launch() -> None:
        conv_igemm._conv_kernel[grid](*args, **meta, BM=cfg.BM, BN=cfg.BN, BK=cfg.BK,
                                      SPLIT=cfg.SPLIT, num_warps=cfg.num_warps,
                                      num_stages=cfg.num_stages)
    return launch, args


def measure(preset: str, resolution: int, batches: list[int], dtypes: list[str],
            budget_s: float, progress: bool = True) -> tuple[dict, dict]:
    """(entries, summary) measured on the current CUDA device (module doc)."""
    from triton.testing import do_bench

    from s2i_fast.kernels.conv_tuning import (
        SplitWorkspace,
        candidates,
        heuristic_config,
        select_config,
    )
    from s2i_fast.kernels.inference import TritonGenerator
    from s2i_fast.kernels.precompile import collect_specializations, compile_parallel

    t_start = time.perf_counter()
    dev = torch.device("cuda")
    gen = _generator(preset, resolution)
    ws = SplitWorkspace(dev)
    jobs = []  # (key, rec, heuristic cfg, candidates)
    for dname in dtypes:
        dtype = DTYPES[dname]
        tg = TritonGenerator.from_generator(gen, dtype=dtype, device=dev, cuda_graph=False)
        seen = set()
        for b in batches:
            for rec in _conv_records(tg, b):
                key = key_of(rec, dtype)
                if key in seen:
                    continue
                seen.add(key)
                meta, m, n = rec[2], rec[3], rec[4]
                c1, fp32 = max(meta["C1"], meta["C3"]), dtype == torch.float32
                a = _named(rec)
                ref_cfg = select_config(dtype, b, meta, m, n, a["Ho"], a["Wo"], dev)
                cands = list(dict.fromkeys([ref_cfg, heuristic_config(m, n, meta["KS"], c1,
                                                                      fp32)]
                                           + candidates(m, n, meta["KS"], c1, fp32)))
                jobs.append((key, rec, ref_cfg, cands))
    with collect_specializations() as specs:
        for _, rec, _, cands in jobs:
            for cfg in cands:
                _launch_fn(rec, cfg, ws)[0]()
    report = compile_parallel(specs, progress=progress)
    if progress:
        print(f"tune: {report.line()}", flush=True)
    entries, timed, skipped = {}, 0, 0
    for i, (key, rec, ref_cfg, cands) in enumerate(jobs):
        if time.perf_counter() - t_start > budget_s:
            skipped = len(jobs) - i
            break
        launch, args = _launch_fn(rec, ref_cfg, ws)
        with torch.no_grad():  # the plan never ran: give its input buffers finite values
            for t in (args[0], args[1], args[7], args[8]):
                if t.is_floating_point() and t.data_ptr() != args[2].data_ptr():
                    t.uniform_(-1, 1)
        launch()
        outs = [t for t in (args[12], args[13]) if t.data_ptr() != args[2].data_ptr()]
        want = [t.float().clone() for t in outs]
        scale = max(1.0, max(t.abs().max().item() for t in want))
        results = []
        for cfg in cands:
            fn, _ = _launch_fn(rec, cfg, ws)
            fn()
            err = max((o.float() - w).abs().max().item() for o, w in zip(outs, want,
                                                                         strict=True))
            if not err <= 2e-2 * scale:
                print(f"tune: {key}: {cfg} disagrees with the reference config "
                      f"(max err {err:.3g}); not a candidate", file=sys.stderr)
                continue
            results.append((do_bench(fn, warmup=5, rep=20), cfg))
        best_ms, best = min(results, key=lambda r: r[0])
        ref_ms = next(ms for ms, c in results if c == ref_cfg)
        entries[key] = {**best.as_dict(), "source": "measured", "ms": round(best_ms, 5),
                        "previous_ms": round(ref_ms, 5)}
        timed += 1
        if progress:
            print(f"[{i + 1}/{len(jobs)}] {key}: {best_ms * 1e3:.1f} us "
                  f"(was {ref_ms * 1e3:.1f} us)", flush=True)
    summary = dict(layers=len(jobs), measured=timed, skipped_for_budget=skipped,
                   compiles=report.kernels, compile_s=round(report.seconds, 1),
                   seconds=round(time.perf_counter() - t_start, 1))
    return entries, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--resolution", type=int, default=64, choices=[64, 128, 256])
    p.add_argument("--batch", default="1,8,64,256", help="batch buckets to tune")
    p.add_argument("--dtype", default="fp16", help="comma-separated: fp16,bf16,fp32")
    p.add_argument("--out", type=Path, default=None,
                   help="table to update (default: the shipped kernels/tuning_sm90.json)")
    p.add_argument("--budget-s", type=float, default=1e9, help="stop measuring after this")
    p.add_argument("--heuristic", action="store_true",
                   help="no GPU: write the heuristic's entries (fp16, bf16; paper and tiny)")
    a = p.parse_args(argv)
    from s2i_fast.kernels.conv_tuning import BATCH_BUCKETS, TABLE_PATH, batch_bucket

    out = a.out or TABLE_PATH
    batches = sorted({batch_bucket(int(b)) for b in a.batch.split(",")})
    dtypes = [d.strip() for d in a.dtype.split(",") if d.strip()]
    if any(d not in DTYPES for d in dtypes):
        print(f"tune: --dtype must list {sorted(DTYPES)}", file=sys.stderr)
        return 2
    data = read(out)
    if a.heuristic:
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
            print("tune: unset TRITON_INTERPRET (the trace needs the GPU configs)",
                  file=sys.stderr)
            return 2
        data = {
            "format": 1, "arch": "sm_90", "sms": 132,
            "note": ("HEURISTIC, NOT MEASURED: every entry is conv_tuning.heuristic_config's "
                     "choice for an sm_90 GPU with 132 SMs. Re-measure on an H100/H200 with "
                     "python -m s2i_fast.kernels.tune (or bench/gpu_check.py --tune): measured "
                     "entries carry source 'measured' and their time."),
            "key": "dtype/batch bucket/e<epilogue>k<kernel>s<stride>u<upsample>/HoxWo/"
                   "c<C1>+<C2>+<C3>/n<N>",
            "batch_buckets": list(BATCH_BUCKETS),
            "generated_by": "python -m s2i_fast.kernels.tune --heuristic",
            "entries": heuristic_table(list(BATCH_BUCKETS), ["fp16", "bf16"]),
        }
        write(out, data)
        print(f"tune: {len(data['entries'])} heuristic entries -> {out}")
        return 0
    if not torch.cuda.is_available():
        print("tune: needs a CUDA GPU (use --heuristic without one)", file=sys.stderr)
        return 2
    entries, summary = measure(a.preset, a.resolution, batches, dtypes, a.budget_s)
    data.setdefault("entries", {}).update(entries)
    data.setdefault("measured", []).append({
        "device": torch.cuda.get_device_name(), "date": dt.date.today().isoformat(),
        "preset": a.preset, "resolution": a.resolution, "batches": batches, "dtypes": dtypes,
        **summary})
    if torch.cuda.get_device_capability() != (9, 0):
        print(f"tune: note: measured on sm_{''.join(map(str, torch.cuda.get_device_capability()))}"
              ", but the table is read on sm_90 only", file=sys.stderr)
    write(out, data)
    from s2i_fast.kernels import conv_tuning

    conv_tuning.reload_table()
    print(f"tune: {summary}; {len(entries)} measured entries -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
