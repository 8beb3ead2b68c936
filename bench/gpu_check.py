"""One command for a fresh GPU: every GPU test, then the numbers, written with device and commit.

    python bench/gpu_check.py              # H100/H200: about 5-7 minutes, --budget-s 420
    python bench/gpu_check.py --tune yes   # also re-measure the sm_90 tuning table (+2-3 min)
    python bench/gpu_check.py --smoke      # CPU, Triton interpreter, micro shapes (< 1 min)

Sections, in order (each prints its progress with the elapsed time):

1. device and versions (the harness's context: GPU, CUDA, torch, triton, commit, load).
2. tests: the kernel test files with the GPU demanded (pytest --gpu: a missing GPU fails),
   sharded over parallel pytest processes (each test compiles its own kernels, so the shards
   compile in parallel); the split-K stress test inside a CUDA graph with its workspace
   checks is one of them (tests/test_kernels_infer_conv.py).
3. generator, paper preset 64x64, 10 classes, batch 1, 8, 64, 256: eager fp32 (TF32 off),
   eager fp16 channels_last (cudnn.benchmark on), torch.compile (mode reduce-overhead at
   batch 1: max-autotune does not fit the budget), the Triton engine in fp16 (mode call: what
   a caller sees; mode replay: the CUDA graph alone), all compiled in parallel first; each
   row's kernel launches counted by torch.profiler; TFLOP/s against the chip's dense fp16
   peak (spec sheet) and a measured fp16 matmul.
4. training step (bench_train_step.py's G+D step, DRAGAN included, fp32, batch 16): eager
   (impl ref) vs impl triton, median time and peak memory.
5. tune (auto: batch 1 when 150 s of the budget are left; --tune yes: every batch, +2-3 min):
   re-measure the conv tuning table for fp16 (kernels/tune.py), rewrite
   kernels/tuning_sm90.json with measured entries, and time the Triton engine again with it
   (mode replay-tuned).

Writes bench/results/gpu_check.csv (appended, one row per measurement, with the context
columns) and bench/results/gpu_check.md (the latest run: tables, each target met or not).
Exit 1 if a test failed or a section broke; a missed target is reported, not an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
GPU_TEST_FILES = ["tests/test_kernels_infer_conv.py", "tests/test_kernels_infer_mru.py",
                  "tests/test_kernels_infer_generator.py", "tests/test_kernels_train_ops.py",
                  "tests/test_kernels_train_grad.py", "tests/test_kernels_train_model.py"]
# what the tests that compile for sm_90 without a GPU check is covered by running the kernels
DESELECT = "not without_a_gpu"
SMOKE_TESTS = ["tests/test_kernels_infer_conv.py::test_split_k_is_deterministic_and_matches"
               "_split_1", "tests/test_kernels_infer_conv.py::test_weight_to_gemm_layout"]
SPEC_FP16_TFLOPS = [("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0),
                    ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0)]  # dense, no sparsity
TARGETS = {"b1_replay_ms": 0.15, "b1_vs_eager_fp32": 10.0, "b1_vs_compile": 2.0,
           "b256_frac_peak": 0.40, "train_speedup": 1.5, "train_mem_saving": 0.25}


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.t0 = time.monotonic()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def say(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {msg}", flush=True)


# ---------------------------------------------------------------------- tests
def collect(files: list[str], env: dict, keyword: str) -> list[str]:
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                          "-p", "no:cacheprovider", "-k", keyword, *files], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    ids = [ln.strip() for ln in res.stdout.splitlines() if "::" in ln]
    if not ids:
        raise RuntimeError(f"pytest collected no tests: {(res.stdout + res.stderr)[-1500:]}")
    return ids


def run_tests(smoke: bool, shards: int, clock: Clock, tmp: Path) -> dict:
    """Every GPU kernel test (smoke: two interpreter tests) over parallel pytest processes."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["OMP_NUM_THREADS"] = "1"
    env["S2I_PARALLEL_COMPILE"] = "0"  # the shards are the parallelism (no pool per shard)
    if smoke:
        env["TRITON_INTERPRET"] = "1"
        ids, extra = SMOKE_TESTS, []
    else:
        ids, extra = collect(GPU_TEST_FILES, env, DESELECT), ["--gpu"]
    shards = max(1, min(shards, len(ids)))
    clock.say(f"tests: {len(ids)} tests over {shards} parallel pytest processes")
    procs = []
    for i in range(shards):
        xml = tmp / f"shard{i}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra,
               f"--junitxml={xml}", *ids[i::shards]]
        log = (tmp / f"shard{i}.log").open("w")
        procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT), xml, log))
    counts = dict(passed=0, failed=0, skipped=0, errors=0)
    failures = []
    for proc, xml, log in procs:
        try:
            proc.wait(timeout=max(60.0, clock.left()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            failures.append(f"{xml.stem}: killed at the time budget")
        log.close()
        if not xml.exists():
            counts["errors"] += 1
            failures.append(f"{xml.stem}: no report (exit {proc.returncode}): "
                            + Path(log.name).read_text()[-1500:])
            continue
        for case in ET.parse(xml).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            kinds = {child.tag for child in case}
            if "failure" in kinds or "error" in kinds:
                counts["failed"] += 1
                msg = next(iter(case)).get("message", "")[:300]
                failures.append(f"{name}: {msg}")
            elif "skipped" in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    clock.say(f"tests: {counts}")
    for f in failures:
        print(f"  FAILED {f}", flush=True)
    return dict(counts, failures=failures, seconds=round(clock.elapsed(), 1), shards=shards)


# ---------------------------------------------------------------------- generator
def generator_gflop(gen, torch) -> float:  # noqa: ANN001
    """GFLOP (2 x multiply-adds) of one image through the generator's convs and linear."""
    macs = []

    def hook(mod, inp, out):  # noqa: ANN001, ANN202
        k = mod.kernel_size[0] * mod.kernel_size[1] if hasattr(mod, "kernel_size") else 1
        cin = mod.in_channels if hasattr(mod, "in_channels") else mod.in_features
        macs.append(out.numel() * cin * k // out.shape[0])

    handles = [m.register_forward_hook(hook) for m in gen.modules()
               if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    r = gen.cfg.resolution
    with torch.no_grad():
        gen(torch.zeros(1, 1, r, r), torch.zeros(1, dtype=torch.int64),
            torch.zeros(1, gen.cfg.noise_dim))
    for h in handles:
        h.remove()
    return 2 * sum(macs) / 1e9


def spec_peak(name: str) -> float | None:
    return next((v for k, v in SPEC_FP16_TFLOPS if k in name), None)


def matmul_tflops(torch) -> float:  # noqa: ANN001
    from triton.testing import do_bench

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    return 2 * n**3 / do_bench(lambda: a @ a, warmup=25, rep=200) / 1e9


def run_generator(args: argparse.Namespace, clock: Clock, ctx: dict, torch) -> list[dict]:  # noqa: ANN001
    import bench_generator as bg

    smoke = args.smoke
    device = "cpu" if smoke else "cuda"
    gargs = bg.parse_args(["--smoke"] if smoke else ["--preset", "paper"])
    gargs.warmup, gargs.iters = (0, 1) if smoke else (args.warmup, args.iters)
    gargs.compile_mode = args.compile_mode
    gen = bg.build_generator(gargs, torch)
    gflop = generator_gflop(gen, torch)
    batches = [1] if smoke else [int(b) for b in args.batch.split(",")]
    meta = dict(ctx, section="generator", preset="micro" if smoke else "paper",
                base=gen.cfg.base, resolution=gen.cfg.resolution, gflop_per_image=round(gflop, 3))
    dtype = torch.float32 if smoke else torch.float16
    if not smoke:
        bg.setup_cuda(torch)
    deadline = time.monotonic() + max(0.0, clock.left() - args.reserve_s)
    rows = []
    # smoke: the graph-replay path alone (each interpreted forward takes seconds)
    plan = [("triton", "replay")] if smoke else [("torch", "call"), ("triton", "call"),
                                                 ("triton", "replay")]
    clock.say(f"generator: {gen.cfg.preset} base {gen.cfg.base}, {gflop:.2f} GFLOP/image")
    rows += bg.time_variants(gargs, gen, [("torch", "baseline")] + plan, batches, dtype, device,
                             torch, meta, deadline)
    if not smoke and "torch-compile" not in args.skip:
        cb = [int(b) for b in args.compile_batch.split(",")]
        clock.say(f"generator: torch.compile mode {args.compile_mode} at batch {cb}")
        try:
            rows += bg.time_variants(gargs, gen, [("torch-compile", "call")], cb, dtype, device,
                                     torch, meta, deadline)
        except Exception as e:  # noqa: BLE001  (reported in the summary; the rest goes on)
            rows.append(dict(meta, backend="torch-compile", mode="call", batch=cb[0],
                             note=f"failed: {type(e).__name__}: {str(e)[:200]}"))
    for r in rows:
        if r.get("p50_ms"):
            r["tflops"] = round(r["batch"] * gflop / r["p50_ms"], 2)  # GFLOP/ms = TFLOP/s
    clock.say("generator: done")
    return rows


# ---------------------------------------------------------------------- training step
def run_train(args: argparse.Namespace, clock: Clock, ctx: dict, torch) -> list[dict]:  # noqa: ANN001
    import bench_train_step as bts

    from s2i_fast.bench.harness import PeakMemory, sync
    from s2i_fast.config import ModelConfig
    from s2i_fast.kernels import _triton_utils as tu
    from s2i_fast.kernels.precompile import precompile

    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    if smoke:
        cfg, batch, warmup, steps = ModelConfig(base=2, resolution=64, num_classes=3,
                                                noise_channels=4), 2, 0, 1
    else:
        cfg, batch = ModelConfig.from_preset("paper", resolution=64, num_classes=10), 16
        warmup, steps = 2, args.train_steps
        torch.backends.cudnn.allow_tf32 = True  # the trainer's (torch's) default, both impls
        torch.backends.cudnn.benchmark = True
    rows, base = [], {}
    for impl in ("ref", "triton"):
        if clock.left() < args.reserve_s / 2:
            rows.append(dict(ctx, section="train", impl=impl, note="skipped: time budget"))
            continue
        compile_line = ""
        if impl == "triton" and not smoke:  # compile the step's kernels at once, throwaway
            scratch = bts.Step(cfg, impl, batch, device, None)
            report = precompile(scratch)
            compile_line = report.line()
            del scratch
            clock.say(f"train: {compile_line}")
        step = bts.Step(cfg, impl, batch, device, None)
        before = tu.launches_total()
        for _ in range(warmup):
            step()
        times = []
        with PeakMemory(device) as mem:
            for _ in range(steps):
                sync(device)
                t0 = time.perf_counter()
                step()
                sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
        if impl == "triton" and tu.launches_total() == before:
            raise RuntimeError("impl=triton launched no Triton kernel")
        times.sort()
        p50 = times[len(times) // 2]
        peak = None if smoke else mem.peak_mb  # CPU RSS of an interpreter run says nothing
        if impl == "ref":
            base = {"ms": p50, "peak": peak}
        rows.append(dict(ctx, section="train", preset=cfg.preset, base=cfg.base, batch=batch,
                         impl=impl, amp="none", steps=steps, ms_p50=round(p50, 3),
                         peak_mib="" if peak is None else round(peak, 1),
                         speedup_vs_eager=round(base["ms"] / p50, 3),
                         mem_saving_vs_eager=(round(1 - peak / base["peak"], 3)
                                              if peak is not None and base.get("peak") else ""),
                         note=compile_line))
        clock.say(f"train: impl {impl}: {p50:.1f} ms/step"
                  + ("" if peak is None else f", peak {peak:.0f} MiB"))
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------- tune
def run_tune(args: argparse.Namespace, clock: Clock, ctx: dict, torch) -> list[dict]:  # noqa: ANN001
    import bench_generator as bg

    from s2i_fast.kernels import conv_tuning, tune

    # auto: batch 1 alone (the latency target; ~170 compiles), yes: every batch (~600)
    batches = [int(b) for b in args.batch.split(",")] if args.tune == "yes" else [1]
    budget = max(30.0, clock.left() - 60.0)
    clock.say(f"tune: measuring fp16 configs at batch {batches} (budget {budget:.0f} s)")
    entries, summary = tune.measure("paper", 64, batches, ["fp16"], budget, progress=False)
    data = tune.read(conv_tuning.TABLE_PATH)
    data.setdefault("entries", {}).update(entries)
    data.setdefault("measured", []).append({"device": ctx["device"], "commit": ctx["git_commit"],
                                            "date": ctx["timestamp"][:10], **summary})
    data["note"] = ("Entries with source 'measured' were timed on the device named in "
                    "'measured'; the rest are heuristic (conv_tuning.heuristic_config), not "
                    "measured.")
    tune.write(conv_tuning.TABLE_PATH, data)
    conv_tuning.reload_table()
    clock.say(f"tune: {summary}")
    gargs = bg.parse_args(["--preset", "paper"])
    gargs.warmup, gargs.iters = args.warmup, args.iters
    gen = bg.build_generator(gargs, torch)
    meta = dict(ctx, section="generator", preset="paper", base=gen.cfg.base,
                resolution=gen.cfg.resolution, note="tuning table re-measured")
    rows = bg.time_variants(gargs, gen, [("torch", "baseline"), ("triton", "replay")],
                            batches, torch.float16, "cuda", torch, meta,
                            time.monotonic() + max(20.0, clock.left() - 20.0))
    for r in rows:
        if r["backend"] == "triton":
            r["mode"] = "replay-tuned"
    return [dict(ctx, section="tune", **summary)] + rows


# ---------------------------------------------------------------------- summary
def _row(rows: list[dict], **want) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in want.items())
                 and r.get("p50_ms")), None)


def targets(gen_rows: list[dict], train_rows: list[dict], peak: float | None,
            matmul: float | None, smoke: bool = False) -> list[tuple[str, str, str, str]]:
    """(target, wanted, measured, verdict) lines (smoke: no verdicts, nothing was measured)."""
    out = []

    def verdict(ok: bool | None) -> str:
        if smoke:
            return "smoke run: no verdict"
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    rep = _row(gen_rows, backend="triton", mode="replay", batch=1)
    eag = _row(gen_rows, backend="torch", mode="baseline", batch=1)
    com = _row(gen_rows, backend="torch-compile", mode="call", batch=1)
    b256 = _row(gen_rows, backend="triton", mode="replay", batch=256)
    ms = rep["p50_ms"] if rep else None
    out.append(("batch-1 graph replay latency", f"<= {TARGETS['b1_replay_ms']} ms",
                f"{ms:.4f} ms" if ms else "-", verdict(None if ms is None else
                                                       ms <= TARGETS["b1_replay_ms"])))
    call = _row(gen_rows, backend="triton", mode="call", batch=1)
    for label, other, key in (("vs eager fp32", eag, "b1_vs_eager_fp32"),
                              ("vs torch.compile", com, "b1_vs_compile")):
        x = other["p50_ms"] / ms if (other and ms) else None
        text = f"{x:.2f}x" if x else "-"
        if x and call:  # the full call (input copies, output clone) against the same baseline
            text += f" (full call: {other['p50_ms'] / call['p50_ms']:.2f}x)"
        out.append((f"batch-1 replay speed-up {label}", f">= {TARGETS[key]}x", text,
                    verdict(None if x is None else x >= TARGETS[key])))
    frac = b256["tflops"] / peak if (b256 and peak) else None
    out.append(("batch-256 replay, fraction of dense fp16 peak",
                f">= {TARGETS['b256_frac_peak']:.0%} of {peak} TFLOP/s" if peak else ">= 40%",
                (f"{b256['tflops']:.1f} TFLOP/s = {frac:.1%} (measured matmul "
                 f"{matmul:.0f} TFLOP/s: {b256['tflops'] / matmul:.1%})") if frac and matmul
                else "-", verdict(None if frac is None else frac >= TARGETS["b256_frac_peak"])))
    tri = next((r for r in train_rows if r.get("impl") == "triton" and r.get("ms_p50")), None)
    sp = tri["speedup_vs_eager"] if tri else None
    sv = tri["mem_saving_vs_eager"] if tri and tri["mem_saving_vs_eager"] != "" else None
    out.append(("training step speed-up vs eager", f">= {TARGETS['train_speedup']}x",
                f"{sp:.2f}x" if sp else "-",
                verdict(None if sp is None else sp >= TARGETS["train_speedup"])))
    out.append(("training step peak-memory saving", f">= {TARGETS['train_mem_saving']:.0%}",
                f"{sv:.1%}" if sv is not None else "-",
                verdict(None if sv is None else sv >= TARGETS["train_mem_saving"])))
    return out


def _md_table(rows: list[dict], cols: list[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines)


def write_summary(path: Path, ctx: dict, args: argparse.Namespace, tests: dict,
                  gen_rows: list[dict], train_rows: list[dict], tune_rows: list[dict],
                  target_lines: list, extra: dict, clock: Clock) -> None:
    from s2i_fast.fileio import write_text

    head = [f"# GPU check: {ctx['device']}", "",
            f"{ctx['timestamp']} | commit {ctx['git_commit']} | torch {ctx.get('torch')} | "
            f"triton {ctx.get('triton')} | CUDA {ctx.get('cuda', '')} | load "
            f"{ctx.get('load_avg_1m')} | `python bench/gpu_check.py"
            f"{' --smoke' if args.smoke else ''}` | {clock.elapsed():.0f} s"
            + (" | SMOKE RUN: CPU interpreter, micro shapes; says nothing about speed"
               if args.smoke else ""), ""]
    for k, v in extra.items():
        head.append(f"- {k}: {v}")
    head += ["", "## Tests", "",
             f"{tests.get('passed', 0)} passed, {tests.get('failed', 0)} failed, "
             f"{tests.get('skipped', 0)} skipped, {tests.get('errors', 0)} shard errors, over "
             f"{tests.get('shards', 0)} parallel pytest processes"
             + (" (smoke: two interpreter tests)." if args.smoke else " (`pytest --gpu`).")]
    head += [f"- FAILED {f}" for f in tests.get("failures", [])]
    head += ["", "## Targets (paper preset, 64x64, fp16)", "",
             _md_table([dict(zip(("target", "wanted", "measured", "verdict"), t, strict=True))
                        for t in target_lines], ["target", "wanted", "measured", "verdict"]),
             "", "## Generator", "",
             _md_table(gen_rows + [r for r in tune_rows if r.get("backend")],
                       ["backend", "precision", "mode", "batch", "p50_ms", "p99_ms",
                        "images_per_s", "tflops", "speedup_vs_torch_fp32", "peak_mem_mb",
                        "workspace_mb", "launches", "rel_err", "build_s", "note"]),
             "", "launches: GPU kernels of one call, counted by torch.profiler; peak_mem_mb "
             "includes the backend's weights, plan buffers and split-K workspace "
             "(workspace_mb); nothing is autotuned at run time.", "",
             "## Training step (G+D, DRAGAN included, fp32)", "",
             _md_table(train_rows, ["impl", "batch", "ms_p50", "peak_mib", "speedup_vs_eager",
                                    "mem_saving_vs_eager", "note"])]
    if tune_rows:
        head += ["", "## Tuning table re-measured", "", "```", json.dumps(
            {k: v for k, v in tune_rows[0].items() if k not in ctx}, indent=1), "```"]
    write_text(path, "\n".join(head) + "\n")


# ---------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU interpreter, micro shapes")
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget")
    p.add_argument("--reserve-s", type=float, default=90.0,
                   help="time kept for the training step and the summary")
    p.add_argument("--batch", default="1,8,64,256")
    p.add_argument("--compile-batch", default="1", help="batches for torch.compile")
    p.add_argument("--compile-mode", default="reduce-overhead",
                   choices=["reduce-overhead", "max-autotune", "default"])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--shards", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    p.add_argument("--tune", default="auto", choices=["auto", "yes", "no"])
    p.add_argument("--skip", default="", help="comma-separated: tests,torch-compile,train")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="where gpu_check.csv/.md go (default bench/results; --smoke: none)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere
    else:
        os.environ.pop("TRITON_INTERPRET", None)
    clock = Clock(args.budget_s)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: needs a CUDA GPU (none found); --smoke runs the same flow on the CPU",
              file=sys.stderr)
        return 2
    import triton  # noqa: F401

    from s2i_fast.bench.harness import RESULTS, append_csv, context
    from s2i_fast.fileio import ensure_dir

    device = "cpu" if args.smoke else "cuda"
    ctx = context(device)
    extra = {}
    if not args.smoke:
        props = torch.cuda.get_device_properties(0)
        extra = {"GPU": f"{props.name}, sm_{props.major}{props.minor}, "
                        f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB",
                 "cuDNN": torch.backends.cudnn.version(), "CPU cores": os.cpu_count()}
    else:
        ctx["device"] += " (triton interpreter)"
    clock.say(f"{ctx['device']} | torch {ctx['torch']} | triton {ctx['triton']} | CUDA "
              f"{ctx.get('cuda', '-')} | commit {ctx['git_commit']} | {extra}")
    out_dir = args.out_dir or (None if args.smoke else RESULTS)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"s2i_gpu_check_{os.getpid()}"
    ensure_dir(tmp)
    broken = []
    tests = {}
    if "tests" not in args.skip:
        try:
            tests = run_tests(args.smoke, 1 if args.smoke else args.shards, clock, tmp)
        except Exception as e:  # noqa: BLE001
            broken.append(f"tests: {type(e).__name__}: {e}")
    gen_rows, train_rows, tune_rows = [], [], []
    peak = matmul = None
    try:
        gen_rows = run_generator(args, clock, ctx, torch)
        if not args.smoke:
            peak = spec_peak(torch.cuda.get_device_name())
            matmul = matmul_tflops(torch)
            extra["dense fp16 peak (spec sheet)"] = f"{peak} TFLOP/s" if peak else "unknown"
            extra["fp16 8192^3 matmul (measured)"] = f"{matmul:.0f} TFLOP/s"
    except Exception as e:  # noqa: BLE001
        broken.append(f"generator: {type(e).__name__}: {e}")
    if "train" not in args.skip:
        try:
            train_rows = run_train(args, clock, ctx, torch)
        except Exception as e:  # noqa: BLE001
            broken.append(f"train: {type(e).__name__}: {e}")
    want_tune = args.tune == "yes" or (args.tune == "auto" and clock.left() > 150)
    if not args.smoke and want_tune:
        try:
            tune_rows = run_tune(args, clock, ctx, torch)
        except Exception as e:  # noqa: BLE001
            broken.append(f"tune: {type(e).__name__}: {e}")
    lines = targets(gen_rows, train_rows, peak, matmul, args.smoke)
    print("\nTargets (paper preset, 64x64, fp16):")
    for t in lines:
        print(f"  {t[0]:48s} {t[1]:>34s}  {t[2]:>28s}  {t[3]}")
    if out_dir is not None:
        rows = [dict(ctx, section="tests", **{k: v for k, v in tests.items()
                                              if k != "failures"})] if tests else []
        append_csv(out_dir / "gpu_check.csv", rows + gen_rows + train_rows + tune_rows)
        write_summary(out_dir / "gpu_check.md", ctx, args, tests, gen_rows, train_rows,
                      tune_rows, lines, extra, clock)
        clock.say(f"wrote {out_dir / 'gpu_check.csv'} and {out_dir / 'gpu_check.md'}")
    for b in broken:
        print(f"Error: {b}", file=sys.stderr)
    failed = tests.get("failed", 0) + tests.get("errors", 0)
    clock.say(f"done: {failed} failed tests, {len(broken)} broken sections")
    return 1 if (failed or broken) else 0


if __name__ == "__main__":
    sys.exit(main())
