"""Trained models in the cache: `model.pt` (written by the training loop) plus `meta.json`.

`meta.json` says how to rebuild the network and what input it expects, so
evaluation, `predict` and `export` need nothing but the folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from . import atomic
from .train import MODEL, CheckpointError, load_checkpoint

META = "meta.json"


def write_meta(out_dir: Path, *, model_name: str, num_classes: int, classes: list[str], input: str,
               data_cfg, H: int, W: int, model_kwargs: dict | None = None, extra: dict | None = None) -> dict:
    """Describe a trained model: architecture (with the options it was built with), classes, the
    input it was trained on, its cost."""
    from .. import models
    from ..models.profile import count_params, gflops_per_clip
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
    from .. import models
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
    ckpt = load_checkpoint(path)
    model = models.build(meta["model"], meta["num_classes"], **(meta.get("model_kwargs") or {}))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(f"{path}: does not fit {meta['model']} ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), meta
