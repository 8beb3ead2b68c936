"""s2i_fast.eval: metrics on constructed cases whose answer is known, and the photo classifier
(training on a tiny synthetic set, its file, `s2i-fast classifier train`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from s2i_fast.cli import main
from s2i_fast.data import scan_sketchy, synthesize
from s2i_fast.data.sketchify import sketch_from_photo
from s2i_fast.errors import ClassifierError, UnknownClassError
from s2i_fast.eval import metrics as M
from s2i_fast.eval.classifier import (
    Classifier,
    PhotoClassifier,
    load_classifier,
    save_classifier,
    train_classifier,
)

RNG = np.random.default_rng(0)


def _photo(size: int = 64) -> np.ndarray:
    """A filled shape scene: a disc and a bar on a light background, uint8 [H, W, 3]."""
    im = Image.new("RGB", (size, size), (230, 225, 220))
    d = ImageDraw.Draw(im)
    d.ellipse((12, 12, 50, 46), fill=(40, 60, 200))
    d.rectangle((20, 30, 38, 58), fill=(200, 50, 30))
    return np.asarray(im)


def _random_images(n: int = 3, size: int = 64) -> np.ndarray:
    return RNG.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- pixel metrics
def test_identical_images_have_l1_0_and_ssim_1():
    a = np.stack([_photo(), *_random_images(2)])
    assert np.array_equal(M.l1(a, a), np.zeros(3))
    assert np.allclose(M.ssim(a, a), 1.0)


def test_image_vs_its_inverse_has_large_l1_and_low_ssim():
    a = np.stack([_photo(), *_random_images(2)])
    d, s = M.l1(a, 255 - a), M.ssim(a, 255 - a)
    assert d.shape == s.shape == (3,)
    assert (d > 0.3).all() and (d <= 1.0).all()
    assert (s < 0.1).all()


def test_accuracy_with_a_permuted_class_labelling_drops_to_chance_like():
    labels = RNG.integers(0, 10, 2000)
    pred = np.where(RNG.random(2000) < 0.9, labels, RNG.integers(0, 10, 2000))
    assert M.accuracy(pred, labels) > 0.9
    relabel = np.roll(np.arange(10), 1)  # every class gets another class's name
    assert M.accuracy(pred, relabel[labels]) < 0.1 + 0.05
    with pytest.raises(ValueError):
        M.accuracy(pred[:3], labels)


# ---------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_of_a_set_with_itself_is_about_0_and_of_a_shifted_set_is_shift_squared():
    f = RNG.normal(size=(2000, 8))
    shift = np.linspace(-1.0, 2.0, 8)
    assert M.frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_of_fewer_than_2_vectors_is_a_clear_value_error():
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))


# ---------------------------------------------------------------------- edge fidelity
@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    """(photo [1, 64, 64, 3], its own sketchify line map as the sketch [1, 64, 64])."""
    photo = _photo()
    return photo[None], sketch_from_photo(Image.fromarray(photo))[None]


def _shift(sketch: np.ndarray, px: int) -> np.ndarray:
    """The strokes moved px right and px down (white comes in at the border)."""
    out = np.full_like(sketch, 255)
    out[:, px:, px:] = sketch[:, :sketch.shape[1] - px, :sketch.shape[2] - px]
    return out


def test_edge_fidelity_of_an_image_whose_edges_are_the_sketch_is_high(scene):
    photo, sketch = scene
    assert (sketch < 128).sum() > 100  # the detector found the shapes
    got = M.edge_fidelity(photo, sketch)
    assert min(got["precision"], got["recall"], got["f"]) > 0.9


def test_edge_fidelity_of_the_edges_shifted_1_px_is_still_high_with_tolerance_2(scene):
    photo, sketch = scene
    got = M.edge_fidelity(photo, _shift(sketch, 1), tolerance=2)
    assert min(got.values()) > 0.9


def test_edge_fidelity_of_the_edges_shifted_12_px_is_low(scene):
    photo, sketch = scene
    got = M.edge_fidelity(photo, _shift(sketch, 12))
    assert max(got.values()) < 0.3


def test_edge_fidelity_of_a_blank_image_has_recall_0_and_no_division_by_zero(scene):
    photo, sketch = scene
    blank = np.full_like(photo, 128)
    assert M.edge_fidelity(blank, sketch) == {"precision": 0.0, "recall": 0.0, "f": 0.0}
    # pooled (micro average): the blank image adds misses to recall, nothing to precision
    both = M.edge_fidelity(np.concatenate([photo, blank]), np.concatenate([sketch, sketch]))
    alone = M.edge_fidelity(photo, sketch)
    assert both["precision"] == pytest.approx(alone["precision"])
    assert both["recall"] == pytest.approx(alone["recall"] / 2)


def test_edge_fidelity_resizes_a_sketch_of_another_size(scene):
    photo, sketch = scene
    big = np.repeat(np.repeat(sketch, 2, axis=1), 2, axis=2)  # 128 px, nearest
    assert M.edge_fidelity(photo, big) == M.edge_fidelity(photo, sketch)


# ---------------------------------------------------------------------- diversity
def test_pairwise_diversity_of_identical_seeds_is_0_and_of_different_images_above_0():
    same = np.repeat(_random_images(2)[:, None], 3, axis=1)  # [S=2, K=3, H, W, 3]
    assert M.pairwise_diversity(same) == 0.0
    different = _random_images(6).reshape(2, 3, 64, 64, 3)
    assert 0.2 < M.pairwise_diversity(different) < 0.5  # uniform noise: mean |x - y| = 1/3
    with pytest.raises(ValueError):
        M.pairwise_diversity(different[:, :1])


def test_feature_diversity_of_identical_features_is_0_and_of_seeds_like_sketches_about_1():
    sketches = RNG.normal(size=(20, 1, 16))
    assert M.feature_diversity(np.repeat(sketches, 4, axis=1)) == 0.0
    independent = RNG.normal(size=(20, 4, 16))  # seeds differ as much as sketches do
    got = M.feature_diversity(independent)
    assert 0.8 < got < 1.2
    assert M.feature_diversity(independent * 1000.0) == pytest.approx(got)  # scale-free


# ---------------------------------------------------------------------- classifier
@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks run fastest on one thread (and wait least on a busy machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthesize(tmp_path_factory.mktemp("eval") / "set", classes=3, photos_per_class=8,
                      sketches_per_photo=1, seed=0, size=64, progress=False)


@pytest.fixture(scope="module")
def trained(tiny_set, one_thread):
    return train_classifier(tiny_set, epochs=40, batch_size=4, seed=0, progress=False)


def test_photo_classifier_is_small_and_takes_every_model_resolution():
    net = PhotoClassifier(10).eval()
    assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 300_000
    for r in (64, 128, 256):
        x = torch.rand(2, 3, r, r)
        assert net(x).shape == (2, 10) and net.features(x).shape == (2, net.feature_dim)


def test_classifier_trained_on_a_tiny_set_is_above_chance(trained, tiny_set):
    model, info = trained
    assert info["classes"] == sorted(info["classes"]) and len(info["classes"]) == 3
    index = scan_sketchy(tiny_set)  # each photo once, however many sketches it has
    assert info["train_photos"] == len({r.photo_path for r in index.train}) > 0
    assert info["test_photos"] == len({r.photo_path for r in index.test}) > 0
    assert info["epochs"] == 40 and info["seed"] == 0 and info["resolution"] == 64
    assert info["data_root"] == str(tiny_set)
    assert info["train_accuracy"] > 0.8  # chance is 1/3
    assert 0.0 <= info["test_accuracy"] <= 1.0


def test_training_is_seeded(trained, tiny_set):
    model, _ = trained
    again, _ = train_classifier(tiny_set, epochs=40, batch_size=4, seed=0, progress=False)
    pairs = zip(model.state_dict().items(), again.state_dict().values(), strict=True)
    for (k, a), b in pairs:
        assert torch.equal(a, b), k


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    model, info = trained
    path = save_classifier(tmp_path / "clf.pt", model, info)
    loaded = load_classifier(path)
    assert loaded.classes == info["classes"] and loaded.resolution == 64
    mine = Classifier(model, info["classes"], 64)
    images = np.concatenate([_random_images(3), _photo()[None]])
    assert np.array_equal(loaded.predict(images), mine.predict(images))
    assert np.array_equal(loaded.features(images), mine.features(images))
    assert loaded.predict(images).dtype == np.int64
    assert loaded.features(images).shape == (4, model.feature_dim)
    assert loaded.logits(images).shape == (4, 3)
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # 128 px: resized to 64
    assert loaded.predict(big).shape == (4,)


def test_class_index_maps_names_and_refuses_an_unknown_class(trained):
    model, info = trained
    clf = Classifier(model, info["classes"], 64)
    names = info["classes"]
    assert clf.class_index(names[::-1]).tolist() == [2, 1, 0]
    assert clf.class_index(names[1]) == 1
    with pytest.raises(UnknownClassError, match="zebra"):
        clf.class_index([names[0], "zebra"])


def _bad_files(tmp_path: Path, good: bytes) -> dict[str, Path]:
    files = {"truncated": good[: len(good) // 2], "random bytes": RNG.bytes(4096)}
    buf = io.BytesIO()  # a generator checkpoint's outline, not a classifier
    torch.save({"format": "s2i-fast-checkpoint", "version": 1, "generator": {}}, buf)
    files["checkpoint-like"] = buf.getvalue()
    out = {}
    for name, data in files.items():
        out[name] = tmp_path / f"{name.replace(' ', '-')}.pt"
        out[name].write_bytes(data)
    return out


def test_truncated_random_or_checkpoint_files_are_classifier_errors(trained, tmp_path):
    model, info = trained
    good = save_classifier(tmp_path / "good.pt", model, info).read_bytes()
    cases = _bad_files(tmp_path, good)
    wrong = PhotoClassifier(5)  # weights of the wrong shapes for its 3 classes
    save_classifier(tmp_path / "shapes.pt", wrong, {**info, "classes": list("abcde")})
    payload = torch.load(tmp_path / "shapes.pt", weights_only=True)
    payload["classes"] = info["classes"]
    torch.save(payload, tmp_path / "shapes.pt")
    cases.update({"wrong shapes": tmp_path / "shapes.pt", "missing": tmp_path / "none.pt",
                  "folder": tmp_path})
    for name, path in cases.items():
        with pytest.raises(ClassifierError) as e:
            load_classifier(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value), name


def test_cli_classifier_train_writes_the_file_and_prints_the_line(tiny_set, tmp_path, capsys,
                                                                  one_thread):
    out = tmp_path / "sub" / "clf.pt"
    main(["classifier", "train", "--data", str(tiny_set), "--out", str(out), "--epochs", "2",
          "--seed", "1", "--threads", "1", "--quiet"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    index = scan_sketchy(tiny_set)
    n_train, n_test = (len({r.photo_path for r in s}) for s in (index.train, index.test))
    assert last.startswith(f"classifier: {n_train} train photos, test accuracy ")
    assert last.endswith(f"({n_test} test photos) -> {out}")
    clf = load_classifier(out)
    assert clf.info["epochs"] == 2 and clf.info["seed"] == 1


@pytest.mark.parametrize("bad", ["missing data root", "folder at out", "out under a file"])
def test_cli_classifier_train_bad_input_is_one_line_and_a_non_zero_exit(bad, tiny_set,
                                                                        tmp_path, capsys):
    data, out = tiny_set, tmp_path / "clf.pt"
    if bad == "missing data root":
        data = tmp_path / "no-such-set"
    elif bad == "folder at out":
        out = tmp_path
    else:
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "clf.pt"
    with pytest.raises(SystemExit) as e:
        main(["classifier", "train", "--data", str(data), "--out", str(out), "--quiet"])
    assert e.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "\n" not in err
    assert str(data if bad == "missing data root" else out) in err
    assert not (tmp_path / "clf.pt").exists()
