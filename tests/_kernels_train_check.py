"""Comparison helpers for the training-kernel tests (not a test module).

Tolerance rule (docs/kernels.md): for inputs rounded to `dtype`, the exact answer is the reference
evaluated in float64 on those same inputs. torch's own error is the reference run by torch in
`dtype`; the kernel's error may be at most twice torch's own error plus one unit of the output
dtype's epsilon scaled by the largest reference magnitude (a rounding step that torch may have
happened to avoid at the worst element). Outputs that are sums of k terms (gradients of
per-channel scale/shift, batch statistics) get sqrt(k) such units: the two implementations add
in different orders, and torch may be lucky at the worst element while the kernel is not
(seen: 1.5 ulp against a 1.4 ulp bound for a 35-term fp32 sum). Nothing is loosened per dtype.
"""

from __future__ import annotations

import pytest
import torch
from _kernel_device import DEVICE, pick_device  # noqa: F401  (re-exported)


def report(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> str:
    err = (got.double() - want.double()).abs()
    bad = err > tol
    worst = int(err.argmax())
    where = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), err.shape))
    return (
        f"{name}: {int(bad.sum())}/{err.numel()} elements off by more than {tol:.3g}; "
        f"worst {err.max().item():.3g} at {where} (got {got.flatten()[worst].item():.6g}, "
        f"want {want.flatten()[worst].item():.6g})"
    )


def assert_close_to(name: str, got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if got.numel() == 0:
        return
    err = (got.double() - want.double()).abs().max().item()
    assert err <= tol, report(name, got, want, tol)


def assert_within_torch_error(
    name: str, got: torch.Tensor, torch_lowp: torch.Tensor, exact: torch.Tensor, terms: int = 1
) -> None:
    """|got - exact| <= 2 |torch_lowp - exact| + sqrt(terms) eps(got.dtype) max|exact|."""
    assert got.dtype == torch_lowp.dtype or torch_lowp.dtype == torch.float32, (
        f"{name}: kernel output dtype {got.dtype}, torch's {torch_lowp.dtype}"
    )
    torch_err = (torch_lowp.double() - exact).abs().max().item() if exact.numel() else 0.0
    atol = torch.finfo(got.dtype).eps * max(1.0, exact.abs().max().item() if exact.numel() else 0)
    atol *= max(1, terms) ** 0.5
    assert_close_to(name, got, exact, 2.0 * torch_err + atol)


def grads_of(outs, inputs, weight_dtype: torch.dtype, seed: int = 1):
    """Gradients of sum(out * fixed random weights) w.r.t. inputs (None where unused).

    The weights (the upstream gradient) are rounded to weight_dtype, so the exact float64
    reference and the low-precision runs see the same upstream gradient."""
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(seed)
    weights = [
        torch.randn(o.shape, generator=gen, dtype=torch.float64).to(weight_dtype).double()
        for o in outs
    ]
    loss = sum((o.double() * w.to(o.device)).sum() for o, w in zip(outs, weights, strict=True))
    return torch.autograd.grad(loss, inputs, allow_unused=True)


@pytest.fixture(autouse=True)
def one_thread_no_tf32():
    """Autouse where imported. One intra-op thread: the micro networks' convolutions gain
    nothing from two, and on a shared, loaded box two threads made a GAN step 6x slower (2.4 s
    vs 14.8 s measured). On a GPU, no TF32: its 10-bit inputs would amplify 1e-7 elementwise
    differences to 1e-3."""
    threads, tf32 = torch.get_num_threads(), torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32 = tf32
