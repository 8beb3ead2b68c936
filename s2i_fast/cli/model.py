"""`s2i-fast model summary|init`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from s2i_fast.config import RESOLUTIONS, STEMS, WIDTH_PRESETS, ModelConfig

PRESETS = click.Choice(sorted(WIDTH_PRESETS))
_M = ModelConfig()  # the defaults shown here are the dataclass's


@click.group()
def model() -> None:
    """Create and inspect model checkpoints."""


@model.command()
@click.option("--preset", type=PRESETS, default=_M.preset, show_default=True)
@click.option("--resolution", type=click.Choice([str(r) for r in RESOLUTIONS]),
              default=str(_M.resolution), show_default=True)
@click.option("--classes", "num_classes", type=click.IntRange(1, 100_000),
              default=_M.num_classes, show_default=True)
@click.option("--stem", type=click.Choice(STEMS), default=_M.stem, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary(preset: str, resolution: str, num_classes: int, stem: str, as_json: bool) -> None:
    """Print parameter counts and per-level widths of G and D."""
    from s2i_fast.model.networks import (
        Discriminator,
        Generator,
        count_parameters,
        encoder_resolutions,
        level_width,
    )

    cfg = ModelConfig.from_preset(preset, resolution=int(resolution), num_classes=num_classes,
                                  stem=stem)
    gen, disc = Generator(cfg), Discriminator(cfg)
    info = {
        "preset": preset,
        "base": cfg.base,
        "resolution": cfg.resolution,
        "num_classes": num_classes,
        "stem": stem,
        "levels": {r: level_width(cfg, r) for r in encoder_resolutions(cfg)},
        "generator_params": count_parameters(gen),
        "discriminator_params": count_parameters(disc),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"preset {preset} (base {cfg.base}), {cfg.resolution}x{cfg.resolution}, "
               f"{num_classes} classes, stem {stem}")
    widths = ", ".join(f"{r}:{w}" for r, w in info["levels"].items())
    click.echo(f"encoder widths (resolution:channels): {widths}")
    click.echo(f"generator      {info['generator_params']:>12,d} parameters")
    click.echo(f"discriminator  {info['discriminator_params']:>12,d} parameters")


@model.command()
@click.option("--preset", type=PRESETS, default=_M.preset, show_default=True)
@click.option("--data", "data_root", type=click.Path(path_type=Path), required=True,
              help="Sketchy-layout data set whose classes and statistics the model takes.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--resolution", type=click.Choice([str(r) for r in RESOLUTIONS]),
              default=str(_M.resolution), show_default=True)
@click.option("--stem", type=click.Choice(STEMS), default=_M.stem, show_default=True)
@click.option("--classes", default=None, help="Class subset: comma-separated names or a count.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True)
def init(preset: str, data_root: Path, out: Path, resolution: str, stem: str,
         classes: str | None, seed: int) -> None:
    """Write an untrained checkpoint for a data set's classes and statistics."""
    import torch

    from s2i_fast.checkpoint import make_payload, save_checkpoint
    from s2i_fast.data.classes import parse_class_spec
    from s2i_fast.data.sketchy import scan_sketchy
    from s2i_fast.data.stats import dataset_stats
    from s2i_fast.fileio import check_target
    from s2i_fast.model import Discriminator, Generator

    check_target(out)  # a device or folder at --out is refused before any work
    index = scan_sketchy(data_root, classes=parse_class_spec(classes))
    res = int(resolution)
    stats = dataset_stats(index, resolution=res)
    cfg = ModelConfig.from_preset(preset, resolution=res, num_classes=len(index.classes),
                                  stem=stem)
    torch.manual_seed(seed)
    gen, disc = Generator(cfg).eval(), Discriminator(cfg).eval()
    payload = make_payload(cfg, index.classes, stats, gen.state_dict(), disc.state_dict())
    save_checkpoint(out, payload)
    click.echo(f"wrote {out} ({preset}, {res}x{res}, {len(index.classes)} classes, untrained)")


@model.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--fp16/--fp32", default=True, show_default=True,
              help="Store the generator's floating-point weights in half precision (they are "
                   "widened back to fp32 on load).")
def slim(checkpoint: Path, out: Path, fp16: bool) -> None:
    """Write an inference-only copy of CHECKPOINT: the generator that generate, export and serve
    use (a training run's moving average when it kept one), its config, classes and
    statistics; no discriminator, optimiser or training state."""
    from s2i_fast.checkpoint import checkpoint_meta, load_checkpoint, make_payload, save_checkpoint

    payload = load_checkpoint(checkpoint)
    cfg, names, stats = checkpoint_meta(payload)
    gen = {k: (v.half() if fp16 and v.is_floating_point() else v)
           for k, v in payload["generator"].items()}
    save_checkpoint(out, make_payload(cfg, names, stats, gen, step=payload.get("step", 0)))
    n = sum(v.numel() for v in gen.values())
    click.echo(f"wrote {out} ({n:,d} generator values, {'fp16' if fp16 else 'fp32'}, "
               f"step {payload.get('step', 0)})")
