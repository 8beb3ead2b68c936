"""`s2i-fast eval [ARTEFACT] --data ROOT --out DIR`: metrics.json, report.html and grid.png."""

from __future__ import annotations

from pathlib import Path

import click

from s2i_fast.engine.backends import BACKENDS
from s2i_fast.eval.evaluate import DEFAULT_SEEDS


@click.command("eval")
@click.argument("artefact", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Sketchy-layout data root; its test split is scored.  "
                                 "[default: the embedded synthetic set]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for metrics.json, report.html and grid.png.")
@click.option("--seeds", type=click.IntRange(1, 64), default=DEFAULT_SEEDS, show_default=True,
              help="Noise seeds per test sketch (2 or more for the diversity columns).")
@click.option("--classifier", "classifier_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A photo classifier from `s2i-fast classifier train`.  "
                                 "[default: train one on --data's training photos, saved as "
                                 "OUT/classifier.pt]")
@click.option("--inception-weights", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="torchvision inception_v3 weights (.pth/.safetensors) for FID "
                                 "and KID.  [default: FID and KID are skipped, with a note]")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Score at most N test sketches (spread over the classes).")
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto",
              show_default=True)
@click.option("--device", default=None, help="cpu or cuda [default: cuda when available].")
def eval_cmd(artefact: Path | None, data_root: Path | None, out: Path, seeds: int,
             classifier_path: Path | None, inception_weights: Path | None, limit: int | None,
             backend: str, device: str | None) -> None:
    """Score ARTEFACT (checkpoint, .onnx or .plan; the shipped model when none is named) on the
    test split: L1, SSIM, class accuracy, classifier Fréchet distance, FID/KID, sketch
    fidelity and diversity, beside the mean-photo and real-photo reference rows."""
    from s2i_fast.data import ensure_default_data
    from s2i_fast.engine import Engine
    from s2i_fast.eval.classifier import load_classifier, save_classifier, train_classifier
    from s2i_fast.eval.evaluate import evaluate
    from s2i_fast.eval.report import metric_table_markdown, write_report
    from s2i_fast.fileio import check_target, ensure_dir

    root = data_root if data_root is not None else ensure_default_data(progress=True)
    ensure_dir(out)  # an unwritable --out fails before any work
    for name in ("metrics.json", "report.html", "grid.png"):
        check_target(out / name)
    engine = Engine.load(artefact, backend=backend, device=device)
    if classifier_path is None:
        classifier_path = out / "classifier.pt"
        click.echo(f"eval: training a photo classifier on the training photos of {root}",
                   err=True)
        model, info = train_classifier(root, resolution=engine.resolution, progress=True)
        save_classifier(classifier_path, model, info)
    classifier = load_classifier(classifier_path)
    metrics, generated, data = evaluate(
        engine, root, classifier=classifier, seeds=seeds, inception_weights=inception_weights,
        limit=limit, artefact=artefact, progress=True, log=lambda s: click.echo(s, err=True),
    )
    paths = write_report(out, metrics, data, generated)
    click.echo(metric_table_markdown(metrics))
    for note in metrics["notes"]:
        click.echo(f"note: {note}")
    click.echo(f"wrote {paths['metrics']}, {paths['report']}, {paths['grid']}")
