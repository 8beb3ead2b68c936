"""A run's checkpoints folder: what is written, what a resume reads, what is cleaned up.

    checkpoints/latest.pt          the newest state (a copy of the newest step file)
    checkpoints/step_NNNNNNN.pt    the last `keep` steps

Each file is written whole or not at all (s2i_fast.fileio), step file first, latest.pt second;
a kill between the two leaves a newer complete step file beside an older latest.pt, and a kill
during a write leaves a `.NAME.*.tmp` file. `newest()` therefore looks at both: it picks the
complete checkpoint with the highest step (a file that does not load is passed over, with a
notice), and `clean_stale_temps()` removes the temp files a killed writer left behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from s2i_fast.checkpoint import load_checkpoint, save_checkpoint
from s2i_fast.errors import CheckpointError
from s2i_fast.fileio import remove_stale_temps

LATEST = "latest.pt"
STEP_FILE = re.compile(r"^step_(\d{7,})\.pt$")


def step_file_name(step: int) -> str:
    return f"step_{step:07d}.pt"


class RunCheckpoints:
    def __init__(self, folder: str | os.PathLike, keep: int = 3) -> None:
        self.folder = Path(folder)
        self.keep = max(1, int(keep))

    @property
    def latest(self) -> Path:
        return self.folder / LATEST

    def exists(self) -> bool:
        """True when the folder holds any checkpoint (a run to --resume, not to overwrite)."""
        return self.latest.exists() or bool(self.step_files())

    def step_files(self) -> list[tuple[int, Path]]:
        """(step, path) of the step files, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for p in self.folder.iterdir():
            m = STEP_FILE.match(p.name)
            if m and p.is_file():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def save(self, payload: dict[str, Any], step: int) -> Path:
        """Write step_NNNNNNN.pt, then latest.pt; drop step files beyond the newest `keep`."""
        path = self.folder / step_file_name(step)
        save_checkpoint(path, payload)
        save_checkpoint(self.latest, payload)
        for _, old in self.step_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def clean_stale_temps(self) -> list[Path]:
        names = [LATEST] + [p.name for _, p in self.step_files()]
        names += sorted({m.group(1) for p in self.folder.glob(".step_*.pt.*.tmp")
                         if (m := re.match(r"^\.(step_\d+\.pt)\.", p.name))})
        removed = []
        for name in dict.fromkeys(names):
            removed += remove_stale_temps(self.folder, name)
        return removed

    def newest(self, map_location: Any = "cpu",
               notice: Callable[[str], None] | None = None) -> tuple[Path, dict[str, Any]]:
        """(path, payload) of the complete checkpoint with the highest step: latest.pt, unless
        a step file beside it is newer (a kill between the two writes) or latest.pt does not
        load; a file that does not load is skipped with a notice. CheckpointError if none."""
        errors: list[str] = []

        def attempt(path: Path) -> dict[str, Any] | None:
            try:
                return load_checkpoint(path, map_location=map_location)
            except CheckpointError as e:
                errors.append(str(e))
                if notice is not None:
                    notice(f"skipping {path.name}: {e}")
                return None

        best: tuple[Path, dict[str, Any]] | None = None
        if self.latest.is_file():
            payload = attempt(self.latest)
            if payload is not None:
                best = (self.latest, payload)
        for step, path in reversed(self.step_files()):
            if best is not None and step <= int(best[1].get("step", 0)):
                break
            payload = attempt(path)
            if payload is not None:
                if best is not None and notice is not None:
                    notice(f"{path.name} is newer than {LATEST}: resuming from it")
                best = (path, payload)
                break
        if best is not None:
            return best
        if errors:
            raise CheckpointError(f"{self.folder}: no complete checkpoint ({errors[0]})")
        raise CheckpointError(f"{self.folder}: no checkpoint to resume from")
