"""Each loss against an independent computation (float64 numpy or a closed form)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from s2i_fast.config import ModelConfig
from s2i_fast.model import Discriminator
from s2i_fast.train.losses import (
    aux_class_loss,
    diversity_loss,
    dragan_penalty,
    gan_loss,
    gan_targets,
    l1_loss,
    perceptual_loss,
)


def _bce_np(logits: np.ndarray, target: np.ndarray) -> float:
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p))))


@pytest.mark.parametrize("real", [True, False])
def test_gan_loss_is_bce_against_hard_targets(real):
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5])
    want = _bce_np(logits.numpy(), np.full(5, 1.0 if real else 0.0))
    assert gan_loss(logits, real).item() == pytest.approx(want, rel=1e-5)


def test_label_tricks_ranges_and_flip():
    torch.manual_seed(0)
    logits = torch.zeros(4000)
    soft_real = gan_targets(logits, True, soft=0.3)
    soft_fake = gan_targets(logits, False, soft=0.3)
    assert soft_real.min() >= 0.7 and soft_real.max() <= 1.0 and soft_real.std() > 0.05
    assert soft_fake.min() >= 0.0 and soft_fake.max() <= 0.3
    assert torch.equal(gan_targets(logits, True, flip=1.0), torch.zeros(4000))
    flipped = gan_targets(logits, True, flip=0.25)
    assert 0.2 < (flipped == 0).float().mean().item() < 0.3
    noisy = gan_targets(logits, False, noisy=0.1)
    assert noisy.min() >= 0 and noisy.max() <= 1 and noisy.max() > 0.1
    # the loss uses the drawn targets: same seed -> same targets -> numpy BCE agrees
    lg = torch.randn(64)
    torch.manual_seed(5)
    t = gan_targets(lg, True, soft=0.2, flip=0.1)
    torch.manual_seed(5)
    got = gan_loss(lg, True, soft=0.2, flip=0.1).item()
    assert got == pytest.approx(_bce_np(lg.numpy(), t.numpy()), rel=1e-5)


def test_aux_class_loss_is_cross_entropy():
    torch.manual_seed(1)
    logits = torch.randn(6, 5)
    labels = torch.tensor([0, 4, 2, 2, 1, 3])
    x = logits.double().numpy()
    logp = x - np.log(np.exp(x).sum(1, keepdims=True))
    want = -np.mean(logp[np.arange(6), labels.numpy()])
    assert aux_class_loss(logits, labels).item() == pytest.approx(want, rel=1e-5)


def test_l1_loss():
    torch.manual_seed(2)
    a, b = torch.randn(2, 3, 5, 7), torch.randn(2, 3, 5, 7)
    want = np.abs(a.double().numpy() - b.double().numpy()).mean()
    assert l1_loss(a, b).item() == pytest.approx(want, rel=1e-5)


def test_perceptual_loss_sums_mean_l1_per_depth():
    torch.manual_seed(3)
    fake = [torch.randn(2, 4, 6, 6), torch.randn(2, 8, 3, 3)]
    real = [torch.randn(2, 4, 6, 6), torch.randn(2, 8, 3, 3)]
    want = sum(np.abs(f.numpy() - r.numpy()).mean() for f, r in zip(fake, real, strict=True))
    assert perceptual_loss(fake, real).item() == pytest.approx(float(want), rel=1e-5)


def test_diversity_loss_per_sample_ratio():
    torch.manual_seed(4)
    o1, o2 = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    z1, z2 = torch.randn(3, 8), torch.randn(3, 8)
    ratios = [
        np.abs(o1[i].numpy() - o2[i].numpy()).mean() / np.linalg.norm(z1[i] - z2[i])
        for i in range(3)
    ]
    assert diversity_loss(o1, o2, z1, z2).item() == pytest.approx(-np.mean(ratios), rel=1e-5)


class LinearD(torch.nn.Module):
    """D(x, s) = <w, x> + b: its input gradient is w for every sample, norm ||w||."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape) * 0.05)
        self.b = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sketch):
        return (x * self.w).flatten(1).sum(1) + self.b, None


def test_dragan_linear_d_closed_form_and_param_gradient():
    torch.manual_seed(5)
    D = LinearD((3, 8, 8))
    real, sketch = torch.randn(4, 3, 8, 8), torch.randn(4, 1, 8, 8)
    penalty, norms = dragan_penalty(D, real, sketch, lambda_=10.0, return_norm=True)
    wnorm = D.w.detach().double().norm().item()
    assert torch.allclose(norms.double(), torch.full((4,), wnorm, dtype=torch.float64), rtol=1e-5)
    assert penalty.item() == pytest.approx(10.0 * (wnorm - 1.0) ** 2, rel=1e-5)
    # the penalty's gradient (a double backward) reaches D's parameters:
    # d/dw 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||
    penalty.backward()
    want = 20.0 * (wnorm - 1.0) * D.w.detach().double() / wnorm
    assert torch.allclose(D.w.grad.double(), want, rtol=1e-4, atol=1e-7)


def test_dragan_interpolation_points_follow_the_definition():
    """Quadratic D(x) = ||x||^2 / 2 has gradient x_hat: the norms reveal x_hat itself."""

    class QuadD(torch.nn.Module):
        def forward(self, x, sketch):
            return 0.5 * (x * x).flatten(1).sum(1), None

    real = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    _, norms = dragan_penalty(QuadD(), real, None, lambda_=1.0, return_norm=True)
    torch.manual_seed(7)  # redraw the same numbers in the documented order
    u = torch.rand(real.shape)
    alpha = torch.rand(5, 1, 1, 1)
    y_perturbed = real + 0.5 * real.std() * u
    x_hat = real + alpha * (y_perturbed - real)
    assert torch.allclose(norms, x_hat.flatten(1).norm(dim=1), rtol=1e-5)
    assert not torch.allclose(norms, real.flatten(1).norm(dim=1), rtol=1e-3)


def test_dragan_double_backward_through_real_discriminator():
    """Batch norm + spectral norm D: every weight gets a gradient from the penalty alone."""
    torch.manual_seed(6)
    cfg = ModelConfig(preset="tiny", base=4, num_classes=3)
    D = Discriminator(cfg).train()
    real, sketch = torch.randn(3, 3, 64, 64), torch.randn(3, 1, 64, 64)
    penalty = dragan_penalty(D, real, sketch, lambda_=10.0)
    assert math.isfinite(penalty.item()) and penalty.item() > 0
    penalty.backward()
    conv_weights = [
        (n, p) for n, p in D.named_parameters() if n.endswith("weight.original") and p.dim() == 4
    ]
    assert conv_weights
    for name, p in conv_weights:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert D.fc_gan.parametrizations.weight.original.grad.abs().sum() > 0


def test_presets_set_the_weights_optimiser_and_g_ema():
    from s2i_fast.train.config import DEFAULT_LOSS_PRESET, LOSS_PRESETS, TrainConfig

    default = TrainConfig()
    assert default.losses == DEFAULT_LOSS_PRESET == "tuned"
    tuned, paper = TrainConfig.from_preset("tuned"), TrainConfig.from_preset("sketchygan")
    assert (default.weights, default.g_ema) == (tuned.weights, tuned.g_ema)
    assert tuned.g_ema == 0.99 and paper.g_ema == 0.0
    assert tuned.weights.div == 2 * paper.weights.div  # the one weight the recipe changed
    assert dataclasses.replace(tuned.weights, div=paper.weights.div) == paper.weights
    assert (tuned.lr_g, tuned.lr_d, tuned.beta1) == (paper.lr_g, paper.lr_d, paper.beta1)
    assert TrainConfig.from_preset("tuned", g_ema=0.0).g_ema == 0.0  # an option overrides it
    for name in LOSS_PRESETS:  # a run saved before g_ema was recorded keeps its preset's
        assert TrainConfig.from_dict({"losses": name}).g_ema == LOSS_PRESETS[name]["g_ema"]
    assert TrainConfig.from_dict({"losses": "seed"}).g_ema == 0.0  # the report's, renamed
