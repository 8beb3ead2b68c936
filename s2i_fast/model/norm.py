"""Batch norm (D) and conditional batch norm (G) that expose their affine as (scale, shift).

Both compute y = x * scale + shift with scale = gamma * rstd and shift = beta - mean * scale,
where (mean, var) are batch statistics in training and running statistics in eval. Exposing
scale/shift lets the MRU hand the apply step and the activation to one fused kernel.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from s2i_fast.model import ops


class _StatNorm(nn.Module):
    """Shared statistics bookkeeping; subclasses supply gamma/beta."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.sync = False  # SyncBatchNorm: all-reduce batch statistics across DDP ranks
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def batch_stats(
        self, x: torch.Tensor, impl: str = "ref"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, biased var) per channel in >= fp32, updating running stats in training.

        impl="triton" computes the (non-synchronised) batch statistics in one fused reduction
        pass over x (ops.batch_stats) instead of torch.var_mean; the rest is shared."""
        if not self.training:
            return self.running_mean, self.running_var
        syncing = self.sync and dist.is_available() and dist.is_initialized()
        if impl == "triton" and not syncing:
            mean, var = ops.batch_stats(x, impl=impl)
            self._update_running(mean, var, x.numel() // x.shape[1])
            return mean, var
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # stats in >= fp32
        count = xf.numel() // xf.shape[1]
        if syncing:
            from torch.distributed.nn.functional import all_reduce

            s1 = xf.sum(dim=(0, 2, 3))
            s2 = (xf * xf).sum(dim=(0, 2, 3))
            n = torch.tensor([float(count)], device=x.device)
            packed = all_reduce(torch.cat([s1, s2, n]))
            c = self.num_features
            count_t = packed[2 * c]
            mean = packed[:c] / count_t
            var = (packed[c : 2 * c] / count_t - mean * mean).clamp_min(0.0)
            count = int(count_t.item())
        else:
            var, mean = torch.var_mean(xf, dim=(0, 2, 3), unbiased=False)
        self._update_running(mean, var, count)
        return mean, var

    def fusable_batch_norm(self) -> bool:
        """True when a fused kernel may compute this norm's batch statistics itself (training,
        statistics not synchronised across ranks); it then hands them to _update_running."""
        syncing = self.sync and dist.is_available() and dist.is_initialized()
        return self.training and not syncing

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
        with torch.no_grad():
            unbiased = var * (count / max(count - 1, 1))
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
            self.num_batches_tracked += 1


class BatchNorm2d(_StatNorm):
    """Plain batch norm with learned per-channel gamma/beta (the discriminator's norm)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps, momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def scale_shift(
        self, x: torch.Tensor, label: torch.Tensor | None = None, impl: str = "ref"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean, var = self.batch_stats(x, impl)
        scale = self.weight * torch.rsqrt(var + self.eps)  # [C]
        shift = self.bias - mean * scale  # [C]
        return scale, shift

    def affine(self, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta), [C] each."""
        return self.weight, self.bias

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.scale_shift(x)
        return x * scale[None, :, None, None].to(x.dtype) + shift[None, :, None, None].to(x.dtype)


class ConditionalBatchNorm2d(_StatNorm):
    """Batch norm whose gamma/beta are looked up per sample from the class label.

    Dumoulin et al. 2017 ("A learned representation for artistic style"), as the seed used it.
    Running statistics are kept, so eval mode is deterministic and batch independent.
    """

    def __init__(
        self, num_features: int, num_classes: int, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__(num_features, eps, momentum)
        self.num_classes = num_classes
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def scale_shift(
        self, x: torch.Tensor, label: torch.Tensor | None = None, impl: str = "ref"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if label is None:
            raise ValueError("ConditionalBatchNorm2d needs a class label")
        mean, var = self.batch_stats(x, impl)
        rstd = torch.rsqrt(var + self.eps)  # [C]
        scale = self.gamma(label) * rstd[None]  # [B, C]
        shift = self.beta(label) - mean[None] * scale  # [B, C]
        return scale, shift

    def affine(self, label: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gamma, beta) looked up per sample, [B, C] each."""
        if label is None:
            raise ValueError("ConditionalBatchNorm2d needs a class label")
        return self.gamma(label), self.beta(label)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        scale, shift = self.scale_shift(x, label)
        return x * scale[:, :, None, None].to(x.dtype) + shift[:, :, None, None].to(x.dtype)
