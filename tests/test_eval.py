"""`s2i-fast eval` end to end on a small synthetic set, and the driver's reference rows.

The metrics themselves are checked on constructed cases in tests/test_eval_metrics.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from s2i_fast.checkpoint import make_payload, save_checkpoint
from s2i_fast.cli import main
from s2i_fast.data import scan_sketchy, synthesize
from s2i_fast.eval.classifier import load_classifier, save_classifier, train_classifier
from s2i_fast.eval.evaluate import evaluate, generate_all, load_test_set
from s2i_fast.testing import STATS, make_generator


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-class set at 64 px, a random generator for its classes (testing.make_generator:
    outputs that vary with the sketch and the noise) and a classifier trained on the set."""
    root = tmp_path_factory.mktemp("eval")
    data = synthesize(root / "data", classes=3, photos_per_class=10, sketches_per_photo=1,
                      seed=0, size=64, progress=False)
    ckpt = root / "g.pt"
    gen = make_generator(num_classes=3, seed=0)
    names = scan_sketchy(data).classes
    save_checkpoint(ckpt, make_payload(gen.cfg, names, STATS, gen.state_dict()))
    model, info = train_classifier(data, resolution=64, epochs=3, progress=False)
    clf = root / "clf.pt"
    save_classifier(clf, model, info)
    return {"data": data, "ckpt": ckpt, "clf": clf, "root": root}


def _run(argv):
    try:
        main(argv)
    except SystemExit as e:
        return e.code or 0
    return 0


def _engine(path):
    from s2i_fast.engine import Engine

    return Engine.load(path, backend="torch", device="cpu")


def test_generation_is_reproducible_and_seeds_differ(small):
    engine = _engine(small["ckpt"])
    data = load_test_set(small["data"], engine.resolution, limit=2, progress=False)
    assert len(data.sketches) == 2 and len(set(data.class_names)) == 2  # spread over classes
    a = generate_all(engine, data, seeds=2, progress=False)
    b = generate_all(engine, data, seeds=2, progress=False)
    assert a.shape == (len(data.sketches), 2, 64, 64, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[:, 0], a[:, 1])


def test_reference_rows_score_what_they_are(small):
    engine = _engine(small["ckpt"])
    metrics, generated, data = evaluate(engine, small["data"],
                                        classifier=load_classifier(small["clf"]), seeds=2,
                                        progress=False)
    real, mean, model = (metrics["rows"][r] for r in ("real-photo", "mean-photo", "model"))
    assert real["l1"] == 0.0 and real["ssim"] == pytest.approx(1.0)
    assert mean["l1"] > 0.0 and mean["ssim"] < 1.0
    # one constant answer: a third of the classes at best, and no diversity to speak of
    assert mean["class_accuracy"] <= 0.5
    assert mean["diversity_px"] is None and real["diversity_px"] is None
    assert model["diversity_px"] > 0.0
    assert metrics["summary"]["accuracy_vs_real"] == pytest.approx(
        model["class_accuracy"] / real["class_accuracy"])
    assert metrics["summary"]["fd_vs_floor"] == pytest.approx(
        model["classifier_fd"] / real["classifier_fd"])
    assert model["fid"] is None and any("FID" in n for n in metrics["notes"])
    assert metrics["data"]["sketches"] == len(data.sketches) == generated.shape[0]


def test_eval_cli_writes_metrics_report_and_grid(small, capsys):
    out = small["root"] / "report"
    assert _run(["eval", str(small["ckpt"]), "--data", str(small["data"]), "--out", str(out),
                 "--classifier", str(small["clf"]), "--seeds", "2", "--limit", "3",
                 "--backend", "torch", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["rows"]) == {"model", "mean-photo", "real-photo"}
    assert metrics["data"]["sketches"] == 3 and metrics["seeds"] == 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # one picture per class, inlined
    assert "src=\"http" not in html and "<script" not in html  # self-contained
    from PIL import Image

    with Image.open(out / "grid.png") as im:  # 3 classes x (sketch | 2 seeds | photo)
        assert im.size == (4 * 64 + 3 * 2, 3 * 64 + 2 * 2)
    assert "| model |" in capsys.readouterr().out


def test_eval_without_a_classifier_trains_one_into_out(small, tmp_path, monkeypatch):
    import functools

    import s2i_fast.eval.classifier as classifier

    # the real training, only shorter than the default
    monkeypatch.setattr(classifier, "train_classifier",
                        functools.partial(classifier.train_classifier, epochs=2))
    out = tmp_path / "r"
    assert _run(["eval", str(small["ckpt"]), "--data", str(small["data"]), "--out", str(out),
                 "--seeds", "1", "--limit", "3", "--backend", "torch", "--device", "cpu"]) == 0
    assert load_classifier(out / "classifier.pt").classes == sorted(
        json.loads((out / "metrics.json").read_text())["per_class"])


def test_eval_scores_an_onnx_graph_like_its_checkpoint(small, tmp_path):
    """The same sketches and seeds through ONNX Runtime give the checkpoint's numbers."""
    onnx_path = tmp_path / "g.onnx"
    assert _run(["export", str(small["ckpt"]), "--onnx", str(onnx_path), "--dynamic-batch"]) == 0
    from s2i_fast.engine import Engine

    clf = load_classifier(small["clf"])
    a, _, _ = evaluate(_engine(small["ckpt"]), small["data"], classifier=clf, seeds=2, limit=3,
                       progress=False)
    b, _, _ = evaluate(Engine.load(onnx_path, backend="onnxruntime", device="cpu"),
                       small["data"], classifier=clf, seeds=2, limit=3, progress=False)
    assert b["engine"]["backend"] == "onnxruntime"
    for key in ("l1", "ssim", "classifier_fd", "diversity_px"):
        assert b["rows"]["model"][key] == pytest.approx(a["rows"]["model"][key], rel=0.02,
                                                        abs=2e-3), key


@pytest.mark.slow
def test_fid_and_kid_with_a_local_inception_file(small, tmp_path):
    """Random-init Inception weights from a file: FID of the real photos to the training
    photos is finite, FID/KID columns are filled and no note says they were skipped."""
    import torch
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    weights = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(),
               weights)
    engine = _engine(small["ckpt"])
    metrics, _, _ = evaluate(engine, small["data"], classifier=load_classifier(small["clf"]),
                             seeds=1, inception_weights=weights, limit=3, progress=False)
    for row in metrics["rows"].values():
        assert np.isfinite(row["fid"]) and row["fid"] >= 0.0
        assert row["kid"] is not None
    assert not any("FID" in n for n in metrics["notes"])


def test_eval_errors_are_one_line(small, tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    cases = [
        ["eval", str(tmp_path / "missing.pt"), "--data", str(small["data"])],
        ["eval", str(small["ckpt"]), "--data", str(tmp_path / "nope")],
        ["eval", str(small["ckpt"]), "--data", str(small["data"]),
         "--classifier", str(small["ckpt"])],  # a generator checkpoint is not a classifier
        ["eval", str(small["ckpt"]), "--data", str(small["data"]),
         "--classifier", str(small["clf"]), "--inception-weights", str(bad), "--limit", "3"],
    ]
    for args in cases:
        code = _run([*args, "--out", str(tmp_path / "o"), "--backend", "torch", "--device", "cpu"])
        assert code != 0, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("Error") and "Traceback" not in "\n".join(err), args
