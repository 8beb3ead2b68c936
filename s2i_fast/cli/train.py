"""`s2i-fast train`: the click command. The work happens in s2i_fast.train.run.

Every default shown here is read from the config dataclasses (TrainConfig, LossWeights,
LabelTricks, ModelConfig), which are the one source of them.
"""

from __future__ import annotations

import sys

import click

from s2i_fast.config import RESOLUTIONS, STEMS, WIDTH_PRESETS, ModelConfig
from s2i_fast.data.sketchy import DEFAULT_VARIANT
from s2i_fast.train.config import LOSS_PRESETS, LabelTricks, TrainConfig, preset_value

_T = TrainConfig()
_M = ModelConfig()
_L = LabelTricks()


def _from_preset(name: str) -> str:
    return f"[default: the --losses preset's: {preset_value(name)}]"


@click.command(context_settings={"show_default": True})
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Sketchy-layout data root.  [default: the embedded synthetic set, made on "
                   "first use in ~/.cache/s2i-fast/synth-default or $S2I_FAST_DATA]")
@click.option("--preset", type=click.Choice(sorted(WIDTH_PRESETS)), default=_M.preset,
              help="Network width (base " + " / ".join(
                  f"{k} {v}" for k, v in sorted(WIDTH_PRESETS.items())) + ").")
@click.option("--losses", type=click.Choice(list(LOSS_PRESETS)), default=_T.losses,
              help="Loss weights and optimiser preset (sketch2img: the report's, every "
                   "weight 1; sketchygan: the paper's, 10 x L1; tuned: sketchygan with a "
                   "stronger diversity term and --g-ema, docs/recipe.md).")
@click.option("--steps", type=click.IntRange(1, 10**9), default=_T.steps,
              help="Total training steps (one D and one G update each).")
@click.option("--batch-size", type=click.IntRange(2, 65536), default=_T.batch_size,
              help="Batch per process (batch norm needs 2 or more).")
@click.option("--classes", default=None,
              help="Comma-separated class names, or N for the first N classes.  [default: all]")
@click.option("--resolution", type=click.Choice([str(r) for r in RESOLUTIONS]),
              default=str(_M.resolution))
@click.option("--stem", type=click.Choice(STEMS), default=_M.stem,
              help="Generator stem: label embedding (the report's) or conv of the sketch.")
@click.option("--photo-variant", default=DEFAULT_VARIANT, help="Photo folder under photo/.")
@click.option("--sketch-variant", default=DEFAULT_VARIANT, help="Sketch folder under sketch/.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run folder.  [default: runs/<timestamp>]")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this folder exactly (--steps may extend it).")
@click.option("--impl", type=click.Choice(["ref", "triton"]), default=_T.impl,
              help="MRU elementwise path: torch reference or fused Triton kernels.")
@click.option("--amp", type=click.Choice(["none", "bf16", "fp16"]), default=_T.amp,
              help="Mixed precision autocast (CUDA only).")
@click.option("--perceptual-weights", type=click.Path(dir_okay=False), default=None,
              help="timm inception_v4 weights (.pth/.pt/.safetensors).  [default: timm's "
                   "local Hugging Face cache if present, else the perceptual term is off]")
@click.option("--sample-every", type=click.IntRange(0, 10**9), default=_T.sample_every,
              help="Write a sample grid every N steps (0: only at the end).")
@click.option("--ckpt-every", type=click.IntRange(0, 10**9), default=_T.ckpt_every,
              help="Write a checkpoint every N steps (0: only at the end).")
@click.option("--keep", type=click.IntRange(1, 10**6), default=_T.keep_checkpoints,
              help="Step-numbered checkpoints to keep (latest.pt is always kept).")
@click.option("--num-samples", type=click.IntRange(1, 256), default=_T.num_samples,
              help="Test sketches in each sample grid.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=_T.seed,
              help="Seeds initialisation, batch order and noise.")
@click.option("--lr-g", type=click.FloatRange(min=0), default=None, help=_from_preset("lr_g"))
@click.option("--lr-d", type=click.FloatRange(min=0), default=None, help=_from_preset("lr_d"))
@click.option("--beta1", type=click.FloatRange(0, 1), default=None, help=_from_preset("beta1"))
@click.option("--beta2", type=click.FloatRange(0, 1), default=None, help=_from_preset("beta2"))
@click.option("--w-gan", type=click.FloatRange(min=0), default=None,
              help="Weight of the G adversarial term " + _from_preset("gan_g"))
@click.option("--w-ac-d", type=click.FloatRange(min=0), default=None,
              help="Weight of D's auxiliary class loss " + _from_preset("ac_d"))
@click.option("--w-ac-g", type=click.FloatRange(min=0), default=None,
              help="Weight of G's auxiliary class loss " + _from_preset("ac_g"))
@click.option("--w-l1", type=click.FloatRange(min=0), default=None, help=_from_preset("l1"))
@click.option("--w-perc", type=click.FloatRange(min=0), default=None, help=_from_preset("perc"))
@click.option("--w-div", type=click.FloatRange(min=0), default=None, help=_from_preset("div"))
@click.option("--w-gp", type=click.FloatRange(min=0), default=None,
              help="DRAGAN lambda " + _from_preset("gp"))
@click.option("--soft-labels", type=click.FloatRange(0, 0.5), default=_L.soft,
              help="D targets: real ~ U[1-s, 1], fake ~ U[0, s].")
@click.option("--noisy-labels", type=click.FloatRange(0, 1), default=_L.noisy,
              help="Std of Gaussian noise added to D's targets.")
@click.option("--flip-labels", type=click.FloatRange(0, 1), default=_L.flip,
              help="Probability of swapping each D target (label flipping).")
@click.option("--g-ema", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Decay of the moving average of G's weights that checkpoints hand to "
                   "generate/export/serve (0: off) " + _from_preset("g_ema"))
@click.option("--sync-bn", is_flag=True, default=_T.sync_bn,
              help="Under torchrun: all-reduce batch-norm statistics across processes.")
@click.option("--num-workers", type=click.IntRange(0, 256), default=_T.num_workers,
              help="DataLoader workers (0 keeps --resume bit-exact).")
@click.option("--device", default=_T.device, help="auto, cpu, cuda or cuda:N.")
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
