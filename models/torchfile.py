"""The one place a torch file is read: `torch.load(weights_only=True)`, failures explained in one line.

Checkpoints, pretrained video weights and enhancer weights all load through
`safe_load`, so a file that needs code execution to unpickle is refused the same
way everywhere, with the same words. It lives in `models/` because the model
loaders need it and `models/` never imports `pipeline/`;
`pipeline.checkpoints` builds the training checkpoints' loader on it.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch


def load_failure(e: BaseException) -> str:
    """A short reason from torch.load's long, multi-paragraph messages."""
    text = str(e)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)  # worded differently across torch versions
    if blocked:
        return f"it needs code execution to load (global {blocked.group(1)}), which weights_only refuses"
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0].strip()
        if detail.startswith("Unsupported global:"):
            name = detail.split("GLOBAL", 1)[-1].split(" was not", 1)[0].strip()
            return f"it needs code execution to load (global {name}), which weights_only refuses"
        return f"not a torch checkpoint ({detail})"
    if isinstance(e, EOFError):
        return "file is empty or truncated"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return f"not a torch checkpoint ({type(e).__name__}{': ' + first if first else ''})"


def safe_load(path: str | Path, error: type[Exception], what: str):
    """torch.load onto the CPU with weights_only=True; any failure (missing, truncated, not torch,
    a pickle that would run code) raises `error("<path>: <what>: <reason>")`, one line."""
    try:
        with warnings.catch_warnings():  # plain pickles draw a protocol warning before failing
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for non-checkpoints; all mean "not usable"
        raise error(f"{path}: {what}: {load_failure(e)}") from None
