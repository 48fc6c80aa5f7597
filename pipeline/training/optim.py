"""The optimizer and its learning-rate schedule, as `TrainConfig` names them."""
from __future__ import annotations

import dataclasses
import math

import torch

from ..config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and norm-layer parameters (the 0-d and 1-d ones) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adamw | sgd)")


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """`lr_at` over a whole run, by optimizer step (the checkpoint records its two lengths)."""
    total_steps: int
    warmup_steps: int
    peak: float

    @classmethod
    def for_run(cls, cfg: TrainConfig, steps_per_epoch: int) -> Schedule:
        return cls(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch), cfg.lr)

    def __call__(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak)

    def lengths(self) -> dict:
        return {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
