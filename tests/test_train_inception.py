"""Inception-v4 trunk: timm's parameter names and shapes, taps, the weight loader, no download."""

from __future__ import annotations

import pytest
import torch

from s2i_fast.config import PreprocessStats
from s2i_fast.errors import CheckpointError
from s2i_fast.train.inception import (
    InceptionV4Trunk,
    PerceptualNet,
    build_perceptual,
    find_cached_weights,
)

# Spot checks taken from timm/models/inception_v4.py (features.N with ConvNormAct .conv/.bn)
TIMM_KEYS = {
    "features.0.conv.weight": (32, 3, 3, 3),
    "features.1.conv.weight": (32, 32, 3, 3),
    "features.2.conv.weight": (64, 32, 3, 3),
    "features.3.conv.conv.weight": (96, 64, 3, 3),
    "features.4.branch0.1.conv.weight": (96, 64, 3, 3),
    "features.4.branch1.1.conv.weight": (64, 64, 1, 7),
    "features.4.branch1.2.conv.weight": (64, 64, 7, 1),
    "features.4.branch1.3.bn.running_var": (96,),
    "features.5.conv.conv.weight": (192, 192, 3, 3),
    "features.6.branch0.conv.weight": (96, 384, 1, 1),
    "features.6.branch2.2.conv.weight": (96, 96, 3, 3),
    "features.6.branch3.1.conv.weight": (96, 384, 1, 1),
    "features.6.branch3.1.bn.num_batches_tracked": (),
}


@pytest.fixture(scope="module")
def trunk():
    torch.manual_seed(0)
    return InceptionV4Trunk().eval()


def test_state_dict_names_match_timm(trunk):
    sd = trunk.state_dict()
    for k, shape in TIMM_KEYS.items():
        assert k in sd, k
        assert tuple(sd[k].shape) == shape, k
    # 18 conv blocks (3 stem + Mixed3a 1 + Mixed4a 6 + Mixed5a 1 + Mixed5b 7), 6 keys each
    assert len(sd) == 18 * 6
    assert all(not k.endswith("conv.bias") for k in sd)
    assert all(int(k.split(".")[1]) <= 6 for k in sd)
    assert trunk.features[0].bn.eps == pytest.approx(1e-3)


def test_taps_at_299(trunk):
    with torch.no_grad():
        taps = trunk(torch.randn(1, 3, 299, 299))
    assert [tuple(t.shape) for t in taps] == [(1, 32, 147, 147), (1, 192, 71, 71), (1, 384, 35, 35)]
    assert all(t.min() >= 0 for t in taps)  # after ReLU


def test_weight_file_round_trip_frozen_eval(tmp_path, trunk):
    sd = dict(trunk.state_dict())
    sd["features.7.branch0.conv.weight"] = torch.zeros(1)  # later layers: ignored
    sd["last_linear.weight"] = torch.zeros(1000, 1536)
    path = tmp_path / "inception_v4.pth"
    torch.save({"state_dict": sd}, path)
    stats = PreprocessStats(photo_mean=[0.4, 0.5, 0.6], photo_scale=[0.6, 0.5, 0.4])
    net, msg = build_perceptual(stats, path)
    assert isinstance(net, PerceptualNet) and str(path) in msg
    for k, v in net.trunk.state_dict().items():
        assert torch.equal(v, trunk.state_dict()[k]), k
    net.train()
    assert not net.training and not net.trunk.features[0].bn.training
    assert all(not p.requires_grad for p in net.parameters())
    # model space -> [0, 1] by the photo stats -> mean/std 0.5 -> 299: check the input mapping
    x = torch.zeros(1, 3, 64, 64, requires_grad=True)
    feats = net(x)
    x01 = torch.tensor(stats.photo_mean).view(1, 3, 1, 1).expand(1, 3, 299, 299)
    with torch.no_grad():
        want = trunk((x01 - 0.5) / 0.5)
    assert torch.allclose(feats[0], want[0], atol=1e-5)
    sum(f.mean() for f in feats).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_weight_files_give_one_line(tmp_path, trunk):
    partial = {k: v for k, v in trunk.state_dict().items() if not k.startswith("features.6")}
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


def test_no_weights_means_off_and_cache_is_found(tmp_path, monkeypatch, trunk):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    net, msg = build_perceptual(PreprocessStats(), None)
    assert net is None and "perceptual loss off" in msg and "downloaded" in msg
    snap = tmp_path / "hf" / "hub" / "models--timm--inception_v4.tf_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    torch.save(trunk.state_dict(), snap / "pytorch_model.bin")
    assert find_cached_weights() == snap / "pytorch_model.bin"
    net, msg = build_perceptual(PreprocessStats(), None)
    assert net is not None and "pytorch_model.bin" in msg
