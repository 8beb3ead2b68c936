"""MRU equations, norms and network shapes at every preset and resolution."""

import pytest
import torch
import torch.nn.functional as F

from s2i_fast.config import ModelConfig
from s2i_fast.model import MRU, ConditionalBatchNorm2d, Discriminator, Generator
from s2i_fast.model.networks import count_parameters


def _mru_by_hand(mru: MRU, x, image, label):
    """docs/networks.md's equations with conv_m and conv_n as two separate convolutions."""
    cx, co = mru.in_channels, mru.out_channels
    w_gate, b_gate = mru.conv_gate.weight, mru.conv_gate.bias
    xi = torch.cat([x, image], 1)
    m = torch.sigmoid(F.conv2d(xi, w_gate[:cx], b_gate[:cx], padding=1))
    n = torch.sigmoid(F.conv2d(xi, w_gate[cx:], b_gate[cx:], padding=1))
    z_pre = F.conv2d(torch.cat([m * x, image], 1), mru.conv_z.weight, padding=1)

    def cbn(norm, t):
        mean = t.mean(dim=(0, 2, 3), keepdim=True)
        var = t.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        g = norm.gamma.weight[label][:, :, None, None]
        b = norm.beta.weight[label][:, :, None, None]
        return (t - mean) / torch.sqrt(var + norm.eps) * g + b

    z = F.leaky_relu(cbn(mru.norm_z, z_pre), 0.2)
    s = x if cx == co else cbn(mru.norm_short, F.conv2d(x, mru.conv_short.weight))
    return (1 - n) * s + n * z


@pytest.mark.parametrize("cx,co", [(5, 5), (3, 7), (8, 4)])
def test_mru_matches_equations(cx, co):
    torch.manual_seed(0)
    mru = MRU(cx, 2, co, lambda c: ConditionalBatchNorm2d(c, 4)).double()
    for norm in (mru.norm_z, mru.norm_short):
        if norm is not None:  # non-trivial per-class affine
            torch.nn.init.normal_(norm.gamma.weight, 1.0, 0.3)
            torch.nn.init.normal_(norm.beta.weight, 0.0, 0.3)
    x = torch.randn(3, cx, 7, 5, dtype=torch.float64)
    image = torch.randn(3, 2, 7, 5, dtype=torch.float64)
    label = torch.tensor([0, 3, 1])
    got = mru(x, image, label)
    want = _mru_by_hand(mru, x, image, label)
    assert got.shape == (3, co, 7, 5)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_cbn_eval_uses_running_stats_and_is_batch_independent():
    torch.manual_seed(0)
    norm = ConditionalBatchNorm2d(6, 3)
    for _ in range(80):  # momentum 0.1: 1 - 0.9**80 of the way to the true statistics
        norm(torch.randn(8, 6, 4, 4) * 3 + 2, torch.randint(0, 3, (8,)))
    assert torch.allclose(norm.running_mean, torch.full((6,), 2.0), atol=0.3)
    assert torch.allclose(norm.running_var, torch.full((6,), 9.0), rtol=0.25)
    norm.eval()
    x = torch.randn(5, 6, 4, 4)
    label = torch.tensor([0, 1, 2, 1, 0])
    full = norm(x, label)
    single = norm(x[2:3], label[2:3])
    torch.testing.assert_close(full[2:3], single)
    # different classes get different affines
    torch.nn.init.normal_(norm.gamma.weight)
    a = norm(x[:1], torch.tensor([0]))
    b = norm(x[:1], torch.tensor([1]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
@pytest.mark.parametrize("resolution", [64, 128, 256])
@pytest.mark.parametrize("stem", ["label", "sketch"])
def test_network_shapes(preset, resolution, stem):
    cfg = ModelConfig.from_preset(preset, resolution=resolution, num_classes=5, stem=stem)
    with torch.device("meta"):
        gen, disc = Generator(cfg), Discriminator(cfg)
        sketch = torch.empty(2, 1, resolution, resolution)
        label = torch.zeros(2, dtype=torch.long)
        image = gen(sketch, label, torch.empty(2, 64))
        logit, cls = disc(image, sketch)
    assert image.shape == (2, 3, resolution, resolution)
    assert logit.shape == (2,)
    assert cls.shape == (2, 5)


def test_paper_widths_follow_design():
    cfg = ModelConfig.from_preset("paper", num_classes=10)
    with torch.device("meta"):
        gen = Generator(cfg)
    enc = [(m.in_channels, m.out_channels) for m in gen.enc_mru]
    dec = [(m.in_channels, m.out_channels) for m in gen.dec_mru] + [
        (gen.out_mru.in_channels, gen.out_mru.out_channels)
    ]
    assert enc == [(1, 64), (64, 128), (128, 256), (256, 512)]
    assert dec == [(576, 512), (768, 256), (384, 128), (192, 64), (96, 64)]
    # an independent count of the network (docs/networks.md): 29.7 M parameters, 2.25 M tiny
    assert round(count_parameters(gen) / 1e6, 1) == 29.7
    with torch.device("meta"):
        tiny = Generator(ModelConfig.from_preset("tiny", num_classes=10))
    assert round(count_parameters(tiny) / 1e6, 2) == 2.25


def test_generator_real_forward_tiny_is_finite_and_deterministic_in_eval():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", num_classes=3)
    gen = Generator(cfg)
    sketch = torch.rand(3, 1, 64, 64) * 2 - 1
    label = torch.tensor([0, 1, 2])
    noise = torch.randn(3, 64)
    gen.train()
    gen(sketch, label, noise)  # one batch of running statistics
    gen.eval()
    with torch.no_grad():
        a = gen(sketch, label, noise)
        b = gen(sketch[1:2], label[1:2], noise[1:2])
    assert torch.isfinite(a).all() and a.abs().max() <= 1.0
    torch.testing.assert_close(a[1:2], b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        c = gen(sketch, label, torch.randn(3, 64))
    assert not torch.allclose(a, c), "noise must change the output"


def test_discriminator_has_spectral_norm_everywhere():
    cfg = ModelConfig.from_preset("tiny", num_classes=4)
    disc = Discriminator(cfg)
    layers = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert layers
    for layer in layers:
        assert hasattr(layer, "parametrizations") and "weight" in layer.parametrizations


def test_bad_config_values():
    with pytest.raises(ValueError, match="resolution"):
        ModelConfig(resolution=96)
    with pytest.raises(ValueError, match="preset"):
        ModelConfig.from_preset("huge")
    with pytest.raises(ValueError, match="stem"):
        ModelConfig(stem="noise")
