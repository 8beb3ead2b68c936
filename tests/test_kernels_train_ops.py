"""Fused training kernels (gate_mask, gated_combine, norm_act, norm_act_combine, batch_stats)
against their torch references, forward and backward, under TRITON_INTERPRET=1 on the CPU.

Odd shapes (batch 1 and 3, 5x7 planes, 3 and 13 channels), fp32/bf16/fp16 judged against a
float64 evaluation of the reference on the same rounded inputs (tolerance rule in
_kernels_train_check.py), every gradient (inputs and the norm's scale/shift) compared.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from _kernels_train_check import DEVICE, assert_within_torch_error, grads_of

from s2i_fast.errors import BackendUnavailable
from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.kernels import mru_ops

pytest.importorskip("triton", reason="the fused kernels need triton (s2i-fast[triton])")

# the last: planes of 1517 > 1024 elements (the row kernels loop) and samples of 13653 > 8192
# elements (several flat programs per sample, even with the interpreter's larger blocks)
SHAPES = [(1, 3, 5, 7), (3, 13, 5, 7), (2, 9, 37, 41)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
EXTRA = 2  # gate_logits carries EXTRA more channels than the slice the op reads


def _inputs(op: str, shape, gen: torch.Generator) -> list[torch.Tensor]:
    """fp32 master inputs; gate ops read a channel slice of a wider gate_logits tensor."""
    b, c, h, w = shape

    def randn(*s, mean=0.0, std=1.0):
        return torch.randn(*s, generator=gen) * std + mean

    gate_logits = randn(b, c + EXTRA, h, w, std=2.0)  # [B, C + EXTRA, H, W]
    x = randn(b, c, h, w)
    params = (c,) if op.endswith("_bn") else (b, c)
    scale, shift = randn(*params, mean=1.0, std=0.5), randn(*params, std=0.5)
    z_pre = randn(b, c, h, w, mean=0.3, std=2.0)
    if op == "gate_mask":
        return [gate_logits, x]
    if op == "gated_combine":
        return [gate_logits, x, randn(b, c, h, w)]
    if op.startswith("bn_act_combine"):  # gamma/beta around batch statistics computed inside
        gamma, beta = randn(*params, mean=1.0, std=0.3), randn(*params, std=0.3)
        short = [randn(*params, mean=1.0, std=0.3), randn(*params, std=0.3)]
        return [z_pre, gamma, beta, gate_logits, x] + (short if "_short" in op else [])
    if op.startswith("norm_act_combine_short"):  # shortcut norm fused: x is its input
        sscale, sshift = randn(*params, mean=1.0, std=0.5), randn(*params, std=0.5)
        return [z_pre, scale, shift, gate_logits, x, sscale, sshift]
    if op.startswith("norm_act_combine"):
        return [z_pre, scale, shift, gate_logits, x]
    if op.startswith("norm_act"):
        return [z_pre, scale, shift]
    if op == "batch_stats":
        return [z_pre]
    raise AssertionError(op)


def _call(op: str, impl: str, *t: torch.Tensor):
    c = t[0].shape[1] - EXTRA if op in ("gate_mask", "gated_combine") else t[0].shape[1]
    if op == "gate_mask":
        return mru_ops.gate_mask(t[0][:, :c], t[1], impl=impl)  # m_logits: leading channels
    if op == "gated_combine":
        return mru_ops.gated_combine(t[0][:, EXTRA:], t[1], t[2], impl=impl)  # trailing ones
    if op.startswith("bn_act_combine"):
        short = {} if len(t) == 5 else {"shortcut_gamma": t[5], "shortcut_beta": t[6]}
        return mru_ops.bn_act_combine(
            t[0], t[1], t[2], 1e-5, 0.2, t[3][:, EXTRA:], t[4], impl=impl, **short
        )
    if op.startswith("norm_act_combine"):
        short = {} if len(t) == 5 else {"shortcut_scale": t[5], "shortcut_shift": t[6]}
        return mru_ops.norm_act_combine(
            t[0], t[1], t[2], 0.2, t[3][:, EXTRA:], t[4], impl=impl, **short
        )
    if op.startswith("norm_act"):
        return mru_ops.norm_act(t[0], t[1], t[2], 0.2, impl=impl)
    return mru_ops.batch_stats(t[0], impl=impl)


OPS = ["gate_mask", "gated_combine", "norm_act", "norm_act_bn", "norm_act_combine",
       "norm_act_combine_bn", "norm_act_combine_short", "norm_act_combine_short_bn",
       "bn_act_combine", "bn_act_combine_short_bn", "batch_stats"]  # fmt: skip
KERNELS = {
    "gate_mask": "gate_mask", "gated_combine": "gated_combine", "norm_act": "norm_act",
    "norm_act_bn": "norm_act", "norm_act_combine": "norm_act_combine",
    "norm_act_combine_bn": "norm_act_combine", "norm_act_combine_short": "norm_act_combine",
    "norm_act_combine_short_bn": "norm_act_combine", "batch_stats": "batch_stats",
    "bn_act_combine": "bn_tail", "bn_act_combine_short_bn": "bn_tail",
}  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_forward_backward_match_reference(op, shape, dtype):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{op}{shape}".encode()))  # stable per case
    master = _inputs(op, shape, gen)
    lowp = [t.to(DEVICE, dtype) for t in master]  # the inputs every run sees, rounded to dtype

    def run(impl: str, inputs: list[torch.Tensor]):
        leaves = [t.clone().requires_grad_() for t in inputs]
        out = _call(op, impl, *leaves)
        outs = out if isinstance(out, tuple) else (out,)
        return outs, grads_of(outs, leaves, dtype)

    exact_out, exact_grads = run("ref", [t.double() for t in lowp])
    torch_out, torch_grads = run("ref", lowp)
    name = KERNELS[op]
    fwd, bwd = ("norm_act_combine_fwd", "bn_tail_grad") if name == "bn_tail" else (
        f"{name}_fwd", f"{name}_bwd")  # fmt: skip
    before = (tu.LAUNCHES[fwd], tu.LAUNCHES[bwd])
    got_out, got_grads = run("triton", lowp)
    after = (tu.LAUNCHES[fwd], tu.LAUNCHES[bwd])
    assert after[0] > before[0] and after[1] > before[1], f"{name}: the Triton kernels did not run"

    b, _, h, w = shape
    for i, (g, t, e) in enumerate(zip(got_out, torch_out, exact_out, strict=True)):
        stats = op == "batch_stats" or (op.startswith("bn_") and i == 1)  # fp32 statistics
        if not stats:
            assert g.dtype == dtype, f"output {i}: dtype {g.dtype}, want the input dtype {dtype}"
        terms = b * h * w if stats else 1  # statistics: sums over (B, H, W)
        assert_within_torch_error(f"{op} output {i}", g, t.to(g.dtype), e, terms)
    for i, (g, t, e) in enumerate(zip(got_grads, torch_grads, exact_grads, strict=True)):
        assert g is not None, f"{op}: no gradient for input {i}"
        assert g.dtype == dtype, f"{op} grad {i}: dtype {g.dtype}, want {dtype}"
        # per-channel scale/shift ([B, C] or [C]): sums over H*W, and over B for BN
        terms = (h * w if g.dim() == 2 else b * h * w) if g.dim() < 4 else 1
        assert_within_torch_error(f"{op} grad of input {i}", g, t, e, terms)


def test_channel_slice_is_read_in_place_and_other_layouts_are_copied():
    gate_logits = torch.randn(3, 13 + 4, 5, 7, device=DEVICE)
    m_logits = gate_logits[:, :13]
    view, stride_b = tu.sample_view(m_logits)
    assert view.data_ptr() == m_logits.data_ptr() and stride_b == 17 * 35
    x = torch.randn(3, 13, 5, 7, device=DEVICE).to(memory_format=torch.channels_last)
    view, stride_b = tu.sample_view(x)
    assert view[0].is_contiguous() and stride_b == 13 * 35
    before = tu.launches_total()
    got = mru_ops.gate_mask(m_logits, x, impl="triton")  # x is not sample-contiguous: copied
    assert tu.launches_total() > before, "the Triton kernel did not run"
    want = mru_ops.gate_mask(m_logits, x, impl="ref")
    assert (got - want).abs().max().item() < 1e-6


def test_fallback_warns_once_and_strict_mode_refuses(monkeypatch):
    x, logits = torch.randn(1, 3, 5, 7), torch.randn(1, 3, 5, 7)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors without the interpreter
    monkeypatch.setattr(tu, "_warned", False)
    before = tu.launches_total()
    with pytest.warns(RuntimeWarning, match="falls back to the torch reference"):
        got = mru_ops.gate_mask(logits, x, impl="triton")
    assert torch.equal(got, mru_ops.gate_mask(logits, x, impl="ref"))
    assert tu.launches_total() == before, "no kernel may run on the fallback path"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second fallback stays silent
        mru_ops.gated_combine(logits, x, x, impl="triton")
    monkeypatch.setenv("S2I_TRITON_STRICT", "1")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET"):
        mru_ops.gate_mask(logits, x, impl="triton")


def test_bad_arguments_raise_clear_errors():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match="impl must be"):
        mru_ops.gate_mask(x, x, impl="cuda")
    with pytest.raises(ValueError, match="share one shape"):
        mru_ops.gate_mask(x[:, :2], x, impl="triton")
    with pytest.raises(ValueError, match=r"scale/shift must be \[C\] or \[B, C\]"):
        mru_ops.norm_act(x, torch.ones(4), torch.zeros(4), 0.2, impl="triton")


def test_kernels_compile_for_sm90_without_a_gpu():
    """The GPU lowering (sm_90 cubin via ptxas), which the interpreter never exercises."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "s2i_fast.kernels.compile_check_train", "--quick"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert "25/25 specialisations compiled for sm_90" in proc.stdout, tail
