"""Where the kernel tests run (not a test module): the CUDA GPU when tests/conftest.py chose
compiled kernels (a GPU is present and TRITON_INTERPRET is not 1), else the CPU under Triton's
interpreter. Tests build their inputs on the CPU and move them with `.to(DEVICE)`."""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    interpreting = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    if torch.cuda.is_available() and not interpreting:
        return torch.device("cuda")
    return torch.device("cpu")


DEVICE = pick_device()
ON_GPU = DEVICE.type == "cuda"
