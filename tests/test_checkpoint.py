"""Checkpoint round trip, atomic writes and clear errors on truncated or foreign files."""

import os

import pytest
import torch

from s2i_fast.checkpoint import (
    atomic_write_bytes,
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


_WRITE_UNDER_LIMIT = """
import resource, signal, sys
from s2i_fast.checkpoint import atomic_write_bytes
from s2i_fast.errors import CheckpointError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # files may not grow past 4 KiB
try:
    atomic_write_bytes(sys.argv[1], b"n" * 100_000)
except CheckpointError as e:
    print("ERR", e)
"""


def test_full_disk_keeps_previous_checkpoint(tmp_path):
    """A write that runs out of space fails with one line and leaves the old file whole."""
    import subprocess
    import sys

    path = tmp_path / "latest.pt"
    atomic_write_bytes(path, b"old checkpoint")
    out = subprocess.run([sys.executable, "-c", _WRITE_UNDER_LIMIT, str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ERR could not write"), out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    assert path.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_unwritable_target_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(CheckpointError, match="could not write"):
        atomic_write_bytes(blocker / "ckpt.pt", b"data")
