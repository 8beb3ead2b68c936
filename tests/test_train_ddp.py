"""DDP under torchrun: 2 CPU processes (gloo) keep identical weights; rank 0 writes the run."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch

from s2i_fast.checkpoint import load_checkpoint
from s2i_fast.data import synthesize

WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from s2i_fast.train import distributed as ddp
    from s2i_fast.train.config import TrainConfig
    from s2i_fast.train.run import build_data
    from s2i_fast.train.trainer import Trainer
    from s2i_fast.config import ModelConfig

    data_root, run_dir, out = sys.argv[1:4]
    info = ddp.init_distributed("cpu")
    assert info.world_size == 2, info
    index, stats, train_set, sample_batch = build_data(data_root, None, 64, info, num_samples=2)
    mcfg = ModelConfig(preset="tiny", base=4, num_classes=len(index.classes))
    tcfg = TrainConfig.from_preset("sketch2img", steps=2, batch_size=2, sample_every=0,
                                   ckpt_every=0, sync_bn=True)
    t = Trainer(tcfg, mcfg, train_set, sample_batch, list(index.classes), stats, run_dir,
                dist_info=info, progress=False)
    first_batch = [train_set[i]["index"] for i in next(iter(t.sampler))]
    init = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.run()
    torch.save({"G": t.G.state_dict(), "D": t.D.state_dict(), "batch": first_batch,
                "G_init": init,
                "sync": [m.sync for m in t.G.modules() if hasattr(m, "sync")]},
               os.path.join(out, f"rank{info.rank}.pt"))
    ddp.shutdown()
    """
)


def test_two_gloo_processes_stay_in_sync(tmp_path):
    data = tmp_path / "set"
    synthesize(data, classes=2, photos_per_class=3, sketches_per_photo=2, size=64, progress=False)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(data), str(run), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["batch"] != r1["batch"]  # each rank saw its own shard
    assert all(r0["sync"]) and all(r1["sync"])
    for net in ("G", "D"):
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), f"{net}.{k} differs between ranks"
    # training moved the weights away from the shared initialisation (the same on both ranks)
    for k, v in r0["G_init"].items():
        assert torch.equal(v, r1["G_init"][k]), f"G.{k} started differently on the two ranks"
    moved = [k for k, v in r0["G"].items()
             if v.is_floating_point() and not torch.equal(v, r0["G_init"][k])]
    params = [k for k, v in r0["G"].items() if k.endswith("weight")]
    assert len(moved) >= len(params) // 2, (len(moved), len(params))
    ck = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ck["step"] == 2 and ck["train_state"]["world_size"] == 2
    assert len(ck["train_state"]["rng"]) == 2
    for k, v in ck["generator"].items():
        assert torch.equal(v, r0["G"][k]), k
    assert not (tmp_path / "run" / "checkpoints" / "rank1").exists()


def test_single_process_env_is_not_distributed(monkeypatch):
    from s2i_fast.train.distributed import init_distributed

    monkeypatch.setenv("WORLD_SIZE", "1")
    info = init_distributed("cpu")
    assert not info.enabled and info.is_main
