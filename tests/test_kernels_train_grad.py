"""Gradients of the fused training kernels in float64: gradcheck on the references and on the
autograd Functions (the kernels run in fp64 under the interpreter), gradgradcheck on the
Functions (their double backward goes through the reference, see mru_ops), and the DRAGAN
penalty's double backward through MRUs and a whole discriminator, impl="triton" vs "ref".
"""

from __future__ import annotations

import copy

import pytest
import torch
from _kernels_train_check import DEVICE, assert_close_to, one_thread_no_tf32  # noqa: F401

import s2i_fast.kernels  # noqa: F401  (registers impl "triton")
from s2i_fast.config import ModelConfig
from s2i_fast.kernels import _triton_utils as tu
from s2i_fast.model import MRU, ConditionalBatchNorm2d, Discriminator, ops
from s2i_fast.model.norm import BatchNorm2d

pytest.importorskip("triton", reason="the fused kernels need triton (s2i-fast[triton])")

SHAPE = (2, 3, 3, 5)  # small: gradcheck perturbs every element


def _t(*shape, mean=0.0, std=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64) * std + mean
    return t.to(DEVICE).requires_grad_()


def _cases():
    """(name, reference, Function.apply) pairs over the same fp64 leaves."""
    from s2i_fast.kernels.batch_stats import BatchStatsFunction
    from s2i_fast.kernels.bn_tail import BNActCombineFunction
    from s2i_fast.kernels.gate import GatedCombineFunction, GateMaskFunction
    from s2i_fast.kernels.norm_act_kernels import NormActCombineFunction, NormActFunction

    b, c, h, w = SHAPE
    logits, x, z = _t(*SHAPE, std=2, seed=1), _t(*SHAPE, seed=2), _t(*SHAPE, seed=3)
    zp = _t(*SHAPE, mean=0.3, std=2, seed=4)
    sc, sh = _t(b, c, mean=1, std=0.5, seed=5), _t(b, c, std=0.5, seed=6)
    sc1, sh1 = _t(c, mean=1, std=0.5, seed=7), _t(c, std=0.5, seed=8)
    return [
        ("gate_mask", ops.gate_mask_ref, GateMaskFunction.apply, (logits, x)),
        ("gated_combine", ops.gated_combine_ref, GatedCombineFunction.apply,
         (logits, x, z)),
        ("norm_act", lambda a, s, t: ops.norm_act_ref(a, s, t, 0.2),
         lambda a, s, t: NormActFunction.apply(a, s, t, 0.2), (zp, sc, sh)),
        ("norm_act_bn", lambda a, s, t: ops.norm_act_ref(a, s, t, 0.2),
         lambda a, s, t: NormActFunction.apply(a, s, t, 0.2), (zp, sc1, sh1)),
        ("norm_act_combine",
         lambda a, s, t, n, y: ops.norm_act_combine_ref(a, s, t, 0.2, n, y),
         lambda a, s, t, n, y: NormActCombineFunction.apply(a, s, t, 0.2, n, y, None, None),
         (zp, sc, sh, logits, x)),
        ("norm_act_combine_short",
         lambda a, s, t, n, y, ss, st: ops.norm_act_combine_ref(a, s, t, 0.2, n, y, ss, st),
         lambda a, s, t, n, y, ss, st: NormActCombineFunction.apply(a, s, t, 0.2, n, y, ss, st),
         (zp, sc, sh, logits, x, sc1, sh1)),
        ("batch_stats", ops.batch_stats_ref, BatchStatsFunction.apply, (zp,)),
        ("bn_act_combine_cbn",
         lambda a, g, b, n, y: ops.bn_act_combine_ref(a, g, b, 1e-5, 0.2, n, y)[0],
         lambda a, g, b, n, y: BNActCombineFunction.apply(a, g, b, n, y, None, None, 1e-5,
                                                          0.2)[0],
         (zp, sc, sh, logits, x)),
        ("bn_act_combine_short_bn",
         lambda a, g, b, n, y, sg, sb: ops.bn_act_combine_ref(
             a, g, b, 1e-5, 0.2, n, y, sg, sb)[0],
         lambda a, g, b, n, y, sg, sb: BNActCombineFunction.apply(a, g, b, n, y, sg, sb, 1e-5,
                                                                  0.2)[0],
         (zp, sc1, sh1, logits, z, _t(c, mean=1, std=0.3, seed=9), _t(c, std=0.3, seed=10))),
    ]  # fmt: skip


CASE_NAMES = [c[0] for c in _cases()]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradcheck_reference_and_function(name):
    _, ref, fused, inputs = next(c for c in _cases() if c[0] == name)
    assert torch.autograd.gradcheck(ref, inputs, eps=1e-6, atol=1e-7)
    before = tu.launches_total()
    # fast mode (a random projection of the Jacobian): each perturbation is an interpreted
    # kernel launch, and the full Jacobian would take hundreds of them
    assert torch.autograd.gradcheck(fused, inputs, eps=1e-6, atol=1e-7, fast_mode=True)
    assert tu.launches_total() > before, f"{name}: the Triton kernels did not run"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_gradgradcheck_function(name):
    """create_graph=True backward routes through the reference: second order must be right."""
    _, _, fused, inputs = next(c for c in _cases() if c[0] == name)
    assert torch.autograd.gradgradcheck(fused, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def _pair(cx: int, co: int, norm: str, dtype: torch.dtype):
    torch.manual_seed(0)
    factory = (lambda c: ConditionalBatchNorm2d(c, 4)) if norm == "cbn" else BatchNorm2d
    ref = MRU(cx, 2, co, factory).to(DEVICE, dtype)
    for mod in ref.modules():  # non-trivial affine so scale/shift gradients matter
        if isinstance(mod, ConditionalBatchNorm2d):
            torch.nn.init.normal_(mod.gamma.weight, 1.0, 0.3)
            torch.nn.init.normal_(mod.beta.weight, 0.0, 0.3)
        elif isinstance(mod, BatchNorm2d):
            torch.nn.init.normal_(mod.weight, 1.0, 0.3)
            torch.nn.init.normal_(mod.bias, 0.0, 0.3)
    fused = copy.deepcopy(ref)
    fused.impl = "triton"
    return ref, fused


@pytest.mark.parametrize("norm", ["cbn", "bn"])
@pytest.mark.parametrize("cx,co", [(5, 5), (3, 13)])
def test_mru_double_backward_matches_reference(cx, co, norm):
    """A DRAGAN-like penalty (||dL/dx|| - 1)^2 through one MRU: first-order gradients (taken
    with create_graph=True), the penalty's gradients w.r.t. x and every parameter."""
    ref, fused = _pair(cx, co, norm, torch.float64)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, cx, 5, 7, generator=gen, dtype=torch.float64).to(DEVICE)
    image = torch.randn(3, 2, 5, 7, generator=gen, dtype=torch.float64).to(DEVICE)
    label = torch.tensor([0, 3, 1], device=DEVICE) if norm == "cbn" else None
    results = []
    before = tu.launches_total()
    for mru in (ref, fused):
        xx = x.clone().requires_grad_()
        y = mru(xx, image, label)
        (gx,) = torch.autograd.grad(y.square().sum(), xx, create_graph=True)
        penalty = (gx.flatten(1).norm(dim=1) - 1).square().mean()
        penalty.backward()
        results.append((y, gx, xx.grad, [p.grad for p in mru.parameters()]))
    assert tu.launches_total() > before, "the Triton kernels did not run"
    (y0, g0, gg0, p0), (y1, g1, gg1, p1) = results
    assert_close_to("output", y1, y0, 1e-12)
    assert_close_to("first-order dL/dx", g1, g0, 1e-11)
    assert_close_to("penalty grad wrt x", gg1, gg0, 1e-10)
    names = [n for n, _ in ref.named_parameters()]
    for n, a, b in zip(names, p1, p0, strict=True):
        assert_close_to(f"penalty grad wrt {n}", a, b, 1e-9 * max(1.0, b.abs().max().item()))


def test_dragan_penalty_through_discriminator_matches_reference():
    """The trainer's DRAGAN penalty on a micro discriminator (base 2, 64x64, batch 2), fp32."""
    from s2i_fast.train.losses import dragan_penalty

    cfg = ModelConfig(base=2, resolution=64, num_classes=3)
    torch.manual_seed(0)
    d_ref = Discriminator(cfg).to(DEVICE)
    d_fused = copy.deepcopy(d_ref)
    d_fused.set_impl("triton")
    gen = torch.Generator().manual_seed(2)
    real = (torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1).to(DEVICE)
    sketch = (torch.rand(2, 1, 64, 64, generator=gen) * 2 - 1).to(DEVICE)
    out = []
    for d in (d_ref, d_fused):
        torch.manual_seed(5)  # the penalty's own random draws
        before = tu.launches_total()
        penalty = dragan_penalty(d, real, sketch, 10.0)
        penalty.backward()
        out.append((penalty, [p.grad for p in d.parameters()], tu.launches_total() - before))
    (p0, g0, _), (p1, g1, launches) = out
    assert launches > 0, "impl='triton' discriminator ran no Triton kernel"
    # fp32 through 4 MRU levels and a double backward: a few ulps times the depth
    assert_close_to("penalty", p1, p0, 1e-5 * max(1.0, p0.abs().item()))
    names = [n for n, _ in d_ref.named_parameters()]
    for n, a, b in zip(names, g1, g0, strict=True):
        assert (a is None) == (b is None), f"{n}: gradient present in only one run"
        if a is None:  # e.g. fc_gan.bias: the input gradient does not depend on it
            continue
        assert_close_to(f"penalty grad wrt {n}", a, b, 1e-4 * max(1.0, b.abs().max().item()))
