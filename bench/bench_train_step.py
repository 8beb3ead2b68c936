"""Full G+D training step: eager (impl=ref) against the fused MRU kernels (impl=triton).

    python bench/bench_train_step.py                 # CUDA: paper preset, 64x64, batch 16, 64
    python bench/bench_train_step.py --amp bf16      # the same under bf16 autocast
    python bench/bench_train_step.py --smoke         # CPU interpreter, micro model, 1 step

One step is what the trainer (train/trainer.py, "sketch2img" loss preset) does: G forward; D on real
and fake, BCE + auxiliary class loss + DRAGAN penalty (double backward through D), D backward,
Adam; D on the fake again, BCE + aux + L1 + diversity (a second G forward), G backward, Adam.
The perceptual term is left out (it needs Inception-v4 weights and is the same work for both
impls). Reports median and p20/p80 step time over --steps timed steps after --warmup steps,
peak allocated memory of one step (the allocator's peak above what the models, optimiser
states and batch held before it; the training kernels use no workspace and nothing is
autotuned), and the speed-up and memory saving of impl=triton; appends rows to
bench/results/train_step.csv with the device, versions and git commit. On CUDA the triton
step's kernels are compiled in parallel first (kernels/precompile.py, on a throwaway copy).
The target: at least 1.5x faster than eager with at least 25% less peak memory.

The DRAGAN penalty's create_graph backward does not run the fused backward kernels: each fused
op re-runs its torch reference and differentiates that (kernels/_triton_utils.ref_vjp), so by
construction that pass costs what eager costs plus one reference forward of the elementwise
chain per fused op (the recompute); the fused forward and plain backward kernels still serve
the other D passes and the whole G step.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from s2i_fast.bench.harness import (  # noqa: E402
    RESULTS,
    append_csv,
    context,
    peak_memory_bytes,
    print_table,
    require_cuda,
    smoke_requested,
    sync,
)

SMOKE = smoke_requested()

import os  # noqa: E402

import torch  # noqa: E402

os.environ["S2I_TRITON_STRICT"] = "1"  # impl=triton must not fall back to torch silently

from s2i_fast.config import ModelConfig  # noqa: E402
from s2i_fast.kernels import _triton_utils as tu  # noqa: E402
from s2i_fast.model import Discriminator, Generator  # noqa: E402
from s2i_fast.train.losses import (  # noqa: E402
    aux_class_loss,
    diversity_loss,
    dragan_penalty,
    gan_loss,
    l1_loss,
)


class Step:
    """Models, optimisers and one fixed batch; __call__ runs one D step and one G step."""

    def __init__(self, cfg: ModelConfig, impl: str, batch: int, device, amp):  # noqa: ANN001
        torch.manual_seed(0)
        self.G = Generator(cfg).to(device).train()
        self.D = Discriminator(cfg).to(device).train()
        self.G.set_impl(impl)
        self.D.set_impl(impl)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=1e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        r, self.device, self.amp = cfg.resolution, device, amp
        self.noise_dim = cfg.noise_dim
        self.sketch = torch.rand(batch, 1, r, r, device=device) * 2 - 1  # [B, 1, R, R]
        self.photo = torch.rand(batch, 3, r, r, device=device) * 2 - 1  # [B, 3, R, R]
        self.label = torch.randint(0, cfg.num_classes, (batch,), device=device)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def __call__(self) -> float:
        sketch, photo, label = self.sketch, self.photo, self.label
        b = sketch.shape[0]
        z1 = torch.randn(b, self.noise_dim, device=self.device)
        with self.autocast():
            fake = self.G(sketch, label, z1)
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            real_logit, real_cls = self.D(photo, sketch)
            fake_logit, _ = self.D(fake.detach(), sketch)
            loss_d = gan_loss(real_logit, True) + gan_loss(fake_logit, False)
            loss_d = loss_d + aux_class_loss(real_cls, label)
            loss_d = loss_d + dragan_penalty(self.D, photo, sketch, 10.0)
        loss_d.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            g_logit, g_cls = self.D(fake, sketch)
            loss_g = gan_loss(g_logit, True) + aux_class_loss(g_cls, label) + l1_loss(fake, photo)
            z2 = torch.randn(b, self.noise_dim, device=self.device)
            loss_g = loss_g + diversity_loss(fake, self.G(sketch, label, z2), z1, z2)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        return float(loss_d.detach()) + float(loss_g.detach())  # syncs, like the trainer's log


def time_steps(step: Step, warmup: int, steps: int) -> tuple[float, float, float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        sync(step.device)
        t0 = time.perf_counter()
        step()
        sync(step.device)
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()

    def q(p: float) -> float:
        return times[min(len(times) - 1, int(round(p * (len(times) - 1))))]

    return q(0.5), q(0.2), q(0.8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="micro model on the CPU interpreter")
    p.add_argument("--batch", default="16,64")
    p.add_argument("--preset", default="paper", choices=["tiny", "paper"])
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", type=Path, default=None,
                   help="CSV to append to (default bench/results/train_step.csv; "
                        "--smoke writes none unless given)")  # fmt: skip
    a = p.parse_args(argv)
    if not a.smoke:
        require_cuda("bench_train_step")
    device = torch.device("cpu" if a.smoke else "cuda")
    torch.backends.cudnn.benchmark = True  # as a trainer would; the same for both impls
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[a.amp]
    if amp is torch.float16:
        print("note: fp16 without a GradScaler here (timing only)", file=sys.stderr)
    if a.smoke:
        cfg = ModelConfig(base=2, resolution=64, num_classes=3, noise_channels=4)
        batches, warmup, steps = [2], 0, 1
    else:
        cfg = ModelConfig.from_preset(a.preset, resolution=64, num_classes=10)
        batches, warmup, steps = [int(x) for x in a.batch.split(",")], a.warmup, a.steps
    env = context(device)
    print(f"{env['device']}  torch {env['torch']}  triton {env['triton']}  "
          f"commit {env['git_commit']}  preset {cfg.preset} (base {cfg.base}) 64x64  amp {a.amp}")
    rows = []
    for b in batches:
        base = {}
        for impl in ("ref", "triton"):
            if impl == "triton" and device.type == "cuda":
                from s2i_fast.kernels.precompile import precompile

                print(precompile(Step(cfg, impl, b, device, amp)).line(), flush=True)
            step = Step(cfg, impl, b, device, amp)
            before = tu.launches_total()
            p50, p20, p80 = time_steps(step, warmup, steps)
            if impl == "triton" and tu.launches_total() == before:
                raise RuntimeError("impl=triton launched no Triton kernel")
            peak = peak_memory_bytes(step, device)
            if impl == "ref":
                base = {"ms": p50, "peak": peak}
            rows.append({
                **env, "preset": cfg.preset, "base": cfg.base, "resolution": cfg.resolution,
                "batch": b, "amp": a.amp, "impl": impl, "steps": steps,
                "ms_p50": round(p50, 3), "ms_p20": round(p20, 3), "ms_p80": round(p80, 3),
                "images_per_s": round(b / (p50 * 1e-3), 1),
                "peak_mib": round(peak / 2**20, 1),
                "speedup_vs_eager": round(base["ms"] / p50, 3),
                "mem_saving_vs_eager": round(1 - peak / base["peak"], 3) if base["peak"] else "",
            })  # fmt: skip
            del step
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_table(rows, ["batch", "amp", "impl", "ms_p50", "ms_p20", "ms_p80", "images_per_s",
                       "peak_mib", "speedup_vs_eager", "mem_saving_vs_eager"])  # fmt: skip
    print("target: speedup_vs_eager >= 1.5 and mem_saving_vs_eager >= 0.25")
    out = a.out if a.out is not None else (None if a.smoke else RESULTS / "train_step.csv")
    if out is not None:
        append_csv(out, rows)
        print(f"appended {len(rows)} rows to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
