"""Bad input and faults across the commands: one `Error:` line, a non-zero exit, no traceback,
no hang, and no damaged or replaced file; in the API one error type (EngineError,
CheckpointError, DataError). docs/robustness.md states these promises."""

import contextlib
import io
import json
import os
import resource
import stat
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from s2i_fast.checkpoint import load_checkpoint, make_payload, save_checkpoint
from s2i_fast.cli import main
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.data.preprocess import load_image
from s2i_fast.data.synth import synthesize
from s2i_fast.engine import Engine
from s2i_fast.errors import CheckpointError, DataError, EngineError
from s2i_fast.model import Generator
from s2i_fast.train.checkpoints import RunCheckpoints

ROOT = os.geteuid() == 0
NAMES = ["apple", "car_(sedan)", "mug"]


def run(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, capsys.readouterr().err


def one_error(code, err: str, *needles: str) -> str:
    """Non-zero exit; stderr ends with exactly one `Error:` line holding every needle."""
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines()
             if ln.strip() and not ln.startswith(("data statistics", "Usage:", "Try "))]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _payload(**cfg_overrides):
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", num_classes=3, **cfg_overrides)
    return make_payload(cfg, NAMES, PreprocessStats(), Generator(cfg).state_dict())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    save_checkpoint(path, _payload())
    return path


@pytest.fixture(scope="module")
def sketch(tmp_path_factory) -> Path:
    im = Image.new("L", (80, 60), 255)
    ImageDraw.Draw(im).ellipse([10, 10, 70, 50], outline=0, width=3)
    path = tmp_path_factory.mktemp("sketch") / "s.png"
    im.save(path)
    return path


@pytest.fixture(scope="module")
def syn(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("syn") / "set"
    synthesize(root, classes=2, photos_per_class=3, sketches_per_photo=1, size=64,
               progress=False)
    return root


@contextlib.contextmanager
def file_size_limit(limit: int):
    """`ulimit -f` for this process (the soft limit; Python ignores SIGXFSZ, so a write past
    it fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


# ---------------------------------------------------------------------- outputs
def test_generate_out_under_a_regular_file(ckpt, sketch, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"keep me")
    code, err = run(["generate", ckpt, "--sketch", sketch, "--class", "apple", "--out",
                     blocker / "sub"], capsys)
    one_error(code, err, str(blocker / "sub"))
    assert blocker.read_bytes() == b"keep me"


@pytest.mark.parametrize("out", ["/proc/s2i-fast-out", "/dev/null"])
def test_generate_out_in_proc_or_on_a_device(ckpt, sketch, out, capsys):
    code, err = run(["generate", ckpt, "--sketch", sketch, "--class", "0", "--out", out],
                    capsys)
    one_error(code, err, out)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders; run as a user")
def test_generate_out_in_a_read_only_folder(ckpt, sketch, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = run(["generate", ckpt, "--sketch", sketch, "--class", "0", "--out",
                         ro / "x"], capsys)
    finally:
        ro.chmod(0o755)
    one_error(code, err, "could not")
    assert not any(ro.iterdir())


def test_generate_png_past_a_file_size_limit(ckpt, sketch, tmp_path, capsys):
    out = tmp_path / "out"
    with file_size_limit(2048):
        code, err = run(["generate", ckpt, "--sketch", sketch, "--class", "0", "--out", out,
                         "--device", "cpu"], capsys)
    one_error(code, err, "could not write", "File too large")
    assert out.is_dir() and list(out.iterdir()) == []  # no cut PNG, no temp file


def test_bench_csv_in_proc(capsys):
    code, err = run(["bench", "--backends", "torch", "--batch", "1", "--warmup", "0",
                     "--iters", "1", "--no-ceilings", "--no-progress", "--device", "cpu",
                     "--csv", "/proc/s2i-fast.csv"], capsys)
    one_error(code, err, "/proc/s2i-fast.csv")


@pytest.mark.parametrize("cmd", ["synth", "sketchify"])
def test_data_sets_past_a_file_size_limit_fail_whole(syn, tmp_path, cmd, capsys):
    """Pillow's JPEG writer does not report a short write; the one writer does."""
    out = tmp_path / "set"
    args = (["data", "synth", out, "--classes", "2", "--photos-per-class", "2", "--size", "128"]
            if cmd == "synth" else ["data", "sketchify", syn / "photo" / "tx_000000000000", out,
                                    "--size", "128"])
    with file_size_limit(1500):
        code, err = run([*args, "--quiet"], capsys)
    one_error(code, err, "could not write", "File too large")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # the temp folder is gone too


def test_model_init_and_export_never_replace_a_device(ckpt, syn, tmp_path, capsys):
    dev = tmp_path / "dev"
    os.symlink("/dev/null", dev)  # the target resolves to a character device
    code, err = run(["model", "init", "--data", syn, "--out", dev], capsys)
    one_error(code, err, "not a regular file")
    code, err = run(["export", ckpt, "--onnx", dev], capsys)
    one_error(code, err, "not a regular file")
    assert dev.is_symlink() and stat.S_ISCHR(os.stat(dev).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["dev"]


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "c.pt", _payload())
        from s2i_fast.fileio import write_image

        write_image(tmp_path / "i.png", Image.new("L", (4, 4)))
    finally:
        os.umask(old)
    for name in ("c.pt", "i.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# ---------------------------------------------------------------------- inputs
@pytest.mark.timeout(60)
def test_a_named_pipe_as_sketch_does_not_block(ckpt, tmp_path, capsys):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    code, err = run(["generate", ckpt, "--sketch", fifo, "--class", "0", "--out",
                     tmp_path / "out"], capsys)
    one_error(code, err, str(fifo), "named pipe")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,needle", [
    (["--class", "²"], "unknown class"),
    (["--class", "0", "--seed", str(2**70)], "--seed"),
    (["--class", "0", "--seed", str(-(2**70))], "--seed"),
])
def test_generate_bad_class_and_seeds(ckpt, sketch, tmp_path, args, needle, capsys):
    code, err = run(["generate", ckpt, "--sketch", sketch, "--out", tmp_path / "o", *args],
                    capsys)
    one_error(code, err, needle)
    assert not (tmp_path / "o").exists()


def test_engine_refuses_huge_seeds_and_empty_images(ckpt):
    engine = Engine.load(ckpt, backend="torch", device="cpu")
    blank = Image.new("L", (64, 64), 255)
    for seed in (2**64, -(2**63) - 1, 2**70):
        with pytest.raises(EngineError, match="64 bits"):
            engine.generate(blank, 0, seed=seed)
    with pytest.raises(EngineError, match="no pixels"):
        engine.generate(Image.new("L", (0, 0)), 0, seed=0)
    assert engine.generate(blank, 0, seed=2**64 - 1).shape == (1, 64, 64, 3)


@pytest.mark.parametrize("args,needle", [
    (["--seed", "-1"], "--seed"),
    (["--photos-per-class", str(2**70)], "--photos-per-class"),
    (["--photos-per-class", "1000000000"], "--photos-per-class"),
])
def test_data_synth_bounds(tmp_path, args, needle, capsys):
    code, err = run(["data", "synth", tmp_path / "s", *args], capsys)
    one_error(code, err, needle)
    assert not (tmp_path / "s").exists()
    with pytest.raises(DataError, match="seed"):
        synthesize(tmp_path / "s", seed=-1, progress=False)


def test_train_bogus_device(capsys, tmp_path):
    code, err = run(["train", "--device", "bogus", "--out", tmp_path / "r"], capsys)
    one_error(code, err, "--device", "bogus")


# ---------------------------------------------------------------------- checkpoints
def _tensor_mutation(p):
    p["generator"] = torch.zeros(3)


BAD_PAYLOADS = {
    "unknown resolution": (lambda p: p["model_config"].update(resolution=96), "resolution"),
    "model_config a string": (lambda p: p.update(model_config="tiny"), "model_config"),
    "a tensor as generator": (_tensor_mutation, "generator"),
    "stats of the wrong length": (lambda p: p["preprocess"].update(photo_mean=[0.5]),
                                  "photo_mean"),
    "stats not finite": (lambda p: p["preprocess"].update(sketch_scale=[float("nan")]),
                         "sketch_scale"),
    "stats a string": (lambda p: p.update(preprocess="x"), "preprocess"),
    "class names not str": (lambda p: p.update(class_names=[1, 2, 3]), "class_names"),
    "class count": (lambda p: p.update(class_names=["a"]), "class names"),
    "unknown preset": (lambda p: p["model_config"].update(preset="huge"), "preset"),
    "base a float": (lambda p: p["model_config"].update(base=16.5), "base"),
    "negative step": (lambda p: p.update(step=-3), "step"),
    "weights of another width": (lambda p: p["model_config"].update(base=8), "do not match"),
    "a missing tensor": (lambda p: p["generator"].pop(next(iter(p["generator"]))), "lacks"),
}


@pytest.fixture(scope="module")
def bad_ckpts(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    out = {}
    for i, (name, (mutate, _)) in enumerate(BAD_PAYLOADS.items()):
        p = _payload()
        mutate(p)
        buf = io.BytesIO()
        torch.save(p, buf)  # written raw: make_payload would refuse some of these
        out[name] = folder / f"bad{i}.pt"
        out[name].write_bytes(buf.getvalue())
    return out


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_malformed_checkpoints_are_one_error_everywhere(bad_ckpts, sketch, tmp_path, name,
                                                        capsys):
    path, needle = bad_ckpts[name], BAD_PAYLOADS[name][1]
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path)
    with pytest.raises(EngineError, match=needle):
        Engine.load(path, backend="torch", device="cpu")
    code, err = run(["generate", path, "--sketch", sketch, "--class", "0", "--out",
                     tmp_path / "o"], capsys)
    one_error(code, err, str(path), needle)
    code, err = run(["export", path, "--onnx", tmp_path / "g.onnx"], capsys)
    one_error(code, err, str(path), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as `train` writes it (config.json + checkpoints), without training."""
    from s2i_fast.train.config import TrainConfig

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    payload = _payload()
    cfg = {"train": TrainConfig().to_dict(), "model": payload["model_config"],
           "data": {"root": str(tmp_path / "nodata"), "classes": NAMES}}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    RunCheckpoints(run_dir / "checkpoints").save(payload, step=0)
    return run_dir


@pytest.mark.parametrize("text,needle", [
    ("{}", "lacks the 'train' section"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
])
def test_resume_with_a_bad_config_json(run_folder, text, needle, capsys):
    cfg = run_folder / "config.json"
    cfg.write_text(text)
    code, err = run(["train", "--resume", run_folder, "--device", "cpu"], capsys)
    one_error(code, err, str(cfg), needle)
    assert cfg.read_text() == text


def test_resume_with_another_presets_weights(run_folder, capsys):
    torch.manual_seed(0)
    paper = ModelConfig.from_preset("paper", num_classes=3)
    latest = run_folder / "checkpoints" / "latest.pt"
    save_checkpoint(latest, make_payload(paper, NAMES, PreprocessStats(),
                                         Generator(paper).state_dict(), step=5))
    before = latest.read_bytes()
    code, err = run(["train", "--resume", run_folder, "--device", "cpu"], capsys)
    one_error(code, err, "latest.pt", "not the run's", "preset 'paper'")
    assert latest.read_bytes() == before


def test_resume_picks_the_newest_complete_checkpoint_and_removes_stale_temps(tmp_path):
    ckpts = RunCheckpoints(tmp_path, keep=3)
    ckpts.save({**_payload(), "step": 1}, 1)
    ckpts.save({**_payload(), "step": 2}, 2)
    # a kill while latest.pt was being written for step 3: the step file is whole, latest.pt
    # still holds step 2, a temp file of the cut write is left beside them
    save_checkpoint(tmp_path / "step_0000003.pt", {**_payload(), "step": 3})
    stale = tmp_path / ".latest.pt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    stale_step = tmp_path / ".step_0000004.pt.x.tmp"
    stale_step.write_bytes(b"half")
    removed = ckpts.clean_stale_temps()
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_step.name])
    path, payload = ckpts.newest()
    assert path.name == "step_0000003.pt" and payload["step"] == 3
    # a newest step file that does not load is passed over, with a notice
    (tmp_path / "step_0000003.pt").write_bytes(b"truncated")
    notes: list[str] = []
    path, payload = ckpts.newest(notice=notes.append)
    assert path.name == "latest.pt" and payload["step"] == 2
    assert any("step_0000003.pt" in n for n in notes)


# ---------------------------------------------------------------------- the reader
def _file(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize("make,needle", [
    (lambda d: d, "folder"),
    (lambda d: Path("/dev/zero"), "device"),
    (lambda d: _file(d, "e.png", b""), "empty"),
    (lambda d: _file(d, "t.png", b"hello"), "not an image"),
])
def test_image_reader_refuses_non_images(tmp_path, make, needle):
    with pytest.raises(DataError, match=needle) as e:
        load_image(make(tmp_path), "L")
    assert "\n" not in str(e.value)


def test_image_reader_caps_and_modes(tmp_path):
    big = io.BytesIO()
    Image.new("1", (9000, 8000)).save(big, "PNG")  # 72 M pixels in a few KB
    with pytest.raises(DataError, match="pixels"):
        load_image(big.getvalue(), "L")
    with pytest.raises(DataError, match="bytes"):
        load_image(io.BytesIO(b"\x89PNG" + b"\0" * 2000), "L", max_bytes=1000)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(DataError, match="not an image"):  # Ghostscript is never run
        load_image(eps, "L")
    buf = io.BytesIO()
    Image.new("RGB", (5, 3), "white").convert("P").save(buf, "GIF")
    assert load_image(buf.getvalue(), "RGB").getextrema() == ((255, 255),) * 3
    for mode, value in [("I;16", 65535), ("I", 65535), ("F", 1.0), ("1", 1), ("CMYK", 0),
                        ("LA", (255, 255)), ("RGBA", (0, 0, 0, 0)), ("LAB", (255, 128, 128)),
                        ("YCbCr", (255, 128, 128))]:
        buf = io.BytesIO()
        im = Image.new(mode, (5, 3), value)
        im.save(buf, "TIFF" if mode != "LA" else "PNG")
        for want in ("L", "RGB"):
            out = load_image(buf.getvalue(), want)
            assert out.mode == want and out.size == (5, 3), mode
            lo, hi = out.convert("L").getextrema()
            assert lo >= 250, (mode, lo)  # white (or transparent on white) stays white
    from s2i_fast.data.preprocess import to_mode

    for mode in sorted(Image.MODES):  # those no file format stores (HSV, La, RGBa, ...) too
        for want in ("L", "RGB"):
            assert to_mode(Image.new(mode, (2, 2)), want).mode == want, mode


# ---------------------------------------------------------------------- property tests
def _corruptions(data: bytes, rng, n: int):
    """n seeded corruptions: truncation, byte flips, a garbage block, a spliced duplicate."""
    for i in range(n):
        kind = i % 4
        b = bytearray(data)
        if kind == 0:
            yield bytes(b[: int(rng.integers(0, len(b)))])
        elif kind == 1:
            for pos in rng.integers(0, len(b), int(rng.integers(1, 8))):
                b[pos] ^= int(rng.integers(1, 256))
            yield bytes(b)
        elif kind == 2:
            pos = int(rng.integers(0, len(b)))
            yield bytes(b[:pos]) + rng.bytes(int(rng.integers(1, 64))) + bytes(b[pos + 32:])
        else:
            a, z = sorted(rng.integers(0, len(b), 2).tolist())
            yield bytes(b[:z]) + bytes(b[a:])


def test_randomly_corrupted_images_are_a_clean_error_or_an_image(tmp_path):
    import numpy as np

    rng = np.random.default_rng(9)
    im = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    sources = []
    for fmt in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        sources.append(buf.getvalue())
    outcomes = {"error": 0, "image": 0}
    for k, data in enumerate(sources):
        for j, bad in enumerate(_corruptions(data, rng, 30)):
            path = tmp_path / f"c{k}-{j}.img"
            path.write_bytes(bad)
            try:
                out = load_image(path if j % 2 else bad, "RGB" if j % 3 else "L")
            except DataError as e:
                assert "\n" not in str(e)
                outcomes["error"] += 1
            else:
                assert out.mode in ("L", "RGB") and out.width >= 1 and out.height >= 1
                outcomes["image"] += 1
    assert outcomes["error"] > 50 and sum(outcomes.values()) == 180


def test_randomly_corrupted_checkpoints_are_a_clean_error_or_load(tmp_path):
    import numpy as np

    from s2i_fast.checkpoint import load_generator

    rng = np.random.default_rng(11)
    # the smallest network the schema accepts keeps each load a few milliseconds
    cfg = ModelConfig(preset="tiny", base=2, num_classes=2, noise_dim=2, noise_channels=2)
    torch.manual_seed(0)
    payload = make_payload(cfg, ["a", "b"], PreprocessStats(), Generator(cfg).state_dict())
    good = tmp_path / "good.pt"
    save_checkpoint(good, payload)
    data = good.read_bytes()
    errors = loaded = 0
    for j, bad in enumerate(_corruptions(data, rng, 100)):
        path = tmp_path / f"c{j}.pt"
        path.write_bytes(bad)
        try:
            gen, names, _ = load_generator(path)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(path) in str(e)
            errors += 1
        else:  # a flip in a part nothing checks (e.g. zip padding): still a whole model
            assert names == ["a", "b"] and not gen.training
            loaded += 1
        path.unlink()
    assert errors > 50 and errors + loaded == 100
    # structural faults: a random field replaced by a value of a random type
    junk = [None, "x", 3, -1, 2.5, float("nan"), [], {}, ["a"], torch.zeros(2), {"k": 1}]
    structural = 0
    for j in range(60):
        p = make_payload(cfg, ["a", "b"], PreprocessStats(), dict(payload["generator"]))
        where = [p, p["model_config"], p["preprocess"], p["generator"]][j % 4]
        key = list(where)[int(rng.integers(0, len(where)))]
        where[key] = junk[int(rng.integers(0, len(junk)))]
        path = tmp_path / f"m{j}.pt"
        torch.save(p, path)
        try:
            load_generator(path)
        except CheckpointError as e:
            assert "\n" not in str(e)
            structural += 1
    assert structural > 40
