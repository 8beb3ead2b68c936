"""`s2i-fast classifier train`: the photo classifier that evaluation measures generated images
with (s2i_fast.eval.classifier)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from s2i_fast.config import RESOLUTIONS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def classifier() -> None:
    """Train the photo classifier that evaluation uses."""


def _check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before any training (one OutputError line)."""
    from s2i_fast.errors import OutputError
    from s2i_fast.fileio import check_target, ensure_dir

    check_target(out)  # a folder, device or FIFO at --out, or a parent that is a file
    parent = ensure_dir(out.parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"could not write {out}: permission denied (folder {parent})")


@classifier.command()
@click.option("--data", "data_root", type=click.Path(path_type=Path), required=True,
              help="Sketchy-layout data set: its training photos are learnt, its test photos "
                   "measure the accuracy.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Classifier file to write.")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=None,
              help="Passes over the training photos  [default: the trainer's]")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--resolution", type=click.Choice([str(r) for r in RESOLUTIONS]), default="64",
              show_default=True, help="Photos are read at this size (generated images are "
                                      "resized to it when they differ).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch  [default: torch's, one per core]. The network is "
                   "small: on a machine busy with other work, 1 is often much faster.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(data_root: Path, out: Path, epochs: int | None, seed: int, resolution: str,
          threads: int | None, quiet: bool) -> None:
    """Train a small CNN on the data set's photos and write it to --out."""
    import torch

    from s2i_fast.eval.classifier import DEFAULT_EPOCHS, save_classifier, train_classifier

    _check_out(out)
    if threads:
        torch.set_num_threads(threads)
    model, info = train_classifier(data_root, resolution=int(resolution),
                                   epochs=epochs or DEFAULT_EPOCHS, seed=seed,
                                   progress=not quiet)
    save_classifier(out, model, info)
    acc = info["test_accuracy"]
    shown = "n/a" if acc is None else f"{acc:.2f}"
    click.echo(f"classifier: {info['train_photos']} train photos, test accuracy {shown} "
               f"({info['test_photos']} test photos) -> {out}")
