"""Whole networks with impl="triton" against impl="ref": one forward/backward of G and D, and
a convergence test (a few GAN steps from one seed give the same losses). Micro configuration:
base width 2, 64x64 (the smallest resolution ModelConfig allows), batch 2, 4 noise channels.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _kernels_train_check import DEVICE, assert_close_to, one_thread_no_tf32  # noqa: F401

from s2i_fast.config import ModelConfig
from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model import Discriminator, Generator
from s2i_fast.train.losses import aux_class_loss, dragan_penalty, gan_loss, l1_loss

pytest.importorskip("triton", reason="the fused kernels need triton (s2i-fast[triton])")

CLASSES = 3


def _cfg() -> ModelConfig:
    return ModelConfig(base=2, resolution=64, num_classes=CLASSES, noise_channels=4)


def _batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sketch = torch.rand(2, 1, 64, 64, generator=gen) * 2 - 1  # [B, 1, R, R]
    photo = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1  # [B, 3, R, R]
    label = torch.tensor([0, 2])
    noise = torch.randn(2, 64, generator=gen)
    return tuple(t.to(DEVICE) for t in (sketch, photo, label, noise))


def test_generator_and_discriminator_match_reference():
    torch.manual_seed(0)
    g_ref, d_ref = Generator(_cfg()).to(DEVICE), Discriminator(_cfg()).to(DEVICE)
    g_tri, d_tri = copy.deepcopy(g_ref), copy.deepcopy(d_ref)
    g_tri.set_impl("triton")
    d_tri.set_impl("triton")
    sketch, photo, label, noise = _batch()
    outs = []
    for g, d in ((g_ref, d_ref), (g_tri, d_tri)):
        before = tu.launches_total()
        fake = g(sketch, label, noise)
        logit, cls = d(fake, sketch)
        (logit.sum() + cls.square().sum() + fake.square().mean()).backward()
        outs.append((fake, logit, cls, tu.launches_total() - before))
    (f0, l0, c0, _), (f1, l1, c1, launches) = outs
    # 9 MRUs in G, 4 in D; each at least 4 kernels forward (gate_mask, row stats, stats merge,
    # the fused tail) and 3 backward (gate_mask, the batch-norm tail's two passes)
    assert launches >= 13 * 7, f"only {launches} Triton launches: did impl='triton' fall back?"
    assert_close_to("G output", f1, f0, 1e-5)
    assert_close_to("D logit", l1, l0, 1e-4)
    assert_close_to("D class logits", c1, c0, 1e-4)
    for net_ref, net_tri in ((g_ref, g_tri), (d_ref, d_tri)):
        for (name, p0), p1 in zip(net_ref.named_parameters(), net_tri.parameters(), strict=True):
            assert (p0.grad is None) == (p1.grad is None), f"{name}: gradient in one run only"
            if p0.grad is not None:
                tol = 1e-4 * max(1.0, p0.grad.abs().max().item())
                assert_close_to(f"grad of {name}", p1.grad, p0.grad, tol)
        for (name, b0), b1 in zip(net_ref.named_buffers(), net_tri.buffers(), strict=True):
            assert_close_to(f"buffer {name}", b1.float(), b0.float(), 1e-5)


def _gan_steps(impl: str, steps: int) -> list[tuple[float, float]]:
    """The trainer's step, minus the perceptual and diversity terms: D on BCE + AC + DRAGAN,
    then G on BCE + AC + L1; Adam as the 'sketch2img' preset (lr D 2e-4, G 1e-4)."""
    torch.manual_seed(0)
    G, D = Generator(_cfg()).to(DEVICE), Discriminator(_cfg()).to(DEVICE)
    G.set_impl(impl)
    D.set_impl(impl)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for step in range(steps):
        sketch, photo, label, noise = _batch(step)
        fake = G(sketch, label, noise)
        D.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        real_logit, real_cls = D(photo, sketch)
        fake_logit, _ = D(fake.detach(), sketch)
        loss_d = gan_loss(real_logit, True) + gan_loss(fake_logit, False)
        loss_d = loss_d + aux_class_loss(real_cls, label) + dragan_penalty(D, photo, sketch, 10.0)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        g_logit, g_cls = D(fake, sketch)
        loss_g = gan_loss(g_logit, True) + aux_class_loss(g_cls, label) + l1_loss(fake, photo)
        loss_g.backward()
        opt_g.step()
        losses.append((loss_d.item(), loss_g.item()))
    return losses


def test_gan_steps_converge_alike():
    """Three full GAN steps (DRAGAN double backward included), fp32, from one seed: the fused
    path's losses track the reference's. The tolerance grows with the step: fp32 rounding
    differences (~1e-7 relative) are amplified by Adam's normalised updates of near-zero
    gradients, which move a parameter by up to lr whatever the gradient's size."""
    steps = 3
    before = tu.launches_total()
    got = _gan_steps("triton", steps)
    assert tu.launches_total() - before > 0, "impl='triton' ran no Triton kernel"
    want = _gan_steps("ref", steps)
    for step, ((d1, g1), (d0, g0)) in enumerate(zip(got, want, strict=True)):
        rtol = 1e-5 if step == 0 else 1e-3
        assert abs(d1 - d0) <= rtol * abs(d0), f"step {step}: loss_d {d1:.7g} vs ref {d0:.7g}"
        assert abs(g1 - g0) <= rtol * abs(g0), f"step {step}: loss_g {g1:.7g} vs ref {g0:.7g}"


def test_mru_under_bf16_autocast_is_as_close_to_fp32_as_torch():
    """Mixed dtypes as training under autocast makes them: bf16 conv outputs (z_pre, the gate
    logits), fp32 scale/shift from the norm, an fp32 x. The fused path's output and input
    gradient may be at most 2x as far from the fp32 result as the reference path's, + 1 bf16
    ulp of the largest value (the rule of _kernels_train_check)."""
    from s2i_fast.model import MRU, ConditionalBatchNorm2d

    torch.manual_seed(0)
    mru = MRU(5, 1, 13, lambda c: ConditionalBatchNorm2d(c, CLASSES)).to(DEVICE)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 9, 11, generator=gen).to(DEVICE)
    image = torch.randn(3, 1, 9, 11, generator=gen).to(DEVICE)
    label = torch.tensor([0, 2, 1], device=DEVICE)
    weight = torch.randn(3, 13, 9, 11, generator=gen).to(DEVICE)

    def run(impl: str, autocast: bool):
        m = copy.deepcopy(mru)
        m.impl = impl
        xx = x.clone().requires_grad_()
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
            y = m(xx, image, label)
        (y.float() * weight).sum().backward()
        return y.float(), xx.grad

    before = tu.launches_total()
    y_tri, g_tri = run("triton", True)
    assert tu.launches_total() > before, "impl='triton' ran no Triton kernel"
    y_ref, g_ref = run("ref", True)
    y_32, g_32 = run("ref", False)
    eps = torch.finfo(torch.bfloat16).eps
    for name, got, torch_lp, exact in (("output", y_tri, y_ref, y_32),
                                       ("grad of x", g_tri, g_ref, g_32)):  # fmt: skip
        tol = 2 * (torch_lp - exact).abs().max().item() + eps * exact.abs().max().item()
        assert_close_to(f"autocast MRU {name}", got, exact, tol)


def test_eval_mode_uses_running_statistics_on_the_fused_path():
    torch.manual_seed(0)
    g_ref = Generator(_cfg()).to(DEVICE)
    sketch, _, label, noise = _batch()
    g_ref(sketch, label, noise)  # one training step's statistics into the running buffers
    g_tri = copy.deepcopy(g_ref)
    g_tri.set_impl("triton")
    g_ref.eval()
    g_tri.eval()
    with torch.no_grad():
        want = g_ref(sketch[:1], label[:1], noise[:1])
        got = g_tri(sketch[:1], label[:1], noise[:1])  # batch 1: only running stats work
    assert_close_to("eval-mode G output, batch 1", got, want, 1e-5)
