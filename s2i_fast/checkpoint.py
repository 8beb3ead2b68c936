"""One-file checkpoints: weights, config, class names, preprocessing stats, training state.

Written through s2i_fast.fileio (temp file in the same folder, fsync, size check, rename), so
a kill or a full disk mid-write leaves the previous checkpoint intact. Loading a truncated or
foreign file raises CheckpointError with one clear line.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import CheckpointError
from s2i_fast.fileio import write_bytes

FORMAT = "s2i-fast-checkpoint"
VERSION = 1


def make_payload(
    model_config: ModelConfig,
    class_names: list[str],
    stats: PreprocessStats,
    generator: dict[str, torch.Tensor],
    discriminator: dict[str, torch.Tensor] | None = None,
    train_state: dict[str, Any] | None = None,
    step: int = 0,
) -> dict[str, Any]:
    if len(class_names) != model_config.num_classes:
        raise CheckpointError(
            f"{len(class_names)} class names for a model with {model_config.num_classes} classes"
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model_config.to_dict(),
        "class_names": list(class_names),
        "preprocess": stats.to_dict(),
        "generator": generator,
        "discriminator": discriminator,
        "train_state": train_state,
        "step": int(step),
    }


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, foreign formats
        raise CheckpointError(
            f"{path}: not a readable s2i-fast checkpoint (truncated or foreign file: "
            f"{e.__class__.__name__})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an s2i-fast checkpoint (no '{FORMAT}' marker)")
    if payload.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload['version']} is newer than this s2i-fast "
            f"({VERSION}); upgrade s2i-fast"
        )
    for key in ("model_config", "class_names", "preprocess", "generator"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


def checkpoint_meta(payload: dict) -> tuple[ModelConfig, list[str], PreprocessStats]:
    return (
        ModelConfig.from_dict(payload["model_config"]),
        list(payload["class_names"]),
        PreprocessStats.from_dict(payload["preprocess"]),
    )


def load_generator(path_or_payload, device: str | torch.device = "cpu", impl: str = "ref"):
    """Generator in eval mode (running statistics) with its class names and stats."""
    from s2i_fast.model import Generator

    payload = path_or_payload
    if not isinstance(payload, dict):
        payload = load_checkpoint(path_or_payload)
    cfg, class_names, stats = checkpoint_meta(payload)
    cfg.impl = impl
    gen = Generator(cfg)
    try:
        gen.load_state_dict(payload["generator"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not match its config: {first}") from e
    return gen.to(device).eval(), class_names, stats
