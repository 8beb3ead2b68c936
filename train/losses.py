"""The six losses of docs/networks.md, each a plain function.

    L_D = BCE(D(y), 1) + BCE(D(G(x)), 0) + L_ac(D, y) + lambda_gp * DRAGAN(D, y)
    L_G = BCE(D(G(x)), 1) + L_ac(D, G(x)) + L1(G(x), y) + L_perc(G(x), y) + L_div

The perceptual network lives in s2i_fast.train.inception; `perceptual_loss` here only compares
its activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

DCallable = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def gan_targets(
    logits: torch.Tensor,
    real: bool,
    *,
    soft: float = 0.0,
    noisy: float = 0.0,
    flip: float = 0.0,
) -> torch.Tensor:
    """BCE targets for D's real/fake logits [B], with the seed's optional label tricks.

    soft:  soft labels, real targets ~ U[1 - soft, 1], fake targets ~ U[0, soft].
    noisy: Gaussian noise of this std added to every target (clamped to [0, 1]).
    flip:  label flipping, each target is swapped (t -> 1 - t) with this probability.
    All draws use torch's global RNG (saved in checkpoints, so resume stays exact).
    """
    value = 1.0 if real else 0.0
    target = torch.full_like(logits, value, dtype=torch.float32)
    if soft > 0:
        u = torch.rand(target.shape, device=target.device)
        target = target - soft * u if real else target + soft * u
    if noisy > 0:
        target = (target + noisy * torch.randn(target.shape, device=target.device)).clamp(0, 1)
    if flip > 0:
        swap = torch.rand(target.shape, device=target.device) < flip
        target = torch.where(swap, 1.0 - target, target)
    return target


def gan_loss(
    logits: torch.Tensor,
    real: bool,
    *,
    soft: float = 0.0,
    noisy: float = 0.0,
    flip: float = 0.0,
) -> torch.Tensor:
    """Binary cross-entropy with logits against 1 (real) or 0 (fake), mean over the batch."""
    target = gan_targets(logits, real, soft=soft, noisy=noisy, flip=flip)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def aux_class_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Auxiliary classification loss: cross-entropy of D's class logits [B, K] vs labels [B]."""
    return F.cross_entropy(class_logits.float(), labels)


def l1_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in model space."""
    return (fake.float() - real.float()).abs().mean()


def dragan_penalty(
    D: DCallable,
    real: torch.Tensor,
    sketch: torch.Tensor,
    lambda_: float = 10.0,
    *,
    grad_scale: float | None = None,
    return_norm: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """DRAGAN gradient penalty (Kodali et al. 2017, the TF reference implementation).

        y_perturbed = y + 0.5 * std(y) * U[0, 1)       std over the whole batch
        x_hat       = y + alpha * (y_perturbed - y),  alpha ~ U[0, 1] per sample
        penalty     = lambda * mean_b (||d D(x_hat) / d x_hat||_2 - 1)^2

    The gradient is taken with create_graph=True, so the penalty's backward runs a double
    backward through D (its batch norm and spectral norm included) and reaches D's parameters.
    D runs in whatever mode it is in (train mode in the loop: batch statistics of x_hat).
    grad_scale: the fp16 GradScaler's scale; the gradient is computed on the scaled output and
    unscaled (PyTorch's AMP recipe for gradient penalties).
    """
    real = real.detach()
    b = real.shape[0]
    noise = torch.rand(real.shape, device=real.device, dtype=torch.float32)
    y_perturbed = real.float() + 0.5 * real.float().std() * noise
    alpha = torch.rand(b, 1, 1, 1, device=real.device)
    x_hat = (real.float() + alpha * (y_perturbed - real.float())).to(real.dtype)
    x_hat.requires_grad_(True)
    logits, _ = D(x_hat, sketch)  # [B]
    out = logits.float().sum()
    if grad_scale is not None:
        out = out * grad_scale
    (grad,) = torch.autograd.grad(out, x_hat, create_graph=True)  # [B, 3, H, W]
    grad = grad.float()
    if grad_scale is not None:
        grad = grad / grad_scale
    norm = grad.flatten(1).norm(2, dim=1)  # [B]
    penalty = lambda_ * ((norm - 1.0) ** 2).mean()
    if return_norm:
        return penalty, norm.detach()
    return penalty


def perceptual_loss(
    fake_feats: Sequence[torch.Tensor], real_feats: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over depths of the mean L1 between activations (real activations are detached)."""
    total = fake_feats[0].new_zeros((), dtype=torch.float32)
    for f, r in zip(fake_feats, real_feats, strict=True):
        total = total + (f.float() - r.detach().float()).abs().mean()
    return total


def diversity_loss(
    out1: torch.Tensor, out2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
) -> torch.Tensor:
    """-mean_b( mean|G(x, z1) - G(x, z2)| / ||z1 - z2|| ): rewards outputs that move with z.

    out1/out2 [B, 3, H, W] from the same sketches and labels, z1/z2 [B, noise_dim].
    """
    num = (out1.float() - out2.float()).abs().flatten(1).mean(dim=1)  # [B]
    den = (z1.float() - z2.float()).flatten(1).norm(2, dim=1).clamp_min(1e-8)  # [B]
    return -(num / den).mean()
