"""Training configuration: the one source of every training default.

Loss presets (LOSS_PRESETS) fix the loss weights and the optimiser:

    sketch2img  the Sketch2Img report's settings: every weight 1, DRAGAN lambda 10,
                lr D 2e-4, lr G 1e-4, Adam betas (0.5, 0.999)
    sketchygan  SketchyGAN's published settings: G = 10 * (L1 + 0.3 * L_perc) + 10 * L_div
                + 0.5 * L_ac, Adam betas (0, 0.9), lr G 2e-4, lr D 4e-4
    tuned       sketchygan with the diversity weight at DIV_TUNED and a moving average of G's
                weights (g_ema 0.99), the recipe docs/recipe.md chose by `s2i-fast eval` on the
                synthetic set  (the default)

TrainConfig() is the default preset with the default run options; `s2i-fast train` shows these
values as its defaults and each option overrides one field. Run folders written before the
report's preset was renamed say `"losses": "seed"`; from_dict reads that as sketch2img.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LossWeights:
    gan_g: float = 1.0  # BCE(D(G(x)), 1) in L_G
    ac_d: float = 1.0  # L_ac(D, y) in L_D
    ac_g: float = 1.0  # L_ac(D, G(x)) in L_G
    l1: float = 1.0
    perc: float = 1.0
    div: float = 1.0
    gp: float = 10.0  # DRAGAN lambda in L_D


@dataclass
class LabelTricks:
    soft: float = 0.0  # real targets ~ U[1-soft, 1], fake ~ U[0, soft] (D only)
    noisy: float = 0.0  # std of Gaussian noise on D's targets
    flip: float = 0.0  # probability of swapping a D target


DIV_TUNED = 20.0  # docs/recipe.md: 10 leaves the seeds nearly identical, 40 costs accuracy

# preset name -> the fields it sets (the weights as a LossWeights, the optimiser as numbers)
LOSS_PRESETS: dict[str, dict[str, Any]] = {
    "sketch2img": {
        "weights": LossWeights(),
        "lr_g": 1e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "g_ema": 0.0,
    },
    "sketchygan": {
        "weights": LossWeights(gan_g=1.0, ac_d=1.0, ac_g=0.5, l1=10.0, perc=3.0, div=10.0),
        "lr_g": 2e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "g_ema": 0.0,
    },
    "tuned": {
        "weights": LossWeights(gan_g=1.0, ac_d=1.0, ac_g=0.5, l1=10.0, perc=3.0, div=DIV_TUNED),
        "lr_g": 2e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "g_ema": 0.99,
    },
}  # fmt: skip
DEFAULT_LOSS_PRESET = "tuned"
RENAMED_PRESETS = {"seed": "sketch2img"}
_DEFAULT = LOSS_PRESETS[DEFAULT_LOSS_PRESET]


@dataclass
class TrainConfig:
    losses: str = DEFAULT_LOSS_PRESET
    weights: LossWeights = field(default_factory=lambda: dataclasses.replace(_DEFAULT["weights"]))
    labels: LabelTricks = field(default_factory=LabelTricks)
    lr_g: float = _DEFAULT["lr_g"]
    lr_d: float = _DEFAULT["lr_d"]
    beta1: float = _DEFAULT["beta1"]
    beta2: float = _DEFAULT["beta2"]
    batch_size: int = 16  # per process
    steps: int = 400  # tiny, batch 16: ~1.4 s/step on 2 CPU cores, so about 10 min with data
    seed: int = 0
    sample_every: int = 50  # 0: one grid at the end
    ckpt_every: int = 100  # 0: one checkpoint at the end
    keep_checkpoints: int = 3
    log_every: int = 1
    num_samples: int = 8  # test sketches in the sample grid
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    impl: str = "ref"
    sync_bn: bool = False
    num_workers: int = 0
    device: str = "auto"
    perceptual_weights: str | None = None
    # exponential moving average of G's weights, the weights that checkpoints hand to
    # generate/export/serve (0: off, inference uses the trained G itself). The decay ramps up
    # as min(g_ema, (1 + step) / (10 + step)) so that a short run is not dominated by the init.
    g_ema: float = _DEFAULT["g_ema"]

    @classmethod
    def from_preset(cls, losses: str, **overrides: Any) -> TrainConfig:
        """The preset's weights and optimiser, the default run options, then the overrides."""
        if losses not in LOSS_PRESETS:
            raise ValueError(f"unknown loss preset {losses!r}; choose one of "
                             f"{tuple(LOSS_PRESETS)}")
        preset = LOSS_PRESETS[losses]
        cfg = cls(losses=losses, **{k: v for k, v in preset.items() if k != "weights"},
                  weights=dataclasses.replace(preset["weights"]))
        cfg.apply(overrides)
        return cfg

    def apply(self, overrides: dict[str, Any]) -> None:
        """Set fields; nested weights/label tricks are addressed by their own field names."""
        wnames = {f.name for f in dataclasses.fields(LossWeights)}
        lnames = {f.name for f in dataclasses.fields(LabelTricks)}
        top = {f.name for f in dataclasses.fields(self)}
        for k, v in overrides.items():
            if v is None:
                continue
            if k in wnames:
                setattr(self.weights, k, float(v))
            elif k in lnames:
                setattr(self.labels, k, float(v))
            elif k in top:
                setattr(self, k, v)
            else:
                raise ValueError(f"unknown training option {k!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        weights = LossWeights(**d.pop("weights", {}))
        labels = LabelTricks(**d.pop("labels", {}))
        if "losses" in d:
            d["losses"] = RENAMED_PRESETS.get(d["losses"], d["losses"])
        # a run written before the presets carried g_ema had none: its preset's (0), not the
        # default preset's
        d.setdefault("g_ema", LOSS_PRESETS.get(d.get("losses"), {}).get("g_ema", 0.0))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(weights=weights, labels=labels, **{k: v for k, v in d.items() if k in names})


def preset_value(name: str) -> str:
    """'sketchygan 0.0002, sketch2img 0.0001' for a preset-dependent field (CLI help)."""
    parts = []
    for preset, values in LOSS_PRESETS.items():
        v = getattr(values["weights"], name) if hasattr(values["weights"], name) else values[name]
        parts.append(f"{preset} {v:g}")
    return ", ".join(parts)
