"""Evidence that training learns: a tiny GAN on a small synthetic set, CPU, fixed seed.

After STEPS steps, on held-out sketches (G in eval mode, fixed noise):
  - the L1 to the ground-truth photos is clearly below its step-0 value,
  - and below the L1 of the training set's mean photo (a sketch-blind baseline);
  - D's class accuracy on the held-out real photos is above chance.
"""

from __future__ import annotations

import pytest
import torch
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.trainer import Trainer
from torch.utils.data import default_collate

from s2i_fast.config import ModelConfig
from s2i_fast.data import SketchyDataset, dataset_stats, scan_sketchy, synthesize

CLASSES = 3
STEPS = 200
BATCH = 8


def _collate(ds) -> dict[str, torch.Tensor]:
    return default_collate([ds[i] for i in range(len(ds))])


@pytest.mark.slow
def test_tiny_gan_learns_sketch_to_photo(tmp_path):
    root = synthesize(tmp_path / "set", classes=CLASSES, photos_per_class=10,
                      sketches_per_photo=2, size=64, progress=False)
    index = scan_sketchy(root, test_fraction=0.25, split_seed=0)
    stats = dataset_stats(index, 64, cache=False, progress=False)
    train_set = SketchyDataset(index, "train", stats, 64)
    held = _collate(SketchyDataset(index, "test", stats, 64, augment=False))
    plain_train = _collate(SketchyDataset(index, "train", stats, 64, augment=False))
    n_held = held["label"].shape[0]
    assert n_held >= 6 and len(set(held["label"].tolist())) == CLASSES

    mcfg = ModelConfig(preset="tiny", base=8, num_classes=CLASSES)
    tcfg = TrainConfig.from_preset("sketchygan", steps=STEPS, batch_size=BATCH, sample_every=0,
                                   ckpt_every=0, perc=0.0, seed=0)
    sample = {k: held[k][:4] for k in ("sketch", "photo", "label")}
    trainer = Trainer(tcfg, mcfg, train_set, sample, list(index.classes), stats,
                      tmp_path / "run", log=lambda m: None, progress=False)
    noise = torch.randn(n_held, mcfg.noise_dim, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def held_out_l1() -> float:
        trainer.G.eval()
        fake = trainer.G(held["sketch"], held["label"], noise)
        trainer.G.train()
        return (fake - held["photo"]).abs().mean().item()

    mean_photo = plain_train["photo"].mean(0, keepdim=True)  # [1, 3, R, R]
    l1_mean_photo = (held["photo"] - mean_photo).abs().mean().item()
    l1_start = held_out_l1()
    trainer.run()
    l1_end = held_out_l1()
    with torch.no_grad():  # D in train mode: batch statistics of the held-out real photos
        _, cls = trainer.D(held["photo"], held["sketch"])
    cls_acc = (cls.argmax(1) == held["label"]).float().mean().item()

    report = (f"held-out L1: step 0 {l1_start:.4f}, step {STEPS} {l1_end:.4f}, mean photo "
              f"{l1_mean_photo:.4f}; D class accuracy {cls_acc:.2f} (chance {1 / CLASSES:.2f})")
    assert l1_end < 0.8 * l1_start, report
    assert l1_end < 0.95 * l1_mean_photo, report
    assert cls_acc > 1.0 / CLASSES + 0.15, report
