"""The training loop: batches, sample grids, signals, checkpoints that survive anything, and
recovery from a non-finite loss. One step's models and losses are train/step.py; the
checkpoint folder's files are train/checkpoints.py.

Sample grids use G in eval mode (running statistics), as every export does.
"""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from s2i_fast.checkpoint import load_checkpoint, make_payload
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import OutputError, S2IError
from s2i_fast.fileio import ensure_dir
from s2i_fast.train import distributed as ddp
from s2i_fast.train.checkpoints import RunCheckpoints
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.report import MetricsLog, save_grid, write_plots
from s2i_fast.train.state import ResumableBatchSampler, rng_state, seed_everything, set_rng_state
from s2i_fast.train.step import GANStep

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
        self.checkpoints = RunCheckpoints(self.ckpt_dir, tcfg.keep_checkpoints)

        seed_everything(tcfg.seed)  # identical init on every rank (then broadcast anyway)
        self.gan = GANStep(tcfg, mcfg, stats, self.device, self.dist, self.log)

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

    # the models and optimisers live in the step; these names are the trainer's public face
    @property
    def G(self) -> torch.nn.Module:  # noqa: N802
        return self.gan.G

    @property
    def D(self) -> torch.nn.Module:  # noqa: N802
        return self.gan.D

    @property
    def perceptual(self) -> torch.nn.Module | None:
        return self.gan.perceptual

    def _snapshot(self) -> dict[str, Any]:
        return copy.deepcopy({**self.gan.state(), "step": self.step})

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
        self.gan.load_state({**payload, **ts})
        self.gan.load_scaler_state(ts)
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
    def save(self, reason: str = "") -> Path | None:
        """step_NNNNNNN.pt and latest.pt (rank 0), keeping the last few step files."""
        rngs = [rng_state()]
        if self.dist.enabled:
            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if not self.dist.is_main:
            return None
        if not self.gan.weights_finite():  # never write NaN weights
            self.log(f"step {self.step}: weights are not finite; checkpoint not written")
            return None
        state = self.gan.state()
        train_state = {
            **{k: state[k] for k in ("generator_train", "ema_updates") if k in state},
            "opt_g": state["opt_g"],
            "opt_d": state["opt_d"],
            **self.gan.scaler_state(),
            "rng": rngs,
            "sampler": self.sampler.state_dict(),
            "step": self.step,
            "world_size": self.dist.world_size,
            "train_config": self.tcfg.to_dict(),
            "metrics_tail": self.metrics.rows[-100:] if self.metrics else [],
        }
        payload = make_payload(
            self.mcfg, self.class_names, self.stats, state["generator"], state["discriminator"],
            train_state=train_state, step=self.step,
        )  # fmt: skip
        path = self.checkpoints.save(payload, self.step)
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
        latest = self.checkpoints.latest
        if latest.exists():
            payload = load_checkpoint(latest, map_location=self.device)
            self.gan.load_state({**payload, **payload["train_state"]})
            source = f"{latest} (step {payload['step']})"
        else:
            self.gan.load_state(self._last_good)
            source = f"the in-memory start state (step {self._last_good['step']})"
        self.log(f"step {self.step}: {why}; step skipped, weights reloaded from {source}")

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """One D and one G step; None when it was skipped (non-finite) and weights reloaded."""
        result = self.gan(batch, self._hook)
        if isinstance(result, str):
            self._recover(result)
            return None
        self._consecutive_bad = 0
        return result

    # ------------------------------------------------------------------ one step
    def _hook(self, name: str, loss: torch.Tensor) -> torch.Tensor:
        step = self.step + 1
        if name == "loss_d" and step in self.inject_nan:
            self.inject_nan.discard(step)
            loss = loss * float("nan")
        if self.loss_hook is not None:
            loss = self.loss_hook(step, name, loss)
        return loss

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def generate_samples(self) -> torch.Tensor:
        """The inference generator (the EMA when on, else G in eval mode: running statistics)
        on the fixed test sketches and noise."""
        gen = self.gan.G_ema if self.gan.G_ema is not None else self.G
        was_training = gen.training
        gen.eval()
        try:
            sb = self.sample_batch
            return gen(sb["sketch"], sb["label"].long(), self.sample_noise).float()
        finally:
            gen.train(was_training)

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
            raise OutputError(f"could not write {where}: {e.strerror or e}") from e

    def _run(self, steps: int | None) -> dict[str, Any]:
        total = self.tcfg.steps if steps is None else steps
        tc = self.tcfg
        first_call = not self._started
        self._started = True
        if self.dist.is_main and self.metrics is None:
            ensure_dir(self.run_dir)
            self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", self.resumed_from)
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        elif self.resumed_from is None and first_call:
            seed_everything(tc.seed + 1000 * self.dist.rank)
        old_handlers = {}
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
            # sample_every 0: one grid at the end; else the end's, unless just written
            if not self.stop_signal and (tc.sample_every == 0 or self.step % tc.sample_every):
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
