"""`s2i-fast train`: the click command. The work happens in s2i_fast.train.run."""

from __future__ import annotations

import sys

import click

DEFAULT_STEPS = 400  # tiny, batch 16: 1.0-2.2 s/step on 2 CPU cores -> 7-15 min incl. data

_PRESET_HELP = "(default: the --losses preset's value)"


@click.command(context_settings={"show_default": True})
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Sketchy-layout data root.  [default: the embedded synthetic set, made on "
                   "first use in ~/.cache/s2i-fast/synth-default or $S2I_FAST_DATA]")
@click.option("--preset", type=click.Choice(["tiny", "paper"]), default="tiny",
              help="Network width (base 16 / 64).")
@click.option("--losses", type=click.Choice(["seed", "sketchygan"]), default="sketchygan",
              help="Loss weights and optimiser preset (seed: all weights 1; sketchygan: "
                   "10 x L1, which learns visibly within a CPU-length run).")
@click.option("--steps", type=click.IntRange(min=1), default=DEFAULT_STEPS,
              help="Total training steps (one D and one G update each).")
@click.option("--batch-size", type=click.IntRange(min=2), default=16,
              help="Batch per process (batch norm needs 2 or more).")
@click.option("--classes", default=None,
              help="Comma-separated class names, or N for the first N classes.  [default: all]")
@click.option("--resolution", type=click.Choice(["64", "128", "256"]), default="64")
@click.option("--stem", type=click.Choice(["label", "sketch"]), default="label",
              help="Generator stem: label embedding (seed) or conv of the sketch.")
@click.option("--photo-variant", default=None, help="Photo folder under photo/.  "
              "[default: tx_000000000000]")
@click.option("--sketch-variant", default=None, help="Sketch folder under sketch/.  "
              "[default: tx_000000000000]")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder.  [default: runs/<timestamp>]")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this folder exactly (--steps may extend it).")
@click.option("--impl", type=click.Choice(["ref", "triton"]), default="ref",
              help="MRU elementwise path: torch reference or fused Triton kernels.")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default="none",
              help="Mixed precision autocast (CUDA only).")
@click.option("--perceptual-weights", type=click.Path(dir_okay=False), default=None,
              help="timm inception_v4 weights (.pth/.pt/.safetensors).  [default: timm's "
                   "local Hugging Face cache if present, else the perceptual term is off]")
@click.option("--sample-every", type=click.IntRange(min=0), default=50,
              help="Write a sample grid every N steps (0: only at the end).")
@click.option("--ckpt-every", type=click.IntRange(min=0), default=100,
              help="Write a checkpoint every N steps (0: only at the end).")
@click.option("--keep", type=click.IntRange(min=1), default=3,
              help="Step-numbered checkpoints to keep (latest.pt is always kept).")
@click.option("--num-samples", type=click.IntRange(min=1), default=8,
              help="Test sketches in each sample grid.")
@click.option("--seed", type=int, default=0)
@click.option("--lr-g", type=click.FloatRange(min=0), default=None, help=_PRESET_HELP)
@click.option("--lr-d", type=click.FloatRange(min=0), default=None, help=_PRESET_HELP)
@click.option("--beta1", type=click.FloatRange(0, 1), default=None, help=_PRESET_HELP)
@click.option("--beta2", type=click.FloatRange(0, 1), default=None, help=_PRESET_HELP)
@click.option("--w-gan", type=click.FloatRange(min=0), default=None,
              help="Weight of the G adversarial term " + _PRESET_HELP)
@click.option("--w-ac-d", type=click.FloatRange(min=0), default=None,
              help="Weight of D's auxiliary class loss " + _PRESET_HELP)
@click.option("--w-ac-g", type=click.FloatRange(min=0), default=None,
              help="Weight of G's auxiliary class loss " + _PRESET_HELP)
@click.option("--w-l1", type=click.FloatRange(min=0), default=None, help=_PRESET_HELP)
@click.option("--w-perc", type=click.FloatRange(min=0), default=None, help=_PRESET_HELP)
@click.option("--w-div", type=click.FloatRange(min=0), default=None, help=_PRESET_HELP)
@click.option("--w-gp", type=click.FloatRange(min=0), default=None,
              help="DRAGAN lambda " + _PRESET_HELP)
@click.option("--soft-labels", type=click.FloatRange(0, 0.5), default=0.0,
              help="D targets: real ~ U[1-s, 1], fake ~ U[0, s].")
@click.option("--noisy-labels", type=click.FloatRange(0, 1), default=0.0,
              help="Std of Gaussian noise added to D's targets.")
@click.option("--flip-labels", type=click.FloatRange(0, 1), default=0.0,
              help="Probability of swapping each D target (label flipping).")
@click.option("--sync-bn", is_flag=True, default=False,
              help="Under torchrun: all-reduce batch-norm statistics across processes.")
@click.option("--num-workers", type=click.IntRange(min=0), default=0,
              help="DataLoader workers (0 keeps --resume bit-exact).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.pass_context
def train(ctx: click.Context, **opts) -> None:
    """Train the MRU GAN (all six losses) and write a run folder.

    \b
    Multi-process:  torchrun --nproc_per_node N -m s2i_fast train ...
    """
    from s2i_fast.train.run import run_training

    explicit = {
        name for name in opts
        if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
    }
    opts["resolution"] = int(opts["resolution"])
    try:
        code = run_training(opts, explicit)
    except ValueError as e:  # config validation (e.g. a bad combination of options)
        raise click.ClickException(str(e).splitlines()[0]) from e
    if code:
        sys.exit(code)
