"""The loop: deterministic sampler, RNG round trip, exact resume, NaN recovery, run folder."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
import torch

from s2i_fast.checkpoint import load_checkpoint
from s2i_fast.config import ModelConfig
from s2i_fast.data import synthesize
from s2i_fast.train import distributed as ddp
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.run import build_data, pick_sample_indices
from s2i_fast.train.state import ResumableBatchSampler, rng_state, set_rng_state
from s2i_fast.train.trainer import INJECT_NAN_ENV, Trainer

BATCH = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "set"
    synthesize(root, classes=3, photos_per_class=4, sketches_per_photo=2, size=64, progress=False)
    return build_data(root, None, 64, ddp.DistInfo(), num_samples=3)


def make_trainer(data, run_dir, log=None, **overrides) -> Trainer:
    index, stats, train_set, sample_batch = data
    mcfg = ModelConfig(preset="tiny", base=4, num_classes=len(index.classes))
    opts = {"batch_size": BATCH, "sample_every": 0, "ckpt_every": 0, "steps": 6}
    opts.update(overrides)
    tcfg = TrainConfig.from_preset("sketch2img", **opts)
    return Trainer(tcfg, mcfg, train_set, sample_batch, list(index.classes), stats, run_dir,
                   log=log or (lambda m: None), progress=False)


def losses(run_dir) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def test_sampler_is_deterministic_resumable_and_shards():
    s = ResumableBatchSampler(23, 4, seed=3)
    epoch0 = list(s)
    assert len(epoch0) == 5 and all(len(b) == 4 for b in epoch0)
    assert len({i for b in epoch0 for i in b}) == 20  # no repeats within an epoch
    assert list(ResumableBatchSampler(23, 4, seed=3)) == epoch0
    s.epoch = 1
    assert list(s) != epoch0  # a new order each epoch
    s.load_state_dict({"epoch": 0, "position": 3})
    assert list(s) == epoch0[3:]
    r0 = ResumableBatchSampler(23, 2, seed=3, rank=0, world_size=2).epoch_indices(0)
    r1 = ResumableBatchSampler(23, 2, seed=3, rank=1, world_size=2).epoch_indices(0)
    assert len(r0) == len(r1) == 12 and set(r0) | set(r1) == set(range(23))


def test_rng_state_survives_a_weights_only_checkpoint():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.randn(3), np.random.rand(), random.random()
    st = rng_state()
    buf = io.BytesIO()
    torch.save(st, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    want = (torch.randn(4), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(loaded)
    got = (torch.randn(4), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]


def test_pick_sample_indices_round_robin():
    assert pick_sample_indices([0, 0, 1, 1, 2], 4) == [0, 2, 4, 1]
    assert pick_sample_indices([0, 0], 5) == [0, 1]


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(data, tmp_path):
    # about 20 training items / batch 4: steps 1..9 cross an epoch boundary
    full = make_trainer(data, tmp_path / "full", steps=9)
    full.run()
    part = make_trainer(data, tmp_path / "part", steps=5)
    part.run()
    payload = load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt")
    sampler = payload["train_state"]["sampler"]
    per_epoch = len(part.sampler)
    assert payload["step"] == 5 and sampler["epoch"] * per_epoch + sampler["position"] == 5
    assert per_epoch < 9
    resumed = make_trainer(data, tmp_path / "part", steps=9)
    resumed.load_payload(payload)
    resumed.run()
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(b) == list(range(1, 10))
    for step in range(6, 10):
        for key in ("loss_d", "loss_g", "gp", "l1", "div"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-6, abs=1e-7), (step, key)
    for k, v in full.G.state_dict().items():
        assert torch.allclose(v.float(), resumed.G.state_dict()[k].float(), atol=1e-6), k


def test_nan_loss_reloads_the_last_checkpoint(data, tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "3")
    msgs: list[str] = []
    t = make_trainer(data, tmp_path / "run", log=msgs.append, steps=3, ckpt_every=2)
    result = t.run()
    assert result["recoveries"] == 1
    assert any("step 2: non-finite D loss" in m and "latest.pt (step 2)" in m for m in msgs), msgs
    ck = tmp_path / "run" / "checkpoints"
    at2 = load_checkpoint(ck / "step_0000002.pt")
    at3 = load_checkpoint(ck / "latest.pt")
    assert at3["step"] == 3
    for k, v in at2["generator"].items():  # step 3 was skipped: the step-2 weights again
        assert torch.equal(v, at3["generator"][k]), k
    for sd in (at3["generator"], at3["discriminator"]):
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    assert losses(tmp_path / "run")[3].get("skipped") is True


def test_nan_before_any_checkpoint_uses_the_in_memory_start(data, tmp_path, monkeypatch):
    monkeypatch.setenv(INJECT_NAN_ENV, "1")
    msgs: list[str] = []
    t = make_trainer(data, tmp_path / "run", log=msgs.append, steps=1)
    start = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.run()
    assert any("in-memory start state (step 0)" in m for m in msgs), msgs
    for k, v in t.G.state_dict().items():
        assert torch.equal(v, start[k]), k


def test_run_folder_contents(data, tmp_path):
    t = make_trainer(data, tmp_path / "run", steps=4, sample_every=2, ckpt_every=1,
                     keep_checkpoints=2)
    result = t.run()
    run = tmp_path / "run"
    assert result["step"] == 4 and result["steps_per_second"] > 0
    steps = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert steps == ["step_0000003.pt", "step_0000004.pt"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_0000000.png", "step_0000002.png", "step_0000004.png"]
    assert {p.name for p in (run / "plots").iterdir()} == {
        "losses.png", "d_accuracy.png", "d_class_accuracy.png"}
    from PIL import Image

    grid = Image.open(run / "samples" / "step_0000004.png")
    assert grid.size == (2 * (3 * 66 + 2), 2 * (3 * 66 + 2))  # 3 rows x 3 samples, zoom 2
    ts = load_checkpoint(run / "checkpoints" / "latest.pt")["train_state"]
    assert {"opt_g", "opt_d", "rng", "sampler", "step", "metrics_tail"} <= set(ts)
    assert len(ts["metrics_tail"]) == 4


def test_perceptual_term_runs_with_a_weight_file(data, tmp_path):
    timm = pytest.importorskip("timm")

    torch.manual_seed(0)
    weights = tmp_path / "inception_v4.pth"
    torch.save(timm.create_model("inception_v4", pretrained=False).state_dict(), weights)
    msgs: list[str] = []
    t = make_trainer(data, tmp_path / "run", log=msgs.append, steps=1, batch_size=2,
                     perceptual_weights=str(weights))
    assert any("perceptual loss on" in m for m in msgs), msgs
    row = t.run()["final_metrics"]
    assert row["perc"] > 0 and np.isfinite(row["loss_g"])
    assert all(p.grad is None or not p.requires_grad for p in t.perceptual.parameters())


def test_g_ema_is_the_checkpointed_generator_and_resumes_exactly(data, tmp_path):
    full = make_trainer(data, tmp_path / "full", steps=4, g_ema=0.9)
    full.run()
    payload = load_checkpoint(tmp_path / "full" / "checkpoints" / "latest.pt")
    ema, trained = payload["generator"], payload["train_state"]["generator_train"]
    assert payload["train_state"]["ema_updates"] == 4
    # parameters: an average that lags the trained G; buffers (BN statistics): copied
    params = dict(full.G.named_parameters())
    assert any(not torch.equal(ema[k], trained[k]) for k in params)
    for k, v in trained.items():
        if k not in params:
            assert torch.equal(ema[k], v), k
    for k, v in full.G.state_dict().items():
        assert torch.equal(v, trained[k]), k
    # the trained G is validated like the inference one before a resume uses it
    from s2i_fast.checkpoint import save_checkpoint
    from s2i_fast.errors import CheckpointError

    bad = {**payload, "train_state": {**payload["train_state"], "generator_train":
                                      {**trained, next(iter(params)): torch.zeros(1)}}}
    save_checkpoint(tmp_path / "bad.pt", bad)
    with pytest.raises(CheckpointError, match="generator_train"):
        load_checkpoint(tmp_path / "bad.pt")
    # generate/export/serve read "generator": the EMA
    from s2i_fast.checkpoint import load_generator

    gen, _, _ = load_generator(payload)
    assert all(torch.equal(v, ema[k]) for k, v in gen.state_dict().items())

    part = make_trainer(data, tmp_path / "part", steps=2, g_ema=0.9)
    part.run()
    resumed = make_trainer(data, tmp_path / "part", steps=4, g_ema=0.9)
    resumed.load_payload(load_checkpoint(tmp_path / "part" / "checkpoints" / "latest.pt"))
    resumed.run()
    for k, v in full.gan.G_ema.state_dict().items():
        assert torch.allclose(v, resumed.gan.G_ema.state_dict()[k], atol=1e-6), k


def test_g_ema_update_follows_its_ramped_decay(data, tmp_path):
    t = make_trainer(data, tmp_path / "r", steps=1, g_ema=0.99)
    before = {k: v.clone() for k, v in t.gan.G_ema.named_parameters()}
    t.run()
    d = min(0.99, 2 / 11)  # first update: (1 + 1) / (10 + 1)
    for k, p in t.G.named_parameters():
        want = d * before[k] + (1 - d) * p.detach()
        assert torch.allclose(t.gan.G_ema.get_parameter(k), want, atol=1e-6), k
