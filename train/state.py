"""What makes a resume exact: a deterministic, resumable batch sampler and the RNG states."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


class ResumableBatchSampler:
    """Batches of dataset indices in a seeded per-epoch order; (epoch, position) resumes it.

    The order of epoch e is a permutation drawn from a generator seeded with (seed, e), so it
    does not depend on any global RNG. With world_size > 1 the permutation is padded to a
    multiple of world_size and rank r takes every world_size-th index from r (what
    DistributedSampler does). Incomplete last batches are dropped (batch norm needs full ones).
    `position` counts the batches of the current epoch already consumed; set it (with `epoch`)
    before each iter() to start there.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if num_items < 1:
            raise ValueError("the data set is empty")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0

    def epoch_indices(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        order = torch.randperm(self.num_items, generator=g).tolist()
        total = -(-self.num_items // self.world_size) * self.world_size
        order += order[: total - len(order)]  # pad so every rank gets the same count
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        per_rank = -(-self.num_items // self.world_size)
        return per_rank // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        idx = self.epoch_indices(self.epoch)
        for b in range(self.position, len(self)):
            yield idx[b * self.batch_size : (b + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every global RNG the loop draws from (torch CPU and CUDA, numpy, python)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_tensors(np.random.get_state()),
        "python": _python_state_to_tensors(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_state_from_tensors(state["numpy"]))
    random.setstate(_python_state_from_tensors(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


# Checkpoints load with weights_only=True, so RNG states are stored as tensors and plain types.


def _numpy_state_to_tensors(st: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = st
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _numpy_state_from_tensors(d: dict[str, Any]) -> tuple:
    keys = d["keys"].numpy().astype(np.uint32)
    return (d["name"], keys, d["pos"], d["has_gauss"], d["cached"])


def _python_state_to_tensors(st: tuple) -> dict[str, Any]:
    version, internal, gauss = st
    return {
        "version": int(version),
        "internal": torch.tensor(internal, dtype=torch.int64),
        "gauss": gauss,
    }


def _python_state_from_tensors(d: dict[str, Any]) -> tuple:
    return (d["version"], tuple(int(v) for v in d["internal"].tolist()), d["gauss"])
