"""The training loop: one D step and one G step per batch, checkpoints that survive anything.

Per step (x sketch, y photo, c label, z noise):
    fake = G(x, c, z1)
    D:  BCE(D(y), 1) + BCE(D(fake), 0) + w_ac_d * CE(D_cls(y), c) + DRAGAN(D, y)
    G:  w_gan * BCE(D(fake), 1) + w_ac_g * CE(D_cls(fake), c) + w_l1 * L1(fake, y)
        + w_perc * L_perc(fake, y) + w_div * L_div(G(x, c, z1), G(x, c, z2))
D and G both run in train mode throughout (batch statistics); DRAGAN's extra D forward on
x_hat uses x_hat's batch statistics, as in the TF reference. Sample grids use G in eval mode.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

import s2i_fast.kernels  # noqa: F401  (registers the fused ops behind impl="triton")
from s2i_fast.checkpoint import load_checkpoint, make_payload, save_checkpoint
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import CheckpointError, S2IError
from s2i_fast.model import Discriminator, Generator
from s2i_fast.train import distributed as ddp
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.inception import build_perceptual
from s2i_fast.train.losses import (
    aux_class_loss,
    diversity_loss,
    dragan_penalty,
    gan_loss,
    l1_loss,
    perceptual_loss,
)
from s2i_fast.train.report import MetricsLog, save_grid, write_plots
from s2i_fast.train.state import ResumableBatchSampler, rng_state, seed_everything, set_rng_state

INJECT_NAN_ENV = "S2I_FAST_INJECT_NAN"  # test hook: comma-separated steps whose L_D becomes NaN
MAX_CONSECUTIVE_RECOVERIES = 5


class TrainingError(S2IError):
    """Training cannot go on (e.g. the loss stays non-finite after reloading)."""


class Trainer:
    def __init__(
        self,
        tcfg: TrainConfig,
        mcfg: ModelConfig,
        dataset: Dataset,
        sample_batch: dict[str, torch.Tensor],
        class_names: list[str],
        stats: PreprocessStats,
        run_dir: str | os.PathLike,
        *,
        dist_info: ddp.DistInfo | None = None,
        device: str | torch.device = "cpu",
        log: Callable[[str], None] | None = None,
        progress: bool = True,
        loss_hook: Callable[[int, str, torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.tcfg, self.mcfg = tcfg, mcfg
        self.class_names, self.stats = class_names, stats
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.dist = dist_info or ddp.DistInfo()
        self.device = torch.device(device)
        self._log = log
        self.progress = progress and self.dist.is_main
        self.loss_hook = loss_hook
        self.inject_nan = {int(s) for s in os.environ.get(INJECT_NAN_ENV, "").split(",") if s}
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.amp)
        if self.amp_dtype is not None and self.device.type != "cuda":
            self.log(f"--amp {tcfg.amp} needs CUDA; training in fp32 on {self.device.type}")
            self.amp_dtype = None

        seed_everything(tcfg.seed)  # identical init on every rank (then broadcast anyway)
        mcfg.impl = tcfg.impl
        self.G = Generator(mcfg).to(self.device).train()
        self.D = Discriminator(mcfg).to(self.device).train()
        if tcfg.sync_bn and self.dist.enabled:
            n = ddp.set_sync_bn(self.G) + ddp.set_sync_bn(self.D)
            self.log(f"sync-bn: batch statistics all-reduced in {n} norm layers")
        ddp.broadcast_module(self.G)
        ddp.broadcast_module(self.D)
        betas = (tcfg.beta1, tcfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=tcfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=tcfg.lr_d, betas=betas)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)

        self.perceptual = None
        if tcfg.weights.perc > 0:
            self.perceptual, msg = build_perceptual(stats, tcfg.perceptual_weights)
            self.log(msg)
            if self.perceptual is not None:
                self.perceptual.to(self.device)

        self.dataset = dataset
        self.sampler = ResumableBatchSampler(
            len(dataset), tcfg.batch_size, tcfg.seed, self.dist.rank, self.dist.world_size
        )
        if len(self.sampler) == 0:
            raise TrainingError(
                f"{len(dataset)} training items are fewer than one batch of {tcfg.batch_size} "
                f"per process; lower --batch-size"
            )
        self.sample_batch = {k: v.to(self.device) for k, v in sample_batch.items()}
        g = torch.Generator().manual_seed(tcfg.seed + 12345)
        n_samples = self.sample_batch["sketch"].shape[0]
        self.sample_noise = torch.randn(n_samples, mcfg.noise_dim, generator=g).to(self.device)

        self.step = 0
        self.resumed_from: int | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self.metrics: MetricsLog | None = None
        self.stop_signal: str | None = None
        self._started = False
        self.recoveries = 0
        self._consecutive_bad = 0
        self._last_good = self._snapshot()

    # ------------------------------------------------------------------ helpers
    def log(self, msg: str) -> None:
        if not self.dist.is_main:
            return
        if self._log is not None:
            self._log(msg)
        else:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "generator": self.G.state_dict(),
                "discriminator": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(),
                "step": self.step,
            }
        )

    def _load_weights(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])

    def _batches(self):
        """Endless batches; sampler.position counts the ones handed out this epoch."""
        while True:
            if self.tcfg.num_workers > 0:
                gen = torch.Generator().manual_seed(
                    self.tcfg.seed * 7919 + self.sampler.epoch * 1009 + self.sampler.position
                )
                loader = DataLoader(
                    self.dataset,
                    batch_sampler=self.sampler,
                    num_workers=self.tcfg.num_workers,
                    generator=gen,
                    pin_memory=self.device.type == "cuda",
                )
                source = iter(loader)
            else:
                source = (default_collate([self.dataset[i] for i in b]) for b in self.sampler)
            for batch in source:
                self.sampler.position += 1
                yield batch
            self.sampler.epoch += 1
            self.sampler.position = 0

    # ------------------------------------------------------------------ resume
    def load_payload(self, payload: dict[str, Any]) -> None:
        ts = payload.get("train_state") or {}
        if payload.get("discriminator") is None or "opt_g" not in ts:
            raise TrainingError("checkpoint has no training state (was it exported?)")
        self._load_weights({**payload, "opt_g": ts["opt_g"], "opt_d": ts["opt_d"]})
        if ts.get("scaler_g"):
            self.scaler_g.load_state_dict(ts["scaler_g"])
            self.scaler_d.load_state_dict(ts["scaler_d"])
        self.sampler.load_state_dict(ts["sampler"])
        self.step = int(ts["step"])
        self.resumed_from = self.step
        rngs = ts.get("rng") or []
        if len(rngs) == self.dist.world_size:
            self._rng_to_restore = rngs[self.dist.rank]
        else:
            self.log(
                f"checkpoint was written by {len(rngs)} processes, this run has "
                f"{self.dist.world_size}: continuing with fresh RNG streams (not bit-exact)"
            )
            seed_everything(self.tcfg.seed + 1000 * self.dist.rank + self.step)
        self._last_good = self._snapshot()

    # ------------------------------------------------------------------ checkpoints
    def _all_finite(self) -> bool:
        for m in (self.G, self.D):
            for t in m.state_dict().values():
                if t.is_floating_point() and not torch.isfinite(t).all():
                    return False
        return True

    def save(self, reason: str = "") -> Path | None:
        """latest.pt and step_NNNNNNN.pt (rank 0), keeping the last few step files."""
        rngs = [rng_state()]
        if self.dist.enabled:
            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.dist.is_main:
            return None
        if not self._all_finite():  # never write NaN weights
            self.log(f"step {self.step}: weights are not finite; checkpoint not written")
            return None
        train_state = {
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict() if self.scaler_g.is_enabled() else None,
            "scaler_d": self.scaler_d.state_dict() if self.scaler_d.is_enabled() else None,
            "rng": rngs,
            "sampler": self.sampler.state_dict(),
            "step": self.step,
            "world_size": self.dist.world_size,
            "train_config": self.tcfg.to_dict(),
            "metrics_tail": self.metrics.rows[-100:] if self.metrics else [],
        }
        payload = make_payload(
            self.mcfg,
            self.class_names,
            self.stats,
            self.G.state_dict(),
            self.D.state_dict(),
            train_state=train_state,
            step=self.step,
        )
        path = self.ckpt_dir / f"step_{self.step:07d}.pt"
        save_checkpoint(path, payload)
        save_checkpoint(self.ckpt_dir / "latest.pt", payload)
        olds = sorted(self.ckpt_dir.glob("step_*.pt"))[: -max(1, self.tcfg.keep_checkpoints)]
        for old in olds:
            old.unlink(missing_ok=True)
        self._last_good = self._snapshot()
        if reason:
            self.log(f"checkpoint {path} ({reason})")
        return path

    def _recover(self, why: str) -> None:
        """Skip this step and reload the last good weights (latest.pt, else the snapshot)."""
        self.recoveries += 1
        self._consecutive_bad += 1
        if self._consecutive_bad > MAX_CONSECUTIVE_RECOVERIES:
            raise TrainingError(
                f"loss stayed non-finite for {MAX_CONSECUTIVE_RECOVERIES + 1} steps after "
                f"reloading; lower the learning rates or check the data"
            )
        latest = self.ckpt_dir / "latest.pt"
        if latest.exists():
            payload = load_checkpoint(latest, map_location=self.device)
            ts = payload["train_state"]
            self._load_weights({**payload, "opt_g": ts["opt_g"], "opt_d": ts["opt_d"]})
            source = f"{latest} (step {payload['step']})"
        else:
            self._load_weights(self._last_good)
            source = f"the in-memory start state (step {self._last_good['step']})"
        self.G.zero_grad(set_to_none=True)
        self.D.zero_grad(set_to_none=True)
        self.log(f"step {self.step}: {why}; step skipped, weights reloaded from {source}")

    # ------------------------------------------------------------------ one step
    def _finite(self, loss: torch.Tensor, module: torch.nn.Module, check_grads: bool) -> bool:
        ok = bool(torch.isfinite(loss).item())
        if ok and check_grads:
            grads = [p.grad.isfinite().all() for p in module.parameters() if p.grad is not None]
            ok = bool(torch.stack(grads).all().item()) if grads else True
        return not ddp.any_rank(not ok, self.device)

    def _hook(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        step = self.step + 1
        if name == "loss_d" and step in self.inject_nan:
            self.inject_nan.discard(step)
            loss = loss * float("nan")
        if self.loss_hook is not None:
            loss = self.loss_hook(step, name, loss)
        return loss

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """One D step and one G step; None when the step was skipped (non-finite loss)."""
        w, tricks = self.tcfg.weights, self.tcfg.labels
        dev = self.device
        sketch = batch["sketch"].to(dev, non_blocking=True)  # [B, 1, R, R]
        photo = batch["photo"].to(dev, non_blocking=True)  # [B, 3, R, R]
        label = batch["label"].to(dev, non_blocking=True).long()  # [B]
        b = sketch.shape[0]
        fp16 = self.scaler_d.is_enabled()

        z1 = torch.randn(b, self.mcfg.noise_dim, device=dev)
        with self.autocast():
            fake = self.G(sketch, label, z1)  # [B, 3, R, R]

        # ---- discriminator
        self.D.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.autocast():
            real_logit, real_cls = self.D(photo, sketch)  # [B], [B, K]
            fake_logit, _ = self.D(fake.detach(), sketch)
            d_real = gan_loss(real_logit, True, soft=tricks.soft, noisy=tricks.noisy,
                              flip=tricks.flip)
            d_fake = gan_loss(fake_logit, False, soft=tricks.soft, noisy=tricks.noisy,
                              flip=tricks.flip)
            ac_d = aux_class_loss(real_cls, label)
            loss_d = d_real + d_fake + w.ac_d * ac_d
            gp = torch.zeros((), device=dev)
            if w.gp > 0:
                scale = self.scaler_d.get_scale() if fp16 else None
                gp = dragan_penalty(self.D, photo, sketch, w.gp, grad_scale=scale)
                loss_d = loss_d + gp
        loss_d = self._hook("loss_d", loss_d)
        self.scaler_d.scale(loss_d).backward()
        ddp.average_gradients(self.D)
        if not self._finite(loss_d, self.D, check_grads=not fp16):
            self._recover(f"non-finite D loss ({loss_d.item():.4g})")
            return None
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()

        # ---- generator
        self.D.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.autocast():
            g_logit, g_cls = self.D(fake, sketch)
            g_gan = gan_loss(g_logit, True)
            ac_g = aux_class_loss(g_cls, label)
            l1 = l1_loss(fake, photo)
            loss_g = w.gan_g * g_gan + w.ac_g * ac_g + w.l1 * l1
            perc = torch.zeros((), device=dev)
            if self.perceptual is not None and w.perc > 0:
                with torch.no_grad():
                    real_feats = self.perceptual(photo)
                perc = perceptual_loss(self.perceptual(fake), real_feats)
                loss_g = loss_g + w.perc * perc
            div = torch.zeros((), device=dev)
            if w.div > 0:
                z2 = torch.randn(b, self.mcfg.noise_dim, device=dev)
                fake2 = self.G(sketch, label, z2)
                div = diversity_loss(fake, fake2, z1, z2)
                loss_g = loss_g + w.div * div
        loss_g = self._hook("loss_g", loss_g)
        self.scaler_g.scale(loss_g).backward()
        ddp.average_gradients(self.G)
        if not self._finite(loss_g, self.G, check_grads=not fp16):
            self._recover(f"non-finite G loss ({loss_g.item():.4g})")
            return None
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)
        if self.dist.enabled:
            ddp.broadcast_module(self.G, params=False)
            ddp.broadcast_module(self.D, params=False)
        self._consecutive_bad = 0

        with torch.no_grad():
            out = {
                "loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake,
                "gp": gp, "ac_d": ac_d, "g_gan": g_gan, "ac_g": ac_g, "l1": l1,
                "perc": perc, "div": div,
                "d_acc_real": (real_logit > 0).float().mean(),
                "d_acc_fake": (fake_logit < 0).float().mean(),
                "d_cls_acc_real": (real_cls.argmax(1) == label).float().mean(),
                "d_cls_acc_fake": (g_cls.argmax(1) == label).float().mean(),
            }
            vals = torch.stack([v.detach().float() for v in out.values()]).tolist()
        return ddp.mean_over_ranks(dict(zip(out.keys(), vals, strict=True)), dev)

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def generate_samples(self) -> torch.Tensor:
        """G in eval mode (running statistics) on the fixed test sketches and noise."""
        was_training = self.G.training
        self.G.eval()
        try:
            sb = self.sample_batch
            return self.G(sb["sketch"], sb["label"].long(), self.sample_noise).float()
        finally:
            self.G.train(was_training)

    def write_samples(self) -> Path:
        fake = self.generate_samples()
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        sb = self.sample_batch
        save_grid(path, sb["sketch"], fake, sb["photo"], self.stats)
        return path

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop_signal = name

    def run(self, steps: int | None = None) -> dict[str, Any]:
        """Train until `steps` (default tcfg.steps) are done or a signal arrives."""
        try:
            return self._run(steps)
        except OSError as e:  # full disk, read-only or vanished run folder
            where = e.filename or self.run_dir
            raise CheckpointError(f"cannot write {where}: {e.strerror or e}") from e

    def _run(self, steps: int | None) -> dict[str, Any]:
        total = self.tcfg.steps if steps is None else steps
        tc = self.tcfg
        first_call = not self._started
        self._started = True
        if self.dist.is_main and self.metrics is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.resumed_from)
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        elif self.resumed_from is None and first_call:
            seed_everything(tc.seed + 1000 * self.dist.rank)
        old_handlers = {}
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._on_signal)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True, file=sys.stderr)
        start_step, t0 = self.step, time.perf_counter()
        last: dict[str, float] = {}
        try:
            if first_call and self.step == 0 and self.dist.is_main and tc.sample_every > 0:
                self.write_samples()
            batches = self._batches()
            while self.step < total:
                metrics = self.train_step(next(batches))
                self.step += 1
                if self.dist.is_main:
                    row = {"step": self.step, "epoch": self.sampler.epoch}
                    row.update(metrics if metrics is not None else {"skipped": True})
                    if metrics is not None:
                        last = metrics
                    if self.step % max(1, tc.log_every) == 0 or metrics is None:
                        self.metrics.append(row)
                    if bar is not None:
                        bar.update(1)
                        if last:
                            bar.set_postfix(D=f"{last['loss_d']:.3f}", G=f"{last['loss_g']:.3f}",
                                            L1=f"{last['l1']:.3f}", refresh=False)
                    if tc.sample_every > 0 and self.step % tc.sample_every == 0:
                        self.write_samples()
                        write_plots(self.metrics.rows, self.run_dir / "plots")
                if tc.ckpt_every > 0 and self.step % tc.ckpt_every == 0 and self.step < total:
                    self.save(reason="")
                stop = ddp.any_rank(self.stop_signal is not None, self.device)
                if stop:
                    self.stop_signal = self.stop_signal or "signal on another rank"
                    break
        finally:
            for sig, h in old_handlers.items():
                signal.signal(sig, h)
            if bar is not None:
                bar.close()
        path = self.save(reason=f"interrupted by {self.stop_signal}" if self.stop_signal else "")
        elapsed = time.perf_counter() - t0
        if self.dist.is_main:
            if not self.stop_signal and tc.sample_every > 0 and self.step % tc.sample_every:
                self.write_samples()
            write_plots(self.metrics.rows, self.run_dir / "plots")
        done = self.step - start_step
        return {
            "step": self.step,
            "steps_this_run": done,
            "train_seconds": round(elapsed, 2),
            "steps_per_second": round(done / elapsed, 4) if elapsed > 0 else None,
            "interrupted": self.stop_signal,
            "recoveries": self.recoveries,
            "checkpoint": str(path) if path else None,
            "final_metrics": last,
        }
