"""The optimizer and its learning-rate schedule, as `TrainConfig` names them.

Fine-tuning recipe: the classifier (`fc`, and the BERT head where there is one) is new for our
classes and learns at the schedule's rate; the pretrained backbone learns at `backbone_lr_mult`
times it (BVLC Caffe's finetune_flickr_style lets the new classifier learn 10x faster than the
pretrained layers: 0.1 here). Each parameter group carries its multiplier as `lr_mult`; the
training loop sets every group's `lr` to the schedule's value and the optimizer scales it by the
group's multiplier for the step, so the schedule (warm-up, cosine) shapes both rates alike.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..config import TrainConfig

HEAD_PREFIXES = ("fc.", "bert.")  # what fine-tuning initialises fresh for our classes (models.video_resnet)
WRAPPERS = ("module.", "_orig_mod.")  # DistributedDataParallel's and torch.compile's prefixes


def is_head(name: str) -> bool:
    """Whether the parameter called `name` (a `named_parameters` key, of the model or of a DDP or
    compiled wrapper of it) is the classifier's."""
    while name.startswith(WRAPPERS):
        name = name.split(".", 1)[1]
    return name.startswith(HEAD_PREFIXES)


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Backbone and head, each split into decayed (matrices, kernels) and undecayed (biases and
    norm-layer parameters: 0-d and 1-d) parameters; empty groups are left out."""
    groups = []
    for head in (False, True):
        params = [p for n, p in model.named_parameters() if p.requires_grad and is_head(n) == head]
        mult = 1.0 if head else cfg.backbone_lr_mult
        for decayed in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decayed]
            if chosen:
                groups.append({"params": chosen, "weight_decay": cfg.weight_decay if decayed else 0.0,
                               "lr_mult": mult, "head": head})
    return groups


SCHEDULED = "scheduled_lr"  # a group's schedule rate, kept aside while its scaled rate takes the step


def _scale_lr(optimizer: torch.optim.Optimizer, *_) -> None:
    for group in optimizer.param_groups:
        group[SCHEDULED] = group["lr"]
        group["lr"] = group["lr"] * group.get("lr_mult", 1.0)


def _unscale_lr(optimizer: torch.optim.Optimizer, *_) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group.pop(SCHEDULED, group["lr"])


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over `param_groups`; biases and norm-layer parameters get no weight decay, the
    backbone learns at `backbone_lr_mult` x the head's rate (hooks around each step apply it, so
    the `lr` a group shows between steps, and a checkpoint records, is the schedule's)."""
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    elif cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adamw | sgd)")
    optimizer.register_step_pre_hook(_scale_lr)
    optimizer.register_step_post_hook(_unscale_lr)
    return optimizer


def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclasses.dataclass(frozen=True)
class LrSchedule:
    """`lr_at` over a whole run, by optimizer step (the checkpoint records its two lengths)."""
    total_steps: int
    warmup_steps: int
    peak: float

    @classmethod
    def for_run(cls, cfg: TrainConfig, steps_per_epoch: int) -> LrSchedule:
        return cls(cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch), cfg.lr)

    def __call__(self, step: int) -> float:
        return lr_at(step, self.total_steps, self.warmup_steps, self.peak)

    def lengths(self) -> dict:
        return {"total_steps": self.total_steps, "warmup_steps": self.warmup_steps}
