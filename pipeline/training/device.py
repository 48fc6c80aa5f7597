"""Where models run: the one place "auto" becomes a device and mixed precision is chosen."""
from __future__ import annotations

from contextlib import nullcontext

import torch


def resolve_device(name) -> torch.device:
    """"auto" -> CUDA when torch sees a GPU, else the CPU; anything else as torch.device reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device):
    """The autocast dtype on CUDA (bfloat16 where supported, else float16); None elsewhere (full float32)."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype=None):
    """Mixed precision on CUDA in `dtype` (default `amp_dtype`); a no-op on the CPU."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype or amp_dtype(device))
