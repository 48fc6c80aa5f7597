"""An enhancer module from its config section (fresh, or the authors' weights) or from the file
the `enhancer` stage saves (`weights.pt`), and that file written.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ...models.torchfile import safe_load
from ...models.zero_dce import WeightsError
from ..config import EnhancerConfig
from ..engine.atomic import atomic_path
from . import get, names


def make_enhancer(cfg: EnhancerConfig) -> nn.Module:
    """The enhancer `cfg` asks for, in eval mode: seeded fresh weights ("fit"), the weights file
    ("finetune", "import"), or, for a kind without weights, the module its keys describe."""
    kind = get(cfg.kind)
    if not kind.learned or cfg.mode == "fit":
        return kind.build(cfg).eval()
    if not cfg.weights:
        raise WeightsError(f"enhancer.mode={cfg.mode} needs enhancer.weights = PATH")
    return kind.import_weights(cfg.weights, cfg)


def save_enhancer(module: nn.Module, path: str | Path, cfg: EnhancerConfig) -> None:
    """Write {"kind", "scale_factor", "gamma", "state_dict"} atomically (loadable with weights_only)."""
    record = {
        "kind": getattr(module, "kind", cfg.kind),
        "scale_factor": int(getattr(module, "scale_factor", cfg.scale_factor)),
        "gamma": float(getattr(module, "gamma", cfg.gamma)),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(record, tmp)


def load_enhancer(path: str | Path) -> nn.Module:
    """The enhancer saved by `save_enhancer`, in eval mode; a bad file is a WeightsError."""
    record = safe_load(path, WeightsError, "cannot load enhancer")
    if not isinstance(record, dict) or not {"kind", "state_dict"} <= record.keys():
        raise WeightsError(f"{path}: not an enhancer saved by dlkdd (expected keys kind, state_dict)")
    if record["kind"] not in names():
        raise WeightsError(f"{path}: unknown enhancer kind {record['kind']!r}")
    kind = get(record["kind"])
    # the keys the file keeps are the ones `build` reads; its fresh weights are replaced below
    cfg = EnhancerConfig(kind=kind.name, scale_factor=int(record.get("scale_factor", 1)),
                         gamma=float(record.get("gamma", 2.2)))
    module = kind.build(cfg)
    if kind.learned:
        kind.load(module, dict(record["state_dict"]), path)
    return module.eval()
