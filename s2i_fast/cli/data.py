"""`s2i-fast data ...`: make (synth, sketchify) and inspect (info) Sketchy-layout data sets."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import click

import s2i_fast.data as D
from s2i_fast.data.sketchy import DEFAULT_VARIANT
from s2i_fast.errors import DataError


def _one_line_errors(fn):
    """DataError -> click.ClickException: one line, no traceback, however the group is run."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            raise click.ClickException(str(e)) from e
        # OutputError (and every other S2IError) reaches the CLI's one-line handler

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def data() -> None:
    """Make, convert and inspect Sketchy-layout data sets."""


@data.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--classes",
    type=click.IntRange(1, None),
    default=D.DEFAULT_CLASSES,
    show_default=True,
    help="Number of object classes (the first N of the built-in list).",
)
@click.option("--photos-per-class", type=click.IntRange(1, D.MAX_PHOTOS_PER_CLASS),
              default=D.DEFAULT_PHOTOS_PER_CLASS, show_default=True)
@click.option("--sketches-per-photo", type=click.IntRange(1, D.MAX_SKETCHES_PER_PHOTO),
              default=D.DEFAULT_SKETCHES_PER_PHOTO, show_default=True)
@click.option("--seed", type=click.IntRange(0, D.MAX_SEED), default=D.DEFAULT_SEED,
              show_default=True, help="Same seed, same bytes.")
@click.option(
    "--size",
    type=click.IntRange(32, D.MAX_SIZE),
    default=D.DEFAULT_SIZE,
    show_default=True,
    help="Photo and sketch size in pixels.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_one_line_errors
def synth(
    out: Path,
    classes: int,
    photos_per_class: int,
    sketches_per_photo: int,
    seed: int,
    size: int,
    quiet: bool,
) -> None:
    """Write the procedural data set (photos + hand-drawn-looking sketches) to OUT."""
    from s2i_fast.data.shapes import CLASSES
    from s2i_fast.data.synth import synthesize

    if classes > len(CLASSES):
        raise click.BadParameter(
            f"at most {len(CLASSES)} classes are built in", param_hint="--classes"
        )
    t0 = time.perf_counter()
    root = synthesize(
        out,
        classes=classes,
        photos_per_class=photos_per_class,
        sketches_per_photo=sketches_per_photo,
        seed=seed,
        size=size,
        progress=not quiet,
    )
    n = classes * photos_per_class
    click.echo(
        f"wrote {n} photos and {n * sketches_per_photo} sketches in {classes} classes "
        f"to {root} ({time.perf_counter() - t0:.1f} s)"
    )


@data.command()
@click.argument("photos", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--method",
    type=click.Choice(["xdog", "canny"]),
    default=D.DEFAULT_EDGE_METHOD,
    show_default=True,
    help="Edge detector.",
)
@click.option(
    "--size",
    type=click.IntRange(32, 1024),
    default=D.DEFAULT_SIZE,
    show_default=True,
    help="Photos are resized to SIZE x SIZE.",
)
@click.option("--skip-bad", is_flag=True, help="Skip unreadable photos instead of stopping.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_one_line_errors
def sketchify(photos: Path, out: Path, method: str, size: int, skip_bad: bool, quiet: bool) -> None:
    """Draw a sketch for every photo under PHOTOS (subfolders = classes); write OUT."""
    from s2i_fast.data.sketchify import MARKER
    from s2i_fast.data.sketchify import sketchify as run

    root = run(photos, out, method=method, size=size, skip_bad=skip_bad, progress=not quiet)
    meta = json.loads((root / MARKER).read_text())
    msg = f"wrote {meta['photos']} photo/sketch pairs in {len(meta['classes'])} classes to {root}"
    if meta["skipped"]:
        msg += f" (skipped {len(meta['skipped'])} unreadable)"
    click.echo(msg)


@data.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--photo-variant", default=DEFAULT_VARIANT, show_default=True)
@click.option("--sketch-variant", default=DEFAULT_VARIANT, show_default=True)
@click.option(
    "--classes",
    default=None,
    help="Comma-separated class names, or a number N for the first N (sorted).",
)
@click.option(
    "--drop-invalid",
    default="",
    show_default=True,
    help="Also drop these invalid lists: any of ambiguous,pose,context "
    "(invalid-error is always dropped).",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=D.DEFAULT_TEST_FRACTION,
    show_default=True,
    help="Seeded split when there is no info/testset.txt.",
)
@click.option("--split-seed", type=click.IntRange(0, D.MAX_SEED), default=D.DEFAULT_SEED,
              show_default=True)
@click.option("--skip-bad", is_flag=True, help="Count broken entries instead of stopping.")
@_one_line_errors
def info(
    root: Path,
    photo_variant: str,
    sketch_variant: str,
    classes: str | None,
    drop_invalid: str,
    test_fraction: float,
    split_seed: int,
    skip_bad: bool,
) -> None:
    """Print a JSON summary of the data set at ROOT on stdout."""
    from s2i_fast.data import synth_params
    from s2i_fast.data.classes import parse_class_spec
    from s2i_fast.data.sketchy import scan_sketchy

    index = scan_sketchy(
        root,
        photo_variant=photo_variant,
        sketch_variant=sketch_variant,
        classes=parse_class_spec(classes),
        drop_invalid=[d for d in drop_invalid.split(",") if d],
        test_fraction=test_fraction,
        split_seed=split_seed,
        skip_bad=skip_bad,
    )
    report = dict(index.report)
    per_class: dict[str, dict[str, int]] = {c: {"train": 0, "test": 0} for c in index.classes}
    for split in ("train", "test"):
        for r in index.split(split):
            per_class[r.class_name][split] += 1
    report["per_class"] = per_class
    params = synth_params(root)
    if params is not None:
        report["synth"] = params
    click.echo(json.dumps(report, indent=2))
