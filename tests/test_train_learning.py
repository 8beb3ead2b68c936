"""Evidence that training learns: a tiny GAN on a small synthetic set, CPU, fixed seed.

The set has two drawings of every photo. The trainer sees drawing 1 of the training photos;
drawing 2 of the same photos is held out (a sketch it never saw), and the photos of the test
split are held out entirely. After STEPS steps, with G in eval mode and fixed noise:
  - on the held-out sketches, the L1 to the ground-truth photos is clearly below its step-0
    value and below the L1 of the data set's mean photo (a sketch-blind baseline);
  - on the unseen test photos it is below its step-0 value too;
  - D's class accuracy on the unseen real photos is above chance.
The learning rates are raised to 1e-3 (every rate is an option) to fit the CPU budget.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import default_collate

from s2i_fast.config import ModelConfig
from s2i_fast.data import SketchyDataset, dataset_stats, scan_sketchy, synthesize
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.trainer import Trainer

CLASSES = 3
STEPS = 150
BATCH = 8


def _collate(ds) -> dict[str, torch.Tensor]:
    return default_collate([ds[i] for i in range(len(ds))])


@pytest.mark.slow
def test_tiny_gan_learns_sketch_to_photo(tmp_path):
    root = synthesize(tmp_path / "set", classes=CLASSES, photos_per_class=30,
                      sketches_per_photo=2, size=64, progress=False)
    full = scan_sketchy(root, test_fraction=0.2, split_seed=0)
    drawings: dict[str, list] = {}
    for r in full.train:
        drawings.setdefault(r.photo_id, []).append(r)
    pairs = [sorted(v, key=lambda r: r.sketch_id)[:2] for v in drawings.values() if len(v) >= 2]
    seen = [p[0] for p in pairs]  # the trainer sees one drawing of each training photo
    other_drawing = [p[1] for p in pairs]  # the other drawing is held out
    assert len(seen) >= 60, len(seen)
    index = dataclasses.replace(full, train=seen, test=other_drawing)
    stats = dataset_stats(index, 64, cache=False, progress=False)
    train_set = SketchyDataset(index, "train", stats, 64)
    held = _collate(SketchyDataset(index, "test", stats, 64, augment=False))
    unseen = _collate(SketchyDataset(full, "test", stats, 64, augment=False))
    plain_train = _collate(SketchyDataset(index, "train", stats, 64, augment=False))
    assert len(set(unseen["label"].tolist())) == CLASSES

    mcfg = ModelConfig(preset="tiny", base=8, num_classes=CLASSES)
    tcfg = TrainConfig.from_preset("sketchygan", steps=STEPS, batch_size=BATCH, sample_every=0,
                                   ckpt_every=0, perc=0.0, seed=0, lr_g=1e-3, lr_d=1e-3)
    sample = {k: unseen[k][:4] for k in ("sketch", "photo", "label")}
    trainer = Trainer(tcfg, mcfg, train_set, sample, list(index.classes), stats,
                      tmp_path / "run", log=lambda m: None, progress=False)
    gen = torch.Generator().manual_seed(1)

    @torch.no_grad()
    def l1_on(batch) -> float:
        noise = torch.randn(batch["label"].shape[0], mcfg.noise_dim, generator=gen)
        trainer.G.eval()
        fake = trainer.G(batch["sketch"], batch["label"], noise)
        trainer.G.train()
        return (fake - batch["photo"]).abs().mean().item()

    mean_photo = plain_train["photo"].mean(0, keepdim=True)  # [1, 3, R, R]
    l1_mean_photo = (held["photo"] - mean_photo).abs().mean().item()
    start_held, start_unseen = l1_on(held), l1_on(unseen)
    trainer.run()
    end_held, end_unseen = l1_on(held), l1_on(unseen)
    with torch.no_grad():  # D in train mode: batch statistics of the unseen real photos
        _, cls = trainer.D(unseen["photo"], unseen["sketch"])
    cls_acc = (cls.argmax(1) == unseen["label"]).float().mean().item()

    report = (
        f"held-out sketches L1: step 0 {start_held:.4f} -> step {STEPS} {end_held:.4f} "
        f"(mean photo {l1_mean_photo:.4f}); unseen photos {start_unseen:.4f} -> "
        f"{end_unseen:.4f}; D class accuracy {cls_acc:.2f} (chance {1 / CLASSES:.2f})"
    )
    print(report)
    assert end_held < 0.9 * start_held, report
    assert end_held < 0.95 * l1_mean_photo, report
    assert end_unseen < 0.97 * start_unseen, report
    assert cls_acc > 1.0 / CLASSES + 0.2, report
