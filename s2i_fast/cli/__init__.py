"""The `s2i-fast` command line. Subcommands load lazily so `--help` stays fast.

One module per command in this package, the top layer (docs/architecture.md): a command may
use anything below it, nothing below imports a command.
    data       s2i_fast.cli.data:data                synth, sketchify, info
    model      s2i_fast.cli.model:model              summary, init
    generate   s2i_fast.cli.generate:generate
    train      s2i_fast.cli.train:train
    export     s2i_fast.cli.export:export
    bench      s2i_fast.cli.bench:bench
    serve      s2i_fast.cli.serve:serve
    classifier s2i_fast.cli.classifier:classifier    train
    eval       s2i_fast.cli.eval:eval_cmd
Errors derived from S2IError print as one line (click.ClickException); no tracebacks.
"""

from __future__ import annotations

import importlib
import sys

import click

from s2i_fast.errors import S2IError

COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("s2i_fast.cli.data:data", "Make, convert and inspect Sketchy-layout data sets."),
    "model": ("s2i_fast.cli.model:model", "Create and inspect model checkpoints."),
    "generate": ("s2i_fast.cli.generate:generate", "Turn sketches into photos with a checkpoint."),
    "train": ("s2i_fast.cli.train:train", "Train the MRU GAN (all six losses)."),
    "export": ("s2i_fast.cli.export:export", "Export a checkpoint to ONNX or a TensorRT engine."),
    "bench": ("s2i_fast.cli.bench:bench", "Time every backend side by side."),
    "serve": ("s2i_fast.cli.serve:serve", "Serve the drawing page and the HTTP API."),
    "classifier": ("s2i_fast.cli.classifier:classifier",
                   "Train the photo classifier that evaluation uses."),
    "eval": ("s2i_fast.cli.eval:eval_cmd", "Score a model on the test split, with a report."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        target, _ = COMMANDS[name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("s2i_fast"):
                return _unavailable(name)
            raise
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str) -> click.Command:
    @click.command(name=name, help=COMMANDS[name][1])
    def cmd() -> None:
        raise click.ClickException(f"'{name}' is not available in this build of s2i-fast")

    return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="s2i-fast")
def cli() -> None:
    """s2i-fast: sketch-to-image GAN with Masked Residual Units."""


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="s2i-fast", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except S2IError as e:
        click.echo(f"Error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
