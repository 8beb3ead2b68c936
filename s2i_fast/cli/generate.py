"""`s2i-fast generate [ARTEFACT] --sketch a.png --class apple --seed 0 --out DIR`."""

from __future__ import annotations

from pathlib import Path

import click

from s2i_fast.engine.backends import BACKENDS


@click.command()
@click.argument("checkpoint", required=False, type=click.Path(path_type=Path))
@click.option("--sketch", "sketches", type=click.Path(path_type=Path), multiple=True,
              required=True, help="Sketch image (black lines on white; any size, PNG/JPEG).")
@click.option("--class", "class_name", required=True,
              help="Class name (or numeric id) for every sketch.")
@click.option("--seed", type=click.IntRange(-(2**63), 2**64 - 1), default=0, show_default=True,
              help="Noise seed (64 bits).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True)
@click.option("--device", default=None, help="cpu or cuda (default: cuda when available).")
def generate(checkpoint: Path | None, sketches: tuple[Path, ...], class_name: str, seed: int,
             out: Path, backend: str, device: str | None) -> None:
    """Turn sketch images into photos with CHECKPOINT's generator (eval mode; also an .onnx or
    .plan artefact). Without CHECKPOINT: the demo model shipped with s2i-fast."""
    from s2i_fast.data.classes import resolve_class
    from s2i_fast.data.preprocess import load_image
    from s2i_fast.engine import Engine
    from s2i_fast.errors import UnknownClassError
    from s2i_fast.fileio import check_target, ensure_dir, write_image

    engine = Engine.load(checkpoint, backend=backend, device=device)
    try:
        label = resolve_class(class_name, engine.class_names)
    except UnknownClassError as e:
        raise click.BadParameter(str(e), param_hint="--class") from None
    inputs = [load_image(p, "L") for p in sketches]
    ensure_dir(out)  # a bad --out fails before the generator runs
    targets = [out / f"{p.stem}-{engine.class_names[label]}-seed{seed}.png" for p in sketches]
    for target in targets:
        check_target(target)
    images = engine.generate(inputs, label, seed=seed)
    for target, img in zip(targets, images, strict=True):
        write_image(target, img)
        click.echo(str(target))
