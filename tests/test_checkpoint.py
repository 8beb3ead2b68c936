"""Checkpoint round trip, atomic writes and clear errors on truncated or foreign files."""

import os

import pytest
import torch

from s2i_fast.checkpoint import (
    checkpoint_meta,
    load_checkpoint,
    load_generator,
    make_payload,
    save_checkpoint,
)
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import CheckpointError
from s2i_fast.model import Generator


def _payload(num_classes=3, step=7):
    torch.manual_seed(1)
    cfg = ModelConfig.from_preset("tiny", num_classes=num_classes)
    gen = Generator(cfg)
    stats = PreprocessStats([0.4, 0.5, 0.6], [0.6, 0.5, 0.4], [0.1], [0.9])
    names = ["car_(sedan)", "jack-o-lantern", "hot-air_balloon"][:num_classes]
    return gen, make_payload(cfg, names, stats, gen.state_dict(), step=step,
                             train_state={"rng": torch.get_rng_state()})


def test_round_trip(tmp_path):
    gen, payload = _payload()
    path = tmp_path / "sub" / "model.pt"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    cfg, names, stats = checkpoint_meta(loaded)
    assert cfg == gen.cfg
    assert names == ["car_(sedan)", "jack-o-lantern", "hot-air_balloon"]
    assert stats.photo_mean == pytest.approx([0.4, 0.5, 0.6])
    assert loaded["step"] == 7
    assert torch.equal(loaded["train_state"]["rng"], payload["train_state"]["rng"])
    gen2, _, _ = load_generator(path)
    assert not gen2.training
    for k, v in gen.state_dict().items():
        assert torch.equal(v, gen2.state_dict()[k]), k
    # no temp files left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    _, payload = _payload()
    path = tmp_path / "model.pt"
    save_checkpoint(path, payload)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or foreign"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"hello world", os.urandom(4096)])
def test_foreign_bytes_are_a_clear_error(tmp_path, content):
    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_foreign_torch_file_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3)}, path)
    with pytest.raises(CheckpointError, match="not an s2i-fast checkpoint"):
        load_checkpoint(path)


def test_missing_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def test_weights_not_matching_config(tmp_path):
    _, payload = _payload()
    payload["model_config"]["base"] = 8
    path = tmp_path / "m.pt"
    save_checkpoint(path, payload)
    with pytest.raises(CheckpointError, match="do not match"):
        load_generator(path)


def test_class_count_mismatch_is_refused():
    cfg = ModelConfig.from_preset("tiny", num_classes=2)
    with pytest.raises(CheckpointError, match="class names"):
        make_payload(cfg, ["a"], PreprocessStats(), {})
