"""Files that ship inside the package: the demo model that `generate`, `serve` and
`Engine.load()` use when no artefact is named."""

from __future__ import annotations

from pathlib import Path

from s2i_fast.errors import CheckpointError

DEFAULT_MODEL = Path(__file__).resolve().with_name("tiny-synth.pt")


def default_model_path() -> Path:
    """The shipped demo checkpoint; CheckpointError if this build does not carry it."""
    if not DEFAULT_MODEL.is_file():
        raise CheckpointError(
            f"no model named and the shipped demo model ({DEFAULT_MODEL.name}) is not in this "
            "build of s2i-fast; name a checkpoint, .onnx or .plan file"
        )
    return DEFAULT_MODEL
