"""One GAN training step: the models, their optimisers and the six losses.

Per step (x sketch, y photo, c label, z noise):
    fake = G(x, c, z1)
    D:  BCE(D(y), 1) + BCE(D(fake), 0) + w_ac_d * CE(D_cls(y), c) + DRAGAN(D, y)
    G:  w_gan * BCE(D(fake), 1) + w_ac_g * CE(D_cls(fake), c) + w_l1 * L1(fake, y)
        + w_perc * L_perc(fake, y) + w_div * L_div(G(x, c, z1), G(x, c, z2))
D and G both run in train mode throughout (batch statistics); DRAGAN's extra D forward on
x_hat uses x_hat's batch statistics, as in the TF reference. Under torchrun, gradients are
averaged over the ranks after each backward and buffers broadcast from rank 0 after the step
(train/distributed.py). The loop around it (batches, checkpoints, recovery) is trainer.py.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

import s2i_fast.kernels  # noqa: F401  (registers the fused ops behind impl="triton")
from s2i_fast.config import ModelConfig, PreprocessStats
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

LossHook = Callable[[str, torch.Tensor], torch.Tensor]


class GANStep:
    """G, D, their Adam optimisers (and fp16 grad scalers), the perceptual net; __call__ runs
    one step on a batch."""

    def __init__(self, tcfg: TrainConfig, mcfg: ModelConfig, stats: PreprocessStats,
                 device: torch.device, dist_info: ddp.DistInfo,
                 log: Callable[[str], None]) -> None:
        self.tcfg, self.mcfg = tcfg, mcfg
        self.device = device
        self.dist = dist_info
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.amp)
        if self.amp_dtype is not None and device.type != "cuda":
            log(f"--amp {tcfg.amp} needs CUDA; training in fp32 on {device.type}")
            self.amp_dtype = None
        mcfg.impl = tcfg.impl
        self.G = Generator(mcfg).to(device).train()
        self.D = Discriminator(mcfg).to(device).train()
        if tcfg.sync_bn and dist_info.enabled:
            n = ddp.set_sync_bn(self.G) + ddp.set_sync_bn(self.D)
            log(f"sync-bn: batch statistics all-reduced in {n} norm layers")
        ddp.broadcast_module(self.G)
        ddp.broadcast_module(self.D)
        # the averaged generator (None when --g-ema is 0): updated after every G step, never
        # trained, in eval mode with the trained G's batch-norm statistics copied in
        self.G_ema: torch.nn.Module | None = None
        if tcfg.g_ema > 0:
            self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.ema_updates = 0
        betas = (tcfg.beta1, tcfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=tcfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=tcfg.lr_d, betas=betas)
        fp16 = self.amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=fp16)
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=fp16)
        self.perceptual = None
        if tcfg.weights.perc > 0:
            self.perceptual, msg = build_perceptual(stats, tcfg.perceptual_weights)
            log(msg)
            if self.perceptual is not None:
                self.perceptual.to(device)

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """Weights and optimiser state (live references: copy before keeping). "generator" is
        the generator inference uses: the EMA when it is on, with the trained one beside it as
        "generator_train"."""
        st = {"generator": self.G.state_dict(), "discriminator": self.D.state_dict(),
              "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}
        if self.G_ema is not None:
            st["generator_train"] = st["generator"]
            st["generator"] = self.G_ema.state_dict()
            st["ema_updates"] = self.ema_updates
        return st

    def load_state(self, state: dict[str, Any]) -> None:
        trained = state.get("generator_train")
        if self.G_ema is not None:
            # a checkpoint written without the EMA starts the average at its weights
            self.G_ema.load_state_dict(state["generator"])
            self.ema_updates = int(state.get("ema_updates", 0))
        self.G.load_state_dict(trained if trained is not None else state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.G.zero_grad(set_to_none=True)
        self.D.zero_grad(set_to_none=True)

    def scaler_state(self) -> dict[str, Any]:
        on = self.scaler_g.is_enabled()
        return {"scaler_g": self.scaler_g.state_dict() if on else None,
                "scaler_d": self.scaler_d.state_dict() if on else None}

    def load_scaler_state(self, ts: dict[str, Any]) -> None:
        if ts.get("scaler_g"):
            self.scaler_g.load_state_dict(ts["scaler_g"])
            self.scaler_d.load_state_dict(ts["scaler_d"])

    def weights_finite(self) -> bool:
        for m in (self.G, self.D, self.G_ema):
            if m is None:
                continue
            for t in m.state_dict().values():
                if t.is_floating_point() and not torch.isfinite(t).all():
                    return False
        return True

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- d * G_ema + (1 - d) * G for the parameters (d ramps up to g_ema over the
        first steps); buffers (batch-norm running statistics) copied from G."""
        if self.G_ema is None:
            return
        self.ema_updates += 1
        n = self.ema_updates
        decay = min(self.tcfg.g_ema, (1 + n) / (10 + n))
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
            pe.lerp_(p.detach(), 1.0 - decay)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
            be.copy_(b)

    # ------------------------------------------------------------------ one step
    def _finite(self, loss: torch.Tensor, module: torch.nn.Module, check_grads: bool) -> bool:
        ok = bool(torch.isfinite(loss).item())
        if ok and check_grads:
            grads = [p.grad.isfinite().all() for p in module.parameters() if p.grad is not None]
            ok = bool(torch.stack(grads).all().item()) if grads else True
        return not ddp.any_rank(not ok, self.device)


    def __call__(self, batch: dict[str, torch.Tensor], hook: LossHook | None = None
                 ) -> dict[str, float] | str:
        """One D step and one G step: the metrics, or why the step was not applied (a loss or
        gradient that is not finite on some rank; the weights are then as they were, except
        for D when G's loss failed: the caller reloads a good state)."""
        hook = hook or (lambda name, loss: loss)
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
        loss_d = hook("loss_d", loss_d)
        self.scaler_d.scale(loss_d).backward()
        ddp.average_gradients(self.D)
        if not self._finite(loss_d, self.D, check_grads=not fp16):
            return f"non-finite D loss ({loss_d.item():.4g})"
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
        loss_g = hook("loss_g", loss_g)
        self.scaler_g.scale(loss_g).backward()
        ddp.average_gradients(self.G)
        if not self._finite(loss_g, self.G, check_grads=not fp16):
            return f"non-finite G loss ({loss_g.item():.4g})"
        self.scaler_g.step(self.opt_g)
        self.scaler_g.update()
        self.D.requires_grad_(True)
        if self.dist.enabled:
            ddp.broadcast_module(self.G, params=False)
            ddp.broadcast_module(self.D, params=False)
        self.update_ema()

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
