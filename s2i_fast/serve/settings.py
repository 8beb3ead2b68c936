"""Serving limits and batching knobs: the one source of their defaults (the CLI shows them)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

ENV_PREFIX = "S2I_SERVE_"


@dataclass(frozen=True)
class ServeConfig:
    # batching: requests that arrive together share one engine call
    max_batch: int = 16  # images per engine call; 1 turns batching off
    max_wait_ms: float = 5.0  # how long a batch's first request waits for company
    queue_size: int = 64  # requests waiting for the engine; one more is answered 503
    retry_after_s: int = 1  # the Retry-After header of that 503
    # request limits
    max_body_bytes: int = 8 * 1024 * 1024  # whole request (multipart or JSON)
    max_pixels: int = 4096 * 4096  # decoded sketch width * height
    max_variations: int = 8  # "n": images (seeds) per request

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "max_body_bytes", "max_pixels", "max_variations",
                     "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")

    @property
    def ws_max_message_bytes(self) -> int:
        """A WebSocket text frame carries the sketch as base64 (4/3 larger) inside JSON."""
        return self.max_body_bytes * 4 // 3 + 4096

    def to_env(self) -> dict[str, str]:
        """S2I_SERVE_<FIELD> variables that from_env reads back (for uvicorn worker processes)."""
        return {ENV_PREFIX + f.name.upper(): str(getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeConfig:
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = float(raw) if f.type in (float, "float") else int(raw)
        return cls(**values)
