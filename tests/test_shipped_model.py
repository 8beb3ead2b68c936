"""The demo model that ships inside the package, and `model slim` that makes such a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from s2i_fast import Engine
from s2i_fast.assets import DEFAULT_MODEL
from s2i_fast.checkpoint import load_checkpoint
from s2i_fast.cli import cli
from s2i_fast.errors import EngineError
from s2i_fast.testing import drawn_batch, save_test_checkpoint

shipped = pytest.mark.skipif(not DEFAULT_MODEL.is_file(),
                             reason="this build does not carry the shipped demo model")


def test_model_slim_keeps_only_the_generator_in_fp16(tmp_path):
    src, _ = save_test_checkpoint(tmp_path / "full.pt")
    out = tmp_path / "slim.pt"
    res = CliRunner().invoke(cli, ["model", "slim", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    full, slim = load_checkpoint(src), load_checkpoint(out)
    assert slim["discriminator"] is None and slim["train_state"] is None
    assert set(slim["generator"]) == set(full["generator"])
    for k, v in slim["generator"].items():
        orig = full["generator"][k]
        assert v.dtype == (torch.float16 if orig.is_floating_point() else orig.dtype), k
    assert out.stat().st_size < 0.6 * src.stat().st_size
    sketches = drawn_batch(2)
    a = Engine.load(src, backend="torch").generate(sketches, 1, seed=4)
    b = Engine.load(out, backend="torch").generate(sketches, 1, seed=4)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.1


def test_engine_load_without_a_shipped_model_is_an_engine_error(monkeypatch, tmp_path):
    import s2i_fast.assets as assets

    monkeypatch.setattr(assets, "DEFAULT_MODEL", tmp_path / "absent.pt")
    with pytest.raises(EngineError, match="shipped demo model"):
        Engine.load(backend="torch")


@shipped
def test_engine_load_with_no_path_loads_the_shipped_model():
    engine = Engine.load(backend="torch")
    assert engine.resolution == 64 and "apple" in engine.class_names
    payload = load_checkpoint(DEFAULT_MODEL)
    assert payload["discriminator"] is None  # inference only
    assert DEFAULT_MODEL.stat().st_size < 8 * 2**20
    images = engine.generate(drawn_batch(2), "apple", seed=0)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert images.std() > 5  # a picture, not a flat field


@shipped
def test_generate_without_an_artefact_uses_the_shipped_model(tmp_path):
    from s2i_fast.testing import draw_sketch

    sketch = tmp_path / "s.png"
    draw_sketch(0).save(sketch)
    res = CliRunner().invoke(cli, ["generate", "--sketch", str(sketch), "--class", "apple",
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "s-apple-seed0.png").is_file()
