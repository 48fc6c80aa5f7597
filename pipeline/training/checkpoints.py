"""Trained models in the cache: checkpoint I/O, `model.pt` (written by the training loop) plus `meta.json`.

Every checkpoint is written atomically and read with `weights_only=True` (through
`models.torchfile.safe_load`, which explains a refusal in one line). `meta.json`
says how to rebuild the network and what input it expects, so evaluation,
`predict` and `export` need nothing but the folder.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch

from ... import models
from ...errors import UserError, first_line
from ...models.profile import count_params, gflops_per_clip
from ...models.torchfile import safe_load
from ..engine import atomic
from ..names import META, MODEL


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model (one line)."""


def save_checkpoint(obj: dict, path: Path) -> None:
    """torch.save, atomically; a failed write is an OSError naming the file (ENOSPC when the disk is full)."""
    try:
        with atomic.atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as e:  # torch reports a failed write (a full disk, say) as RuntimeError
        full = shutil.disk_usage(Path(path).parent).free < (64 << 20)
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      os.strerror(errno.ENOSPC) if full else f"cannot write ({first_line(e)})",
                      str(path)) from None


def load_checkpoint(path: Path) -> dict:
    """A training checkpoint (or model.pt); any failure is one CheckpointError line naming the file."""
    state = safe_load(path, CheckpointError, "unreadable checkpoint")
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: unreadable checkpoint (not a training checkpoint)")
    return state


def load_weights_into(model: torch.nn.Module, path: Path, weights: dict, what: str = "the model") -> None:
    """model.load_state_dict(weights); a mismatch is one CheckpointError line naming `path`."""
    try:
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: does not fit {what} ({first_line(e)})") from None


def write_meta(out_dir: Path, *, model_name: str, num_classes: int, classes: list[str], input: str,
               data_cfg, H: int, W: int, model_kwargs: dict | None = None, extra: dict | None = None) -> dict:
    """Describe a trained model: architecture (with the options it was built with), classes, the
    input it was trained on, its cost."""
    with torch.device("meta"):
        probe = models.build(model_name, num_classes, **(model_kwargs or {}))
    meta = {"model": model_name, "model_kwargs": dict(model_kwargs or {}), "num_classes": num_classes,
            "classes": list(classes), "input": input,
            "frames": data_cfg.frames, "short_side": data_cfg.short_side,
            "max_long_side": data_cfg.max_long_side, "crop": data_cfg.crop, "H": H, "W": W,
            "params": count_params(probe),
            "gflops_per_clip": round(gflops_per_clip(probe, data_cfg.frames, data_cfg.crop, data_cfg.crop), 4),
            **(extra or {})}
    atomic.write_json(Path(out_dir) / META, meta)
    return meta


def load_trained(out_dir: Path, device: str = "cpu"):
    """(model in eval mode on `device`, meta) from a stage folder; one-line CheckpointError if absent/bad."""
    out_dir = Path(out_dir)
    try:
        meta = json.loads((out_dir / META).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{out_dir / META}: missing; train this model first") from None
    except ValueError as e:
        raise CheckpointError(f"{out_dir / META}: unreadable ({e})") from None
    path = out_dir / MODEL
    if not path.exists():
        raise CheckpointError(f"{path}: missing; train this model first")
    weights = load_checkpoint(path)["model"]
    model = models.build(meta["model"], meta["num_classes"], **(meta.get("model_kwargs") or {}))
    load_weights_into(model, path, weights, meta["model"])
    return model.to(device).eval(), meta
