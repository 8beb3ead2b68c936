"""From command-line options to a finished run folder: data, configs, trainer, summary.json.

Run folder:
    config.json          resolved configuration (train, model, data, stats)
    checkpoints/         latest.pt + step_NNNNNNN.pt (the last few), written atomically
    samples/             step_NNNNNNN.png: sketch | generated (G in eval mode) | photo rows
    plots/               losses.png, d_accuracy.png, d_class_accuracy.png
    metrics.jsonl        one line per step
    summary.json         wall time, steps/s, device, final losses
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from s2i_fast.checkpoint import check_model_config, checkpoint_meta
from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.data.classes import parse_class_spec
from s2i_fast.errors import CheckpointError, DataError
from s2i_fast.fileio import ensure_dir, write_json
from s2i_fast.train import distributed as ddp
from s2i_fast.train.checkpoints import RunCheckpoints
from s2i_fast.train.config import TrainConfig
from s2i_fast.train.trainer import Trainer, TrainingError


def resolve_device(name: str, dist_info: ddp.DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise TrainingError(f"--device {name!r}: not a device; use auto, cpu, cuda or "
                            "cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise TrainingError(f"--device {name!r}: training runs on auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainingError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TrainingError(f"--device {name}: this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")
        if dist_info is not None and dist_info.enabled and dev.index is None:
            dev = torch.device("cuda", dist_info.local_rank)
    return dev


def read_run_config(path: Path) -> tuple[dict[str, Any], TrainConfig, ModelConfig]:
    """A run folder's config.json -> (the dict, TrainConfig, ModelConfig); CheckpointError
    naming the file and the fault (unreadable, not JSON, a missing or malformed part)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") \
            from None
    except ValueError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(saved).__name__}")
    for key in ("train", "model", "data"):
        if not isinstance(saved.get(key), dict):
            raise CheckpointError(f"{path}: lacks the '{key}' section; not a run's config.json")
    data = saved["data"]
    if not isinstance(data.get("root"), str) or not isinstance(data.get("classes"), list) or \
            not all(isinstance(c, str) for c in data["classes"]):
        raise CheckpointError(f"{path}: 'data' needs a root (str) and classes (list of str)")
    mcfg = check_model_config(saved["model"], f"{path}")
    try:
        tcfg = TrainConfig.from_dict(saved["train"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: 'train': {str(e).splitlines()[0]}") from None
    return saved, tcfg, mcfg


def pick_sample_indices(labels: list[int], n: int) -> list[int]:
    """Up to n indices, round-robin over classes (first item of each class, then second...)."""
    by_class: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    out: list[int] = []
    depth = 0
    while len(out) < n and any(depth < len(v) for v in by_class.values()):
        for lab in sorted(by_class):
            if depth < len(by_class[lab]) and len(out) < n:
                out.append(by_class[lab][depth])
        depth += 1
    return out


def _barrier(dist_info: ddp.DistInfo) -> None:
    if dist_info.enabled:
        torch.distributed.barrier()


def build_data(
    root: Path,
    classes: list[str] | int | None,
    resolution: int,
    dist_info: ddp.DistInfo,
    stats: PreprocessStats | None = None,
    photo_variant: str | None = None,
    sketch_variant: str | None = None,
    num_samples: int = 8,
):
    """(index, stats, train dataset, sample batch); rank 0 computes the stats cache first."""
    from torch.utils.data import default_collate

    from s2i_fast.data import SketchyDataset, dataset_stats, scan_sketchy

    kw = {}
    if photo_variant:
        kw["photo_variant"] = photo_variant
    if sketch_variant:
        kw["sketch_variant"] = sketch_variant
    index = scan_sketchy(root, classes=classes, **kw)
    if not index.train:
        raise DataError(f"{root}: no training sketches found")
    if stats is None:
        if dist_info.is_main:
            stats = dataset_stats(index, resolution, progress=True)
        _barrier(dist_info)
        if not dist_info.is_main:
            stats = dataset_stats(index, resolution, progress=False)
    train_set = SketchyDataset(index, "train", stats, resolution)
    split = "test" if index.test else "train"
    view = SketchyDataset(index, split, stats, resolution, augment=False)
    picks = pick_sample_indices([r.label for r in view.records], num_samples)
    batch = default_collate([view[i] for i in picks])
    sample_batch = {k: batch[k] for k in ("sketch", "photo", "label")}
    return index, stats, train_set, sample_batch


def run_training(opts: dict[str, Any], explicit: set[str]) -> int:
    """Train as the CLI asked; returns the process exit code (0, or 130/143 when stopped).

    opts holds every option of `s2i-fast train` (their defaults come from TrainConfig and
    ModelConfig); `explicit` names the ones the user typed (what --resume may change)."""
    t_start = time.perf_counter()
    device_name = opts["device"]
    if device_name != "auto":
        resolve_device(device_name)  # a bad --device is one line before anything starts
    dev_type = "cuda" if device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    ) else "cpu"
    dist_info = ddp.init_distributed(dev_type)
    try:
        return _run(opts, explicit, dist_info, t_start)
    finally:
        ddp.shutdown()


def _run(opts: dict[str, Any], explicit: set[str], dist_info: ddp.DistInfo, t_start: float) -> int:
    say = _say if dist_info.is_main else (lambda msg: None)
    payload = None
    if opts.get("resume"):
        run_dir = Path(opts["resume"])
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"{run_dir}: not a run folder (no config.json)")
        saved, tcfg, mcfg = read_run_config(cfg_path)
        ckpts = RunCheckpoints(run_dir / "checkpoints")
        for stale in ckpts.clean_stale_temps():
            say(f"removed {stale.name}, a checkpoint write cut short")
        ckpt_path, payload = ckpts.newest(notice=say)
        ckpt_cfg = checkpoint_meta(payload)[0]
        mine = {k: v for k, v in mcfg.to_dict().items() if k != "impl"}
        theirs = {k: v for k, v in ckpt_cfg.to_dict().items() if k != "impl"}
        if mine != theirs:
            diff = ", ".join(f"{k} {theirs[k]!r} (config.json: {mine[k]!r})"
                             for k in mine if mine[k] != theirs.get(k))
            raise CheckpointError(f"{ckpt_path}: its model is not the run's: {diff}")
        allowed = ("steps", "sample_every", "ckpt_every", "num_workers", "device", "keep")
        for key in allowed:
            if key in explicit and opts.get(key) is not None:
                tcfg.apply({"keep_checkpoints" if key == "keep" else key: opts[key]})
        ignored = sorted(explicit - set(allowed) - {"resume"})
        if ignored:
            names = ", ".join("--" + k.replace("_", "-") for k in ignored)
            say(f"ignoring {names} on --resume: the run's config.json fixes them")
        data = saved["data"]
        root, classes = Path(data["root"]), list(data["classes"])
        stats = PreprocessStats.from_dict(payload["preprocess"])
        pv, sv = data.get("photo_variant"), data.get("sketch_variant")
        say(f"resuming {run_dir} from step {payload['step']} ({ckpt_path.name})")
    else:
        overrides = {
            "lr_g": opts.get("lr_g"), "lr_d": opts.get("lr_d"),
            "beta1": opts.get("beta1"), "beta2": opts.get("beta2"),
            "gan_g": opts.get("w_gan"), "ac_d": opts.get("w_ac_d"), "ac_g": opts.get("w_ac_g"),
            "l1": opts.get("w_l1"), "perc": opts.get("w_perc"), "div": opts.get("w_div"),
            "gp": opts.get("w_gp"),
            "soft": opts.get("soft_labels"), "noisy": opts.get("noisy_labels"),
            "flip": opts.get("flip_labels"),
        }
        for key in ("steps", "batch_size", "seed", "sample_every", "ckpt_every", "num_workers",
                    "impl", "amp", "sync_bn", "device", "perceptual_weights", "num_samples",
                    "g_ema"):
            if opts.get(key) is not None:
                overrides[key] = opts[key]
        if opts.get("keep") is not None:
            overrides["keep_checkpoints"] = opts["keep"]
        tcfg = TrainConfig.from_preset(opts["losses"], **overrides)
        if opts.get("data"):
            root = Path(opts["data"])
            if not root.is_dir():
                raise DataError(f"{root}: no such data folder")
        else:
            from s2i_fast.data import ensure_default_data

            if dist_info.is_main:
                root = ensure_default_data(progress=True)
            _barrier(dist_info)
            root = ensure_default_data(progress=False)
        classes = parse_class_spec(opts.get("classes"))
        stats, mcfg = None, None
        pv, sv = opts.get("photo_variant"), opts.get("sketch_variant")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path(opts.get("out") or Path("runs") / stamp)
        if RunCheckpoints(run_dir / "checkpoints").exists():
            raise CheckpointError(
                f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                f"or choose another --out"
            )

    device = resolve_device(tcfg.device, dist_info)
    index, stats, train_set, sample_batch = build_data(
        root, classes, (mcfg.resolution if mcfg else int(opts["resolution"])), dist_info,
        stats=stats, photo_variant=pv, sketch_variant=sv, num_samples=tcfg.num_samples,
    )
    if mcfg is None:
        mcfg = ModelConfig.from_preset(
            opts["preset"],
            resolution=int(opts["resolution"]),
            num_classes=len(index.classes),
            stem=opts["stem"],
        )
    elif list(index.classes) != list(payload["class_names"]):
        raise DataError(f"{root}: classes differ from the checkpoint's; cannot resume")

    if dist_info.is_main:
        ensure_dir(run_dir)
        if payload is None:
            write_json(run_dir / "config.json", {
                "train": tcfg.to_dict(),
                "model": mcfg.to_dict(),
                "data": {
                    "root": str(Path(root).resolve()),
                    "classes": list(index.classes),
                    "photo_variant": pv, "sketch_variant": sv,
                    "num_train": len(index.train), "num_test": len(index.test),
                },
                "stats": stats.to_dict(),
                "world_size": dist_info.world_size,
                "command": sys.argv,
            })
    _barrier(dist_info)

    trainer = Trainer(
        tcfg, mcfg, train_set, sample_batch, list(index.classes), stats, run_dir,
        dist_info=dist_info, device=device,
    )
    if payload is not None:
        trainer.load_payload(payload)
    say(
        f"training {mcfg.preset} G/D ({mcfg.resolution}px, {mcfg.num_classes} classes, "
        f"{len(train_set)} training sketches) with '{tcfg.losses}' losses on {device} "
        f"x{dist_info.world_size}, batch {tcfg.batch_size}, {tcfg.steps} steps -> {run_dir}"
    )
    result = trainer.run()
    wall = time.perf_counter() - t_start
    if dist_info.is_main:
        summary = {
            **result,
            "wall_seconds_total": round(wall, 1),
            "resumed_from_step": trainer.resumed_from,
            "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "world_size": dist_info.world_size,
            "torch": torch.__version__,
            "preset": mcfg.preset,
            "losses": tcfg.losses,
            "batch_size": tcfg.batch_size,
            "finished_at": datetime.now().isoformat(timespec="seconds"),
        }
        write_json(run_dir / "summary.json", summary)
        latest = run_dir / "checkpoints" / "latest.pt"
        if result["interrupted"]:
            say(f"stopped by {result['interrupted']} at step {result['step']}; resume with "
                f"`s2i-fast train --resume {run_dir}`")
        else:
            say(f"done: {result['step']} steps in {wall / 60:.1f} min "
                f"({result['steps_per_second']} steps/s); checkpoint {latest}")
    if result["interrupted"]:
        return 143 if result["interrupted"] == "SIGTERM" else 130
    return 0


def _say(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)
