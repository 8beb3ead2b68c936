"""The artefact contract: what an exported graph or engine says about itself.

One home for the schema that export writes and the engine reads (docs/architecture.md):

- ONNX graphs carry it in `metadata_props`, each value JSON: `s2i_fast` (format, version, raw,
  precision, static batch or null, resolution, noise_dim, input/output names, torch version),
  `class_names`, `preprocess` (PreprocessStats.to_dict) and `model_config`
  (ModelConfig.to_dict).
- TensorRT plans carry the same props in a JSON sidecar `<plan>.json`, with the precision the
  plan was built in, its batch buckets and the layers kept in fp32.

Graph I/O: `sketch` uint8 [B,H,W] (raw: float [B,1,H,W] in model space), `label` int64 [B],
`noise` float32 [B,Z] -> `image` uint8 [B,H,W,3] (raw: float [B,3,H,W]).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s2i_fast.config import ModelConfig, PreprocessStats
from s2i_fast.errors import BackendUnavailable, EngineError

FORMAT = "s2i-fast-onnx"
VERSION = 1
INPUTS: tuple[str, ...] = ("sketch", "label", "noise")
OUTPUT = "image"
ONNX_SUFFIXES: tuple[str, ...] = (".onnx",)
PLAN_SUFFIXES: tuple[str, ...] = (".plan", ".engine", ".trt")


def artefact_kind(path: str | os.PathLike) -> str:
    """'onnx', 'plan' or 'checkpoint', from the file name."""
    suffix = Path(path).suffix.lower()
    if suffix in ONNX_SUFFIXES:
        return "onnx"
    if suffix in PLAN_SUFFIXES:
        return "plan"
    return "checkpoint"


@dataclass
class OnnxMeta:
    """What an exported graph (or a plan built from one) says about itself."""

    class_names: list[str]
    stats: PreprocessStats
    model_config: ModelConfig
    raw: bool
    precision: str
    batch: int | None  # static batch, or None for a dynamic batch axis

    @property
    def resolution(self) -> int:
        return self.model_config.resolution

    def to_props(self) -> dict[str, str]:
        import torch

        info = {
            "format": FORMAT,
            "version": VERSION,
            "raw": self.raw,
            "precision": self.precision,
            "batch": self.batch,
            "resolution": self.resolution,
            "noise_dim": self.model_config.noise_dim,
            "inputs": list(INPUTS),
            "output": OUTPUT,
            "torch": torch.__version__,
        }
        return {
            "s2i_fast": json.dumps(info),
            "class_names": json.dumps(self.class_names),
            "preprocess": json.dumps(self.stats.to_dict()),
            "model_config": json.dumps(self.model_config.to_dict()),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "graph") -> OnnxMeta:
        try:
            info = json.loads(props["s2i_fast"])
            if info.get("format") != FORMAT:
                raise KeyError("format")
            return cls(
                class_names=list(json.loads(props["class_names"])),
                stats=PreprocessStats.from_dict(json.loads(props["preprocess"])),
                model_config=ModelConfig.from_dict(json.loads(props["model_config"])),
                raw=bool(info["raw"]),
                precision=str(info["precision"]),
                batch=None if info["batch"] is None else int(info["batch"]),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise EngineError(
                f"{where}: not an s2i-fast ONNX export (metadata missing or malformed: {e})"
            ) from e


def require_onnx():
    try:
        import onnx
    except ImportError as e:
        raise BackendUnavailable(
            "ONNX graphs need the 'onnx' package: pip install 's2i-fast[export]'"
        ) from e
    return onnx


def load_onnx(path_or_bytes: str | os.PathLike | bytes):
    """(ModelProto, OnnxMeta) of an exported graph; EngineError on a corrupt or foreign file."""
    onnx = require_onnx()
    where = "graph" if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    try:
        if isinstance(path_or_bytes, bytes):
            model = onnx.load_from_string(path_or_bytes)
        else:
            if not Path(path_or_bytes).is_file():
                raise EngineError(f"{where}: no such ONNX file")
            model = onnx.load(str(path_or_bytes))
    except EngineError:
        raise
    except Exception as e:  # protobuf DecodeError, truncated file
        raise EngineError(f"{where}: not a readable ONNX file ({type(e).__name__})") from e
    if len(model.graph.node) == 0:
        raise EngineError(f"{where}: not a readable ONNX file (empty graph)")
    props = {p.key: p.value for p in model.metadata_props}
    return model, OnnxMeta.from_props(props, where)


# ---------------------------------------------------------------------- TensorRT sidecar
def sidecar_path(plan: str | os.PathLike) -> Path:
    return Path(str(plan) + ".json")


def plan_sidecar(meta: OnnxMeta, precision: str, buckets: list[int],
                 fp32_layers: dict[str, str], tensorrt_version: str) -> dict[str, Any]:
    """The sidecar dict written beside a plan."""
    return {
        "props": meta.to_props(),
        "precision": precision,
        "buckets": list(buckets),
        "fp32_layers": dict(fp32_layers),
        "tensorrt": tensorrt_version,
    }


def read_sidecar(plan_path: str | os.PathLike) -> tuple[OnnxMeta, list[int], str]:
    """(meta, batch buckets, precision) of a plan; EngineError naming what is wrong."""
    side_path = sidecar_path(plan_path)
    if not Path(plan_path).is_file():
        raise EngineError(f"{plan_path}: no such TensorRT plan")
    try:
        side = json.loads(side_path.read_text())
        meta = OnnxMeta.from_props(side["props"], str(side_path))
        buckets = sorted({int(b) for b in side["buckets"]})
        if not buckets or buckets[0] < 1:
            raise ValueError("batch buckets must be positive")
        return meta, buckets, str(side["precision"])
    except FileNotFoundError as e:
        raise EngineError(f"{plan_path}: its metadata file {side_path.name} is missing") from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise EngineError(f"{side_path}: unreadable plan metadata ({type(e).__name__})") from e
