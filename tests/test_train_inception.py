"""The perceptual network is timm's inception_v4 cut after Mixed_5b: weights load through the
project's own (safe) reader, taps match timm's own model, bad files give one line."""

from __future__ import annotations

import pytest
import torch

from s2i_fast.config import PreprocessStats
from s2i_fast.errors import CheckpointError
from s2i_fast.train.inception import (
    TAPS,
    PerceptualNet,
    build_perceptual,
    find_cached_weights,
    inception_v4_trunk,
)

timm = pytest.importorskip("timm", reason="the perceptual loss needs timm (the perceptual extra)")


@pytest.fixture(scope="module")
def timm_model():
    """A random-init timm inception_v4, in eval mode, with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = timm.create_model("inception_v4", pretrained=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def test_trunk_is_timm_cut_after_mixed_5b():
    trunk = inception_v4_trunk()
    assert len(trunk) == TAPS[-1] + 1 == 7
    names = [type(b).__name__ for b in trunk]
    assert names[3:] == ["Mixed3a", "Mixed4a", "Mixed5a", "InceptionA"]  # Mixed_5b is an A block
    with torch.no_grad():
        taps = PerceptualNet(PreprocessStats(), trunk)(torch.zeros(1, 3, 64, 64))
    assert [tuple(t.shape) for t in taps] == [(1, 32, 147, 147), (1, 192, 71, 71), (1, 384, 35, 35)]


def test_weights_round_trip_and_taps_match_timm(tmp_path, timm_model):
    """Save a random timm model's weights, load them through build_perceptual, and compare the
    three taps with timm's own features at the same depths on the same input."""
    path = tmp_path / "inception_v4.pth"
    torch.save({"state_dict": timm_model.state_dict()}, path)  # later layers are ignored
    stats = PreprocessStats(photo_mean=[0.4, 0.5, 0.6], photo_scale=[0.6, 0.5, 0.4])
    net, msg = build_perceptual(stats, path)
    assert isinstance(net, PerceptualNet) and str(path) in msg
    x = torch.rand(2, 3, 64, 64) * 2 - 1  # model space
    got = net(x)
    x299 = torch.nn.functional.interpolate(
        ((x * torch.tensor(stats.photo_scale).view(1, 3, 1, 1)
          + torch.tensor(stats.photo_mean).view(1, 3, 1, 1)) - 0.5) / 0.5,
        size=(299, 299), mode="bilinear", align_corners=False)
    with torch.no_grad():
        want, h = [], x299
        for i, block in enumerate(timm_model.features[: TAPS[-1] + 1]):
            h = block(h)
            if i in TAPS:
                want.append(h)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5), (g - w).abs().max()
    net.train()
    assert not net.training and not net.trunk[0].bn.training
    assert all(not p.requires_grad for p in net.parameters())
    xg = x.clone().requires_grad_(True)
    sum(f.mean() for f in net(xg)).backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_safetensors_file_loads(tmp_path, timm_model):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    net, _ = build_perceptual(PreprocessStats(), path)
    w = timm_model.state_dict()["features.6.branch3.1.conv.weight"]
    assert torch.equal(net.trunk.state_dict()["6.branch3.1.conv.weight"], w)


def test_bad_weight_files_give_one_line(tmp_path, timm_model):
    partial = {k: v for k, v in timm_model.state_dict().items()
               if not k.startswith("features.6")}
    path = tmp_path / "partial.pt"
    torch.save(partial, path)
    with pytest.raises(CheckpointError, match="keys missing") as e:
        build_perceptual(PreprocessStats(), path)
    assert "\n" not in str(e.value)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        build_perceptual(PreprocessStats(), junk)
    with pytest.raises(CheckpointError, match="no such"):
        build_perceptual(PreprocessStats(), tmp_path / "missing.pth")
    bad_shape = dict(timm_model.state_dict())
    bad_shape["features.0.conv.weight"] = torch.zeros(1)
    torch.save(bad_shape, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="has shape"):
        build_perceptual(PreprocessStats(), tmp_path / "shape.pt")


def test_no_weights_means_off_and_cache_is_found(tmp_path, monkeypatch, timm_model):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    net, msg = build_perceptual(PreprocessStats(), None)
    assert net is None and "perceptual loss off" in msg and "downloaded" in msg
    snap = tmp_path / "hf" / "hub" / "models--timm--inception_v4.tf_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    torch.save(timm_model.state_dict(), snap / "pytorch_model.bin")
    assert find_cached_weights() == snap / "pytorch_model.bin"
    net, msg = build_perceptual(PreprocessStats(), None)
    assert net is not None and "pytorch_model.bin" in msg
