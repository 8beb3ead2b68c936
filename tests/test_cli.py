"""The CLI as a user meets it: real subprocesses, one-line errors, files written."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from s2i_fast.checkpoint import make_payload, save_checkpoint
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.model import Generator


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "s2i_fast", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(out, *needles):
    """A non-zero exit whose error is one line, `Error: ...`, the last thing on stderr, holding
    every needle (click's usage lines may come before a usage error, nothing else may)."""
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert lines, "no error message"
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1 and errors[0] == lines[-1], out.stderr
    before = lines[:-1]
    assert all(ln.startswith(("Usage:", "Try ")) for ln in before), out.stderr
    msg = lines[-1]
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", num_classes=3)
    gen = Generator(cfg)
    path = tmp_path_factory.mktemp("ckpt") / "untrained.pt"
    save_checkpoint(path, make_payload(cfg, ["apple", "car_(sedan)", "jack-o-lantern"],
                                       PreprocessStats(), gen.state_dict()))
    return path


def _sketch(path, mode="L", size=(300, 220)):
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    d.ellipse([40, 30, 250, 200], outline="black", width=4)
    d.line([60, 100, 240, 120], fill="black", width=3)
    if mode == "RGBA":
        rgba = Image.new("RGBA", size, (0, 0, 0, 0))
        rgba.paste(im.convert("RGBA"), mask=Image.eval(im.convert("L"), lambda v: 255 - v))
        im = rgba
    else:
        im = im.convert(mode)
    im.save(path)
    return path


def test_generate_writes_pngs_for_any_sketch_format(tmp_path, ckpt):
    a = _sketch(tmp_path / "a.png", "L")
    b = _sketch(tmp_path / "b.png", "RGBA", (64, 64))
    c = _sketch(tmp_path / "c.jpg", "RGB", (513, 301))
    out = run_cli("generate", ckpt, "--sketch", a, "--sketch", b, "--sketch", c,
                  "--class", "car_(sedan)", "--seed", 3, "--out", tmp_path / "out")
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 3
    for f in files:
        img = np.asarray(Image.open(f))
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        assert img.std() > 0, "an image of one flat colour"
    # same seed, same images (the class given by id this time)
    again = run_cli("generate", ckpt, "--sketch", a, "--sketch", b, "--sketch", c,
                    "--class", "1", "--seed", 3, "--out", tmp_path / "again")
    assert again.returncode == 0, again.stderr
    for name in ("a", "b", "c"):
        first = np.asarray(Image.open(tmp_path / "out" / f"{name}-car_(sedan)-seed3.png"))
        second = np.asarray(Image.open(tmp_path / "again" / f"{name}-car_(sedan)-seed3.png"))
        assert np.array_equal(first, second), name
    # alone in its batch, the first sketch gets the same noise row: the same image up to the
    # convolutions' batch-dependent rounding (at most one uint8 level)
    alone = run_cli("generate", ckpt, "--sketch", a, "--class", "1", "--seed", 3,
                    "--out", tmp_path / "alone")
    assert alone.returncode == 0, alone.stderr
    single = np.asarray(Image.open(tmp_path / "alone" / "a-car_(sedan)-seed3.png"))
    first = np.asarray(Image.open(tmp_path / "out" / "a-car_(sedan)-seed3.png"))
    assert np.abs(single.astype(int) - first.astype(int)).max() <= 1


def test_generate_unknown_class(tmp_path, ckpt):
    a = _sketch(tmp_path / "a.png")
    out = run_cli("generate", ckpt, "--sketch", a, "--class", "zebra", "--out", tmp_path)
    assert_one_line_error(out, "unknown class 'zebra'", "apple")


def test_generate_corrupt_sketch(tmp_path, ckpt):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    out = run_cli("generate", ckpt, "--sketch", bad, "--class", "apple", "--out", tmp_path)
    assert_one_line_error(out, "bad.png", "not an image")


def test_generate_missing_sketch_and_checkpoint(tmp_path, ckpt):
    out = run_cli("generate", ckpt, "--sketch", tmp_path / "nope.png", "--class", "apple",
                  "--out", tmp_path)
    assert_one_line_error(out, "nope.png")
    out = run_cli("generate", tmp_path / "missing.pt", "--sketch", "x.png", "--class", "apple",
                  "--out", tmp_path)
    assert_one_line_error(out, "missing.pt", "no such file")


def test_generate_truncated_checkpoint(tmp_path, ckpt):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ckpt.read_bytes()[:5000])
    a = _sketch(tmp_path / "a.png")
    out = run_cli("generate", cut, "--sketch", a, "--class", "apple", "--out", tmp_path)
    assert_one_line_error(out, "cut.pt", "truncated")


def test_model_summary_and_bad_preset():
    out = run_cli("model", "summary", "--preset", "paper", "--json")
    assert out.returncode == 0, out.stderr
    assert '"generator_params": 29683094' in out.stdout
    out = run_cli("model", "summary", "--preset", "huge")
    assert_one_line_error(out, "huge")


def test_help_lists_every_command():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("data", "model", "generate", "train", "export", "bench"):
        assert name in out.stdout


def test_data_synth_model_init_generate_end_to_end(tmp_path):
    """The issue's path: data synth -> data info -> model init -> generate."""
    import json

    from s2i_fast.checkpoint import checkpoint_meta, load_checkpoint
    from s2i_fast.data.sketchy import scan_sketchy
    from s2i_fast.data.stats import dataset_stats

    root = tmp_path / "synth"
    out = run_cli("data", "synth", root, "--classes", 10, "--photos-per-class", 2,
                  "--sketches-per-photo", 1, "--size", 128, "--seed", 5)
    assert out.returncode == 0, out.stderr
    info = json.loads(run_cli("data", "info", root).stdout)
    assert info["classes"] == 10
    ckpt_path = tmp_path / "m.pt"
    out = run_cli("model", "init", "--preset", "tiny", "--data", root, "--out", ckpt_path,
                  "--classes", "apple,car,fish")
    assert out.returncode == 0, out.stderr
    cfg, names, stats = checkpoint_meta(load_checkpoint(ckpt_path))
    assert names == ["apple", "car", "fish"] and cfg.num_classes == 3
    want = dataset_stats(scan_sketchy(root, classes=["apple", "car", "fish"]), resolution=64)
    assert stats.photo_mean == pytest.approx(want.photo_mean)
    assert stats.sketch_scale == pytest.approx(want.sketch_scale)
    sketch = next((root / "sketch" / "tx_000000000000" / "fish").glob("*.png"))
    out = run_cli("generate", ckpt_path, "--sketch", sketch, "--class", "fish",
                  "--out", tmp_path / "gen")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "gen").glob("*.png"))) == 1


def test_model_init_errors(tmp_path):
    out = run_cli("model", "init", "--data", tmp_path / "nowhere", "--out", tmp_path / "m.pt")
    assert_one_line_error(out, "nowhere")
    assert not (tmp_path / "m.pt").exists()
