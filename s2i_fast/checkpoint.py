"""One-file checkpoints: weights, config, class names, preprocessing stats, training state.

Written through s2i_fast.fileio (temp file in the same folder, fsync, size check, rename), so
a kill or a full disk mid-write leaves the previous checkpoint intact. Loading validates the
whole schema (validate_payload) before any tensor is used: a truncated, foreign or malformed
file raises CheckpointError with one clear line.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from pathlib import Path
from typing import Any

import torch

from s2i_fast.config import WIDTH_PRESETS, ModelConfig, PreprocessStats
from s2i_fast.errors import CheckpointError
from s2i_fast.fileio import stat_regular, write_bytes

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
    """Read and validate a checkpoint (validate_payload) before any tensor is used.

    weights_only loading: no pickled code runs. Any fault is one CheckpointError naming the
    file and what is wrong with it."""
    path = Path(path)
    stat_regular(path, CheckpointError, "no such checkpoint", "expected a checkpoint file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, pickle garbage, foreign formats
        raise CheckpointError(
            f"{path}: not a readable s2i-fast checkpoint (truncated or foreign file: "
            f"{e.__class__.__name__})"
        ) from e
    validate_payload(payload, str(path))
    return payload


# ---------------------------------------------------------------------- the schema
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "preset": str, "base": int, "resolution": int, "num_classes": int, "stem": str,
    "noise_dim": int, "noise_channels": int, "act_slope": (int, float), "upsample": str,
    "impl": str,
}
_CONFIG_RANGES = {"base": (1, 4096), "num_classes": (1, 100_000), "noise_dim": (1, 4096),
                  "noise_channels": (1, 4096)}
_STATS_LENGTHS = {"photo_mean": 3, "photo_scale": 3, "sketch_mean": 1, "sketch_scale": 1}


def validate_payload(payload: Any, where: str = "checkpoint") -> None:
    """The checkpoint schema; CheckpointError(f"{where}: ...") at the first fault.

    format marker and version; model_config: a dict of known fields with the right types and
    ranges (a known preset, resolution, stem, upsample); class_names: num_classes distinct
    non-empty str; preprocess: the four statistics, finite, scales > 0; generator (and
    discriminator when present): a dict of finite tensors with exactly the names and shapes
    the config's networks have; step: an int >= 0; train_state: None or a dict.
    """
    def bad(msg: str) -> CheckpointError:
        return CheckpointError(f"{where}: {msg}")

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise bad(f"not an s2i-fast checkpoint (no '{FORMAT}' marker)")
    version = payload.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise bad(f"version must be an int, got {type(version).__name__}")
    if version > VERSION:
        raise bad(f"checkpoint version {version} is newer than this s2i-fast ({VERSION}); "
                  "upgrade s2i-fast")
    for key in ("model_config", "class_names", "preprocess", "generator"):
        if key not in payload:
            raise bad(f"checkpoint lacks '{key}'")
    cfg = check_model_config(payload["model_config"], where)
    names = payload["class_names"]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise bad("class_names must be a list of non-empty strings")
    if len(names) != cfg.num_classes:
        raise bad(f"{len(names)} class names for a model with {cfg.num_classes} classes")
    if len(set(names)) != len(names):
        raise bad("class_names holds a name twice")
    check_stats(payload["preprocess"], where)
    step = payload.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad(f"step must be an int >= 0, got {step!r:.40}")
    if payload.get("train_state") is not None and not isinstance(payload["train_state"], dict):
        raise bad(f"train_state must be a dict, got {type(payload['train_state']).__name__}")
    from s2i_fast.model import Discriminator, Generator

    _check_state(payload["generator"], Generator, cfg, "generator", where)
    if payload.get("discriminator") is not None:
        _check_state(payload["discriminator"], Discriminator, cfg, "discriminator", where)
    trained = (payload.get("train_state") or {}).get("generator_train")  # kept by --g-ema
    if trained is not None:
        _check_state(trained, Generator, cfg, "train_state.generator_train", where)


def check_model_config(d: Any, where: str = "checkpoint") -> ModelConfig:
    """A model config dict -> ModelConfig; CheckpointError naming the bad field."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: model_config must be a dict, got {type(d).__name__}")
    for key, value in d.items():
        want = _CONFIG_TYPES.get(key)
        if want is None:
            continue  # a field a newer version added; ModelConfig.from_dict leaves it out
        if isinstance(value, bool) or not isinstance(value, want):
            raise CheckpointError(f"{where}: model_config.{key} must be "
                                  f"{getattr(want, '__name__', 'a number')}, got "
                                  f"{type(value).__name__}")
        lo_hi = _CONFIG_RANGES.get(key)
        if lo_hi and not lo_hi[0] <= value <= lo_hi[1]:
            raise CheckpointError(f"{where}: model_config.{key} must be from {lo_hi[0]} to "
                                  f"{lo_hi[1]}, got {value}")
    if "act_slope" in d and not (math.isfinite(d["act_slope"]) and 0 <= d["act_slope"] <= 1):
        raise CheckpointError(f"{where}: model_config.act_slope must be in [0, 1]")
    if d.get("preset", "tiny") not in WIDTH_PRESETS:
        raise CheckpointError(f"{where}: unknown preset {d['preset']!r:.40} in model_config "
                              f"(known: {', '.join(sorted(WIDTH_PRESETS))})")
    try:
        return ModelConfig.from_dict(d)
    except (TypeError, ValueError) as e:  # unknown resolution, stem, upsample, impl
        raise CheckpointError(f"{where}: model_config: {str(e).splitlines()[0]}") from None


def check_stats(d: Any, where: str = "checkpoint") -> PreprocessStats:
    if not isinstance(d, dict):
        raise CheckpointError(f"{where}: preprocess must be a dict, got {type(d).__name__}")
    for key, n in _STATS_LENGTHS.items():
        v = d.get(key)
        if (not isinstance(v, (list, tuple)) or len(v) != n or any(
                isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x)
                for x in v)):
            raise CheckpointError(f"{where}: preprocess.{key} must be {n} finite number(s)")
        if key.endswith("_scale") and any(x <= 0 for x in v):
            raise CheckpointError(f"{where}: preprocess.{key} must be > 0")
    return PreprocessStats.from_dict(d)


def _check_state(state: Any, net: type, cfg: ModelConfig, what: str, where: str) -> None:
    """Names and shapes against the config's network (built on the meta device: no memory)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: {what} must be a dict of tensors, got "
                              f"{type(state).__name__}")
    ref = dataclasses.replace(cfg, impl="ref")
    expected = _expected_shapes(net, tuple(sorted(ref.to_dict().items())))
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: {what} must map names to tensors "
                                  f"({str(key)[:40]!r} holds {type(value).__name__})")
        if key not in expected:
            raise CheckpointError(f"{where}: {what} has a tensor {key[:60]!r} that the "
                                  f"{cfg.preset} {cfg.resolution}px network does not have")
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(
                f"{where}: {what} weights do not match its config ({cfg.preset}, "
                f"base {cfg.base}): {key} is {list(value.shape)}, expected "
                f"{list(expected[key])}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: {what} tensor {key} holds NaN or infinity")
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointError(f"{where}: {what} lacks {len(missing)} tensor(s), e.g. "
                              f"{missing[0]}")


@functools.lru_cache(maxsize=16)
def _expected_shapes(net: type, cfg_items: tuple) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a network, built on the meta device (no memory, no RNG)."""
    with torch.device("meta"):
        state = net(ModelConfig(**dict(cfg_items))).state_dict()
    return {k: tuple(v.shape) for k, v in state.items()}


def checkpoint_meta(payload: dict) -> tuple[ModelConfig, list[str], PreprocessStats]:
    return (
        check_model_config(payload["model_config"]),
        list(payload["class_names"]),
        check_stats(payload["preprocess"]),
    )


def load_generator(path_or_payload, device: str | torch.device = "cpu", impl: str = "ref"):
    """Generator in eval mode (running statistics) with its class names and stats."""
    from s2i_fast.model import Generator

    payload = path_or_payload
    if not isinstance(payload, dict):
        payload = load_checkpoint(path_or_payload)
    else:
        validate_payload(payload)
    cfg, class_names, stats = checkpoint_meta(payload)
    cfg.impl = impl
    gen = Generator(cfg)
    try:
        gen.load_state_dict(payload["generator"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint weights do not match its config: {first}") from e
    return gen.to(device).eval(), class_names, stats
